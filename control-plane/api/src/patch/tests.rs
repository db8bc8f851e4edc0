use serde_json::{Value, json};

use super::*;

const DEPLOYMENT: Kind<'static> = ("apps", "v1", "Deployment");
const NODE: Kind<'static> = ("", "v1", "Node");
const POD: Kind<'static> = ("", "v1", "Pod");

/// A live Deployment as the server stores it (defaults filled in).
fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": { "app": "web" },
            "annotations": { "deployment.kubernetes.io/revision": "1" },
            "resourceVersion": "7",
        },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" },
            },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "imagePullPolicy": "IfNotPresent",
                            "env": [
                                { "name": "A", "value": "1" },
                                { "name": "B", "value": "2" },
                            ],
                            "ports": [
                                { "containerPort": 80, "protocol": "TCP" },
                                { "containerPort": 443, "protocol": "TCP" },
                            ],
                            "terminationMessagePath": "/dev/termination-log",
                        },
                        { "name": "sidecar", "image": "busybox", "args": ["sleep", "1d"] },
                    ],
                    "restartPolicy": "Always",
                    "tolerations": [{ "key": "a", "operator": "Exists" }],
                    "volumes": [{ "name": "cfg", "configMap": { "name": "web" } }],
                },
            },
        },
        "status": { "replicas": 2 },
    })
}

fn smp(kind: Kind<'_>, target: &Value, patch: Value) -> Value {
    strategic_merge_patch(kind, target, &patch).unwrap()
}

fn containers(d: &Value) -> &Vec<Value> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect()
}

#[test]
fn kubectl_set_image() {
    // kubectl set image deployment/web nginx=nginx:1.26
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},{"name":"sidecar"}],"containers":[{"image":"nginx:1.26","name":"nginx"}]}}}}),
    );
    let c = containers(&out);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["image"], "nginx:1.26");
    assert_eq!(c[0]["env"].as_array().unwrap().len(), 2);
    assert_eq!(c[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c[1]["image"], "busybox");
    assert_eq!(out["status"], live_deployment()["status"]);
}

#[test]
fn kubectl_apply_second_run_changes_image_and_removes_an_env_var_and_a_port() {
    // The 3-way patch kubectl apply computes (last-applied had env A,B and ports 80,443;
    // the manifest now has nginx:1.26, env A, port 80).
    let last_applied = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"name":"web","namespace":"default"},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"env":[{"name":"A","value":"1"}],"image":"nginx:1.26","name":"nginx","ports":[{"containerPort":80}]}]}}}}"#;
    let patch = json!({
        "metadata": { "annotations": { "kubectl.kubernetes.io/last-applied-configuration": last_applied } },
        "spec": { "template": { "spec": {
            "$setElementOrder/containers": [{ "name": "nginx" }],
            "containers": [{
                "$setElementOrder/env": [{ "name": "A" }],
                "$setElementOrder/ports": [{ "containerPort": 80 }],
                "env": [{ "$patch": "delete", "name": "B" }],
                "image": "nginx:1.26",
                "name": "nginx",
                "ports": [{ "$patch": "delete", "containerPort": 443 }],
            }],
        } } },
    });
    let out = smp(DEPLOYMENT, &live_deployment(), patch);
    let c = containers(&out);
    assert_eq!(c[0]["image"], "nginx:1.26");
    assert_eq!(c[0]["env"], json!([{ "name": "A", "value": "1" }]));
    assert_eq!(
        c[0]["ports"],
        json!([{ "containerPort": 80, "protocol": "TCP" }])
    );
    // Server-set and other-owner fields survive.
    assert_eq!(c[0]["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"]),
        ["nginx", "sidecar"]
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        last_applied
    );
    assert_eq!(
        out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    // No directive leaks into the stored object.
    assert!(!out.to_string().contains('$'));
}

#[test]
fn kubectl_apply_removing_a_whole_field_sends_null() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},{"name":"sidecar"}],"containers":[{"env":null,"name":"nginx"}]}}}}),
    );
    assert!(containers(&out)[0].get("env").is_none());
    assert_eq!(containers(&out)[0]["ports"].as_array().unwrap().len(), 2);
}

#[test]
fn kubectl_rollout_restart() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-26T10:00:00Z"}}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["metadata"],
        json!({"labels":{"app":"web"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-26T10:00:00Z"}})
    );
}

#[test]
fn kubectl_cordon_and_uncordon() {
    let node = json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"spec":{"podCIDR":"10.0.0.0/24"}});
    let out = smp(NODE, &node, json!({"spec":{"unschedulable":true}}));
    assert_eq!(
        out["spec"],
        json!({"podCIDR":"10.0.0.0/24","unschedulable":true})
    );
    let back = smp(NODE, &out, json!({"spec":{"unschedulable":null}}));
    assert_eq!(back, node);
}

