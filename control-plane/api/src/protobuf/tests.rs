//! Round trips through the k8s-pb prost types (the encoder Go's wire format is checked
//! against), validation of the JSON against the k8s-openapi types, an every-field check of the
//! generated table, malformed input, and the Go formatting helpers.

use k8s_openapi::{
    api::{
        apps::v1 as oa_apps, authentication::v1 as oa_authn, authorization::v1 as oa_authz,
        batch::v1 as oa_batch, core::v1 as oa_core, rbac::v1 as oa_rbac,
    },
    serde::{Serialize, de::DeserializeOwned},
};
use k8s_pb::{
    api::{apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz},
    api::{batch::v1 as batch, core::v1 as core, rbac::v1 as rbac},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1 as meta,
        runtime::{TypeMeta, Unknown},
        util::intstr::IntOrString,
    },
};
use prost::Message as _;
use serde_json::{Value, json};

use super::{
    Problem, ProtobufError, decode, decode_request, is_protobuf,
    schema::{self, Label, Special, Ty},
    table::{KINDS, MESSAGES, UNCONFIRMED_NAMES},
};

/// `k8s\0` + Unknown{typeMeta, raw}, the way client-go frames a body.
fn body(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// Drops nulls and empty lists: k8s-openapi reads a Go `null` list as absent and writes a
/// required list as `[]`.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null() && *v != &Value::Array(Vec::new()))
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// The first place two JSON values differ, for readable failures on large objects.
fn first_difference(left: &Value, right: &Value, path: &str) -> Option<String> {
    match (left, right) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let here = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => {
                        if let Some(d) = first_difference(x, y, &here) {
                            return Some(d);
                        }
                    }
                    (x, y) => return Some(format!("{here}: {x:?} vs {y:?}")),
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]"))),
        _ if left == right => None,
        _ => Some(format!("{path}: {left} vs {right}")),
    }
}

#[track_caller]
fn assert_same(left: &Value, right: &Value, what: &str) {
    if let Some(difference) = first_difference(left, right, "") {
        panic!("{what}: first difference at {difference}");
    }
}

/// k8s-openapi writes apiVersion/kind on every resource type, also nested ones (a
/// StatefulSet's volumeClaimTemplates are PersistentVolumeClaims); Go leaves them out.
fn drop_added_type_meta(written: &mut Value, read: &Value) {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => {
            for key in ["apiVersion", "kind"] {
                if !r.contains_key(key) {
                    w.remove(key);
                }
            }
            for (key, value) in w.iter_mut() {
                if let Some(other) = r.get(key) {
                    drop_added_type_meta(value, other);
                }
            }
        }
        (Value::Array(w), Value::Array(r)) => {
            for (value, other) in w.iter_mut().zip(r) {
                drop_added_type_meta(value, other);
            }
        }
        _ => {}
    }
}

/// The JSON is valid Kubernetes JSON for `T`: k8s-openapi reads every field (it ignores
/// unknown names, so a misspelt field would be missing when written back).
#[track_caller]
fn assert_valid<T: DeserializeOwned + Serialize>(json: &Value) {
    let expected = normalize(json);
    let typed: T = serde_json::from_value(expected.clone())
        .unwrap_or_else(|e| panic!("not a valid {}: {e}", std::any::type_name::<T>()));
    let mut back = normalize(&serde_json::to_value(&typed).unwrap());
    drop_added_type_meta(&mut back, &expected);
    assert_same(
        &back,
        &expected,
        "k8s-openapi does not read the JSON back the same",
    );
}

fn roundtrip<T: DeserializeOwned + Serialize>(
    api_version: &str,
    kind: &str,
    object: &impl prost::Message,
    expected: &Value,
) {
    let decoded = decode_request(&body(api_version, kind, object)).unwrap();
    assert_same(&decoded, expected, "decoded vs expected");
    assert_valid::<T>(&decoded);
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        // What Go writes for a zero creationTimestamp: an empty Time message.
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    })
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int_port(port: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(port),
        str_val: Some(String::new()),
    })
}

fn named_port(name: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(name),
    })
}

