use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;
use crate::registry::{self, RESOURCES};

const NOW: &str = "2025-01-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn res(group: &str, version: &str, plural: &str) -> &'static Resource {
    registry::find(group, version, plural).unwrap()
}

fn table(resource: &Resource, items: &[Value]) -> Value {
    to_table_at(resource, items, json!({"resourceVersion": "42"}), now()).unwrap()
}

/// The cells of the one row of `obj`, checking they line up with the columns.
fn cells(resource: &Resource, obj: Value) -> Value {
    let t = table(resource, &[obj]);
    let columns = t["columnDefinitions"].as_array().unwrap().len();
    let cells = t["rows"][0]["cells"].clone();
    assert_eq!(cells.as_array().unwrap().len(), columns, "{cells}");
    cells
}

fn meta(name: &str, age: &str) -> Value {
    json!({"name": name, "namespace": "default", "uid": "u-1", "creationTimestamp": age})
}

#[test]
fn human_duration_matches_apimachinery() {
    let cases: &[(i64, &str)] = &[
        (-5, "<invalid>"),
        (-2, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (123, "2m3s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 4 * 60, "3h4m"),
        (8 * 3600 - 60, "7h59m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 59 * 60, "47h"),
        (48 * 3600, "2d"),
        (53 * 3600, "2d5h"),
        (8 * 86400 - 3600, "7d23h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (8 * 365 * 86400, "8y"),
        (10 * 365 * 86400 + 86400, "10y"),
    ];
    for (secs, want) in cases {
        assert_eq!(
            human_duration(SignedDuration::from_secs(*secs)),
            *want,
            "{secs}s"
        );
    }
    // Fractions truncate like Go's int(d.Seconds()).
    assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
    assert_eq!(human_duration(SignedDuration::from_millis(5999)), "5s");
}

#[test]
fn table_shape_is_meta_v1_table_with_partial_object_metadata() {
    let pods = res("", "v1", "pods");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns1", "resourceVersion": "7", "labels": {"a": "b"},
                     "creationTimestamp": "2025-01-01T11:59:00Z"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    });
    let t = table(pods, std::slice::from_ref(&pod));
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(
        t["columnDefinitions"][0],
        json!({"name": "Name", "type": "string", "format": "name",
               "description": "Name must be unique within a namespace. Cannot be updated.",
               "priority": 0})
    );
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let wide: Vec<i64> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": pod["metadata"]})
    );
    assert!(t["rows"][0].get("conditions").is_none());

    let full = to_table_with(
        pods,
        std::slice::from_ref(&pod),
        Value::Null,
        now(),
        TableOptions {
            include_object: IncludeObject::Object,
            no_headers: true,
        },
    )
    .unwrap();
    assert_eq!(full["rows"][0]["object"], pod);
    assert_eq!(full["columnDefinitions"], json!([]));
    assert_eq!(full["metadata"], json!({}));
    let none = to_table_with(
        pods,
        std::slice::from_ref(&pod),
        Value::Null,
        now(),
        TableOptions {
            include_object: IncludeObject::None,
            no_headers: false,
        },
    )
    .unwrap();
    assert_eq!(none["rows"][0]["object"], Value::Null);
    assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
    assert_eq!(IncludeObject::parse("All"), None);
}

#[test]
fn watch_event_table_has_one_row_and_the_objects_resource_version() {
    let pods = res("", "v1", "pods");
    let pod = json!({"metadata": {"name": "p", "namespace": "d", "resourceVersion": "99"},
                     "spec": {"containers": []}});
    let first = table_for_watch_event(pods, &pod, now(), true).unwrap();
    assert_eq!(first["rows"].as_array().unwrap().len(), 1);
    assert_eq!(first["metadata"], json!({"resourceVersion": "99"}));
    assert_eq!(first["columnDefinitions"].as_array().unwrap().len(), 9);
    let later = table_for_watch_event(pods, &pod, now(), false).unwrap();
    assert_eq!(later["columnDefinitions"], json!([]));
    assert_eq!(later["rows"], first["rows"]);
}

#[test]
fn every_served_resource_prints_minimal_and_empty_objects() {
    for r in RESOURCES {
        for obj in [
            json!({"metadata": {"name": "x", "namespace": "d", "creationTimestamp": "2025-01-01T11:00:00Z"}}),
            json!({}),
        ] {
            let t = to_table_at(r, &[obj], Value::Null, now())
                .unwrap_or_else(|e| panic!("{}: {e}", r.plural));
            let columns = t["columnDefinitions"].as_array().unwrap();
            assert!(columns.len() >= 2, "{}", r.plural);
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                columns.len(),
                "{}",
                r.plural
            );
            for c in columns {
                for k in ["name", "type", "format", "description", "priority"] {
                    assert!(c.get(k).is_some(), "{} column lacks {k}", r.plural);
                }
            }
        }
    }
}

