//! kubectl-style output: borderless tables with upper-case headers, or JSON for scripts.

use comfy_table::{Table, presets::NOTHING};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// A table, as kubectl prints them.
    #[default]
    Table,
    /// One JSON document.
    Json,
}

/// A table with kubectl's look: no borders, headers in capitals, columns three spaces apart.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    table
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_look_like_kubectl() {
        let out = table(
            &["name", "ready"],
            vec![
                vec!["web-1".into(), "1/1".into()],
                vec!["db".into(), "0/1".into()],
            ],
        );
        assert_eq!(out, "NAME    READY\nweb-1   1/1\ndb      0/1");
    }
}