#[test]
fn namespace() {
    let ns = core::Namespace {
        metadata: named("demo"),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus {
            phase: s(""),
            ..Default::default()
        }),
    };
    roundtrip::<oa_core::Namespace>(
        "v1",
        "Namespace",
        &ns,
        &json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "demo", "creationTimestamp": null}, "spec": {}, "status": {}}),
    );
}

fn pod_template() -> core::PodTemplateSpec {
    let resources = core::ResourceRequirements {
        limits: [
            ("cpu".into(), quantity("500m")),
            ("memory".into(), quantity("128Mi")),
        ]
        .into(),
        requests: [("cpu".into(), quantity("250m"))].into(),
        ..Default::default()
    };
    let probe = core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: s("/healthz"),
                port: named_port("http"),
                scheme: s("HTTP"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(5),
        period_seconds: Some(10),
        ..Default::default()
    };
    let liveness = core::Probe {
        handler: Some(core::ProbeHandler {
            tcp_socket: Some(core::TcpSocketAction {
                port: int_port(80),
                host: s(""),
            }),
            ..Default::default()
        }),
        failure_threshold: Some(3),
        ..Default::default()
    };
    core::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta {
            labels: [("app".into(), "web".into())].into(),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("nginx"),
                image: s("nginx:1.27"),
                ports: vec![core::ContainerPort {
                    name: s("http"),
                    container_port: Some(80),
                    protocol: s("TCP"),
                    // Go writes these non-pointer zeros; JSON leaves them out.
                    host_port: Some(0),
                    host_ip: s(""),
                }],
                env: vec![
                    core::EnvVar {
                        name: s("MODE"),
                        value: s("prod"),
                        value_from: None,
                    },
                    core::EnvVar {
                        name: s("POD_IP"),
                        value: s(""),
                        value_from: Some(core::EnvVarSource {
                            field_ref: Some(core::ObjectFieldSelector {
                                api_version: s("v1"),
                                field_path: s("status.podIP"),
                            }),
                            ..Default::default()
                        }),
                    },
                ],
                resources: Some(resources),
                readiness_probe: Some(probe),
                liveness_probe: Some(liveness),
                image_pull_policy: s("IfNotPresent"),
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(30),
            host_ipc: Some(true),
            ..Default::default()
        }),
    }
}

fn pod_template_json() -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
        "spec": {
            "containers": [{
                "name": "nginx",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD_IP",
                     "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m"}
                },
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "initialDelaySeconds": 5,
                    "periodSeconds": 10
                },
                "livenessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 3},
                "imagePullPolicy": "IfNotPresent"
            }],
            "terminationGracePeriodSeconds": 30,
            "hostIPC": true
        }
    })
}

#[test]
fn deployment_with_a_pod_template() {
    let deployment = apps::Deployment {
        metadata: named("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".into(), "web".into())].into(),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["a".into(), "b".into()],
                }],
            }),
            template: Some(pod_template()),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: named_port("25%"),
                    max_surge: int_port(1),
                }),
            }),
            min_ready_seconds: Some(0),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    roundtrip::<oa_apps::Deployment>(
        "apps/v1",
        "Deployment",
        &deployment,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "replicas": 2,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
                },
                "template": pod_template_json(),
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}
                }
            },
            "status": {}
        }),
    );
}

#[test]
fn configmap_with_data_and_binary_data() {
    let cm = core::ConfigMap {
        metadata: named("cm"),
        data: [
            ("a".into(), "b".into()),
            ("app.properties".into(), "x=1\n".into()),
        ]
        .into(),
        binary_data: [("bin".into(), vec![0, 1, 2, 0xfe, 0xff])].into(),
        immutable: None,
    };
    roundtrip::<oa_core::ConfigMap>(
        "v1",
        "ConfigMap",
        &cm,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "creationTimestamp": null},
            "data": {"a": "b", "app.properties": "x=1\n"},
            "binaryData": {"bin": "AAEC/v8="}}),
    );
}

#[test]
fn secret_with_data() {
    let secret = core::Secret {
        metadata: named("s"),
        data: [("k".into(), b"v".to_vec()), ("empty".into(), Vec::new())].into(),
        r#type: s("Opaque"),
        ..Default::default()
    };
    roundtrip::<oa_core::Secret>(
        "v1",
        "Secret",
        &secret,
        &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "creationTimestamp": null},
            "data": {"k": "dg==", "empty": ""}, "type": "Opaque"}),
    );
}

