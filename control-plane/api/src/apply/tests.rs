use serde_json::{Value, json};

use super::*;

const DEPLOYMENT: Kind<'static> = ("apps", "v1", "Deployment");
const T0: &str = "2026-11-26T10:00:00Z";
const T1: &str = "2026-11-26T11:00:00Z";

fn config(replicas: i64, image: &str, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "default", "labels": { "app": "web" } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{
                    "name": "nginx",
                    "image": image,
                    "env": env,
                    "ports": [{ "containerPort": 80 }],
                }] },
            },
        },
    })
}

fn apply(
    live: Option<&Value>,
    cfg: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApplyError> {
    server_side_apply_at(live, cfg, manager, force, DEPLOYMENT, T0)
}

fn entries(obj: &Value) -> &Vec<Value> {
    obj["metadata"]["managedFields"].as_array().unwrap()
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    entries(obj).iter().find(|e| e["manager"] == manager)
}

fn owns(obj: &Value, manager: &str, pointer: &str) -> bool {
    entry(obj, manager).is_some_and(|e| e["fieldsV1"].pointer(pointer).is_some())
}

#[test]
fn apply_creates_and_records_fields_v1_like_upstream() {
    let cfg = config(2, "nginx:1.25", json!([{ "name": "A", "value": "1" }]));
    let out = apply(None, &cfg, "kubectl", false).unwrap();
    let mut expected = cfg.clone();
    expected["metadata"]["managedFields"] = json!([{
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": { "f:labels": { "f:app": {} } },
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": { "f:labels": { "f:app": {} } },
                    "f:spec": { "f:containers": { "k:{\"name\":\"nginx\"}": {
                        ".": {},
                        "f:env": { "k:{\"name\":\"A\"}": { ".": {}, "f:name": {}, "f:value": {} } },
                        "f:image": {},
                        "f:name": {},
                        "f:ports": { "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {},
                            "f:containerPort": {},
                        } },
                    } } },
                },
            },
        },
    }]);
    assert_eq!(out, expected);
}

#[test]
fn conflicts_with_another_manager_unless_forced() {
    // Created by `kubectl apply` (client-side): an Update by kubectl-client-side-apply.
    let created = record_update_at(
        None,
        &config(2, "nginx:1.25", json!([])),
        "kubectl-client-side-apply",
        UPDATE,
        T0,
    );
    assert!(owns(
        &created,
        "kubectl-client-side-apply",
        "/f:spec/f:replicas"
    ));

    let err = apply(
        Some(&created),
        &config(3, "nginx:1.25", json!([])),
        "kubectl",
        false,
    )
    .unwrap_err();
    let ApplyError::Conflict { causes } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        causes,
        &[ConflictCause {
            manager: "kubectl-client-side-apply".into(),
            api_version: "apps/v1".into(),
            field: ".spec.replicas".into(),
        }]
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        causes[0].to_status_cause(),
        json!({"reason":"FieldManagerConflict","message":"conflict with \"kubectl-client-side-apply\" using apps/v1","field":".spec.replicas"})
    );

    // The same value is no conflict: both own it.
    let shared = apply(
        Some(&created),
        &config(2, "nginx:1.25", json!([])),
        "kubectl",
        false,
    )
    .unwrap();
    assert!(owns(&shared, "kubectl", "/f:spec/f:replicas"));
    assert!(owns(
        &shared,
        "kubectl-client-side-apply",
        "/f:spec/f:replicas"
    ));

    // Forced: the field moves.
    let forced = apply(
        Some(&created),
        &config(3, "nginx:1.25", json!([])),
        "kubectl",
        true,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(owns(&forced, "kubectl", "/f:spec/f:replicas"));
    assert!(!owns(
        &forced,
        "kubectl-client-side-apply",
        "/f:spec/f:replicas"
    ));
    assert!(owns(
        &forced,
        "kubectl-client-side-apply",
        "/f:spec/f:selector"
    ));
}

#[test]
fn several_conflicts_are_all_reported() {
    let created = record_update_at(None, &config(2, "a", json!([])), "other", UPDATE, T0);
    let err = apply(Some(&created), &config(3, "b", json!([])), "kubectl", false).unwrap_err();
    let ApplyError::Conflict { causes } = &err else {
        panic!("{err}");
    };
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            ".spec.replicas",
            ".spec.template.spec.containers[name=\"nginx\"].image"
        ]
    );
    assert!(
        err.to_string()
            .starts_with("Apply failed with 2 conflicts:")
    );
}

