use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::{openapi, registry};

/// Every schema of every served group version's document, by name.
fn all_schemas() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for g in registry::groups() {
        for v in &g.versions {
            let doc = openapi::cached(g.name, v).expect("served group version has a document");
            for (name, s) in doc.schemas().expect("components.schemas") {
                out.insert(name.clone(), s.clone());
            }
        }
    }
    out
}

fn item_properties<'a>(schemas: &'a BTreeMap<String, Value>, prop: &'a Value) -> Option<&'a Value> {
    let item = prop.get("items")?;
    let r = item
        .get("$ref")
        .or_else(|| item.pointer("/allOf/0/$ref"))?
        .as_str()?;
    schemas
        .get(r.strip_prefix("#/components/schemas/")?)?
        .get("properties")
}

#[test]
fn every_list_in_the_served_schemas_has_an_entry() {
    let schemas = all_schemas();
    let mut missing = Vec::new();
    let mut arrays = 0;
    for (name, s) in &schemas {
        let Some(props) = s.get("properties").and_then(Value::as_object) else {
            continue;
        };
        for (field, p) in props {
            if p.get("type").and_then(Value::as_str) != Some("array") {
                continue;
            }
            // The synthesised `<Kind>List.items`: never patched.
            if name.ends_with("List") && field == "items" && extensions_gvk_list(name) {
                continue;
            }
            arrays += 1;
            match field_ext(name, field) {
                Some(e) if e.list_type.is_some() => {}
                _ => missing.push(format!("{name}.{field}")),
            }
        }
    }
    assert!(arrays > 150, "walked only {arrays} lists");
    assert!(missing.is_empty(), "lists without an entry: {missing:#?}");
}

fn extensions_gvk_list(name: &str) -> bool {
    gvk_of_schema(name).is_some_and(|g| g.kind.ends_with("List"))
}

#[test]
fn every_entry_names_a_real_field_with_real_keys() {
    let schemas = all_schemas();
    for e in FIELDS {
        let prop = schemas
            .get(e.schema)
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.get(e.field))
            .unwrap_or_else(|| panic!("{}.{} is not in any served schema", e.schema, e.field));
        let is_array = prop.get("type").and_then(Value::as_str) == Some("array");
        if e.list_type.is_some() {
            assert!(is_array, "{}.{} is not a list", e.schema, e.field);
        }
        if e.map_type.is_some() {
            assert!(
                prop.get("additionalProperties").is_some(),
                "{}.{} is not a map",
                e.schema,
                e.field
            );
        }
        let keys: Vec<&str> = e
            .list_map_keys
            .iter()
            .copied()
            .chain(e.patch_merge_key)
            .collect();
        if !keys.is_empty() {
            let item = item_properties(&schemas, prop)
                .unwrap_or_else(|| panic!("{}.{} has keys but no object items", e.schema, e.field));
            for k in keys {
                assert!(
                    item.get(k).is_some(),
                    "{}.{}: no key field {k}",
                    e.schema,
                    e.field
                );
            }
        }
        if e.list_type == Some(ListType::Map) {
            assert!(!e.list_map_keys.is_empty(), "{}.{}", e.schema, e.field);
        }
        assert!(
            FIELDS
                .iter()
                .filter(|o| o.schema == e.schema && o.field == e.field)
                .count()
                == 1,
            "{}.{} twice",
            e.schema,
            e.field
        );
    }
    for t in TYPES {
        assert!(schemas.contains_key(t.schema), "{} is not served", t.schema);
    }
}

#[test]
fn every_served_kind_has_a_schema_and_a_gvk() {
    for r in registry::RESOURCES {
        let name = schema_of_gvk(r.group, r.version, r.kind)
            .unwrap_or_else(|| panic!("{} {} has no schema", r.api_version(), r.kind));
        let gvk = gvk_of_schema(name).unwrap();
        assert_eq!((gvk.group.as_str(), gvk.kind.as_str()), (r.group, r.kind));
        if r.is_stored() {
            let list = gvk_of_schema(&format!("{name}List")).unwrap();
            assert_eq!(list.kind, format!("{}List", r.kind));
        }
    }
    for k in KINDS {
        assert!(
            openapi::kind_schema(k.gvk.group, k.gvk.version, k.gvk.kind).is_some(),
            "{:?} is in no document",
            k.gvk
        );
    }
    assert_eq!(gvk_of_schema("io.k8s.api.core.v1.BindingList"), None);
}

#[test]
fn the_well_known_merge_keys() {
    let key = |s: &str, f: &str| {
        let e = field_ext(s, f).unwrap();
        (e.patch_strategy, e.patch_merge_key)
    };
    let core = |t: &str| format!("io.k8s.api.core.v1.{t}");
    assert_eq!(
        key(&core("PodSpec"), "containers"),
        (Some("merge"), Some("name"))
    );
    assert_eq!(
        key(&core("Container"), "ports"),
        (Some("merge"), Some("containerPort"))
    );
    assert_eq!(
        key(&core("Container"), "env"),
        (Some("merge"), Some("name"))
    );
    assert_eq!(
        key(&core("PodSpec"), "volumes"),
        (Some("merge,retainKeys"), Some("name"))
    );
    assert_eq!(
        key(&core("Container"), "volumeMounts"),
        (Some("merge"), Some("mountPath"))
    );
    assert_eq!(
        key(&core("ServiceSpec"), "ports"),
        (Some("merge"), Some("port"))
    );
    assert_eq!(
        key(&core("PodSpec"), "imagePullSecrets"),
        (Some("merge"), Some("name"))
    );
    let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    assert_eq!(key(meta, "finalizers"), (Some("merge"), None));
    assert_eq!(key(meta, "ownerReferences"), (Some("merge"), Some("uid")));
    assert_eq!(
        key("io.k8s.api.apps.v1.DeploymentStatus", "conditions"),
        (Some("merge"), Some("type"))
    );
    assert_eq!(
        key("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
        (Some("retainKeys"), None)
    );
    let ports = field_ext(&core("Container"), "ports").unwrap();
    assert_eq!(ports.list_map_keys, ["containerPort", "protocol"]);
    assert_eq!(
        field_ext(&core("PodSpec"), "tolerations")
            .unwrap()
            .list_type,
        Some(ListType::Atomic)
    );
    assert_eq!(
        type_ext("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector").map(|t| t.map_type),
        Some(MapType::Atomic)
    );
}