#[test]
fn service_account() {
    let sa = core::ServiceAccount {
        metadata: named("viewer"),
        automount_service_account_token: Some(true),
        ..Default::default()
    };
    roundtrip::<oa_core::ServiceAccount>(
        "v1",
        "ServiceAccount",
        &sa,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "viewer", "creationTimestamp": null},
            "automountServiceAccountToken": true}),
    );
}

#[test]
fn role_binding() {
    let rb = rbac::RoleBinding {
        metadata: named("rb"),
        subjects: vec![rbac::Subject {
            kind: s("ServiceAccount"),
            api_group: s(""),
            name: s("viewer"),
            namespace: s("default"),
        }],
        role_ref: Some(rbac::RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s("ClusterRole"),
            name: s("view"),
        }),
    };
    roundtrip::<oa_rbac::RoleBinding>(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        &rb,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rb", "creationTimestamp": null},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "default"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"}}),
    );
}

#[test]
fn cluster_role() {
    let role = rbac::ClusterRole {
        metadata: named("reader"),
        rules: vec![rbac::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec![String::new(), "apps".into()],
            resources: vec!["pods".into(), "deployments".into()],
            ..Default::default()
        }],
        aggregation_rule: None,
    };
    roundtrip::<oa_rbac::ClusterRole>(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        &role,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader", "creationTimestamp": null},
            "rules": [{"verbs": ["get", "list"], "apiGroups": ["", "apps"],
                       "resources": ["pods", "deployments"]}]}),
    );
}

fn job_spec(restart: &str) -> batch::JobSpec {
    let mut template = pod_template();
    if let Some(spec) = template.spec.as_mut() {
        spec.restart_policy = s(restart);
    }
    batch::JobSpec {
        template: Some(template),
        backoff_limit: Some(4),
        completions: Some(1),
        ..Default::default()
    }
}

fn job_spec_json(restart: &str) -> Value {
    let mut template = pod_template_json();
    template["spec"]["restartPolicy"] = restart.into();
    json!({"template": template, "backoffLimit": 4, "completions": 1})
}

#[test]
fn job() {
    let job = batch::Job {
        metadata: named("once"),
        spec: Some(job_spec("Never")),
        status: Some(batch::JobStatus::default()),
    };
    roundtrip::<oa_batch::Job>(
        "batch/v1",
        "Job",
        &job,
        &json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "once", "creationTimestamp": null},
            "spec": job_spec_json("Never"), "status": {}}),
    );
}

#[test]
fn cron_job() {
    let cron = batch::CronJob {
        metadata: named("tick"),
        spec: Some(batch::CronJobSpec {
            schedule: s("*/5 * * * *"),
            job_template: Some(batch::JobTemplateSpec {
                metadata: named("tick"),
                spec: Some(job_spec("OnFailure")),
            }),
            suspend: Some(true),
            ..Default::default()
        }),
        status: Some(batch::CronJobStatus {
            last_schedule_time: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
    };
    roundtrip::<oa_batch::CronJob>(
        "batch/v1",
        "CronJob",
        &cron,
        &json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "creationTimestamp": null},
            "spec": {
                "schedule": "*/5 * * * *",
                "jobTemplate": {"metadata": {"name": "tick", "creationTimestamp": null},
                                "spec": job_spec_json("OnFailure")},
                "suspend": true
            },
            "status": {"lastScheduleTime": "2023-11-14T22:13:20Z"}}),
    );
}

#[test]
fn service_with_cluster_ips_and_target_ports() {
    let svc = core::Service {
        metadata: named("svc"),
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    name: s("http"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: int_port(8080),
                    node_port: Some(0),
                    app_protocol: None,
                },
                core::ServicePort {
                    name: s("metrics"),
                    protocol: s("TCP"),
                    port: Some(9090),
                    target_port: named_port("metrics"),
                    ..Default::default()
                },
            ],
            selector: [("app".into(), "svc".into())].into(),
            cluster_ip: s("10.96.0.10"),
            cluster_ips: vec!["10.96.0.10".into(), "fd00::a".into()],
            r#type: s("ClusterIP"),
            ip_families: vec!["IPv4".into(), "IPv6".into()],
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            conditions: Vec::new(),
        }),
    };
    roundtrip::<oa_core::Service>(
        "v1",
        "Service",
        &svc,
        &json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc", "creationTimestamp": null},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "metrics", "protocol": "TCP", "port": 9090,
                     "targetPort": "metrics"}
                ],
                "selector": {"app": "svc"},
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10", "fd00::a"],
                "type": "ClusterIP",
                "ipFamilies": ["IPv4", "IPv6"]
            },
            "status": {"loadBalancer": {}}}),
    );
}

