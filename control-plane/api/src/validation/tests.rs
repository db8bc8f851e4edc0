use serde_json::{Value, json};

use super::*;
use crate::{
    defaults::apply_defaults,
    registry::{self, RESOURCES},
};

fn res(group: &str, version: &str, plural: &str) -> &'static Resource {
    registry::find(group, version, plural).unwrap()
}

fn defaulted(r: &Resource, mut obj: Value) -> Value {
    apply_defaults(r, &mut obj);
    obj
}

/// (reason, field, message) of each cause.
type Got = Vec<(String, String, String)>;

fn causes(r: &Resource, obj: &Value, old: Option<&Value>) -> Got {
    match validate(r, obj, old) {
        Ok(()) => Vec::new(),
        Err(causes) => causes
            .into_iter()
            .map(|c| (c.reason, c.field, c.message))
            .collect(),
    }
}

fn want(list: &[(&str, &str, &str)]) -> Got {
    list.iter()
        .map(|(r, f, m)| ((*r).to_owned(), (*f).to_owned(), (*m).to_owned()))
        .collect()
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn deployment(selector: Value, labels: Value, spec_extra: Value) -> Value {
    let mut d = json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
                 "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
    });
    if let (Some(spec), Some(extra)) = (d["spec"].as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    d
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

#[test]
fn pod_causes() {
    let pods = res("", "v1", "pods");
    let cases: Vec<(&str, Value, Got)> = vec![
        (
            "no containers",
            pod(json!({"containers": []})),
            want(&[("FieldValueRequired", "spec.containers", "Required value")]),
        ),
        (
            "container without name or image",
            pod(json!({"containers": [{}]})),
            want(&[
                (
                    "FieldValueRequired",
                    "spec.containers[0].name",
                    "Required value",
                ),
                (
                    "FieldValueRequired",
                    "spec.containers[0].image",
                    "Required value",
                ),
            ]),
        ),
        (
            "image with spaces, bad container name",
            pod(json!({"containers": [{"name": "Web", "image": " nginx"}]})),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.containers[0].name",
                    "Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].image",
                    "Invalid value: \" nginx\": must not have leading or trailing whitespace",
                ),
            ]),
        ),
        (
            "duplicate container names across init and regular containers",
            pod(
                json!({"initContainers": [{"name": "a", "image": "i"}], "containers": [{"name": "a", "image": "i"}]}),
            ),
            want(&[(
                "FieldValueDuplicate",
                "spec.containers[0].name",
                "Duplicate value: \"a\"",
            )]),
        ),
        (
            "ports",
            pod(json!({"containers": [{"name": "a", "image": "i", "ports": [
                {"containerPort": 0},
                {"containerPort": 70000, "protocol": "tcp", "name": "http"},
                {"containerPort": 80, "name": "http", "hostPort": 8080},
                {"containerPort": 81, "name": "Not_OK", "hostPort": 8080},
            ]}]})),
            want(&[
                (
                    "FieldValueRequired",
                    "spec.containers[0].ports[0].containerPort",
                    "Required value",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].ports[1].containerPort",
                    "Invalid value: 70000: must be between 1 and 65535, inclusive",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.containers[0].ports[1].protocol",
                    "Unsupported value: \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ),
                (
                    "FieldValueDuplicate",
                    "spec.containers[0].ports[2].name",
                    "Duplicate value: \"http\"",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].ports[3].name",
                    "Invalid value: \"Not_OK\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ),
                (
                    "FieldValueDuplicate",
                    "spec.containers[0].ports[3].hostPort",
                    "Duplicate value: \"8080/TCP\"",
                ),
            ]),
        ),
        (
            "restart, dns and pull policies",
            pod(json!({"restartPolicy": "Sometimes", "dnsPolicy": "Google",
                       "containers": [{"name": "a", "image": "i", "imagePullPolicy": "Maybe"}]})),
            want(&[
                (
                    "FieldValueNotSupported",
                    "spec.containers[0].imagePullPolicy",
                    "Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.restartPolicy",
                    "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.dnsPolicy",
                    "Unsupported value: \"Google\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
                ),
            ]),
        ),
        (
            "volumes and mounts",
            pod(
                json!({"volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}, "hostPath": {"path": "/"}}],
                       "containers": [{"name": "a", "image": "i", "volumeMounts": [
                           {"name": "data", "mountPath": "/d"}, {"name": "cache", "mountPath": "/d"}, {"name": "data"}]}]}),
            ),
            want(&[
                (
                    "FieldValueDuplicate",
                    "spec.volumes[1].name",
                    "Duplicate value: \"data\"",
                ),
                (
                    "FieldValueForbidden",
                    "spec.volumes[1].hostPath",
                    "Forbidden: may not specify more than 1 volume type",
                ),
                (
                    "FieldValueNotFound",
                    "spec.containers[0].volumeMounts[1].name",
                    "Not found: \"cache\"",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].volumeMounts[1].mountPath",
                    "Invalid value: \"/d\": must be unique",
                ),
                (
                    "FieldValueRequired",
                    "spec.containers[0].volumeMounts[2].mountPath",
                    "Required value",
                ),
            ]),
        ),
        (
            "probes",
            pod(json!({"containers": [{"name": "a", "image": "i",
                "livenessProbe": {"successThreshold": 2, "periodSeconds": -1},
                "readinessProbe": {"exec": {"command": ["true"]}, "httpGet": {"port": 0}, "successThreshold": 3}}],
                "initContainers": [{"name": "init", "image": "i", "readinessProbe": {"exec": {}}}]})),
            want(&[
                (
                    "FieldValueForbidden",
                    "spec.initContainers[0].readinessProbe",
                    "Forbidden: may not be set for init containers without restartPolicy=Always",
                ),
                (
                    "FieldValueRequired",
                    "spec.containers[0].livenessProbe",
                    "Required value: must specify a handler type",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].livenessProbe.periodSeconds",
                    "Invalid value: -1: must be greater than or equal to 0",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].livenessProbe.successThreshold",
                    "Invalid value: 2: must be 1",
                ),
                (
                    "FieldValueForbidden",
                    "spec.containers[0].readinessProbe.httpGet",
                    "Forbidden: may not specify more than 1 handler type",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].readinessProbe.httpGet.port",
                    "Invalid value: 0: must be between 1 and 65535, inclusive",
                ),
            ]),
        ),
        (
            "env, resources",
            pod(json!({"containers": [{"name": "a", "image": "i",
                "env": [{"name": ""}, {"name": "A=B"}, {"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "2", "memory": "lots"}, "limits": {"cpu": "500m"}}}]})),
            want(&[
                (
                    "FieldValueRequired",
                    "spec.containers[0].env[0].name",
                    "Required value",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].env[1].name",
                    "Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].env[2].valueFrom",
                    "Invalid value: \"\": may not be specified when `value` is not empty",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].resources.requests[memory]",
                    "Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                ),
                (
                    "FieldValueInvalid",
                    "spec.containers[0].resources.requests[cpu]",
                    "Invalid value: \"2\": must be less than or equal to cpu limit of 500m",
                ),
            ]),
        ),
        (
            "tolerations and container restart policies",
            pod(
                json!({"containers": [{"name": "a", "image": "i", "restartPolicy": "Always"}],
                       "initContainers": [{"name": "b", "image": "i", "restartPolicy": "Never"}],
                       "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"},
                                       {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}),
            ),
            want(&[
                (
                    "FieldValueNotSupported",
                    "spec.initContainers[0].restartPolicy",
                    "Unsupported value: \"Never\": supported values: \"Always\"",
                ),
                (
                    "FieldValueForbidden",
                    "spec.containers[0].restartPolicy",
                    "Forbidden: may not be set for non-init containers",
                ),
                (
                    "FieldValueInvalid",
                    "spec.tolerations[0].operator",
                    "Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                ),
                (
                    "FieldValueInvalid",
                    "spec.tolerations[1].operator",
                    "Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
                ),
                (
                    "FieldValueInvalid",
                    "spec.tolerations[2].effect",
                    "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
                ),
            ]),
        ),
    ];
    for (what, obj, want) in cases {
        assert_eq!(causes(pods, &defaulted(pods, obj), None), want, "{what}");
    }
}

#[test]
fn metadata_causes() {
    let pods = res("", "v1", "pods");
    let spec = json!({"containers": [{"name": "a", "image": "i"}]});
    let cases: Vec<(&str, &Resource, Value, Got)> = vec![
        (
            "bad name, no namespace",
            pods,
            json!({"metadata": {"name": "Web_1"}, "spec": spec}),
            vec![
                (
                    "FieldValueInvalid".to_owned(),
                    "metadata.name".to_owned(),
                    format!("Invalid value: \"Web_1\": {SUBDOMAIN_MSG}"),
                ),
                (
                    "FieldValueRequired".to_owned(),
                    "metadata.namespace".to_owned(),
                    "Required value".to_owned(),
                ),
            ],
        ),
        (
            "neither name nor generateName",
            pods,
            json!({"metadata": {"namespace": "default"}, "spec": spec}),
            want(&[(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )]),
        ),
        (
            "generateName may end with a dash",
            pods,
            json!({"metadata": {"generateName": "web-", "namespace": "default"}, "spec": spec}),
            vec![],
        ),
        (
            "labels and annotations",
            pods,
            json!({"metadata": {"name": "p", "namespace": "default",
                "labels": {"app": "we b", "-x": "ok", "example.com/tier": "fe"},
                "annotations": {"Example.COM/Fine": "any value at all", "bad key": "v"}}, "spec": spec}),
            want(&[
                (
                    "FieldValueInvalid",
                    "metadata.labels",
                    "Invalid value: \"-x\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ),
                (
                    "FieldValueInvalid",
                    "metadata.labels",
                    "Invalid value: \"we b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ),
                (
                    "FieldValueInvalid",
                    "metadata.annotations",
                    "Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ),
            ]),
        ),
        (
            "annotations over 256KiB",
            res("", "v1", "configmaps"),
            json!({"metadata": {"name": "c", "namespace": "d",
                   "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(262_144)}}}),
            want(&[(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            )]),
        ),
        (
            "namespace on a cluster-scoped kind",
            res("", "v1", "nodes"),
            json!({"metadata": {"name": "n1", "namespace": "default"}}),
            want(&[(
                "FieldValueForbidden",
                "metadata.namespace",
                "Forbidden: not allowed on this type",
            )]),
        ),
        (
            "owner references and finalizers",
            res("", "v1", "configmaps"),
            json!({"metadata": {"name": "c", "namespace": "d", "finalizers": ["orphan", "custom", "example.com/ok"],
                   "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
                        {"apiVersion": "", "kind": "ReplicaSet", "name": "b", "uid": "", "controller": true}]}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences[1].apiVersion",
                    "Invalid value: \"\": version must not be empty",
                ),
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences[1].uid",
                    "Invalid value: \"\": uid must not be empty",
                ),
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences",
                    "Invalid value: [{\"apiVersion\":\"apps/v1\",\"controller\":true,\"kind\":\"ReplicaSet\",\"name\":\"a\",\"uid\":\"1\"},{\"apiVersion\":\"\",\"controller\":true,\"kind\":\"ReplicaSet\",\"name\":\"b\",\"uid\":\"\"}]: Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and ReplicaSet/b",
                ),
                (
                    "FieldValueInvalid",
                    "metadata.finalizers[1]",
                    "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
                ),
            ]),
        ),
        (
            "per-kind name rules",
            res("", "v1", "services"),
            json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}),
            want(&[(
                "FieldValueInvalid",
                "metadata.name",
                "Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            )]),
        ),
        (
            "namespaces are DNS labels",
            res("", "v1", "namespaces"),
            json!({"metadata": {"name": "team.a"}}),
            want(&[(
                "FieldValueInvalid",
                "metadata.name",
                "Invalid value: \"team.a\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            )]),
        ),
        (
            "RBAC names are path segments",
            res("rbac.authorization.k8s.io", "v1", "clusterroles"),
            json!({"metadata": {"name": "system:a/b"}}),
            want(&[(
                "FieldValueInvalid",
                "metadata.name",
                "Invalid value: \"system:a/b\": may not contain '/'",
            )]),
        ),
    ];
    for (what, r, obj, want) in cases {
        assert_eq!(causes(r, &defaulted(r, obj), None), want, "{what}");
    }
    let long = "a".repeat(254);
    let got = causes(pods, &pod(spec.clone()).tap_name(&long), None);
    assert_eq!(
        got[0].2,
        format!("Invalid value: \"{long}\": must be no more than 253 characters")
    );
}

trait TapName {
    fn tap_name(self, name: &str) -> Value;
}

impl TapName for Value {
    fn tap_name(mut self, name: &str) -> Value {
        self["metadata"]["name"] = json!(name);
        self
    }
}

#[test]
fn workload_causes() {
    let deployments = res("apps", "v1", "deployments");
    let app = json!({"matchLabels": {"app": "web"}});
    let cases: Vec<(&str, &Resource, Value, Got)> = vec![
        (
            "selector does not match the template",
            deployments,
            deployment(app.clone(), json!({"app": "other"}), json!({})),
            want(&[("FieldValueInvalid", "spec.template.metadata.labels", "Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`")]),
        ),
        (
            "no selector",
            deployments,
            deployment(Value::Null, json!({"app": "web"}), json!({})),
            want(&[("FieldValueRequired", "spec.selector", "Required value")]),
        ),
        (
            "empty selector",
            deployments,
            deployment(json!({}), json!({"app": "web"}), json!({})),
            want(&[("FieldValueInvalid", "spec.selector", "Invalid value: {}: empty selector is invalid for deployment")]),
        ),
        (
            "bad selector expression",
            deployments,
            deployment(json!({"matchExpressions": [{"key": "app", "operator": "In"}, {"key": "x", "operator": "Like"}]}), json!({"app": "web"}), json!({})),
            want(&[
                ("FieldValueRequired", "spec.selector.matchExpressions[0].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'"),
                ("FieldValueInvalid", "spec.selector.matchExpressions[1].operator", "Invalid value: \"Like\": not a valid selector operator"),
                ("FieldValueInvalid", "spec.selector", "Invalid value: {\"matchExpressions\":[{\"key\":\"app\",\"operator\":\"In\"},{\"key\":\"x\",\"operator\":\"Like\"}]}: invalid label selector"),
            ]),
        ),
        (
            "restart policy of a deployment template",
            deployments,
            deployment(app.clone(), json!({"app": "web"}), json!({"template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"restartPolicy": "OnFailure", "activeDeadlineSeconds": 5, "containers": [{"name": "c"}]}}})),
            want(&[
                ("FieldValueNotSupported", "spec.template.spec.restartPolicy", "Unsupported value: \"OnFailure\": supported values: \"Always\""),
                ("FieldValueForbidden", "spec.template.spec.activeDeadlineSeconds", "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"),
            ]),
        ),
        (
            "replicas, strategy and deadlines",
            deployments,
            deployment(app.clone(), json!({"app": "web"}), json!({"replicas": -1, "minReadySeconds": 700,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}})),
            want(&[
                ("FieldValueInvalid", "spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
                ("FieldValueInvalid", "spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 0%: may not be 0 when `maxSurge` is 0"),
                ("FieldValueInvalid", "spec.progressDeadlineSeconds", "Invalid value: 600: must be greater than minReadySeconds"),
            ]),
        ),
        (
            "bad percentages and a Recreate strategy with rolling parameters",
            deployments,
            deployment(app.clone(), json!({"app": "web"}), json!({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": "1"}}})),
            want(&[("FieldValueForbidden", "spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'")]),
        ),
        (
            "percent over 100",
            deployments,
            deployment(app.clone(), json!({"app": "web"}), json!({"strategy": {"rollingUpdate": {"maxSurge": "x%", "maxUnavailable": "150%"}}})),
            want(&[
                ("FieldValueInvalid", "spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 150%: must not be greater than 100%"),
                ("FieldValueInvalid", "spec.strategy.rollingUpdate.maxSurge", "Invalid value: x%: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
            ]),
        ),
        (
            "job restart policy and indexed completions",
            res("batch", "v1", "jobs"),
            json!({"metadata": {"name": "j", "namespace": "d"},
                   "spec": {"completionMode": "Indexed", "parallelism": 2,
                            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            want(&[
                ("FieldValueNotSupported", "spec.template.spec.restartPolicy", "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
                ("FieldValueRequired", "spec.completions", "Required value: when completion mode is Indexed"),
            ]),
        ),
        (
            "job with a selector that misses the template",
            res("batch", "v1", "jobs"),
            json!({"metadata": {"name": "j", "namespace": "d"},
                   "spec": {"manualSelector": true, "selector": {"matchLabels": {"job": "x"}},
                            "template": {"metadata": {"labels": {"job": "y"}},
                                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}),
            want(&[("FieldValueInvalid", "spec.template.metadata.labels", "Invalid value: map[string]string{\"job\":\"y\"}: `selector` does not match template `labels`")]),
        ),
        (
            "cron job",
            res("batch", "v1", "cronjobs"),
            json!({"metadata": {"name": "n".repeat(53), "namespace": "d"},
                   "spec": {"schedule": "61 * * * *", "concurrencyPolicy": "Sometimes",
                            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                                "containers": [{"name": "c", "image": "i"}]}}}}}}),
            vec![
                ("FieldValueInvalid".to_owned(), "metadata.name".to_owned(), format!("Invalid value: \"{}\": must be no more than 52 characters", "n".repeat(53))),
                ("FieldValueInvalid".to_owned(), "spec.schedule".to_owned(), "Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61".to_owned()),
                ("FieldValueNotSupported".to_owned(), "spec.concurrencyPolicy".to_owned(), "Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"".to_owned()),
            ],
        ),
        (
            "stateful set",
            res("apps", "v1", "statefulsets"),
            json!({"metadata": {"name": "db.x", "namespace": "d"},
                   "spec": {"selector": {"matchLabels": {"app": "db"}}, "podManagementPolicy": "Random",
                            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            want(&[
                ("FieldValueInvalid", "metadata.name", "Invalid value: \"db.x\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
                ("FieldValueNotSupported", "spec.podManagementPolicy", "Unsupported value: \"Random\": supported values: \"OrderedReady\", \"Parallel\""),
            ]),
        ),
        (
            "daemon set",
            res("apps", "v1", "daemonsets"),
            json!({"metadata": {"name": "ds", "namespace": "d"},
                   "spec": {"selector": {"matchLabels": {"app": "ds"}}, "updateStrategy": {"type": "Surge"},
                            "template": {"metadata": {"labels": {"app": "ds"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            want(&[("FieldValueNotSupported", "spec.updateStrategy.type", "Unsupported value: \"Surge\": supported values: \"OnDelete\", \"RollingUpdate\"")]),
        ),
    ];
    for (what, r, obj, want) in cases {
        assert_eq!(causes(r, &defaulted(r, obj), None), want, "{what}");
    }
}

#[test]
fn cron_schedules() {
    use super::pod::check_schedule;
    for ok in [
        "*/5 * * * *",
        "0 3 * * 1-5",
        "@hourly",
        "@every 1h30m",
        "0 0 1 jan,jul *",
        "15 2 * * SUN",
        "0-59/15 0,12 1-31 1-12 0-6",
    ] {
        assert_eq!(check_schedule(ok), Ok(()), "{ok}");
    }
    let bad = [
        ("* * * *", "expected exactly 5 fields, found 4: * * * *"),
        ("@sometimes", "unrecognized descriptor: @sometimes"),
        ("0 24 * * *", "end of range (24) above maximum (23): 24"),
        ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
        (
            "5-1 * * * *",
            "beginning of range (5) beyond end of range (1): 5-1",
        ),
        ("*/0 * * * *", "failed to parse int from 0: */0"),
        ("x * * * *", "failed to parse int from x: x"),
        (
            "CRON_TZ=UTC 0 0 * * *",
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ),
    ];
    for (schedule, message) in bad {
        assert_eq!(
            check_schedule(schedule),
            Err(message.to_owned()),
            "{schedule}"
        );
    }
}

#[test]
fn service_causes() {
    let svcs = res("", "v1", "services");
    let svc = |spec: Value| json!({"metadata": {"name": "web", "namespace": "d"}, "spec": spec});
    let cases = [
        (
            svc(json!({"selector": {"app": "web"}})),
            want(&[("FieldValueRequired", "spec.ports", "Required value")]),
        ),
        (
            svc(json!({"clusterIP": "None", "selector": {"app": "db"}})),
            vec![],
        ),
        (
            svc(json!({"type": "ExternalName", "externalName": "db.example.com."})),
            vec![],
        ),
        (
            svc(json!({"type": "ExternalName"})),
            want(&[("FieldValueRequired", "spec.externalName", "Required value")]),
        ),
        (
            svc(
                json!({"type": "NodePort", "ports": [{"port": 0, "nodePort": 80}, {"port": 443, "nodePort": 30443, "targetPort": "Bad_Name"}]}),
            ),
            want(&[
                ("FieldValueRequired", "spec.ports[0].name", "Required value"),
                (
                    "FieldValueInvalid",
                    "spec.ports[0].port",
                    "Invalid value: 0: must be between 1 and 65535, inclusive",
                ),
                // targetPort defaults to port, so it is 0 as well (as upstream reports).
                (
                    "FieldValueInvalid",
                    "spec.ports[0].targetPort",
                    "Invalid value: 0: must be between 1 and 65535, inclusive",
                ),
                (
                    "FieldValueInvalid",
                    "spec.ports[0].nodePort",
                    "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
                ),
                ("FieldValueRequired", "spec.ports[1].name", "Required value"),
                (
                    "FieldValueInvalid",
                    "spec.ports[1].targetPort",
                    "Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ),
            ]),
        ),
        (
            svc(
                json!({"ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "a", "port": 80, "protocol": "HTTP"}],
                       "type": "ClusterIP", "clusterIP": "10.96.0.300", "externalIPs": ["nope"], "sessionAffinity": "Cookie"}),
            ),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.clusterIPs[0]",
                    "Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ),
                (
                    "FieldValueForbidden",
                    "spec.ports[0].nodePort",
                    "Forbidden: may not be used when `type` is 'ClusterIP'",
                ),
                (
                    "FieldValueDuplicate",
                    "spec.ports[1].name",
                    "Duplicate value: \"a\"",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.ports[1].protocol",
                    "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.sessionAffinity",
                    "Unsupported value: \"Cookie\": supported values: \"ClientIP\", \"None\"",
                ),
                (
                    "FieldValueInvalid",
                    "spec.externalIPs[0]",
                    "Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ),
            ]),
        ),
        (
            svc(
                json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}),
            ),
            want(&[(
                "FieldValueDuplicate",
                "spec.ports[1].nodePort",
                "Duplicate value: 30080",
            )]),
        ),
        (
            svc(json!({"type": "Balanced", "ports": [{"port": 80}]})),
            want(&[(
                "FieldValueNotSupported",
                "spec.type",
                "Unsupported value: \"Balanced\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            )]),
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(
            causes(svcs, &defaulted(svcs, obj.clone()), None),
            want,
            "{obj}"
        );
    }
}

#[test]
fn other_kind_causes() {
    let cases: Vec<(&Resource, Value, Got)> = vec![
        (
            res("", "v1", "secrets"),
            json!({"metadata": {"name": "t", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
            want(&[("FieldValueRequired", "data[tls.key]", "Required value")]),
        ),
        (
            res("", "v1", "secrets"),
            json!({"metadata": {"name": "sa", "namespace": "d"}, "type": "kubernetes.io/service-account-token"}),
            want(&[(
                "FieldValueRequired",
                "metadata.annotations[kubernetes.io/service-account.name]",
                "Required value",
            )]),
        ),
        (
            res("", "v1", "configmaps"),
            json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"bad key": "v", "ok": "v"}, "binaryData": {"ok": "eA=="}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "data[bad key]",
                    "Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ),
                (
                    "FieldValueInvalid",
                    "data",
                    "Invalid value: \"ok\": duplicate of key present in binaryData",
                ),
            ]),
        ),
        (
            res("", "v1", "nodes"),
            json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.0.0.0/33",
                   "taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}, {"key": "", "effect": "Sometimes"}]}}),
            want(&[
                (
                    "FieldValueDuplicate",
                    "spec.taints[1]",
                    "Duplicate value: k:NoSchedule",
                ),
                ("FieldValueRequired", "spec.taints[2].key", "Required value"),
                (
                    "FieldValueNotSupported",
                    "spec.taints[2].effect",
                    "Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                ),
                (
                    "FieldValueInvalid",
                    "spec.podCIDR",
                    "Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ),
            ]),
        ),
        (
            res("", "v1", "events"),
            json!({"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}}),
            want(&[(
                "FieldValueInvalid",
                "involvedObject.namespace",
                "Invalid value: \"other\": does not match event.namespace",
            )]),
        ),
        (
            res("", "v1", "events"),
            json!({"metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n1"}}),
            vec![],
        ),
        (
            res("autoscaling", "v2", "horizontalpodautoscalers"),
            json!({"metadata": {"name": "h", "namespace": "d"},
                   "spec": {"scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 5, "maxReplicas": 2,
                            "metrics": [{"type": "Resource"}, {"type": "Magic"}]}}),
            want(&[
                (
                    "FieldValueRequired",
                    "spec.scaleTargetRef.name",
                    "Required value",
                ),
                (
                    "FieldValueInvalid",
                    "spec.maxReplicas",
                    "Invalid value: 2: must be greater than or equal to `minReplicas`",
                ),
                (
                    "FieldValueRequired",
                    "spec.metrics[0].resource",
                    "Required value: must populate information for the given metric source",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.metrics[1].type",
                    "Unsupported value: \"Magic\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\"",
                ),
            ]),
        ),
        (
            res("policy", "v1", "poddisruptionbudgets"),
            json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"minAvailable": 1, "maxUnavailable": "200%"}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec",
                    "Invalid value: {\"maxUnavailable\":\"200%\",\"minAvailable\":1}: minAvailable and maxUnavailable cannot be both set",
                ),
                (
                    "FieldValueInvalid",
                    "spec.maxUnavailable",
                    "Invalid value: 200%: must not be greater than 100%",
                ),
            ]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "roles"),
            json!({"metadata": {"name": "r", "namespace": "d"},
                   "rules": [{"verbs": [], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, {"verbs": ["get"]}]}),
            want(&[
                (
                    "FieldValueRequired",
                    "rules[0].verbs",
                    "Required value: verbs must contain at least one value",
                ),
                (
                    "FieldValueInvalid",
                    "rules[1].nonResourceURLs",
                    "Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
                ),
                (
                    "FieldValueRequired",
                    "rules[2].apiGroups",
                    "Required value: resource rules must supply at least one api group",
                ),
                (
                    "FieldValueRequired",
                    "rules[2].resources",
                    "Required value: resource rules must supply at least one resource",
                ),
            ]),
        ),
        (
            res("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
            json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"},
                   "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}]}),
            want(&[
                (
                    "FieldValueNotSupported",
                    "roleRef.kind",
                    "Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                ),
                (
                    "FieldValueRequired",
                    "subjects[0].namespace",
                    "Required value",
                ),
                (
                    "FieldValueNotSupported",
                    "subjects[1].kind",
                    "Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
                ),
            ]),
        ),
        (
            res("networking.k8s.io", "v1", "ingresses"),
            json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
                {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80, "name": "http"}}}},
                {"path": "/", "backend": {"service": {"name": "web", "port": {}}}}]}}]}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.rules[0].host",
                    "Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
                ),
                (
                    "FieldValueInvalid",
                    "spec.rules[0].http.paths[0].path",
                    "Invalid value: \"api\": must be an absolute path",
                ),
                (
                    "FieldValueInvalid",
                    "spec.rules[0].http.paths[0].backend.service.port",
                    "Invalid value: {\"name\":\"http\",\"number\":80}: cannot set both port name & port number",
                ),
                (
                    "FieldValueRequired",
                    "spec.rules[0].http.paths[1].pathType",
                    "Required value: pathType must be specified",
                ),
                (
                    "FieldValueInvalid",
                    "spec.rules[0].http.paths[1].backend.service.port",
                    "Invalid value: {}: port name or number is required",
                ),
            ]),
        ),
        (
            res("networking.k8s.io", "v1", "networkpolicies"),
            json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"podSelector": {},
                   "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}], "ports": [{"port": 90, "endPort": 80}]}],
                   "policyTypes": ["Ingress", "Sideways"]}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.ingress[0].ports[0].endPort",
                    "Invalid value: 80: must be greater than or equal to `port`",
                ),
                (
                    "FieldValueRequired",
                    "spec.ingress[0].from[0]",
                    "Required value: must specify a peer",
                ),
                (
                    "FieldValueForbidden",
                    "spec.ingress[0].from[1]",
                    "Forbidden: may not specify both ipBlock and another peer",
                ),
                (
                    "FieldValueNotSupported",
                    "spec.policyTypes[1]",
                    "Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
                ),
            ]),
        ),
        (
            res("discovery.k8s.io", "v1", "endpointslices"),
            json!({"metadata": {"name": "s", "namespace": "d"}, "addressType": "IPv4",
                   "endpoints": [{"addresses": []}, {"addresses": ["fd00::1"]}], "ports": [{"port": 0}]}),
            want(&[
                (
                    "FieldValueRequired",
                    "endpoints[0].addresses",
                    "Required value: must contain at least 1 address",
                ),
                (
                    "FieldValueInvalid",
                    "endpoints[1].addresses[0]",
                    "Invalid value: \"fd00::1\": must be a valid IPv4 address",
                ),
                (
                    "FieldValueInvalid",
                    "ports[0].port",
                    "Invalid value: 0: must be between 1 and 65535, inclusive",
                ),
            ]),
        ),
        (
            res("", "v1", "endpoints"),
            json!({"metadata": {"name": "e", "namespace": "d"}, "subsets": [{"addresses": [{"ip": "x"}], "ports": [{"port": 80}, {"port": 81}]}]}),
            want(&[
                (
                    "FieldValueInvalid",
                    "subsets[0].addresses[0].ip",
                    "Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ),
                (
                    "FieldValueRequired",
                    "subsets[0].ports[0].name",
                    "Required value",
                ),
                (
                    "FieldValueRequired",
                    "subsets[0].ports[1].name",
                    "Required value",
                ),
            ]),
        ),
        (
            res("certificates.k8s.io", "v1", "certificatesigningrequests"),
            json!({"metadata": {"name": "c"}, "spec": {"signerName": "nope", "request": "bm90IGEgcGVt", "usages": [], "expirationSeconds": 60}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.signerName",
                    "Invalid value: \"nope\": must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ),
                (
                    "FieldValueInvalid",
                    "spec.request",
                    "Invalid value: \"<request bytes>\": PEM block type must be CERTIFICATE REQUEST",
                ),
                ("FieldValueRequired", "spec.usages", "Required value"),
                (
                    "FieldValueInvalid",
                    "spec.expirationSeconds",
                    "Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)",
                ),
            ]),
        ),
        (
            res("coordination.k8s.io", "v1", "leases"),
            json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.leaseDurationSeconds",
                    "Invalid value: 0: must be greater than 0",
                ),
                (
                    "FieldValueInvalid",
                    "spec.leaseTransitions",
                    "Invalid value: -1: must be greater than or equal to 0",
                ),
            ]),
        ),
        (
            res("apps", "v1", "controllerrevisions"),
            json!({"metadata": {"name": "r", "namespace": "d"}, "revision": -1}),
            want(&[
                (
                    "FieldValueRequired",
                    "data",
                    "Required value: data is mandatory",
                ),
                (
                    "FieldValueInvalid",
                    "revision",
                    "Invalid value: -1: must be greater than or equal to 0",
                ),
            ]),
        ),
        (
            res("authorization.k8s.io", "v1", "subjectaccessreviews"),
            json!({"spec": {}}),
            want(&[
                (
                    "FieldValueInvalid",
                    "spec.resourceAttributes",
                    "Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ),
                (
                    "FieldValueInvalid",
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified",
                ),
            ]),
        ),
        (
            res("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
            json!({"spec": {"resourceAttributes": {"verb": "create", "resource": "pods"}}}),
            vec![],
        ),
    ];
    for (r, obj, want) in cases {
        assert_eq!(
            causes(r, &defaulted(r, obj.clone()), None),
            want,
            "{} {obj}",
            r.plural
        );
    }
}

#[test]
fn updates_respect_immutable_fields() {
    let d = res("apps", "v1", "deployments");
    let old = defaulted(
        d,
        deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
            json!({}),
        ),
    );
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    assert_eq!(causes(d, &scaled, Some(&old)), vec![]);
    let mut reselected = old.clone();
    reselected["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    reselected["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    reselected["metadata"]["namespace"] = json!("other");
    assert_eq!(
        causes(d, &reselected, Some(&old)),
        want(&[
            (
                "FieldValueInvalid",
                "metadata.namespace",
                "Invalid value: \"other\": field is immutable"
            ),
            (
                "FieldValueInvalid",
                "spec.selector",
                "Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable"
            ),
        ])
    );

    let pods = res("", "v1", "pods");
    let old_pod = defaulted(
        pods,
        pod(json!({"containers": [{"name": "a", "image": "nginx:1"}]})),
    );
    let mut new_image = old_pod.clone();
    new_image["spec"]["containers"][0]["image"] = json!("nginx:2");
    new_image["spec"]["activeDeadlineSeconds"] = json!(60);
    assert_eq!(causes(pods, &new_image, Some(&old_pod)), vec![]);
    let mut new_command = old_pod.clone();
    new_command["spec"]["containers"][0]["command"] = json!(["sh"]);
    let got = causes(pods, &new_command, Some(&old_pod));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("FieldValueForbidden", "spec")
    );
    assert!(got[0].2.starts_with(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ));

    let svcs = res("", "v1", "services");
    let old_svc = defaulted(
        svcs,
        json!({"metadata": {"name": "s", "namespace": "d"}, "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}}),
    );
    let mut moved = old_svc.clone();
    moved["spec"]["clusterIP"] = json!("10.96.0.6");
    moved["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
    assert_eq!(
        causes(svcs, &moved, Some(&old_svc)),
        want(&[(
            "FieldValueInvalid",
            "spec.clusterIPs[0]",
            "Invalid value: [\"10.96.0.6\"]: may not change once set"
        )])
    );

    let jobs = res("batch", "v1", "jobs");
    let old_job = defaulted(
        jobs,
        json!({"metadata": {"name": "j", "namespace": "d"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
               "containers": [{"name": "c", "image": "perl"}]}}}}),
    );
    let mut retemplated = old_job.clone();
    retemplated["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
    let got = causes(jobs, &retemplated, Some(&old_job));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "spec.template");
    assert!(got[0].2.ends_with(": field is immutable"), "{}", got[0].2);

    let sts = res("apps", "v1", "statefulsets");
    let old_sts = defaulted(
        sts,
        json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "b"}},
               "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "pg"}]}}}}),
    );
    let mut renamed = old_sts.clone();
    renamed["spec"]["serviceName"] = json!("db2");
    renamed["spec"]["replicas"] = json!(3);
    assert_eq!(
        causes(sts, &renamed, Some(&old_sts)),
        want(&[(
            "FieldValueForbidden",
            "spec",
            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        )])
    );

    let cms = res("", "v1", "configmaps");
    let frozen =
        json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "1"}});
    let thawed = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "2"}});
    assert_eq!(
        causes(cms, &thawed, Some(&frozen)),
        want(&[
            (
                "FieldValueForbidden",
                "immutable",
                "Forbidden: field is immutable when `immutable` is set"
            ),
            (
                "FieldValueForbidden",
                "data",
                "Forbidden: field is immutable when `immutable` is set"
            ),
        ])
    );
    let secrets = res("", "v1", "secrets");
    let retyped = causes(
        secrets,
        &json!({"metadata": {"name": "s", "namespace": "d"}, "type": "example.com/x"}),
        Some(&json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque"})),
    );
    assert_eq!(
        retyped,
        want(&[(
            "FieldValueInvalid",
            "type",
            "Invalid value: \"example.com/x\": field is immutable"
        )])
    );

    let rb = res("rbac.authorization.k8s.io", "v1", "rolebindings");
    let binding = |role: &str| {
        json!({"metadata": {"name": "b", "namespace": "d"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}})
    };
    assert_eq!(
        causes(rb, &binding("edit"), Some(&binding("view"))),
        want(&[(
            "FieldValueInvalid",
            "roleRef",
            "Invalid value: {\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"edit\"}: cannot change roleRef"
        )])
    );
}

/// A valid object of every served kind, as a user would send it.
fn valid(r: &Resource) -> Value {
    let meta = if r.namespaced {
        json!({"name": "x", "namespace": "default", "labels": {"app": "x"}})
    } else {
        json!({"name": "x", "labels": {"app": "x"}})
    };
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
        "ports": [{"containerPort": 80, "name": "http"}], "readinessProbe": {"httpGet": {"port": "http"}},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}});
    let job_template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox"}]}});
    let selector = json!({"matchLabels": {"app": "x"}});
    let rest = match (r.group, r.kind) {
        ("", "Pod") => json!({"spec": template["spec"]}),
        ("", "Service") => {
            json!({"spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        }
        ("", "Endpoints") => {
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})
        }
        ("", "ConfigMap") => json!({"data": {"app.properties": "a=b"}}),
        ("", "Secret") => json!({"stringData": {"password": "hunter2"}}),
        ("", "ServiceAccount") => json!({}),
        ("", "Namespace") => json!({}),
        ("", "Node") => json!({"spec": {"podCIDR": "10.244.0.0/24"}}),
        ("", "Event") => {
            json!({"involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"}, "reason": "Started"})
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            json!({"spec": {"selector": selector, "template": template}})
        }
        ("apps", "StatefulSet") => {
            json!({"spec": {"serviceName": "x", "selector": selector, "template": template}})
        }
        ("apps", "ControllerRevision") => json!({"data": {"spec": {}}, "revision": 1}),
        ("batch", "Job") => json!({"spec": {"template": job_template}}),
        ("batch", "CronJob") => {
            json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": job_template}}}})
        }
        ("autoscaling", _) => {
            json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}, "maxReplicas": 3}})
        }
        ("discovery.k8s.io", _) => {
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]})
        }
        ("networking.k8s.io", "Ingress") => {
            json!({"spec": {"rules": [{"host": "x.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "x", "port": {"number": 80}}}}]}}]}})
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            json!({"spec": {"podSelector": selector, "ingress": [{"from": [{"podSelector": {}}]}]}})
        }
        ("policy", _) => json!({"spec": {"minAvailable": "50%", "selector": selector}}),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
        }
        ("rbac.authorization.k8s.io", _) => {
            json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "default"}, {"kind": "User", "name": "alice"}]})
        }
        ("coordination.k8s.io", _) => {
            json!({"spec": {"holderIdentity": "x", "leaseDurationSeconds": 40}})
        }
        ("certificates.k8s.io", _) => {
            use base64::Engine as _;
            let pem =
                "-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n";
            json!({"spec": {"signerName": "kubernetes.io/kube-apiserver-client",
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "usages": ["client auth"]}})
        }
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            json!({"spec": {"namespace": "default"}})
        }
        ("authorization.k8s.io", "LocalSubjectAccessReview") => {
            return json!({"metadata": {"namespace": "default"}, "spec": {"user": "alice",
                "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}}});
        }
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})
        }
        ("authorization.k8s.io", _) => {
            json!({"spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods"}}})
        }
        ("authentication.k8s.io", "TokenReview") => json!({"spec": {"token": "abc"}}),
        _ => json!({}),
    };
    let mut obj = rest;
    obj["apiVersion"] = json!(r.api_version());
    obj["kind"] = json!(r.kind);
    if obj.get("metadata").is_none() {
        obj["metadata"] = meta;
    }
    obj
}