#[test]
fn kubectl_edit_replicas_and_a_label() {
    // kubectl edit sends the two-way patch between what it showed and what was saved.
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"metadata":{"labels":{"tier":"frontend"}},"spec":{"replicas":5}}),
    );
    assert_eq!(out["spec"]["replicas"], 5);
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app":"web","tier":"frontend"})
    );
    assert_eq!(containers(&out), containers(&live_deployment()));
}

#[test]
fn kubectl_label_and_annotate_send_merge_patches() {
    // kubectl label deployment web env=prod; kubectl label deployment web app-
    let labelled = merge_patch(
        &live_deployment(),
        &json!({"metadata":{"labels":{"env":"prod"}}}),
    )
    .unwrap();
    assert_eq!(
        labelled["metadata"]["labels"],
        json!({"app":"web","env":"prod"})
    );
    let unlabelled = merge_patch(&labelled, &json!({"metadata":{"labels":{"app":null}}})).unwrap();
    assert_eq!(unlabelled["metadata"]["labels"], json!({"env":"prod"}));
    // kubectl annotate deployment web owner=team-a
    let annotated = merge_patch(
        &live_deployment(),
        &json!({"metadata":{"annotations":{"owner":"team-a"}}}),
    )
    .unwrap();
    assert_eq!(
        annotated["metadata"]["annotations"],
        json!({"deployment.kubernetes.io/revision":"1","owner":"team-a"})
    );
    // The same bodies as strategic merge patches give the same result.
    assert_eq!(
        smp(
            DEPLOYMENT,
            &live_deployment(),
            json!({"metadata":{"labels":{"env":"prod"}}})
        ),
        labelled
    );
}

#[test]
fn kubectl_scale_merge_patch_and_merge_patch_replaces_lists() {
    let out = merge_patch(&live_deployment(), &json!({"spec":{"replicas":3}})).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    let out = merge_patch(
        &live_deployment(),
        &json!({"spec":{"template":{"spec":{"containers":[{"name":"only"}]}}}}),
    )
    .unwrap();
    assert_eq!(containers(&out), &vec![json!({"name":"only"})]);
    assert!(matches!(
        merge_patch(&live_deployment(), &json!([1])),
        Err(PatchError::NotAnObject { .. })
    ));
}

#[test]
fn kubectl_rollout_undo_json_patch() {
    let template = json!({"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx:1.24"}]}});
    let out = json_patch(
        &live_deployment(),
        &json!([
            {"op":"replace","path":"/spec/template","value":template},
            {"op":"replace","path":"/metadata/annotations","value":{"deployment.kubernetes.io/revision":"3"}},
        ]),
    )
    .unwrap();
    assert_eq!(out["spec"]["template"], template);
    assert_eq!(
        out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
}

#[test]
fn json_patch_errors_are_clean() {
    let live = live_deployment();
    let err = json_patch(&live, &json!({"op":"add"})).unwrap_err();
    assert!(matches!(err, PatchError::InvalidJsonPatch { .. }), "{err}");
    let err = json_patch(&live, &json!([{"op":"frobnicate","path":"/a"}])).unwrap_err();
    assert!(matches!(err, PatchError::InvalidJsonPatch { .. }), "{err}");
    let err = json_patch(
        &live,
        &json!([{"op":"replace","path":"/spec/replicas","value":9},{"op":"test","path":"/spec/replicas","value":2}]),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::JsonPatch { .. }), "{err}");
    let err = json_patch(&live, &json!([{"op":"remove","path":"/spec/nope"}])).unwrap_err();
    assert!(err.to_string().contains("/spec/nope"), "{err}");
    // add, remove, move, copy, test
    let out = json_patch(
        &live,
        &json!([
            {"op":"add","path":"/metadata/labels/x","value":"y"},
            {"op":"remove","path":"/status"},
            {"op":"copy","from":"/metadata/labels/x","path":"/metadata/labels/z"},
            {"op":"move","from":"/metadata/labels/x","path":"/metadata/labels/w"},
            {"op":"test","path":"/spec/replicas","value":2},
        ]),
    )
    .unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app":"web","w":"y","z":"y"})
    );
    assert!(out.get("status").is_none());
}