#[test]
fn fields_no_longer_applied_are_removed_unless_owned_by_someone_else() {
    let first = apply(
        None,
        &config(
            2,
            "nginx:1.25",
            json!([{ "name": "A", "value": "1" }, { "name": "B", "value": "2" }]),
        ),
        "kubectl",
        false,
    )
    .unwrap();
    // Someone else adds a label and a container.
    let mut edited = first.clone();
    edited["metadata"]["labels"]["team"] = "a".into();
    edited["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "sidecar", "image": "busybox" }));
    let edited = record_update_at(Some(&first), &edited, "kubectl-edit", UPDATE, T0);
    assert!(owns(&edited, "kubectl-edit", "/f:metadata/f:labels/f:team"));
    assert!(owns(
        &edited,
        "kubectl-edit",
        "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"sidecar\"}/."
    ));

    // Second apply: new image, env B and the ports gone.
    let mut second_cfg = config(2, "nginx:1.26", json!([{ "name": "A", "value": "1" }]));
    second_cfg["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let second =
        server_side_apply_at(Some(&edited), &second_cfg, "kubectl", false, DEPLOYMENT, T1).unwrap();
    let containers = second["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2, "the sidecar someone else owns stays");
    assert_eq!(containers[0]["image"], "nginx:1.26");
    assert_eq!(containers[0]["env"], json!([{ "name": "A", "value": "1" }]));
    assert!(containers[0].get("ports").is_none());
    assert_eq!(
        second["metadata"]["labels"],
        json!({ "app": "web", "team": "a" })
    );
    let mine = entry(&second, "kubectl").unwrap();
    assert_eq!(mine["time"], T1);
    assert!(mine["fieldsV1"].to_string().contains("\"f:env\""));
    assert!(
        !mine["fieldsV1"]
            .to_string()
            .contains("k:{\\\"name\\\":\\\"B\\\"}")
    );
    assert_eq!(entry(&second, "kubectl-edit").unwrap()["time"], T0);
}

#[test]
fn a_field_two_managers_applied_survives_when_one_stops() {
    let cfg = config(2, "nginx:1.25", json!([]));
    let a = apply(None, &cfg, "a", false).unwrap();
    let b = apply(Some(&a), &cfg, "b", false).unwrap();
    let mut without_replicas = cfg.clone();
    without_replicas["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    let out = apply(Some(&b), &without_replicas, "a", false).unwrap();
    assert_eq!(out["spec"]["replicas"], 2, "b still owns it");
    assert!(!owns(&out, "a", "/f:spec/f:replicas"));
    let out = apply(Some(&out), &without_replicas, "b", false).unwrap();
    assert!(
        out["spec"].get("replicas").is_none(),
        "nobody owns it any more"
    );
}

#[test]
fn atomic_lists_and_structs_are_replaced_and_owned_whole() {
    let mut cfg = config(2, "nginx:1.25", json!([]));
    cfg["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a", "b"]);
    let first = apply(None, &cfg, "kubectl", false).unwrap();
    cfg["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["c"]);
    cfg["spec"]["selector"] =
        json!({ "matchExpressions": [{ "key": "app", "operator": "Exists" }] });
    let out = apply(Some(&first), &cfg, "kubectl", false).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["c"])
    );
    // LabelSelector is atomic: no merge with the old matchLabels.
    assert_eq!(
        out["spec"]["selector"],
        json!({ "matchExpressions": [{ "key": "app", "operator": "Exists" }] })
    );
    let f = &entry(&out, "kubectl").unwrap()["fieldsV1"];
    assert_eq!(f.pointer("/f:spec/f:selector"), Some(&json!({})));
    assert_eq!(
        f.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"nginx\"}/f:args"),
        Some(&json!({}))
    );
}

#[test]
fn sets_merge_by_value() {
    let pod = |finalizers: Value| json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","finalizers":finalizers}});
    let kind = ("", "v1", "Pod");
    let a = server_side_apply_at(None, &pod(json!(["x"])), "a", false, kind, T0).unwrap();
    let b = server_side_apply_at(Some(&a), &pod(json!(["y"])), "b", false, kind, T0).unwrap();
    assert_eq!(b["metadata"]["finalizers"], json!(["x", "y"]));
    assert!(owns(&b, "b", "/f:metadata/f:finalizers/v:\"y\""));
    let a2 = server_side_apply_at(Some(&b), &pod(json!([])), "a", false, kind, T0).unwrap();
    assert_eq!(a2["metadata"]["finalizers"], json!(["y"]));
}

#[test]
fn an_unchanged_apply_returns_the_live_object() {
    let cfg = config(2, "nginx:1.25", json!([]));
    let first = apply(None, &cfg, "kubectl", false).unwrap();
    let again = server_side_apply_at(Some(&first), &cfg, "kubectl", false, DEPLOYMENT, T1).unwrap();
    assert_eq!(again, first);
}

#[test]
fn invalid_configurations_are_refused() {
    let cfg = config(2, "nginx:1.25", json!([]));
    let mut no_kind = cfg.clone();
    no_kind.as_object_mut().unwrap().remove("kind");
    let mut wrong = cfg.clone();
    wrong["apiVersion"] = "apps/v2".into();
    let mut no_key = cfg.clone();
    no_key["spec"]["template"]["spec"]["containers"] = json!([{ "image": "x" }]);
    let mut dup = cfg.clone();
    dup["spec"]["template"]["spec"]["containers"] = json!([{ "name": "a" }, { "name": "a" }]);
    for bad in [no_kind, wrong, no_key, dup, json!([1])] {
        assert!(
            matches!(
                apply(None, &bad, "kubectl", false),
                Err(ApplyError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        apply(None, &cfg, "", false),
        Err(ApplyError::Invalid { .. })
    ));
}

#[test]
fn apply_bodies_are_json_or_yaml() {
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n";
    assert_eq!(
        parse_apply_body(yaml).unwrap(),
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1"}})
    );
    assert_eq!(parse_apply_body(br#"{"a":1}"#).unwrap(), json!({"a":1}));
    assert!(matches!(
        parse_apply_body(b"- 1\n- 2\n"),
        Err(ApplyError::InvalidBody { .. })
    ));
    assert!(matches!(
        parse_apply_body(b"a: [unclosed"),
        Err(ApplyError::InvalidBody { .. })
    ));
    assert!(parse_apply_body(b"\xff\xfe").is_err());
}

#[test]
fn record_update_tracks_creates_updates_and_resets() {
    let obj = config(2, "nginx:1.25", json!([]));
    let created = record_update_at(None, &obj, "kubectl-create", UPDATE, T0);
    let e = entry(&created, "kubectl-create").unwrap();
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["apiVersion"], "apps/v1");
    // New maps and list elements are members themselves (`.`); structs are not.
    assert_eq!(
        e["fieldsV1"]["f:metadata"],
        json!({"f:labels":{".":{},"f:app":{}}})
    );
    assert!(e["fieldsV1"].pointer("/f:spec/.").is_none());
    assert!(e["fieldsV1"].pointer("/f:apiVersion").is_none());

    // kubectl scale: another manager changes replicas and takes it over.
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = 5.into();
    let scaled = record_update_at(Some(&created), &scaled, "kubectl-scale", UPDATE, T1);
    assert!(owns(&scaled, "kubectl-scale", "/f:spec/f:replicas"));
    assert!(!owns(&scaled, "kubectl-create", "/f:spec/f:replicas"));
    assert_eq!(entry(&scaled, "kubectl-create").unwrap()["time"], T0);
    assert_eq!(entry(&scaled, "kubectl-scale").unwrap()["time"], T1);

    // A write that changes nothing records nothing new.
    let same = record_update_at(Some(&scaled), &scaled, "noop", UPDATE, T1);
    assert!(entry(&same, "noop").is_none());
    assert_eq!(same, scaled);

    // A removed field leaves every set.
    let mut removed = scaled.clone();
    removed["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let removed = record_update_at(Some(&scaled), &removed, "x", UPDATE, T1);
    assert!(!owns(&removed, "kubectl-create", "/f:metadata/f:labels"));

    // An empty managedFields in the request resets them.
    let mut reset = scaled.clone();
    reset["metadata"]["managedFields"] = json!([]);
    let reset = record_update_at(Some(&scaled), &reset, "", UPDATE, T1);
    assert!(reset["metadata"].get("managedFields").is_none());
}

#[test]
fn rfc3339_formats_civil_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert!(now_rfc3339().ends_with('Z'));
}

#[test]
fn odd_input_is_an_error_or_a_value_never_a_panic() {
    let base = config(2, "nginx:1.25", json!([]));
    let live = apply(None, &base, "kubectl", false).unwrap();
    let odd = [
        json!({"spec":{"template":{"spec":{"containers":"x"}}}}),
        json!({"spec":{"template":{"spec":{"containers":[1,2]}}}}),
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":{},"ports":[[1]]}]}}}}),
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","ports":[{"containerPort":null}]}]}}}}),
        json!({"metadata":5,"spec":null}),
        json!({"metadata":{"managedFields":"junk","finalizers":{"a":1}}}),
    ];
    for o in odd {
        let mut cfg = json!({"apiVersion":"apps/v1","kind":"Deployment"});
        json_patch::merge(&mut cfg, &o);
        let _ = apply(Some(&live), &cfg, "kubectl", false);
        let _ = apply(None, &cfg, "other", true);
        let _ = record_update_at(Some(&live), &cfg, "x", UPDATE, T0);
        let _ = record_update_at(Some(&cfg), &live, "x", UPDATE, T0);
    }
    let mut garbage = live.clone();
    garbage["metadata"]["managedFields"] =
        json!([1, {"fieldsType":"FieldsV1","fieldsV1":[1]}, {"manager":"m"}]);
    let out = apply(Some(&garbage), &base, "kubectl", false).unwrap();
    assert_eq!(entries(&out).len(), 1);
    assert_eq!(record_update_at(None, &json!(7), "m", UPDATE, T0), json!(7));
}