#[test]
fn valid_objects_of_every_kind_pass_and_have_no_unknown_fields() {
    for r in RESOURCES {
        let obj = defaulted(r, valid(r));
        assert_eq!(causes(r, &obj, None), vec![], "{}: {obj}", r.plural);
        assert_eq!(causes(r, &obj, Some(&obj)), vec![], "{} update", r.plural);
        assert_eq!(
            unknown_fields(r, &obj),
            Vec::<String>::new(),
            "{}",
            r.plural
        );
        assert_eq!(
            unknown_fields(r, &valid(r)),
            Vec::<String>::new(),
            "{} as sent",
            r.plural
        );
    }
}

#[test]
fn unknown_fields_are_listed_by_path() {
    let d = res("apps", "v1", "deployments");
    let obj = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labelz": {"a": "b"}, "labels": {"any.key/x": "y"}, "creationTimestamp": null,
                     "annotations": {"whatever": "x"}, "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:x": {}}}}]},
        "spec": {
            "replicaz": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchLabelz": {}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "nginx", "resources": {"limits": {"example.com/gpu": "1"}}},
                        {"name": "b", "image": "nginx", "imagePullPolicyy": "Always", "ports": [{"containerPort": 80, "hostPorts": 1}]},
                    ],
                    "volumes": [{"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "p", "modes": 1}]}}],
                    "nodeSelector": {"disk": "ssd"},
                },
            },
            "unknownNull": null,
        },
        "status": {"bogus": 1},
        "extra": "x",
    });
    assert_eq!(
        unknown_fields(d, &obj),
        [
            "extra",
            "metadata.labelz",
            "spec.replicaz",
            "spec.selector.matchLabelz",
            "spec.template.spec.containers[1].imagePullPolicyy",
            "spec.template.spec.containers[1].ports[0].hostPorts",
            "spec.template.spec.volumes[0].configMap.items[0].modes",
            "status.bogus",
        ]
    );
    // Free-form fields keep everything.
    let cr = res("apps", "v1", "controllerrevisions");
    assert_eq!(
        unknown_fields(
            cr,
            &json!({"metadata": {"name": "r"}, "revision": 1, "data": {"anything": {"goes": [1, {"x": 2}]}}})
        ),
        Vec::<String>::new()
    );
    let cm = res("", "v1", "configmaps");
    assert_eq!(
        unknown_fields(
            cm,
            &json!({"metadata": {"name": "c"}, "data": {"k": "v"}, "dataa": {}})
        ),
        ["dataa"]
    );
    // Every kind reports an unknown top-level field and nested metadata ones.
    for r in RESOURCES {
        assert_eq!(
            unknown_fields(r, &json!({"bogus": 1, "metadata": {"namez": "x"}})),
            ["bogus", "metadata.namez"],
            "{}",
            r.plural
        );
    }
    // No answer for an object that does not decode.
    assert_eq!(
        unknown_fields(d, &json!({"spec": {"replicas": "3"}})),
        Vec::<String>::new()
    );
}