#[test]
fn an_object_of_the_wrong_shape_is_an_error_not_a_panic() {
    let pods = res("", "v1", "pods");
    let bad = json!({"metadata": {"name": "bad"}, "spec": {"containers": "oops"}});
    let err = to_table_at(pods, &[json!({}), bad], Value::Null, now()).unwrap_err();
    let TableError::Decode {
        kind, index, name, ..
    } = &err;
    assert_eq!((*kind, *index, name.as_str()), ("Pod", 1, "bad"));
    assert!(err.to_string().contains("item 1 (Pod \"bad\")"), "{err}");
    for r in RESOURCES {
        assert!(to_table_at(r, &[json!("not an object")], Value::Null, now()).is_err());
        assert!(
            to_table_at(
                r,
                &[json!({"metadata": {"creationTimestamp": "yesterday"}})],
                Value::Null,
                now()
            )
            .is_err(),
            "{}",
            r.plural
        );
    }
}

#[test]
fn column_names_are_what_kubectl_prints() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "",
            "v1",
            "services",
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR",
            ],
        ),
        (
            "apps",
            "v1",
            "deployments",
            &[
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR",
            ],
        ),
        (
            "batch",
            "v1",
            "jobs",
            &[
                "NAME",
                "STATUS",
                "COMPLETIONS",
                "DURATION",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR",
            ],
        ),
        (
            "",
            "v1",
            "nodes",
            &[
                "NAME",
                "STATUS",
                "ROLES",
                "AGE",
                "VERSION",
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        (
            "",
            "v1",
            "events",
            &[
                "LAST SEEN",
                "TYPE",
                "REASON",
                "OBJECT",
                "SUBOBJECT",
                "SOURCE",
                "MESSAGE",
                "FIRST SEEN",
                "COUNT",
                "NAME",
            ],
        ),
        (
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            &[
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE",
            ],
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            &["NAME", "CREATED AT"],
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
        ),
        ("", "v1", "secrets", &["NAME", "TYPE", "DATA", "AGE"]),
        ("", "v1", "namespaces", &["NAME", "STATUS", "AGE"]),
    ];
    for (g, v, plural, want) in cases {
        assert_eq!(column_names(res(g, v, plural)), *want, "{plural}");
    }
}

