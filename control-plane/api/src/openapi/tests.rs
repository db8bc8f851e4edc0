use super::*;

#[test]
#[ignore = "dev helper: prints every list and map property of the served schemas"]
fn dump_collections() {
    let mut seen = std::collections::BTreeSet::new();
    for g in registry::groups() {
        for v in &g.versions {
            let doc = cached(g.name, v).unwrap();
            for (name, s) in doc.schemas().unwrap() {
                let Some(props) = s.get("properties").and_then(Value::as_object) else { continue };
                for (f, p) in props {
                    let ty = p.get("type").and_then(Value::as_str);
                    let item = p.get("items").map(|i| {
                        i.get("$ref").or_else(|| i.pointer("/allOf/0/$ref")).and_then(Value::as_str).map_or_else(
                            || i.get("type").and_then(Value::as_str).unwrap_or("?").to_owned(),
                            |r| r.trim_start_matches(REF_PREFIX).to_owned(),
                        )
                    });
                    if ty == Some("array") {
                        seen.insert(format!("ARRAY {name} {f} {}", item.unwrap_or_default()));
                    } else if p.get("additionalProperties").is_some() {
                        seen.insert(format!("MAP {name} {f}"));
                    }
                }
            }
        }
    }
    for s in seen {
        println!("{s}");
    }
}