#[test]
fn objects_that_do_not_decode_are_rejected_cleanly() {
    let d = res("apps", "v1", "deployments");
    let err = check_decodes(d, &json!({"spec": {"replicas": "three"}})).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Shape {
                kind: "Deployment",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: "),
        "{err}"
    );
    assert!(matches!(
        check_decodes(d, &json!([1])),
        Err(DecodeError::NotAnObject { .. })
    ));
    // A mismatched apiVersion/kind in the body is not the decoder's business.
    assert!(check_decodes(d, &json!({"apiVersion": "v1", "kind": "Pod"})).is_ok());
    let got = causes(
        d,
        &json!({"metadata": {"name": "w"}, "spec": {"replicas": "three"}}),
        None,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("FieldValueInvalid", "")
    );
    assert!(
        got[0].2.contains("cannot be handled as a Deployment"),
        "{}",
        got[0].2
    );
    // Odd shapes never panic, for any kind, with or without an old object.
    for r in RESOURCES {
        for obj in [
            json!(null),
            json!("x"),
            json!({}),
            json!({"metadata": null, "spec": null}),
            json!({"metadata": {"name": 1}}),
            json!({"spec": {"containers": [null]}}),
        ] {
            let _ = validate(r, &obj, Some(&obj));
            let _ = unknown_fields(r, &obj);
        }
    }
}