#[test]
fn pod_rows() {
    let pods = res("", "v1", "pods");
    let running = |name: &str| {
        json!({"name": name, "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                                      "state": {"running": {"startedAt": "2025-01-01T10:00:00Z"}}})
    };
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "running with restarts",
            json!({
                "metadata": meta("web-1", "2025-01-01T10:00:00Z"),
                "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "busybox"}]},
                "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": "app", "ready": true, "restartCount": 3, "image": "nginx", "imageID": "",
                         "state": {"running": {"startedAt": "2025-01-01T11:55:00Z"}},
                         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2025-01-01T11:55:00Z"}}},
                        running("side"),
                    ]},
            }),
            json!([
                "web-1",
                "2/2",
                "Running",
                "3 (5m ago)",
                "120m",
                "10.244.0.5",
                "node-a",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "crash loop",
            json!({
                "metadata": meta("crash", "2025-01-01T11:30:00Z"),
                "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "bad"}]},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.6"}],
                    "containerStatuses": [
                        {"name": "app", "ready": false, "restartCount": 5, "image": "bad", "imageID": "",
                         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2025-01-01T11:58:00Z"}}},
                    ]},
            }),
            json!([
                "crash",
                "0/1",
                "CrashLoopBackOff",
                "5 (2m ago)",
                "30m",
                "10.244.0.6",
                "node-a",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "terminating",
            json!({
                "metadata": {"name": "old", "creationTimestamp": "2024-12-30T12:00:00Z", "deletionTimestamp": "2025-01-01T12:00:30Z"},
                "spec": {"containers": [{"name": "app"}]},
                "status": {"phase": "Running", "containerStatuses": [running("app")]},
            }),
            json!([
                "old",
                "1/1",
                "Terminating",
                "0",
                "2d",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "completed job pod",
            json!({
                "metadata": meta("pi-x7k2", "2025-01-01T11:58:57Z"),
                "spec": {"nodeName": "n", "restartPolicy": "Never", "containers": [{"name": "pi"}]},
                "status": {"phase": "Succeeded", "podIP": "10.1.1.1",
                    "containerStatuses": [{"name": "pi", "ready": false, "restartCount": 0, "image": "perl", "imageID": "",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2025-01-01T11:59:30Z"}}}]},
            }),
            json!([
                "pi-x7k2",
                "0/1",
                "Completed",
                "0",
                "63s",
                "10.1.1.1",
                "n",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "creating",
            json!({
                "metadata": meta("new", "2025-01-01T11:59:55Z"),
                "spec": {"nodeName": "n", "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                    "image": "i", "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
            }),
            json!([
                "new",
                "0/1",
                "ContainerCreating",
                "0",
                "5s",
                "<none>",
                "n",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "unscheduled",
            json!({
                "metadata": meta("pending", "2025-01-01T11:00:00Z"),
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Pending", "nominatedNodeName": "node-b",
                    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
            }),
            json!([
                "pending", "0/2", "Pending", "0", "60m", "<none>", "<none>", "node-b", "<none>"
            ]),
        ),
        (
            "scheduling gated",
            json!({
                "metadata": meta("gated", "2025-01-01T11:00:00Z"),
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
            }),
            json!([
                "gated",
                "0/1",
                "SchedulingGated",
                "0",
                "60m",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "second init container running",
            json!({
                "metadata": meta("init", "2025-01-01T11:59:00Z"),
                "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "i1", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "i2", "ready": false, "restartCount": 1, "image": "i", "imageID": "",
                         "state": {"running": {}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-01-01T11:59:50Z"}}},
                    ],
                    "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                        "state": {"waiting": {"reason": "PodInitializing"}}}]},
            }),
            json!([
                "init",
                "0/1",
                "Init:1/2",
                "1 (10s ago)",
                "60s",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "init container crash looping",
            json!({
                "metadata": meta("initcrash", "2025-01-01T11:59:00Z"),
                "spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [
                    {"name": "i1", "ready": false, "restartCount": 2, "image": "i", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
            }),
            json!([
                "initcrash",
                "0/1",
                "Init:CrashLoopBackOff",
                "2",
                "60s",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "init container failed with a signal",
            json!({
                "metadata": meta("initsig", "2025-01-01T11:59:00Z"),
                "spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [
                    {"name": "i1", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                     "state": {"terminated": {"exitCode": 137, "signal": 9}}}]},
            }),
            json!([
                "initsig",
                "0/1",
                "Init:Signal:9",
                "0",
                "60s",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "running sidecar counts as a container",
            json!({
                "metadata": meta("sidecar", "2025-01-01T11:00:00Z"),
                "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}],
                         "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"},
                                   {"type": "example.com/lb", "status": "True"}],
                    "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                        "image": "i", "imageID": "", "state": {"running": {}},
                        "lastState": {"terminated": {"exitCode": 2, "finishedAt": "2025-01-01T11:10:00Z"}}}],
                    "containerStatuses": [running("a")]},
            }),
            json!([
                "sidecar",
                "2/2",
                "Running",
                "1 (50m ago)",
                "60m",
                "<none>",
                "<none>",
                "<none>",
                "1/2"
            ]),
        ),
        (
            "container exited without a reason",
            json!({
                "metadata": meta("exit", "2025-01-01T11:00:00Z"),
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Failed", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                    "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 3}}}]},
            }),
            json!([
                "exit",
                "0/1",
                "ExitCode:3",
                "0",
                "60m",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]),
        ),
        (
            "completed container but another still running and ready",
            json!({
                "metadata": meta("half", "2025-01-01T11:00:00Z"),
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": "a", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        running("b")]},
            }),
            json!([
                "half", "1/2", "Running", "0", "60m", "<none>", "<none>", "<none>", "<none>"
            ]),
        ),
        (
            "node lost",
            json!({
                "metadata": {"name": "lost", "creationTimestamp": "2025-01-01T11:00:00Z", "deletionTimestamp": "2025-01-01T11:30:00Z"},
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Running", "reason": "NodeLost"},
            }),
            json!([
                "lost", "0/1", "Unknown", "0", "60m", "<none>", "<none>", "<none>", "<none>"
            ]),
        ),
        (
            "evicted",
            json!({
                "metadata": meta("ev", "2025-01-01T11:00:00Z"),
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Failed", "reason": "Evicted"},
            }),
            json!([
                "ev", "0/1", "Evicted", "0", "60m", "<none>", "<none>", "<none>", "<none>"
            ]),
        ),
    ];
    for (what, obj, want) in cases {
        assert_eq!(cells(pods, obj), want, "{what}");
    }
}

#[test]
fn finished_pods_carry_the_completed_row_condition() {
    let pods = res("", "v1", "pods");
    for (phase, reason) in [("Succeeded", "Succeeded"), ("Failed", "Failed")] {
        let t = table(
            pods,
            &[
                json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"phase": phase}}),
            ],
        );
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["status"], "True");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], reason);
    }
}

#[test]
fn service_rows() {
    let svcs = res("", "v1", "services");
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "node port with external IPs",
            json!({
                "metadata": meta("web", "2025-01-01T11:00:00Z"),
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                         "externalIPs": ["1.2.3.4", "5.6.7.8"], "selector": {"app": "web", "tier": "fe"},
                         "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP", "targetPort": 8080},
                                   {"name": "dns", "port": 53, "nodePort": 30053, "protocol": "UDP"}]},
            }),
            json!([
                "web",
                "NodePort",
                "10.96.0.10",
                "1.2.3.4,5.6.7.8",
                "80:30080/TCP,53:30053/UDP",
                "60m",
                "app=web,tier=fe"
            ]),
        ),
        (
            "cluster IP",
            json!({
                "metadata": meta("kubernetes", "2024-12-01T12:00:00Z"),
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "ports": [{"port": 443, "protocol": "TCP"}]},
            }),
            json!([
                "kubernetes",
                "ClusterIP",
                "10.96.0.1",
                "<none>",
                "443/TCP",
                "31d",
                "<none>"
            ]),
        ),
        (
            "load balancer pending",
            json!({
                "metadata": meta("lb", "2025-01-01T11:59:00Z"),
                "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.20"], "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]},
                "status": {"loadBalancer": {}},
            }),
            json!([
                "lb",
                "LoadBalancer",
                "10.96.0.20",
                "<pending>",
                "80:31000/TCP",
                "60s",
                "<none>"
            ]),
        ),
        (
            "load balancer with ingress and external IPs",
            json!({
                "metadata": meta("lb2", "2025-01-01T11:59:00Z"),
                "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.21"], "externalIPs": ["9.9.9.9"],
                         "ports": [{"port": 80, "protocol": "TCP"}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.9"}]}},
            }),
            json!([
                "lb2",
                "LoadBalancer",
                "10.96.0.21",
                "203.0.113.9,lb.example.com,9.9.9.9",
                "80/TCP",
                "60s",
                "<none>"
            ]),
        ),
        (
            "headless",
            json!({
                "metadata": meta("db", "2025-01-01T11:59:00Z"),
                "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}},
            }),
            json!([
                "db",
                "ClusterIP",
                "None",
                "<none>",
                "<none>",
                "60s",
                "app=db"
            ]),
        ),
        (
            "external name",
            json!({
                "metadata": meta("ext", "2025-01-01T11:59:00Z"),
                "spec": {"type": "ExternalName", "externalName": "db.example.com"},
            }),
            json!([
                "ext",
                "ExternalName",
                "<none>",
                "db.example.com",
                "<none>",
                "60s",
                "<none>"
            ]),
        ),
        (
            "port without protocol prints as kube-apiserver would",
            json!({"metadata": meta("raw", "2025-01-01T11:59:00Z"), "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}),
            json!([
                "raw",
                "ClusterIP",
                "<none>",
                "<none>",
                "80/",
                "60s",
                "<none>"
            ]),
        ),
    ];
    for (what, obj, want) in cases {
        assert_eq!(cells(svcs, obj), want, "{what}");
    }
}

