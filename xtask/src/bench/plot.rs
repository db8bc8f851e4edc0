//! target/bench/datapath.png: new connections/s against service count for ClusterIP and
//! NodePort traffic, and full programming time, one panel each.

use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, anyhow};
use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

use super::{
    report::{Report, thousands},
    scenario::{Datapath, ProgOp, Target},
    stats::median,
};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of a panel: label, colour, (log10 services, value) points.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn color(datapath: Datapath, alt: bool) -> RGBColor {
    match (datapath, alt) {
        (Datapath::Skiff, false) => RGBColor(0, 114, 178),
        (Datapath::Skiff, true) => RGBColor(86, 180, 233),
        (Datapath::IptablesLegacy, _) => RGBColor(213, 94, 0),
        (Datapath::IptablesNft, _) => RGBColor(230, 159, 0),
        (Datapath::Nft, _) => RGBColor(0, 158, 115),
        (Datapath::Direct, _) => RGBColor(60, 60, 60),
    }
}

fn traffic_line(report: &Report, datapath: Datapath, target: Target, alt: bool) -> Line {
    let mut failed = false;
    let points = report
        .settings
        .sizes
        .iter()
        .filter_map(|&n| {
            let row = report.row(datapath, n, target)?;
            failed |= row.m.failed.is_some();
            Some(((n as f64).log10(), row.close?))
        })
        .collect();
    Line {
        label: format!(
            "{} · {}{}",
            datapath.label(),
            target.label(datapath),
            if failed { " (failed)" } else { "" }
        ),
        color: color(datapath, alt),
        points,
    }
}

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let bytes = fs::read(FONT).with_context(|| format!("reading {FONT} (fonts-dejavu-core)"))?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))?;

    let root = BitMapBackend::new(path, (1800, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (title, body) = root.split_vertically(50);
    title
        .titled(
            &format!(
                "skiff datapath benchmark · {} · kernel {} · {} CPUs · {} s runs, median of {}",
                report.env.date,
                report.env.kernel,
                report.env.cpus,
                report.settings.duration.as_secs(),
                report.settings.reps
            ),
            ("sans-serif", 22),
        )
        .map_err(plot_err)?;
    let panels = body.split_evenly((1, 3));

    let mut cluster = vec![traffic_line(
        report,
        Datapath::Skiff,
        Target::Service,
        false,
    )];
    cluster.push(traffic_line(
        report,
        Datapath::Skiff,
        Target::Endpoint,
        true,
    ));
    for d in Datapath::RULES {
        cluster.push(traffic_line(report, d, Target::Service, false));
    }
    traffic_panel(
        &panels[0],
        report,
        "New connections/s, last ClusterIP (and pod IP)",
        &cluster,
        report.baseline.node_close,
        "direct, no rules",
    )?;

    let mut nodeport = vec![traffic_line(
        report,
        Datapath::Skiff,
        Target::NodePort,
        false,
    )];
    for d in Datapath::RULES {
        nodeport.push(traffic_line(report, d, Target::NodePort, false));
    }
    traffic_panel(
        &panels[1],
        report,
        "New connections/s, NodePort from outside",
        &nodeport,
        report.baseline.fwd_close,
        "forwarded, no rules",
    )?;

    let mut prog = Vec::new();
    for d in [
        Datapath::Skiff,
        Datapath::IptablesLegacy,
        Datapath::IptablesNft,
        Datapath::Nft,
    ] {
        let points = report
            .settings
            .sizes
            .iter()
            .filter_map(|&n| {
                let p = report.programming(d, n, ProgOp::FullLoad)?;
                let secs: Vec<f64> = p.samples.iter().map(Duration::as_secs_f64).collect();
                Some(((n as f64).log10(), median(&secs)?))
            })
            .collect();
        prog.push(Line {
            label: d.label().to_owned(),
            color: color(d, false),
            points,
        });
    }
    programming_panel(&panels[2], report, &prog)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

fn x_range(report: &Report) -> std::ops::Range<f64> {
    let lo = (report.settings.sizes[0] as f64).log10();
    let hi = (*report.settings.sizes.last().expect("a size") as f64).log10();
    (lo - 0.3)..(hi + 0.3).max(lo + 1.0)
}

fn x_label(x: &f64) -> String {
    let rounded = x.round();
    if (x - rounded).abs() < 1e-6 && rounded >= 0.0 {
        thousands(10f64.powi(rounded as i32) as usize)
    } else {
        String::new()
    }
}

fn traffic_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    report: &Report,
    caption: &str,
    lines: &[Line],
    baseline: Option<f64>,
    baseline_label: &str,
) -> anyhow::Result<()> {
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(baseline)
        .fold(1.0_f64, f64::max)
        * 1.25;
    let xr = x_range(report);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.clone(), 0.0..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("services (10 endpoints each)")
        .y_desc("conn/s")
        .x_labels(6)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    if let Some(b) = baseline {
        let c = color(Datapath::Direct, false);
        chart
            .draw_series(LineSeries::new(
                [(xr.start, b), (xr.end, b)],
                c.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(format!("{baseline_label}: {:.1}k", b / 1000.0))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    draw_lines(&mut chart, lines)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn draw_lines<DB: DrawingBackend, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    lines: &[Line],
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    for line in lines {
        let c = line.color;
        chart
            .draw_series(LineSeries::new(line.points.clone(), c.stroke_width(3)))
            .map_err(|e| anyhow!("plotting: {e}"))?
            .label(line.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3)));
        chart
            .draw_series(line.points.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(|e| anyhow!("plotting: {e}"))?;
    }
    Ok(())
}

fn programming_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    report: &Report,
    lines: &[Line],
) -> anyhow::Result<()> {
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi {
        (1e-4, 1.0)
    } else {
        (lo / 3.0, hi * 3.0)
    };
    let xr = x_range(report);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Programming all services from empty (log scale)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr, (lo..hi).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("services (10 endpoints each)")
        .y_desc("seconds")
        .x_labels(6)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|y| axis_secs(*y))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    draw_lines(&mut chart, lines)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// A log-axis tick in seconds: `100 µs`, `10 ms`, `1 s`, `1.5 s`.
fn axis_secs(s: f64) -> String {
    let (value, unit) = if s < 1e-3 {
        (s * 1e6, "µs")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    let text = format!("{value:.2}");
    format!(
        "{} {unit}",
        text.trim_end_matches('0').trim_end_matches('.')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ticks_are_short() {
        assert_eq!(axis_secs(1e-4), "100 µs");
        assert_eq!(axis_secs(0.01), "10 ms");
        assert_eq!(axis_secs(1.0), "1 s");
        assert_eq!(axis_secs(1.5), "1.5 s");
        assert_eq!(x_label(&3.0), "1,000");
        assert_eq!(x_label(&2.5), "");
    }
}