#[test]
fn causes_serialize_as_status_causes_and_join_into_the_status_message() {
    let c = Cause {
        reason: "FieldValueRequired".to_owned(),
        message: "Required value".to_owned(),
        field: "spec.template.spec.containers[0].image".to_owned(),
    };
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.template.spec.containers[0].image"})
    );
    let d = res("apps", "v1", "deployments");
    assert_eq!(
        invalid_message(d, "web", std::slice::from_ref(&c)),
        "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].image: Required value"
    );
    let two = [
        c.clone(),
        Cause {
            field: "spec.replicas".to_owned(),
            ..c
        },
    ];
    assert_eq!(
        invalid_message(res("", "v1", "pods"), "p", &two),
        "Pod \"p\" is invalid: [spec.template.spec.containers[0].image: Required value, spec.replicas: Required value]"
    );
    assert_eq!(
        invalid_message(d, "web", &[]),
        "Deployment.apps \"web\" is invalid"
    );
}

#[test]
fn name_checks() {
    assert_eq!(is_dns1123_label("web-1"), Vec::<String>::new());
    assert_eq!(is_dns1123_label(&"a".repeat(64)).len(), 1);
    assert_eq!(is_dns1123_label("").len(), 1);
    assert_eq!(is_dns1123_subdomain("a.b-c.d"), Vec::<String>::new());
    assert_eq!(is_dns1123_subdomain("a..b").len(), 1);
    assert_eq!(is_dns1035_label("abc-123"), Vec::<String>::new());
    assert_eq!(
        is_qualified_name("example.com/Name_1.x"),
        Vec::<String>::new()
    );
    assert_eq!(is_qualified_name("/x"), ["prefix part must be non-empty"]);
    assert_eq!(is_qualified_name("x/").len(), 2);
    assert_eq!(is_valid_label_value(""), Vec::<String>::new());
    assert_eq!(is_valid_port_name("http-2"), Vec::<String>::new());
    assert_eq!(
        is_valid_port_name("-a--b-verylongname"),
        [
            "must be no more than 15 characters",
            "must not contain consecutive hyphens",
            "must not begin or end with a hyphen"
        ]
    );
    assert_eq!(
        is_valid_port_name("123"),
        ["must contain at least one letter (a-z)"]
    );
    assert_eq!(is_config_map_key(".."), ["must not be '..'"]);
    assert_eq!(is_config_map_key("..data"), ["must not start with '..'"]);
    assert!(is_valid_cidr("10.0.0.0/8").is_empty());
    assert!(is_valid_cidr("fd00::/129").len() == 1);
    assert!(is_valid_ip("fd00::1").is_empty());
    assert_eq!(NODE_PORT_RANGE, 30000..=32767);
}
