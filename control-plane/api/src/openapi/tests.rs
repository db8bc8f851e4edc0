use std::collections::BTreeSet;

use super::*;

fn all_docs() -> Vec<&'static GroupVersionDoc> {
    registry::groups()
        .into_iter()
        .flat_map(|g| g.versions.into_iter().map(move |v| (g.name, v)))
        .map(|(g, v)| cached(g, v).expect("every served group version has a document"))
        .collect()
}

fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                out.insert(r.to_owned());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_index_lists_every_group_version_with_its_hash() {
    let index = v3_index(content_hash);
    let paths = index["paths"].as_object().unwrap();
    assert_eq!(paths.len(), all_docs().len());
    let apps = cached("apps", "v1").unwrap();
    assert_eq!(
        paths["apis/apps/v1"]["serverRelativeURL"],
        format!("/openapi/v3/apis/apps/v1?hash={}", apps.hash)
    );
    assert!(
        paths["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash=")
    );
    let unhashed = v3_index(|_, _| None);
    assert_eq!(
        unhashed["paths"]["api/v1"]["serverRelativeURL"],
        "/openapi/v3/api/v1"
    );
    assert!(v3_group_version("example.com", "v1").is_none());
    let (doc, hash) = v3_group_version("apps", "v1").unwrap();
    assert_eq!((doc, hash), (apps.doc.clone(), apps.hash.clone()));
}

#[test]
fn hashes_are_stable_content_hashes() {
    let apps = cached("apps", "v1").unwrap();
    let again = generate("apps", "v1");
    assert_eq!(again.hash, apps.hash);
    assert_eq!(again.json, apps.json);
    assert_eq!(stable_hash(&apps.json), apps.hash);
    assert_eq!(apps.hash.len(), 32);
    assert_ne!(cached("", "v1").unwrap().hash, apps.hash);
    assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    assert_eq!(
        serde_json::from_slice::<Value>(&apps.json).unwrap(),
        apps.doc
    );
    assert_eq!(apps.path(), "apis/apps/v1");
}

#[test]
fn every_ref_resolves_and_every_kind_has_exactly_one_gvk_schema() {
    for doc in all_docs() {
        let schemas = doc.schemas().unwrap();
        let mut all = BTreeSet::new();
        refs(&doc.doc, &mut all);
        for r in all {
            let name = r
                .strip_prefix(REF_PREFIX)
                .unwrap_or_else(|| panic!("bad ref {r}"));
            assert!(
                schemas.contains_key(name),
                "{}: {r} does not resolve",
                doc.path()
            );
        }
        for r in registry::resources_of(doc.group, doc.version) {
            // kubectl's gvkMatchesSingle: a one-element list naming the kind.
            let want = json!([{ "group": r.group, "version": r.version, "kind": r.kind }]);
            let matching: Vec<&String> = schemas
                .iter()
                .filter(|(_, s)| s.get("x-kubernetes-group-version-kind") == Some(&want))
                .map(|(n, _)| n)
                .collect();
            assert_eq!(matching.len(), 1, "{} {}: {matching:?}", doc.path(), r.kind);
        }
    }
}

#[test]
fn the_kind_table_matches_k8s_openapi_schema_names() {
    for (g, v, k, name) in kinds::all() {
        assert_eq!(
            extensions::schema_of_gvk(g, v, k),
            Some(name.as_str()),
            "{g}/{v} {k}"
        );
    }
    assert_eq!(kinds::all().len(), extensions::KINDS.len());
}