#[test]
fn self_subject_access_review() {
    let review = authz::SelfSubjectAccessReview {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("default"),
                verb: s("list"),
                group: s(""),
                version: s(""),
                resource: s("pods"),
                subresource: s(""),
                name: s(""),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }),
        status: Some(authz::SubjectAccessReviewStatus {
            allowed: Some(false),
            denied: Some(false),
            reason: s(""),
            evaluation_error: s(""),
        }),
    };
    roundtrip::<oa_authz::SelfSubjectAccessReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &review,
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes":
                {"namespace": "default", "verb": "list", "resource": "pods"}},
            "status": {"allowed": false}}),
    );
}

#[test]
fn self_subject_rules_review() {
    let review = authz::SelfSubjectRulesReview {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(authz::SelfSubjectRulesReviewSpec {
            namespace: s("default"),
        }),
        status: Some(authz::SubjectRulesReviewStatus {
            incomplete: Some(false),
            evaluation_error: s(""),
            ..Default::default()
        }),
    };
    // resourceRules/nonResourceRules are not omitempty: Go shows the nil lists as null.
    roundtrip::<oa_authz::SelfSubjectRulesReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        &review,
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            "metadata": {"creationTimestamp": null},
            "spec": {"namespace": "default"},
            "status": {"resourceRules": null, "nonResourceRules": null, "incomplete": false}}),
    );
}

#[test]
fn self_subject_review() {
    let review = authn::SelfSubjectReview {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        status: Some(authn::SelfSubjectReviewStatus {
            user_info: Some(authn::UserInfo {
                username: s("alice"),
                uid: s(""),
                groups: vec!["system:authenticated".into()],
                extra: [(
                    "scopes".into(),
                    authn::ExtraValue {
                        items: vec!["a".into(), "b".into()],
                    },
                )]
                .into(),
            }),
        }),
    };
    roundtrip::<oa_authn::SelfSubjectReview>(
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &review,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": "alice", "groups": ["system:authenticated"],
                                    "extra": {"scopes": ["a", "b"]}}}}),
    );
}

#[test]
fn metadata_with_timestamps_owner_references_and_managed_fields() {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("owned"),
            namespace: s("default"),
            uid: s("0b7c1d3e-0000-4000-8000-000000000001"),
            resource_version: s("42"),
            generation: Some(3),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            deletion_timestamp: Some(meta::Time {
                seconds: Some(951_782_400),
                nanos: Some(0),
            }),
            deletion_grace_period_seconds: Some(0),
            annotations: [("note".into(), "x".into())].into(),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("web-5d4f"),
                uid: s("0b7c1d3e-0000-4000-8000-000000000002"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            finalizers: vec!["example.com/hold".into()],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl-create"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(meta::Time {
                    seconds: Some(1_700_000_000),
                    nanos: Some(0),
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:data":{".":{},"f:a":{}}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    roundtrip::<oa_core::ConfigMap>(
        "v1",
        "ConfigMap",
        &cm,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": "default",
            "uid": "0b7c1d3e-0000-4000-8000-000000000001",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "deletionTimestamp": "2000-02-29T00:00:00Z",
            "deletionGracePeriodSeconds": 0,
            "annotations": {"note": "x"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-5d4f", "uid": "0b7c1d3e-0000-4000-8000-000000000002",
                "controller": true, "blockOwnerDeletion": true}],
            "finalizers": ["example.com/hold"],
            "managedFields": [{"manager": "kubectl-create", "operation": "Update",
                "apiVersion": "v1", "time": "2023-11-14T22:13:20Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {".": {}, "f:a": {}}}}]
        }}),
    );
}

