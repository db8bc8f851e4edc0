//! What the kind's schema says about an object: whether it decodes as the kind
//! (`check_decodes`, a 400 otherwise) and which of its fields the kind does not have
//! (`unknown_fields`, for `fieldValidation=Strict|Warn`).
//!
//! The schema is k8s-openapi's: an object is decoded into the kind's typed struct and encoded
//! back, and every field of the input that did not survive the round trip is unknown. The
//! typed structs keep everything inside maps (labels, data, resource lists) and free-form
//! fields (`RawExtension`, `FieldsV1`), so those never count as unknown; lists are compared
//! item by item. A field set to `null` is never reported: kubectl sends
//! `creationTimestamp: null`, and null decodes as absent.

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, networking::v1 as networking, policy::v1 as policy,
    rbac::v1 as rbac,
};
use serde_json::{Map, Value};

use crate::registry::Resource;

/// Why an object does not decode as its kind.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a JSON object.
    #[error(
        "{kind} in version {version:?} cannot be handled as a {kind}: the object must be a JSON object"
    )]
    NotAnObject {
        kind: &'static str,
        version: &'static str,
    },
    /// A field has the wrong type (a string where a number goes, ...).
    #[error("{kind} in version {version:?} cannot be handled as a {kind}: {source}")]
    Shape {
        kind: &'static str,
        version: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The registry serves a kind this module has no schema for.
    #[error("no schema for {kind} in version {version:?}")]
    UnknownKind {
        kind: &'static str,
        version: &'static str,
    },
}

/// Runs `$body` with `$t` naming the k8s-openapi type of the resource; `$other` when there
/// is none.
macro_rules! with_type {
    ($resource:expr, $t:ident => $body:expr, _ => $other:expr) => {
        match ($resource.group, $resource.version, $resource.kind) {
            ("", "v1", "Pod") => {
                type $t = core::Pod;
                $body
            }
            ("", "v1", "Service") => {
                type $t = core::Service;
                $body
            }
            ("", "v1", "Endpoints") => {
                type $t = core::Endpoints;
                $body
            }
            ("", "v1", "ConfigMap") => {
                type $t = core::ConfigMap;
                $body
            }
            ("", "v1", "Secret") => {
                type $t = core::Secret;
                $body
            }
            ("", "v1", "ServiceAccount") => {
                type $t = core::ServiceAccount;
                $body
            }
            ("", "v1", "Namespace") => {
                type $t = core::Namespace;
                $body
            }
            ("", "v1", "Node") => {
                type $t = core::Node;
                $body
            }
            ("", "v1", "Event") => {
                type $t = core::Event;
                $body
            }
            ("apps", "v1", "Deployment") => {
                type $t = apps::Deployment;
                $body
            }
            ("apps", "v1", "ReplicaSet") => {
                type $t = apps::ReplicaSet;
                $body
            }
            ("apps", "v1", "StatefulSet") => {
                type $t = apps::StatefulSet;
                $body
            }
            ("apps", "v1", "DaemonSet") => {
                type $t = apps::DaemonSet;
                $body
            }
            ("apps", "v1", "ControllerRevision") => {
                type $t = apps::ControllerRevision;
                $body
            }
            ("batch", "v1", "Job") => {
                type $t = batch::Job;
                $body
            }
            ("batch", "v1", "CronJob") => {
                type $t = batch::CronJob;
                $body
            }
            ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
                type $t = autoscaling_v2::HorizontalPodAutoscaler;
                $body
            }
            ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
                type $t = autoscaling_v1::HorizontalPodAutoscaler;
                $body
            }
            ("discovery.k8s.io", "v1", "EndpointSlice") => {
                type $t = discovery::EndpointSlice;
                $body
            }
            ("networking.k8s.io", "v1", "Ingress") => {
                type $t = networking::Ingress;
                $body
            }
            ("networking.k8s.io", "v1", "NetworkPolicy") => {
                type $t = networking::NetworkPolicy;
                $body
            }
            ("policy", "v1", "PodDisruptionBudget") => {
                type $t = policy::PodDisruptionBudget;
                $body
            }
            ("rbac.authorization.k8s.io", "v1", "ClusterRole") => {
                type $t = rbac::ClusterRole;
                $body
            }
            ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => {
                type $t = rbac::ClusterRoleBinding;
                $body
            }
            ("rbac.authorization.k8s.io", "v1", "Role") => {
                type $t = rbac::Role;
                $body
            }
            ("rbac.authorization.k8s.io", "v1", "RoleBinding") => {
                type $t = rbac::RoleBinding;
                $body
            }
            ("coordination.k8s.io", "v1", "Lease") => {
                type $t = coordination::Lease;
                $body
            }
            ("certificates.k8s.io", "v1", "CertificateSigningRequest") => {
                type $t = certificates::CertificateSigningRequest;
                $body
            }
            ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => {
                type $t = authz::SelfSubjectAccessReview;
                $body
            }
            ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => {
                type $t = authz::SelfSubjectRulesReview;
                $body
            }
            ("authorization.k8s.io", "v1", "SubjectAccessReview") => {
                type $t = authz::SubjectAccessReview;
                $body
            }
            ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => {
                type $t = authz::LocalSubjectAccessReview;
                $body
            }
            ("authentication.k8s.io", "v1", "TokenReview") => {
                type $t = authn::TokenReview;
                $body
            }
            ("authentication.k8s.io", "v1", "SelfSubjectReview") => {
                type $t = authn::SelfSubjectReview;
                $body
            }
            _ => $other,
        }
    };
}

/// The object without `apiVersion`/`kind` (the resource, not the body, says what it is; the
/// typed structs reject a mismatch).
fn strip(obj: &Map<String, Value>) -> Value {
    Value::Object(
        obj.iter()
            .filter(|(k, _)| *k != "apiVersion" && *k != "kind")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// Decodes the object as its kind and encodes it back.
fn round_trip(resource: &Resource, obj: &Value) -> Result<Value, DecodeError> {
    let (kind, version) = (resource.kind, resource.version);
    let Some(map) = obj.as_object() else {
        return Err(DecodeError::NotAnObject { kind, version });
    };
    let input = strip(map);
    let shape = |source| DecodeError::Shape {
        kind,
        version,
        source,
    };
    with_type!(resource, T => {
        let typed: T = serde_json::from_value(input).map_err(shape)?;
        serde_json::to_value(&typed).map_err(shape)
    }, _ => Err(DecodeError::UnknownKind { kind, version }))
}

/// Checks that the object has the shape of its kind (types of every known field).
///
/// # Errors
/// The object is not a JSON object, a field has the wrong type, or the kind is not known.
pub fn check_decodes(resource: &Resource, obj: &Value) -> Result<(), DecodeError> {
    round_trip(resource, obj).map(drop)
}

/// The paths (`spec.replicaz`, `spec.template.spec.containers[0].imagePullPolicyy`,
/// `metadata.labelz`) of the fields of the object its kind does not have. An object that
/// does not decode has no answer here (see [`check_decodes`]): the list is empty.
#[must_use]
pub fn unknown_fields(resource: &Resource, obj: &Value) -> Vec<String> {
    let Ok(known) = round_trip(resource, obj) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(map) = obj.as_object() {
        for (k, v) in map {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            diff(v, known.get(k), k, &mut out);
        }
    }
    out
}

fn diff(input: &Value, known: Option<&Value>, path: &str, out: &mut Vec<String>) {
    if input.is_null() {
        return;
    }
    let Some(known) = known else {
        out.push(path.to_owned());
        return;
    };
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                diff(v, k.get(key), &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                diff(iv, Some(kv), &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}