#[test]
fn merge_lists_by_key() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"containers":[
            {"name":"sidecar","args":["sleep","2d"]},
            {"name":"new","image":"redis"},
        ]}}}}),
    );
    let c = containers(&out);
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"]),
        ["nginx", "sidecar", "new"]
    );
    // `args` is atomic: replaced, not merged.
    assert_eq!(c[1]["args"], json!(["sleep", "2d"]));
    assert_eq!(c[1]["image"], "busybox");
    // env merges by name inside a merged container.
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"B","value":"20"},{"name":"C","value":"3"}]}]}}}}),
    );
    assert_eq!(
        containers(&out)[0]["env"],
        json!([{"name":"A","value":"1"},{"name":"B","value":"20"},{"name":"C","value":"3"}])
    );
}

#[test]
fn delete_list_elements_by_key() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"containers":[{"$patch":"delete","name":"sidecar"}]}}}}),
    );
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"]),
        ["nginx"]
    );
    let err = strategic_merge_patch(
        DEPLOYMENT,
        &live_deployment(),
        &json!({"spec":{"template":{"spec":{"containers":[{"$patch":"delete","image":"x"}]}}}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("merge key"), "{err}");
    let err = strategic_merge_patch(
        DEPLOYMENT,
        &live_deployment(),
        &json!({"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Invalid { .. }), "{err}");
}

#[test]
fn set_element_order_reorders_and_interleaves_server_only_elements() {
    let mut live = live_deployment();
    live["spec"]["template"]["spec"]["containers"] =
        json!([{"name":"a"},{"name":"s"},{"name":"b"},{"name":"c"}]);
    let out = smp(
        DEPLOYMENT,
        &live,
        json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"},{"name":"a"},{"name":"b"}]}}}}),
    );
    // c, a, b in the patch's order; s (server only) goes before the first listed element
    // that came after it on the server (c), as upstream's mergeSortedSlice places it.
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"]),
        ["s", "c", "a", "b"]
    );
    let out = smp(
        DEPLOYMENT,
        &live,
        json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"},{"name":"c"}]}}}}),
    );
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"]),
        ["s", "b", "a", "c"]
    );

    // Primitive lists too, with a parallel merge.
    let pod = json!({"metadata":{"name":"p","finalizers":["x","y"]}});
    let out = smp(
        POD,
        &pod,
        json!({"metadata":{"$setElementOrder/finalizers":["z","y","x"],"finalizers":["z"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["z", "y", "x"]));
}

#[test]
fn primitive_lists_with_merge_strategy_union_and_delete() {
    let pod = json!({"metadata":{"name":"p","finalizers":["a","b"]}});
    let out = smp(POD, &pod, json!({"metadata":{"finalizers":["b","c"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    let out = smp(
        POD,
        &pod,
        json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a","zz"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    // Deleting from a list the object does not have changes nothing.
    let out = smp(
        POD,
        &json!({"metadata":{"name":"p"}}),
        json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}),
    );
    assert_eq!(out, json!({"metadata":{"name":"p"}}));
}

#[test]
fn atomic_and_unknown_lists_are_replaced() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"tolerations":[{"key":"b","operator":"Exists"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["tolerations"],
        json!([{"key":"b","operator":"Exists"}])
    );
    let mut live = live_deployment();
    live["spec"]["unknownList"] = json!([{"name":"a"}]);
    let out = smp(
        DEPLOYMENT,
        &live,
        json!({"spec":{"unknownList":[{"name":"b"}]}}),
    );
    assert_eq!(out["spec"]["unknownList"], json!([{"name":"b"}]));
}

#[test]
fn null_deletes_and_unmatched_nulls_are_ignored() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"metadata":{"labels":{"app":null,"gone":null}},"spec":{"newField":{"a":null,"b":1}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({}));
    assert_eq!(out["spec"]["newField"], json!({"b":1}));
}

#[test]
fn patch_replace_and_delete_directives() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"metadata":{"labels":{"$patch":"replace","v":"2"}}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["labels"],
        json!({"v":"2"})
    );
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"containers":[{"$patch":"replace"},{"name":"only","image":"x"}]}}}}),
    );
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"]),
        ["only"]
    );
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"metadata":{"annotations":{"$patch":"delete"}}}),
    );
    assert_eq!(out["metadata"]["annotations"], json!({}));
    // `$patch: merge` is the default made explicit.
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"metadata":{"labels":{"$patch":"merge","x":"y"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"app":"web","x":"y"}));
    let err = strategic_merge_patch(
        DEPLOYMENT,
        &live_deployment(),
        &json!({"metadata":{"labels":{"$patch":"frob"}}}),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Invalid { .. }));
}