#[test]
fn explicit_zero_pointers_survive() {
    // `kubectl create deployment --replicas=0`: replicas is a pointer, 0 is not "unset".
    let deployment = apps::Deployment {
        metadata: named("idle"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            ..Default::default()
        }),
        status: None,
    };
    let json = decode_request(&body("apps/v1", "Deployment", &deployment)).unwrap();
    assert_eq!(json["spec"], json!({"replicas": 0}));
}

#[test]
fn unknown_fields_are_skipped_and_packed_lists_accepted() {
    let mut raw = apps::DeploymentSpec {
        replicas: Some(3),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 99 of every wire type: varint, fixed64, bytes, a group, fixed32.
    raw.extend([0x98, 0x06, 0x01]);
    raw.extend([0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    raw.extend([0x9a, 0x06, 0x02, b'h', b'i']);
    raw.extend([0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06]);
    raw.extend([0x9d, 0x06, 1, 2, 3, 4]);
    let id = schema::find_message("k8s.io.api.apps.v1.DeploymentSpec").unwrap();
    let json = decode::message(&raw, 0..raw.len(), id, 0).unwrap();
    assert_eq!(json, json!({"replicas": 3}));

    // A repeated int32 (ContainerRestartRuleOnExitCodes.values): Go writes proto2 lists
    // unpacked, other encoders may pack them.
    let id = schema::find_message("k8s.io.api.core.v1.ContainerRestartRuleOnExitCodes").unwrap();
    let packed = [0x12, 0x03, 0x01, 0x02, 0x7f];
    let unpacked = [0x10, 0x01, 0x10, 0x02, 0x10, 0x7f];
    for raw in [&packed[..], &unpacked[..]] {
        let json = decode::message(raw, 0..raw.len(), id, 0).unwrap();
        assert_eq!(json["values"], json!([1, 2, 127]));
    }
}

#[test]
fn negative_int32_and_int64() {
    let id = schema::find_message("k8s.io.api.core.v1.PodSpec").unwrap();
    let pod = core::PodSpec {
        priority: Some(-5),
        active_deadline_seconds: Some(-7),
        ..Default::default()
    };
    let raw = pod.encode_to_vec();
    let json = decode::message(&raw, 0..raw.len(), id, 0).unwrap();
    assert_eq!(json["priority"], json!(-5));
    assert_eq!(json["activeDeadlineSeconds"], json!(-7));
}

#[test]
fn embedded_raw_extension_and_micro_time() {
    // A ControllerRevision carries its object as RawExtension; an Event's eventTime is a
    // MicroTime.
    let revision = apps::ControllerRevision {
        metadata: named("rev"),
        data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension {
            raw: Some(br#"{"spec":{"template":{}}}"#.to_vec()),
        }),
        revision: Some(2),
    };
    roundtrip::<oa_apps::ControllerRevision>(
        "apps/v1",
        "ControllerRevision",
        &revision,
        &json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "rev", "creationTimestamp": null},
            "data": {"spec": {"template": {}}}, "revision": 2}),
    );
    let event = core::Event {
        metadata: named("e"),
        involved_object: Some(core::ObjectReference::default()),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_789),
        }),
        count: Some(2),
        ..Default::default()
    };
    roundtrip::<oa_core::Event>(
        "v1",
        "Event",
        &event,
        &json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "creationTimestamp": null},
            "involvedObject": {}, "eventTime": "2023-11-14T22:13:20.123456Z", "count": 2}),
    );
}

