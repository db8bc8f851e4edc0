//! Which k8s-openapi type carries each served kind's schema.

use k8s_openapi::{
    api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
        autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2, batch::v1 as batch,
        certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, networking::v1 as networking, policy::v1 as policy,
        rbac::v1 as rbac,
    },
    apimachinery::pkg::apis::meta::v1 as meta,
};
use schemars::{JsonSchema, generate::SchemaGenerator};

macro_rules! kinds {
    ($( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {
        /// Adds the schema of a kind (and everything it references) to the generator and
        /// returns its schema name; `None` for kinds without a schema (connect options).
        pub(super) fn add_schema(
            generator: &mut SchemaGenerator,
            group: &str,
            version: &str,
            kind: &str,
        ) -> Option<String> {
            match (group, version, kind) {
                $( ($g, $v, $k) => {
                    generator.subschema_for::<$t>();
                    Some(<$t as JsonSchema>::schema_name().into_owned())
                } )*
                _ => None,
            }
        }

        /// Every kind with a schema, as (group, version, kind, schema name).
        #[cfg(test)]
        pub(super) fn all() -> Vec<(&'static str, &'static str, &'static str, String)> {
            vec![$( ($g, $v, $k, <$t as JsonSchema>::schema_name().into_owned()) ),*]
        }
    };
}

kinds! {
    ("", "v1", "Pod") => core::Pod,
    ("", "v1", "Service") => core::Service,
    ("", "v1", "Endpoints") => core::Endpoints,
    ("", "v1", "ConfigMap") => core::ConfigMap,
    ("", "v1", "Secret") => core::Secret,
    ("", "v1", "ServiceAccount") => core::ServiceAccount,
    ("", "v1", "Namespace") => core::Namespace,
    ("", "v1", "Node") => core::Node,
    ("", "v1", "Event") => core::Event,
    ("", "v1", "Binding") => core::Binding,
    ("policy", "v1", "Eviction") => policy::Eviction,
    ("policy", "v1", "PodDisruptionBudget") => policy::PodDisruptionBudget,
    ("authentication.k8s.io", "v1", "TokenRequest") => authn::TokenRequest,
    ("authentication.k8s.io", "v1", "TokenReview") => authn::TokenReview,
    ("authentication.k8s.io", "v1", "SelfSubjectReview") => authn::SelfSubjectReview,
    ("apps", "v1", "Deployment") => apps::Deployment,
    ("apps", "v1", "ReplicaSet") => apps::ReplicaSet,
    ("apps", "v1", "StatefulSet") => apps::StatefulSet,
    ("apps", "v1", "DaemonSet") => apps::DaemonSet,
    ("apps", "v1", "ControllerRevision") => apps::ControllerRevision,
    ("autoscaling", "v1", "Scale") => autoscaling_v1::Scale,
    ("autoscaling", "v1", "HorizontalPodAutoscaler") => autoscaling_v1::HorizontalPodAutoscaler,
    ("autoscaling", "v2", "HorizontalPodAutoscaler") => autoscaling_v2::HorizontalPodAutoscaler,
    ("batch", "v1", "Job") => batch::Job,
    ("batch", "v1", "CronJob") => batch::CronJob,
    ("discovery.k8s.io", "v1", "EndpointSlice") => discovery::EndpointSlice,
    ("networking.k8s.io", "v1", "Ingress") => networking::Ingress,
    ("networking.k8s.io", "v1", "NetworkPolicy") => networking::NetworkPolicy,
    ("rbac.authorization.k8s.io", "v1", "ClusterRole") => rbac::ClusterRole,
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => rbac::ClusterRoleBinding,
    ("rbac.authorization.k8s.io", "v1", "Role") => rbac::Role,
    ("rbac.authorization.k8s.io", "v1", "RoleBinding") => rbac::RoleBinding,
    ("coordination.k8s.io", "v1", "Lease") => coordination::Lease,
    ("certificates.k8s.io", "v1", "CertificateSigningRequest") => certificates::CertificateSigningRequest,
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => authz::SelfSubjectAccessReview,
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => authz::SelfSubjectRulesReview,
    ("authorization.k8s.io", "v1", "SubjectAccessReview") => authz::SubjectAccessReview,
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => authz::LocalSubjectAccessReview,
}

/// The meta types every document's operations reference.
pub(super) fn add_common(generator: &mut SchemaGenerator) {
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::ListMeta>();
    generator
        .subschema_for::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>();
}

pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