#[test]
fn retain_keys_switches_the_deployment_strategy() {
    // RollingUpdate -> Recreate: kubectl apply sends $retainKeys and nulls rollingUpdate.
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type":"Recreate"}));
    // Even without the explicit null, $retainKeys clears the other member.
    let recreate = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type":"Recreate"}));
    // Recreate -> RollingUpdate.
    let back = smp(
        DEPLOYMENT,
        &recreate,
        json!({"spec":{"strategy":{"$retainKeys":["rollingUpdate","type"],"rollingUpdate":{"maxSurge":1},"type":"RollingUpdate"}}}),
    );
    assert_eq!(
        back["spec"]["strategy"],
        json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}})
    );
    // A field set by the patch must be retained.
    let err = strategic_merge_patch(
        DEPLOYMENT,
        &live_deployment(),
        &json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{"maxSurge":1}}}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("$retainKeys"), "{err}");
}

#[test]
fn retain_keys_in_a_merged_volume() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"$setElementOrder/volumes":[{"name":"cfg"}],"volumes":[{"$retainKeys":["name","secret"],"name":"cfg","secret":{"secretName":"s"}}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name":"cfg","secret":{"secretName":"s"}}])
    );
}

#[test]
fn ports_merge_on_container_port_and_service_ports_on_port() {
    let out = smp(
        DEPLOYMENT,
        &live_deployment(),
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","ports":[{"containerPort":443,"name":"https"},{"containerPort":8080}]}]}}}}),
    );
    assert_eq!(
        containers(&out)[0]["ports"],
        json!([
            {"containerPort":80,"protocol":"TCP"},
            {"containerPort":443,"protocol":"TCP","name":"https"},
            {"containerPort":8080},
        ])
    );
    let svc = json!({"metadata":{"name":"s"},"spec":{"ports":[{"port":80,"targetPort":8080},{"port":443}]}});
    let out = smp(
        ("", "v1", "Service"),
        &svc,
        json!({"spec":{"ports":[{"port":80,"targetPort":9090}]}}),
    );
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port":80,"targetPort":9090},{"port":443}])
    );
}

#[test]
fn owner_references_merge_on_uid_and_conditions_on_type() {
    let pod = json!({"metadata":{"name":"p","ownerReferences":[{"uid":"1","name":"a"}]},
        "status":{"conditions":[{"type":"Ready","status":"False"},{"type":"Initialized","status":"True"}]}});
    let out = smp(
        POD,
        &pod,
        json!({"metadata":{"ownerReferences":[{"uid":"2","name":"b"}]},"status":{"conditions":[{"type":"Ready","status":"True"}]}}),
    );
    // Without $setElementOrder, elements new to the list go before the server-only ones
    // (upstream's mergeSortedSlice cannot compare them, and takes the patch's first).
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"uid":"2","name":"b"},{"uid":"1","name":"a"}])
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type":"Ready","status":"True"},{"type":"Initialized","status":"True"}])
    );
}

#[test]
fn new_values_are_cleaned_of_directives() {
    let out = smp(
        POD,
        &json!({"metadata":{"name":"p"}}),
        json!({"spec":{"$setElementOrder/containers":[{"name":"a"}],"containers":[{"name":"a","env":[{"$patch":"delete","name":"x"}]}]}}),
    );
    assert_eq!(out["spec"], json!({"containers":[{"name":"a","env":[]}]}));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let live = live_deployment();
    assert!(matches!(
        strategic_merge_patch(("example.com", "v1", "Widget"), &live, &json!({})),
        Err(PatchError::UnsupportedKind { .. })
    ));
    assert!(matches!(
        strategic_merge_patch(DEPLOYMENT, &live, &json!([])),
        Err(PatchError::NotAnObject { .. })
    ));
    assert!(matches!(
        strategic_merge_patch(DEPLOYMENT, &json!(1), &json!({})),
        Err(PatchError::NotAnObject { .. })
    ));
    for patch in [
        json!({"$retainKeys":"type"}),
        json!({"$setElementOrder/x":1}),
        json!({"$frob":1}),
        json!({"spec":{"template":{"spec":{"containers":[[1]]}}}}),
        json!({"spec":{"template":{"spec":{"containers":[1,{"name":"a"}]}}}}),
        json!({"spec":{"template":{"spec":{"containers":[{"$patch":7,"name":"a"}]}}}}),
    ] {
        assert!(
            strategic_merge_patch(DEPLOYMENT, &live, &patch).is_err(),
            "{patch}"
        );
    }
    // Type changes replace.
    let out = smp(
        DEPLOYMENT,
        &live,
        json!({"spec":{"template":{"spec":{"containers":"x"}}}}),
    );
    assert_eq!(out["spec"]["template"]["spec"]["containers"], "x");
}