#[test]
fn errors_name_the_offset_and_the_message() {
    assert!(matches!(
        decode_request(b"{\"kind\":\"Namespace\"}"),
        Err(ProtobufError::MissingMagic)
    ));
    let ns = core::Namespace {
        metadata: named("demo"),
        ..Default::default()
    };
    assert!(matches!(
        decode_request(&body("v1", "Nope", &ns)),
        Err(ProtobufError::UnknownKind { kind, .. }) if kind == "Nope"
    ));
    assert!(matches!(
        decode_request(&body("", "", &ns)),
        Err(ProtobufError::MissingTypeMeta)
    ));

    // Namespace.metadata (field 1) claims 50 bytes but the body ends first.
    let id = schema::find_message("k8s.io.api.core.v1.Namespace").unwrap();
    let raw = [0x0a, 50, 0x0a, 0x01, b'x'];
    let err = decode::message(&raw, 0..raw.len(), id, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ProtobufError::Malformed {
                offset: 1,
                message: "k8s.io.api.core.v1.Namespace",
                problem: Problem::Truncated
            }
        ),
        "{err:?}"
    );
    // ObjectMeta.name (field 1) sent as a varint.
    let raw = [0x0a, 0x02, 0x08, 0x01];
    let err = decode::message(&raw, 0..raw.len(), id, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ProtobufError::Malformed {
                offset: 2,
                message: "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                problem: Problem::WireType {
                    field: 1,
                    found: 0,
                    expected: 2
                }
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "malformed protobuf at byte 2 in k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta: \
         field 1 has wire type 0, expected 2"
    );
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    // ControllerRevisions embedding ControllerRevisions (RawExtension bodies), far past the cap.
    let mut raw = br#"{"kind":"X"}"#.to_vec();
    for _ in 0..10_000 {
        let revision = apps::ControllerRevision {
            data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(raw) }),
            ..Default::default()
        };
        raw = body("apps/v1", "ControllerRevision", &revision);
    }
    let err = decode_request(&raw).unwrap_err();
    assert!(
        matches!(
            err,
            ProtobufError::Malformed {
                problem: Problem::TooDeep(_),
                ..
            }
        ),
        "{err:?}"
    );
    // Unknown groups nested inside each other.
    let id = schema::find_message("k8s.io.api.core.v1.Namespace").unwrap();
    let mut raw = Vec::new();
    raw.extend(std::iter::repeat_n(0x9b_u8, 10_000).flat_map(|b| [b, 0x06]));
    raw.extend(std::iter::repeat_n(0x9c_u8, 10_000).flat_map(|b| [b, 0x06]));
    let err = decode::message(&raw, 0..raw.len(), id, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ProtobufError::Malformed {
                problem: Problem::TooDeep(_),
                ..
            }
        ),
        "{err:?}"
    );
}

/// xorshift64*: deterministic noise without a rand dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_truncated_and_mutated_bodies_never_panic() {
    let deployment = apps::Deployment {
        metadata: named("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            template: Some(pod_template()),
            ..Default::default()
        }),
        status: None,
    };
    let valid = body("apps/v1", "Deployment", &deployment);
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    // Every truncation.
    for len in 0..valid.len() {
        let _ = decode_request(&valid[..len]);
    }
    // Mutations of a valid body: flipped bytes, inserted bytes, cut ranges.
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        for _ in 0..=noise.next() % 4 {
            let at = (noise.next() as usize) % bytes.len();
            match noise.next() % 3 {
                0 => bytes[at] = noise.next() as u8,
                1 => bytes.insert(at, noise.next() as u8),
                _ => {
                    let end = (at + (noise.next() as usize) % 8).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
        }
        let _ = decode_request(&bytes);
    }
    // Pure noise after the magic.
    for _ in 0..5_000 {
        let len = (noise.next() % 200) as usize;
        let mut bytes = b"k8s\0".to_vec();
        bytes.extend((0..len).map(|_| noise.next() as u8));
        let _ = decode_request(&bytes);
        // And as any message of the table.
        let id = (noise.next() % MESSAGES.len() as u64) as u16;
        let _ = decode::message(&bytes, 4..bytes.len(), id, 0);
    }
}

#[test]
fn content_type_detection() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=binary"
    ));
    assert!(is_protobuf(
        "Application/VND.Kubernetes.Protobuf;stream=watch"
    ));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf+json"));
    assert!(!is_protobuf(""));
}