#[test]
fn patch_operations_declare_what_kubectl_checks() {
    for doc in all_docs() {
        let paths = doc.doc["paths"].as_object().unwrap();
        for r in registry::resources_of(doc.group, doc.version).filter(|r| r.is_stored()) {
            let ns = if r.namespaced {
                "/namespaces/{namespace}"
            } else {
                ""
            };
            let prefix = if r.group.is_empty() {
                format!("/api/{}", r.version)
            } else {
                format!("/apis/{}/{}", r.group, r.version)
            };
            let item = &paths[&format!("{prefix}{ns}/{}/{{name}}", r.plural)];
            let patch = &item["patch"];
            assert_eq!(
                patch["x-kubernetes-group-version-kind"],
                json!({"group": r.group, "version": r.version, "kind": r.kind})
            );
            let params: Vec<&str> = patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for p in ["fieldValidation", "dryRun", "fieldManager", "force"] {
                assert!(params.contains(&p), "{}: PATCH lacks {p}", r.plural);
            }
            let content = patch["requestBody"]["content"].as_object().unwrap();
            for t in PATCH_CONTENT_TYPES {
                assert!(content.contains_key(*t), "{}: PATCH lacks {t}", r.plural);
            }
            assert_eq!(
                item["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
                format!(
                    "{REF_PREFIX}{}",
                    extensions::schema_of_gvk(r.group, r.version, r.kind).unwrap()
                )
            );
            assert!(item.get("put").is_some() && item.get("delete").is_some());
            let coll = &paths[&format!("{prefix}{ns}/{}", r.plural)];
            assert!(
                coll["post"]["parameters"]
                    .to_string()
                    .contains("fieldValidation")
            );
            assert!(coll["get"]["parameters"].to_string().contains("\"watch\""));
            assert_eq!(
                coll.get("delete").is_some(),
                r.verbs.contains(&"deletecollection"),
                "{} deletecollection",
                r.plural
            );
            // Every subresource PATCH (status, scale) carries the same parameters: kubectl
            // checks whichever PATCH of the kind it meets first.
            for s in r
                .subresources
                .iter()
                .filter(|s| s.verbs.contains(&"patch") && s.name != "proxy")
            {
                let sp = &paths[&format!("{prefix}{ns}/{}/{{name}}/{}", r.plural, s.name)]["patch"];
                assert!(
                    sp["parameters"].to_string().contains("fieldValidation"),
                    "{}/{}",
                    r.plural,
                    s.name
                );
            }
        }
    }
    let core = cached("", "v1").unwrap();
    let paths = core.doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/pods",
        "/api/v1/namespaces/{namespace}/pods/{name}/log",
        "/api/v1/namespaces/{namespace}/pods/{name}/exec",
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction",
        "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}",
        "/api/v1/namespaces/{name}/finalize",
        "/api/v1/nodes/{name}",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    let review = cached("authorization.k8s.io", "v1").unwrap();
    assert!(
        review.doc["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]["post"]
            .is_object()
    );
}

#[test]
fn schemas_carry_the_extension_table() {
    let core = cached("", "v1").unwrap();
    let s = core.schemas().unwrap();
    let containers = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        s["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
        "atomic"
    );
    assert_eq!(
        s["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
        json!([{"group":"","version":"v1","kind":"PodList"}])
    );
    // $ref siblings are wrapped in allOf, as upstream's documents do.
    let meta = &s["io.k8s.api.core.v1.Pod"]["properties"]["metadata"];
    assert!(
        meta.get("$ref").is_none() && meta["allOf"][0]["$ref"].is_string(),
        "{meta}"
    );
}

#[test]
fn schema_nodes_walk_to_list_semantics() {
    let d = kind_schema("apps", "v1", "Deployment").unwrap();
    let (_, spec) = d.property("spec").unwrap();
    let (strategy, _) = spec.property("strategy").unwrap();
    assert!(strategy.has_strategy("retainKeys"));
    let (_, template) = spec.property("template").unwrap();
    let (_, pod) = template.property("spec").unwrap();
    let (meta, containers) = pod.property("containers").unwrap();
    assert_eq!(meta.patch_merge_key.as_deref(), Some("name"));
    let container = containers.items().unwrap();
    let (ports, _) = container.property("ports").unwrap();
    assert_eq!(ports.list_map_keys, ["containerPort", "protocol"]);
    assert_eq!(ports.list_type, Some(ListType::Map));
    let (_, labels) = d
        .property("metadata")
        .unwrap()
        .1
        .property("labels")
        .unwrap();
    assert_eq!(
        labels.additional_properties().unwrap().type_name(),
        Some("string")
    );
    assert!(!labels.has_properties());
    let (_, selector) = spec.property("selector").unwrap();
    assert_eq!(selector.map_type(), Some(MapType::Atomic));
    assert!(kind_schema("autoscaling", "v1", "Scale").is_some());
    assert!(kind_schema("policy", "v1", "Eviction").is_some());
    assert!(kind_schema("example.com", "v1", "Widget").is_none());
}

#[test]
#[ignore = "dev helper: prints every list and map property of the served schemas"]
fn dump_collections() {
    for doc in all_docs() {
        for (name, s) in doc.schemas().unwrap() {
            let Some(props) = s.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for (f, p) in props {
                if p.get("type").and_then(Value::as_str) == Some("array")
                    || p.get("additionalProperties").is_some()
                {
                    println!("{name} {f}");
                }
            }
        }
    }
}