fn template(containers: Value) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}})
}

#[test]
fn workload_rows() {
    let two =
        json!([{"name": "nginx", "image": "nginx:1.25"}, {"name": "log", "image": "fluent-bit"}]);
    let cases: Vec<(&Resource, Value, Value)> = vec![
        (
            res("apps", "v1", "deployments"),
            json!({
                "metadata": meta("web", "2025-01-01T11:00:00Z"),
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template(two.clone())},
                "status": {"replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 1},
            }),
            json!([
                "web",
                "3/3",
                2,
                3,
                "60m",
                "nginx,log",
                "nginx:1.25,fluent-bit",
                "app=web"
            ]),
        ),
        (
            res("apps", "v1", "deployments"),
            json!({
                "metadata": meta("fresh", "2025-01-01T11:59:58Z"),
                "spec": {"selector": {"matchLabels": {"app": "web"},
                                      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                                           {"key": "canary", "operator": "DoesNotExist"}]},
                         "template": template(json!([{"name": "nginx", "image": "nginx"}]))},
            }),
            json!([
                "fresh",
                "0/1",
                0,
                0,
                "2s",
                "nginx",
                "nginx",
                "app=web,!canary,tier in (be,fe)"
            ]),
        ),
        (
            res("apps", "v1", "replicasets"),
            json!({
                "metadata": meta("web-5d8f7c9b4", "2025-01-01T11:00:00Z"),
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f7c9b4"}},
                         "template": template(json!([{"name": "nginx", "image": "nginx"}]))},
                "status": {"replicas": 2, "readyReplicas": 1},
            }),
            json!([
                "web-5d8f7c9b4",
                2,
                2,
                1,
                "60m",
                "nginx",
                "nginx",
                "app=web,pod-template-hash=5d8f7c9b4"
            ]),
        ),
        (
            res("apps", "v1", "statefulsets"),
            json!({
                "metadata": meta("db", "2024-12-31T12:00:00Z"),
                "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                         "template": template(json!([{"name": "pg", "image": "postgres:16"}]))},
                "status": {"replicas": 3, "readyReplicas": 2},
            }),
            json!(["db", "2/3", "24h", "pg", "postgres:16"]),
        ),
        (
            res("apps", "v1", "daemonsets"),
            json!({
                "metadata": meta("agent", "2024-12-25T12:00:00Z"),
                "spec": {"selector": {"matchLabels": {"app": "agent"}},
                         "template": {"metadata": {"labels": {"app": "agent"}},
                                      "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                               "containers": [{"name": "agent", "image": "skiff:dev"}]}}},
                "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                           "updatedNumberScheduled": 3, "numberAvailable": 2, "numberMisscheduled": 0},
            }),
            json!([
                "agent",
                3,
                3,
                2,
                3,
                2,
                "kubernetes.io/os=linux",
                "7d",
                "agent",
                "skiff:dev",
                "app=agent"
            ]),
        ),
        (
            res("batch", "v1", "jobs"),
            json!({
                "metadata": meta("pi", "2025-01-01T11:58:00Z"),
                "spec": {"completions": 1, "parallelism": 1,
                         "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}},
                         "template": template(json!([{"name": "pi", "image": "perl"}]))},
                "status": {"succeeded": 1, "startTime": "2025-01-01T11:58:00Z", "completionTime": "2025-01-01T11:58:33Z",
                           "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]},
            }),
            json!([
                "pi",
                "Complete",
                "1/1",
                "33s",
                "2m",
                "pi",
                "perl",
                "batch.kubernetes.io/controller-uid=u-1"
            ]),
        ),
        (
            res("batch", "v1", "jobs"),
            json!({
                "metadata": meta("work", "2025-01-01T11:00:00Z"),
                "spec": {"parallelism": 3, "template": template(json!([{"name": "w", "image": "busybox"}]))},
                "status": {"succeeded": 0, "active": 3, "startTime": "2025-01-01T11:00:00Z"},
            }),
            json!([
                "work", "Running", "0/1 of 3", "60m", "60m", "w", "busybox", "<none>"
            ]),
        ),
        (
            res("batch", "v1", "jobs"),
            json!({
                "metadata": meta("broken", "2025-01-01T11:00:00Z"),
                "spec": {"completions": 2, "template": template(json!([{"name": "w", "image": "busybox"}]))},
                "status": {"failed": 7, "conditions": [{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]},
            }),
            json!([
                "broken", "Failed", "0/2", "", "60m", "w", "busybox", "<none>"
            ]),
        ),
        (
            res("batch", "v1", "jobs"),
            json!({
                "metadata": meta("paused", "2025-01-01T11:00:00Z"),
                "spec": {"suspend": true, "template": template(json!([]))},
                "status": {"conditions": [{"type": "Suspended", "status": "True"}]},
            }),
            json!(["paused", "Suspended", "0/1", "", "60m", "", "", "<none>"]),
        ),
        (
            res("batch", "v1", "cronjobs"),
            json!({
                "metadata": meta("hello", "2024-12-31T12:00:00Z"),
                "spec": {"schedule": "*/5 * * * *", "suspend": false,
                         "jobTemplate": {"spec": {"template": template(json!([{"name": "hello", "image": "busybox"}]))}}},
                "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2025-01-01T11:55:00Z"},
            }),
            json!([
                "hello",
                "*/5 * * * *",
                "<none>",
                false,
                1,
                "5m",
                "24h",
                "hello",
                "busybox",
                "<none>"
            ]),
        ),
        (
            res("batch", "v1", "cronjobs"),
            json!({
                "metadata": meta("nightly", "2024-12-31T12:00:00Z"),
                "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Paris", "jobTemplate": {"spec": {"template": template(json!([]))}}},
            }),
            json!([
                "nightly",
                "0 3 * * *",
                "Europe/Paris",
                "<unset>",
                0,
                "<none>",
                "24h",
                "",
                "",
                "<none>"
            ]),
        ),
        (
            res("apps", "v1", "controllerrevisions"),
            json!({
                "metadata": {"name": "db-7c9f", "creationTimestamp": "2025-01-01T11:00:00Z",
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]},
                "data": {"spec": {}}, "revision": 2,
            }),
            json!(["db-7c9f", "statefulset.apps/db", 2, "60m"]),
        ),
        (
            res("apps", "v1", "controllerrevisions"),
            json!({"metadata": {"name": "orphan", "creationTimestamp": "2025-01-01T11:00:00Z"}, "revision": 1}),
            json!(["orphan", "<none>", 1, "60m"]),
        ),
    ];
    for (r, obj, want) in cases {
        assert_eq!(cells(r, obj), want, "{}", r.plural);
    }
}