#[test]
fn go_time_and_duration_formats() {
    assert_eq!(decode::rfc3339(0, 0, false), "1970-01-01T00:00:00Z");
    assert_eq!(
        decode::rfc3339(951_782_400, 0, false),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(decode::rfc3339(-1, 0, false), "1969-12-31T23:59:59Z");
    assert_eq!(
        decode::rfc3339(1_700_000_000, 5_000, true),
        "2023-11-14T22:13:20.000005Z"
    );
    assert_eq!(decode::go_duration(0), "0s");
    assert_eq!(decode::go_duration(1_500), "1.5µs");
    assert_eq!(decode::go_duration(2_000_000), "2ms");
    assert_eq!(decode::go_duration(1_500_000_000), "1.5s");
    assert_eq!(decode::go_duration(90_000_000_000), "1m30s");
    assert_eq!(decode::go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(decode::go_duration(-61_000_000_000), "-1m1s");
}

#[test]
fn the_table_is_sorted_for_binary_search() {
    assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
    assert!(
        KINDS
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
    );
    for message in MESSAGES {
        assert!(
            message.fields.windows(2).all(|w| w[0].number < w[1].number),
            "{}",
            message.name
        );
        for field in message.fields {
            if let Ty::Message(id) = field.ty {
                assert!(usize::from(id) < MESSAGES.len());
            }
            assert_eq!(field.inline, field.json.is_empty(), "{}", message.name);
        }
    }
    // Every kind skiff serves has a message.
    for resource in crate::registry::RESOURCES {
        assert!(
            schema::find_kind(&resource.api_version(), resource.kind).is_some(),
            "{} {}",
            resource.api_version(),
            resource.kind
        );
    }
}

// --- every field of the table, checked against k8s-pb (tags, wire types) and k8s-openapi
// (JSON names, value shapes).

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, payload.len() as u64);
    out.extend(payload);
}

fn put_int(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

/// A value for every field, recursing into messages not already being built.
fn synthesize(id: u16, stack: &mut Vec<u16>) -> Vec<u8> {
    let msg = schema::message(id);
    let mut out = Vec::new();
    if let Some(special) = msg.special {
        match special {
            Special::Time => put_int(&mut out, 1, 1_700_000_000),
            Special::MicroTime => {
                put_int(&mut out, 1, 1_700_000_000);
                put_int(&mut out, 2, 123_456_000);
            }
            Special::Duration => put_int(&mut out, 1, 90_000_000_000),
            Special::Quantity => put_len(&mut out, 1, b"250m"),
            Special::IntOrString => {
                put_int(&mut out, 1, 0);
                put_int(&mut out, 2, 8080);
            }
            Special::RawExtension => put_len(&mut out, 1, br#"{"kind":"X"}"#),
            Special::FieldsV1 => put_len(&mut out, 1, br#"{"f:a":{}}"#),
            Special::StringList => put_len(&mut out, 1, b"x"),
        }
        return out;
    }
    stack.push(id);
    for field in msg.fields {
        let unconfirmed = UNCONFIRMED_NAMES
            .iter()
            .any(|(m, n, _)| *m == msg.name && *n == field.number);
        if unconfirmed {
            continue;
        }
        let mut value = Vec::new();
        let wire = match field.ty {
            Ty::Bool => {
                put_varint(&mut value, 1);
                0
            }
            Ty::Int32 | Ty::Int64 => {
                put_varint(&mut value, 7);
                0
            }
            Ty::Double => {
                value.extend(1.5_f64.to_le_bytes());
                1
            }
            Ty::String => {
                put_varint(&mut value, 1);
                value.push(b's');
                2
            }
            Ty::Bytes => {
                put_varint(&mut value, 3);
                value.extend([1, 2, 3]);
                2
            }
            Ty::Message(child) if stack.contains(&child) => continue,
            Ty::Message(child) => {
                let inner = synthesize(child, stack);
                put_varint(&mut value, inner.len() as u64);
                value.extend(inner);
                2
            }
        };
        match field.label {
            Label::Optional | Label::Repeated => {
                put_varint(&mut out, (u64::from(field.number) << 3) | wire);
                out.extend(value);
            }
            Label::Map => {
                let mut entry = Vec::new();
                put_len(&mut entry, 1, b"k");
                put_varint(&mut entry, (2 << 3) | wire);
                entry.extend(value);
                put_len(&mut out, field.number, &entry);
            }
        }
    }
    stack.pop();
    out
}

fn every_field<P, T>(api_version: &str, kind: &str)
where
    P: prost::Message + Default,
    T: DeserializeOwned + Serialize,
{
    let id = schema::find_kind(api_version, kind).unwrap();
    let raw = synthesize(id, &mut Vec::new());
    let mut framed = b"k8s\0".to_vec();
    framed.extend(
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: s(api_version),
                kind: s(kind),
            }),
            raw: Some(raw.clone()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let json = decode_request(&framed).unwrap();
    // k8s-openapi knows every name and reads every value.
    assert_valid::<T>(&json);
    // k8s-pb agrees on every number and wire type: prost keeps what it reads, and what it
    // writes back decodes to the same JSON.
    let reencoded = P::decode(raw.as_slice())
        .unwrap_or_else(|e| panic!("k8s-pb rejects the table's {kind}: {e}"))
        .encode_to_vec();
    assert_eq!(
        decode::message(&reencoded, 0..reencoded.len(), id, 0).unwrap(),
        decode::message(&raw, 0..raw.len(), id, 0).unwrap(),
        "{kind}: k8s-pb drops or changes fields of the table"
    );
}

#[test]
fn every_field_of_the_kubectl_kinds_round_trips() {
    every_field::<core::Namespace, oa_core::Namespace>("v1", "Namespace");
    every_field::<core::ConfigMap, oa_core::ConfigMap>("v1", "ConfigMap");
    every_field::<core::Secret, oa_core::Secret>("v1", "Secret");
    every_field::<core::ServiceAccount, oa_core::ServiceAccount>("v1", "ServiceAccount");
    every_field::<core::Service, oa_core::Service>("v1", "Service");
    every_field::<core::ResourceQuota, oa_core::ResourceQuota>("v1", "ResourceQuota");
    every_field::<core::Pod, oa_core::Pod>("v1", "Pod");
    every_field::<core::Node, oa_core::Node>("v1", "Node");
    every_field::<core::Event, oa_core::Event>("v1", "Event");
    every_field::<apps::Deployment, oa_apps::Deployment>("apps/v1", "Deployment");
    every_field::<apps::StatefulSet, oa_apps::StatefulSet>("apps/v1", "StatefulSet");
    every_field::<apps::DaemonSet, oa_apps::DaemonSet>("apps/v1", "DaemonSet");
    every_field::<batch::Job, oa_batch::Job>("batch/v1", "Job");
    every_field::<batch::CronJob, oa_batch::CronJob>("batch/v1", "CronJob");
    every_field::<rbac::Role, oa_rbac::Role>("rbac.authorization.k8s.io/v1", "Role");
    every_field::<rbac::RoleBinding, oa_rbac::RoleBinding>(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
    );
    every_field::<rbac::ClusterRole, oa_rbac::ClusterRole>(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
    );
    every_field::<rbac::ClusterRoleBinding, oa_rbac::ClusterRoleBinding>(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
    );
    every_field::<authz::SelfSubjectAccessReview, oa_authz::SelfSubjectAccessReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    );
    every_field::<authz::SelfSubjectRulesReview, oa_authz::SelfSubjectRulesReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    );
    every_field::<authn::SelfSubjectReview, oa_authn::SelfSubjectReview>(
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
    );
    every_field::<
        k8s_pb::api::scheduling::v1::PriorityClass,
        k8s_openapi::api::scheduling::v1::PriorityClass,
    >("scheduling.k8s.io/v1", "PriorityClass");
    every_field::<k8s_pb::api::networking::v1::Ingress, k8s_openapi::api::networking::v1::Ingress>(
        "networking.k8s.io/v1",
        "Ingress",
    );
    every_field::<
        k8s_pb::api::networking::v1::NetworkPolicy,
        k8s_openapi::api::networking::v1::NetworkPolicy,
    >("networking.k8s.io/v1", "NetworkPolicy");
    every_field::<
        k8s_pb::api::discovery::v1::EndpointSlice,
        k8s_openapi::api::discovery::v1::EndpointSlice,
    >("discovery.k8s.io/v1", "EndpointSlice");
    every_field::<
        k8s_pb::api::autoscaling::v2::HorizontalPodAutoscaler,
        k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    >("autoscaling/v2", "HorizontalPodAutoscaler");
    every_field::<
        k8s_pb::api::policy::v1::PodDisruptionBudget,
        k8s_openapi::api::policy::v1::PodDisruptionBudget,
    >("policy/v1", "PodDisruptionBudget");
    every_field::<k8s_pb::api::coordination::v1::Lease, k8s_openapi::api::coordination::v1::Lease>(
        "coordination.k8s.io/v1",
        "Lease",
    );
}