#[test]
fn node_rows() {
    let nodes = res("", "v1", "nodes");
    let node = |name: &str, labels: Value, unschedulable: bool, ready: Option<&str>| {
        let conditions: Vec<Value> = ready
            .map(|s| {
                vec![
                    json!({"type": "MemoryPressure", "status": "False"}),
                    json!({"type": "Ready", "status": s}),
                ]
            })
            .unwrap_or_default();
        json!({
            "metadata": {"name": name, "labels": labels, "creationTimestamp": "2024-12-27T12:00:00Z"},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": conditions,
                "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "skiff://0.1.0",
                             "architecture": "amd64", "bootID": "", "kubeProxyVersion": "", "machineID": "",
                             "operatingSystem": "linux", "systemUUID": ""}},
        })
    };
    let cases = [
        (
            node(
                "cp",
                json!({"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "", "kubernetes.io/role": "master"}),
                true,
                Some("True"),
            ),
            json!([
                "cp",
                "Ready,SchedulingDisabled",
                "control-plane,etcd,master",
                "5d",
                "v1.33.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "skiff://0.1.0"
            ]),
        ),
        (
            node("w1", json!({}), false, Some("False")),
            json!([
                "w1",
                "NotReady",
                "<none>",
                "5d",
                "v1.33.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "skiff://0.1.0"
            ]),
        ),
        (
            node("w2", json!({"node-role.kubernetes.io/": ""}), false, None),
            json!([
                "w2",
                "Unknown",
                "<none>",
                "5d",
                "v1.33.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "skiff://0.1.0"
            ]),
        ),
        (
            json!({"metadata": {"name": "bare"}}),
            json!([
                "bare",
                "Unknown",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ]),
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(cells(nodes, obj), want);
    }
}

#[test]
fn event_rows() {
    let events = res("", "v1", "events");
    let cases = [
        (
            json!({
                "metadata": {"name": "crash.17a3b2c", "namespace": "default", "creationTimestamp": "2025-01-01T11:50:00Z"},
                "involvedObject": {"kind": "Pod", "name": "crash", "namespace": "default", "fieldPath": "spec.containers{app}"},
                "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container app\n",
                "source": {"component": "kubelet", "host": "node-a"},
                "firstTimestamp": "2025-01-01T11:50:00Z", "lastTimestamp": "2025-01-01T11:59:30Z", "count": 12,
            }),
            json!([
                "30s",
                "Warning",
                "BackOff",
                "pod/crash",
                "spec.containers{app}",
                "kubelet, node-a",
                "Back-off restarting failed container app",
                "10m",
                12,
                "crash.17a3b2c"
            ]),
        ),
        (
            json!({
                "metadata": {"name": "web.1", "namespace": "default"},
                "involvedObject": {"kind": "Deployment", "name": "web"},
                "reason": "ScalingReplicaSet", "type": "Normal", "message": "Scaled up replica set web-5d8 to 3",
                "eventTime": "2025-01-01T11:57:00.123456Z", "reportingComponent": "deployment-controller",
            }),
            json!([
                "2m59s",
                "Normal",
                "ScalingReplicaSet",
                "deployment/web",
                "",
                "deployment-controller",
                "Scaled up replica set web-5d8 to 3",
                "2m59s",
                1,
                "web.1"
            ]),
        ),
        (
            json!({
                "metadata": {"name": "n.1", "namespace": "default"},
                "involvedObject": {"kind": "Node"},
                "reason": "Rebooted", "type": "Warning",
                "eventTime": "2025-01-01T11:00:00.000000Z", "reportingComponent": "kubelet", "reportingInstance": "node-a",
                "series": {"count": 4, "lastObservedTime": "2025-01-01T11:59:00.000000Z"},
            }),
            json!([
                "60s",
                "Warning",
                "Rebooted",
                "node",
                "",
                "kubelet, node-a",
                "",
                "60m",
                4,
                "n.1"
            ]),
        ),
        (
            json!({"metadata": {"name": "empty"}, "involvedObject": {}}),
            json!(["<unknown>", "", "", "", "", "", "", "<unknown>", 1, "empty"]),
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(cells(events, obj), want);
    }
}

#[test]
fn networking_rows() {
    let cases: Vec<(&Resource, Value, Value)> = vec![
        (
            res("", "v1", "endpoints"),
            json!({
                "metadata": meta("web", "2025-01-01T11:00:00Z"),
                "subsets": [
                    {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
                    {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]},
                ],
            }),
            json!([
                "web",
                "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...",
                "60m"
            ]),
        ),
        (
            res("", "v1", "endpoints"),
            json!({"metadata": meta("v6", "2025-01-01T11:00:00Z"),
                   "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}, {"addresses": [{"ip": "10.0.0.9"}]}]}),
            json!(["v6", "[fd00::1]:8080,10.0.0.9", "60m"]),
        ),
        (
            res("", "v1", "endpoints"),
            json!({"metadata": meta("none", "2025-01-01T11:00:00Z")}),
            json!(["none", "<none>", "60m"]),
        ),
        (
            res("discovery.k8s.io", "v1", "endpointslices"),
            json!({
                "metadata": meta("web-abc12", "2025-01-01T11:00:00Z"), "addressType": "IPv4",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "named"}, {}, {"port": 9090}],
                "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}],
            }),
            json!([
                "web-abc12",
                "IPv4",
                "80,named,* + 1 more...",
                "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                "60m"
            ]),
        ),
        (
            res("discovery.k8s.io", "v1", "endpointslices"),
            json!({"metadata": meta("empty", "2025-01-01T11:00:00Z"), "addressType": "IPv6", "endpoints": []}),
            json!(["empty", "IPv6", "<unset>", "<unset>", "60m"]),
        ),
        (
            res("networking.k8s.io", "v1", "ingresses"),
            json!({
                "metadata": meta("site", "2025-01-01T11:00:00Z"),
                "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                         "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.100"}, {"hostname": "lb.example.com"}]}},
            }),
            json!([
                "site",
                "nginx",
                "a.example.com,b.example.com",
                "10.0.0.100,lb.example.com",
                "80, 443",
                "60m"
            ]),
        ),
        (
            res("networking.k8s.io", "v1", "ingresses"),
            json!({
                "metadata": meta("many", "2025-01-01T11:00:00Z"),
                "spec": {"rules": [{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {"host": "e"}]},
            }),
            json!(["many", "<none>", "a,b,c + 2 more...", "", "80", "60m"]),
        ),
        (
            res("networking.k8s.io", "v1", "ingresses"),
            json!({"metadata": meta("catchall", "2025-01-01T11:00:00Z"), "spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}),
            json!(["catchall", "<none>", "*", "", "80", "60m"]),
        ),
        (
            res("networking.k8s.io", "v1", "networkpolicies"),
            json!({"metadata": meta("db", "2025-01-01T11:00:00Z"), "spec": {"podSelector": {"matchLabels": {"app": "db"}}}}),
            json!(["db", "app=db", "60m"]),
        ),
        (
            res("networking.k8s.io", "v1", "networkpolicies"),
            json!({"metadata": meta("deny-all", "2025-01-01T11:00:00Z"), "spec": {"podSelector": {}}}),
            json!(["deny-all", "<none>", "60m"]),
        ),
    ];
    for (r, obj, want) in cases {
        assert_eq!(cells(r, obj), want, "{}", r.plural);
    }
}

#[test]
fn config_and_access_rows() {
    let age = "2025-01-01T11:00:00Z";
    let cases: Vec<(&Resource, Value, Value)> = vec![
        (
            res("", "v1", "configmaps"),
            json!({"metadata": meta("cfg", age), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
            json!(["cfg", 3, "60m"]),
        ),
        (
            res("", "v1", "configmaps"),
            json!({"metadata": meta("kube-root-ca.crt", age)}),
            json!(["kube-root-ca.crt", 0, "60m"]),
        ),
        (
            res("", "v1", "secrets"),
            json!({"metadata": meta("creds", age), "type": "Opaque", "data": {"user": "YQ==", "pass": "Yg=="}}),
            json!(["creds", "Opaque", 2, "60m"]),
        ),
        (
            res("", "v1", "secrets"),
            json!({"metadata": meta("tls", age), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
            json!(["tls", "kubernetes.io/tls", 2, "60m"]),
        ),
        (
            res("", "v1", "serviceaccounts"),
            json!({"metadata": meta("default", age), "secrets": [{"name": "default-token"}]}),
            json!(["default", 1, "60m"]),
        ),
        (
            res("", "v1", "namespaces"),
            json!({"metadata": {"name": "default", "creationTimestamp": "2024-12-01T12:00:00Z"}, "status": {"phase": "Active"}}),
            json!(["default", "Active", "31d"]),
        ),
        (
            res("", "v1", "namespaces"),
            json!({"metadata": {"name": "gone", "creationTimestamp": age}, "status": {"phase": "Terminating"}}),
            json!(["gone", "Terminating", "60m"]),
        ),
        (
            res("coordination.k8s.io", "v1", "leases"),
            json!({"metadata": meta("node-a", age), "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40}}),
            json!(["node-a", "node-a", "60m"]),
        ),
        (
            res("policy", "v1", "poddisruptionbudgets"),
            json!({"metadata": meta("web", age), "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1,
                   "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3}}),
            json!(["web", "2", "N/A", 1, "60m"]),
        ),
        (
            res("policy", "v1", "poddisruptionbudgets"),
            json!({"metadata": meta("db", age), "spec": {"maxUnavailable": "25%"}}),
            json!(["db", "N/A", "25%", 0, "60m"]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "roles"),
            json!({"metadata": meta("reader", "2025-01-01T11:00:00Z"), "rules": []}),
            json!(["reader", "2025-01-01T11:00:00Z"]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "clusterroles"),
            json!({"metadata": {"name": "view", "creationTimestamp": "2024-06-30T23:59:59Z"}}),
            json!(["view", "2024-06-30T23:59:59Z"]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "clusterroles"),
            json!({"metadata": {"name": "no-time"}}),
            json!(["no-time", "0001-01-01T00:00:00Z"]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "rolebindings"),
            json!({
                "metadata": meta("rb", age),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [
                    {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
                    {"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"},
                    {"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"},
                    {"kind": "ServiceAccount", "name": "builder", "namespace": "ci"},
                ],
            }),
            json!([
                "rb",
                "ClusterRole/view",
                "60m",
                "alice, bob",
                "devs",
                "ci/builder"
            ]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
            json!({"metadata": {"name": "admins", "creationTimestamp": age},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                   "subjects": [{"kind": "Group", "name": "system:masters", "apiGroup": "rbac.authorization.k8s.io"}]}),
            json!([
                "admins",
                "ClusterRole/cluster-admin",
                "60m",
                "",
                "system:masters",
                ""
            ]),
        ),
        (
            res("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
            json!({"metadata": {}, "spec": {"resourceAttributes": {"verb": "get"}}}),
            json!(["", "0001-01-01T00:00:00Z"]),
        ),
    ];
    for (r, obj, want) in cases {
        assert_eq!(cells(r, obj), want, "{}", r.plural);
    }
}

#[test]
fn hpa_rows() {
    let v2 = res("autoscaling", "v2", "horizontalpodautoscalers");
    let v1 = res("autoscaling", "v1", "horizontalpodautoscalers");
    let age = "2025-01-01T11:00:00Z";
    let cases: Vec<(&Resource, Value, Value)> = vec![
        (
            v2,
            json!({
                "metadata": meta("web", age),
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "minReplicas": 1, "maxReplicas": 10,
                         "metrics": [
                            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
                         ]},
                "status": {"currentReplicas": 2, "desiredReplicas": 2,
                           "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 50, "averageValue": "100m"}}}]},
            }),
            json!([
                "web",
                "Deployment/web",
                "cpu: 50%/80%, memory: <unknown>/500Mi + 1 more...",
                "1",
                10,
                2,
                "60m"
            ]),
        ),
        (
            v2,
            json!({
                "metadata": meta("ext", age),
                "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 3,
                         "metrics": [{"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "30"}}}]},
                "status": {"currentMetrics": [{"type": "External", "external": {"metric": {"name": "queue"}, "current": {"value": "12"}}}]},
            }),
            json!(["ext", "StatefulSet/db", "12/30", "<unset>", 3, 0, "60m"]),
        ),
        (
            v2,
            json!({"metadata": meta("none", age), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2}}),
            json!(["none", "Deployment/x", "<none>", "<unset>", 2, 0, "60m"]),
        ),
        (
            v1,
            json!({"metadata": meta("old", age),
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
                            "targetCPUUtilizationPercentage": 80},
                   "status": {"currentReplicas": 2, "desiredReplicas": 2}}),
            json!([
                "old",
                "Deployment/web",
                "cpu: <unknown>/80%",
                "2",
                5,
                2,
                "60m"
            ]),
        ),
    ];
    for (r, obj, want) in cases {
        assert_eq!(cells(r, obj), want);
    }
}

#[test]
fn rows_come_in_item_order() {
    let cms = res("", "v1", "configmaps");
    let items: Vec<Value> = ["b", "a", "c"]
        .iter()
        .map(|n| json!({"metadata": {"name": n, "namespace": "x"}}))
        .collect();
    let t = table(cms, &items);
    let names: Vec<&str> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"][0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert_eq!(t["rows"][2]["object"]["metadata"]["namespace"], "x");
}
