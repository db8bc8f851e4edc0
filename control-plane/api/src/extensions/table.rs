//! The table itself. Sources: the `+patchStrategy`, `+patchMergeKey`, `+listType`,
//! `+listMapKey`, `+mapType` and `+structType` markers on the Go types of k8s.io/api and
//! k8s.io/apimachinery (v1.33), transcribed by hand.

use super::{FieldExt, Gvk, KindSchema, ListType, MapType, TypeExt};

macro_rules! kind {
    ($g:literal, $v:literal, $k:literal, $s:literal) => {
        KindSchema {
            gvk: Gvk {
                group: $g,
                version: $v,
                kind: $k,
            },
            schema: $s,
        }
    };
}

/// Every kind skiff serves or answers with (registry.rs kinds and subresource kinds).
pub static KINDS: &[KindSchema] = &[
    kind!("", "v1", "Pod", "io.k8s.api.core.v1.Pod"),
    kind!("", "v1", "Service", "io.k8s.api.core.v1.Service"),
    kind!("", "v1", "Endpoints", "io.k8s.api.core.v1.Endpoints"),
    kind!("", "v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap"),
    kind!("", "v1", "Secret", "io.k8s.api.core.v1.Secret"),
    kind!(
        "",
        "v1",
        "ServiceAccount",
        "io.k8s.api.core.v1.ServiceAccount"
    ),
    kind!("", "v1", "Namespace", "io.k8s.api.core.v1.Namespace"),
    kind!("", "v1", "Node", "io.k8s.api.core.v1.Node"),
    kind!("", "v1", "Event", "io.k8s.api.core.v1.Event"),
    kind!("", "v1", "Binding", "io.k8s.api.core.v1.Binding"),
    kind!("policy", "v1", "Eviction", "io.k8s.api.policy.v1.Eviction"),
    kind!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "io.k8s.api.policy.v1.PodDisruptionBudget"
    ),
    kind!(
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        "io.k8s.api.authentication.v1.TokenRequest"
    ),
    kind!(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "io.k8s.api.authentication.v1.TokenReview"
    ),
    kind!(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "io.k8s.api.authentication.v1.SelfSubjectReview"
    ),
    kind!("apps", "v1", "Deployment", "io.k8s.api.apps.v1.Deployment"),
    kind!("apps", "v1", "ReplicaSet", "io.k8s.api.apps.v1.ReplicaSet"),
    kind!(
        "apps",
        "v1",
        "StatefulSet",
        "io.k8s.api.apps.v1.StatefulSet"
    ),
    kind!("apps", "v1", "DaemonSet", "io.k8s.api.apps.v1.DaemonSet"),
    kind!(
        "apps",
        "v1",
        "ControllerRevision",
        "io.k8s.api.apps.v1.ControllerRevision"
    ),
    kind!(
        "autoscaling",
        "v1",
        "Scale",
        "io.k8s.api.autoscaling.v1.Scale"
    ),
    kind!(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"
    ),
    kind!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"
    ),
    kind!("batch", "v1", "Job", "io.k8s.api.batch.v1.Job"),
    kind!("batch", "v1", "CronJob", "io.k8s.api.batch.v1.CronJob"),
    kind!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "io.k8s.api.discovery.v1.EndpointSlice"
    ),
    kind!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "io.k8s.api.networking.v1.Ingress"
    ),
    kind!(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "io.k8s.api.networking.v1.NetworkPolicy"
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "io.k8s.api.rbac.v1.ClusterRole"
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "io.k8s.api.rbac.v1.ClusterRoleBinding"
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "io.k8s.api.rbac.v1.Role"
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "io.k8s.api.rbac.v1.RoleBinding"
    ),
    kind!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "io.k8s.api.coordination.v1.Lease"
    ),
    kind!(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "io.k8s.api.certificates.v1.CertificateSigningRequest"
    ),
    kind!(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "io.k8s.api.authorization.v1.SelfSubjectAccessReview"
    ),
    kind!(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "io.k8s.api.authorization.v1.SelfSubjectRulesReview"
    ),
    kind!(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "io.k8s.api.authorization.v1.SubjectAccessReview"
    ),
    kind!(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "io.k8s.api.authorization.v1.LocalSubjectAccessReview"
    ),
];

const fn row(
    schema: &'static str,
    field: &'static str,
    patch_strategy: Option<&'static str>,
    patch_merge_key: Option<&'static str>,
    list_type: Option<ListType>,
    list_map_keys: &'static [&'static str],
) -> FieldExt {
    FieldExt {
        schema,
        field,
        patch_strategy,
        patch_merge_key,
        list_type,
        list_map_keys,
        map_type: None,
    }
}

/// `+listType=atomic`: replaced whole by every kind of patch.
const fn atomic(schema: &'static str, field: &'static str) -> FieldExt {
    row(schema, field, None, None, Some(ListType::Atomic), &[])
}

/// `+listType=set` without a patch strategy (SMP replaces it; SSA merges it).
const fn set(schema: &'static str, field: &'static str) -> FieldExt {
    row(schema, field, None, None, Some(ListType::Set), &[])
}

/// `+patchStrategy=merge +listType=set`: a primitive list merged as a set by both.
const fn merge_set(schema: &'static str, field: &'static str) -> FieldExt {
    row(schema, field, Some("merge"), None, Some(ListType::Set), &[])
}

/// `+listType=map +listMapKey=..` without a patch strategy.
const fn map(schema: &'static str, field: &'static str, keys: &'static [&'static str]) -> FieldExt {
    row(schema, field, None, None, Some(ListType::Map), keys)
}

/// `+patchMergeKey=key +patchStrategy=merge +listType=map +listMapKey=..`.
const fn merge_map(
    schema: &'static str,
    field: &'static str,
    key: &'static str,
    keys: &'static [&'static str],
) -> FieldExt {
    row(
        schema,
        field,
        Some("merge"),
        Some(key),
        Some(ListType::Map),
        keys,
    )
}

/// `+patchStrategy=merge,retainKeys` lists (volumes, resource claims).
const fn merge_retain_map(
    schema: &'static str,
    field: &'static str,
    key: &'static str,
    keys: &'static [&'static str],
) -> FieldExt {
    row(
        schema,
        field,
        Some("merge,retainKeys"),
        Some(key),
        Some(ListType::Map),
        keys,
    )
}

/// `+patchMergeKey=key +patchStrategy=merge +listType=atomic`: SMP merges by key, SSA
/// treats the list as one value.
const fn merge_atomic(schema: &'static str, field: &'static str, key: &'static str) -> FieldExt {
    row(
        schema,
        field,
        Some("merge"),
        Some(key),
        Some(ListType::Atomic),
        &[],
    )
}

/// `patchStrategy:"retainKeys"` on a struct field (a union whose discriminator changes).
const fn retain_keys(schema: &'static str, field: &'static str) -> FieldExt {
    row(schema, field, Some("retainKeys"), None, None, &[])
}

/// `+mapType=..` on a map field.
const fn map_type(schema: &'static str, field: &'static str, t: MapType) -> FieldExt {
    FieldExt {
        map_type: Some(t),
        ..row(schema, field, None, None, None, &[])
    }
}

macro_rules! core {
    ($t:literal) => {
        concat!("io.k8s.api.core.v1.", $t)
    };
}
macro_rules! meta {
    ($t:literal) => {
        concat!("io.k8s.apimachinery.pkg.apis.meta.v1.", $t)
    };
}
macro_rules! api {
    ($g:literal, $t:literal) => {
        concat!("io.k8s.api.", $g, ".", $t)
    };
}

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];

/// Every list field (and every map field with a map type) of the served kinds' schema trees.
pub static FIELDS: &[FieldExt] = &[
    // meta/v1
    merge_set(meta!("ObjectMeta"), "finalizers"),
    merge_map(meta!("ObjectMeta"), "ownerReferences", "uid", &["uid"]),
    atomic(meta!("ObjectMeta"), "managedFields"),
    atomic(meta!("LabelSelector"), "matchExpressions"),
    atomic(meta!("LabelSelectorRequirement"), "values"),
    atomic(meta!("FieldSelectorRequirement"), "values"),
    atomic(meta!("DeleteOptions"), "dryRun"),
    atomic(meta!("StatusDetails"), "causes"),
    // core/v1 PodSpec
    merge_retain_map(core!("PodSpec"), "volumes", "name", NAME),
    merge_map(core!("PodSpec"), "initContainers", "name", NAME),
    merge_map(core!("PodSpec"), "containers", "name", NAME),
    merge_map(core!("PodSpec"), "ephemeralContainers", "name", NAME),
    merge_map(core!("PodSpec"), "imagePullSecrets", "name", NAME),
    merge_map(core!("PodSpec"), "hostAliases", "ip", &["ip"]),
    merge_map(core!("PodSpec"), "schedulingGates", "name", NAME),
    merge_retain_map(core!("PodSpec"), "resourceClaims", "name", NAME),
    merge_map(
        core!("PodSpec"),
        "topologySpreadConstraints",
        "topologyKey",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    atomic(core!("PodSpec"), "tolerations"),
    atomic(core!("PodSpec"), "readinessGates"),
    map_type(core!("PodSpec"), "nodeSelector", MapType::Atomic),
    // Container and EphemeralContainer
    atomic(core!("Container"), "command"),
    atomic(core!("Container"), "args"),
    merge_map(
        core!("Container"),
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    atomic(core!("Container"), "envFrom"),
    merge_map(core!("Container"), "env", "name", NAME),
    atomic(core!("Container"), "resizePolicy"),
    merge_map(
        core!("Container"),
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    merge_map(
        core!("Container"),
        "volumeDevices",
        "devicePath",
        &["devicePath"],
    ),
    atomic(core!("EphemeralContainer"), "command"),
    atomic(core!("EphemeralContainer"), "args"),
    merge_map(
        core!("EphemeralContainer"),
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    atomic(core!("EphemeralContainer"), "envFrom"),
    merge_map(core!("EphemeralContainer"), "env", "name", NAME),
    atomic(core!("EphemeralContainer"), "resizePolicy"),
    merge_map(
        core!("EphemeralContainer"),
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    merge_map(
        core!("EphemeralContainer"),
        "volumeDevices",
        "devicePath",
        &["devicePath"],
    ),
    atomic(core!("Capabilities"), "add"),
    atomic(core!("Capabilities"), "drop"),
    atomic(core!("ExecAction"), "command"),
    atomic(core!("HTTPGetAction"), "httpHeaders"),
    atomic(core!("HostAlias"), "hostnames"),
    atomic(core!("PodDNSConfig"), "nameservers"),
    atomic(core!("PodDNSConfig"), "searches"),
    atomic(core!("PodDNSConfig"), "options"),
    atomic(core!("PodSecurityContext"), "supplementalGroups"),
    atomic(core!("PodSecurityContext"), "sysctls"),
    atomic(core!("LinuxContainerUser"), "supplementalGroups"),
    map(core!("ResourceRequirements"), "claims", NAME),
    // affinity
    atomic(
        core!("NodeAffinity"),
        "preferredDuringSchedulingIgnoredDuringExecution",
    ),
    atomic(core!("NodeSelector"), "nodeSelectorTerms"),
    atomic(core!("NodeSelectorTerm"), "matchExpressions"),
    atomic(core!("NodeSelectorTerm"), "matchFields"),
    atomic(core!("NodeSelectorRequirement"), "values"),
    atomic(
        core!("PodAffinity"),
        "requiredDuringSchedulingIgnoredDuringExecution",
    ),
    atomic(
        core!("PodAffinity"),
        "preferredDuringSchedulingIgnoredDuringExecution",
    ),
    atomic(
        core!("PodAntiAffinity"),
        "requiredDuringSchedulingIgnoredDuringExecution",
    ),
    atomic(
        core!("PodAntiAffinity"),
        "preferredDuringSchedulingIgnoredDuringExecution",
    ),
    atomic(core!("PodAffinityTerm"), "namespaces"),
    atomic(core!("PodAffinityTerm"), "matchLabelKeys"),
    atomic(core!("PodAffinityTerm"), "mismatchLabelKeys"),
    atomic(core!("TopologySpreadConstraint"), "matchLabelKeys"),
    // volume sources
    atomic(core!("ConfigMapVolumeSource"), "items"),
    atomic(core!("SecretVolumeSource"), "items"),
    atomic(core!("ConfigMapProjection"), "items"),
    atomic(core!("SecretProjection"), "items"),
    atomic(core!("DownwardAPIVolumeSource"), "items"),
    atomic(core!("DownwardAPIProjection"), "items"),
    atomic(core!("ProjectedVolumeSource"), "sources"),
    atomic(core!("CephFSVolumeSource"), "monitors"),
    atomic(core!("RBDVolumeSource"), "monitors"),
    atomic(core!("FCVolumeSource"), "targetWWNs"),
    atomic(core!("FCVolumeSource"), "wwids"),
    atomic(core!("ISCSIVolumeSource"), "portals"),
    atomic(core!("PersistentVolumeClaimSpec"), "accessModes"),
    atomic(core!("PersistentVolumeClaimStatus"), "accessModes"),
    merge_map(
        core!("PersistentVolumeClaimStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    map_type(
        core!("PersistentVolumeClaimStatus"),
        "allocatedResourceStatuses",
        MapType::Granular,
    ),
    // PodStatus
    merge_map(core!("PodStatus"), "conditions", "type", TYPE),
    merge_atomic(core!("PodStatus"), "hostIPs", "ip"),
    merge_map(core!("PodStatus"), "podIPs", "ip", &["ip"]),
    atomic(core!("PodStatus"), "initContainerStatuses"),
    atomic(core!("PodStatus"), "containerStatuses"),
    atomic(core!("PodStatus"), "ephemeralContainerStatuses"),
    merge_retain_map(core!("PodStatus"), "resourceClaimStatuses", "name", NAME),
    merge_map(
        core!("ContainerStatus"),
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    merge_map(
        core!("ContainerStatus"),
        "allocatedResourcesStatus",
        "name",
        NAME,
    ),
    map(core!("ResourceStatus"), "resources", &["resourceID"]),
    // Service, Endpoints
    merge_map(core!("ServiceSpec"), "ports", "port", &["port", "protocol"]),
    atomic(core!("ServiceSpec"), "clusterIPs"),
    atomic(core!("ServiceSpec"), "externalIPs"),
    atomic(core!("ServiceSpec"), "ipFamilies"),
    atomic(core!("ServiceSpec"), "loadBalancerSourceRanges"),
    map_type(core!("ServiceSpec"), "selector", MapType::Atomic),
    merge_map(core!("ServiceStatus"), "conditions", "type", TYPE),
    atomic(core!("LoadBalancerStatus"), "ingress"),
    atomic(core!("LoadBalancerIngress"), "ports"),
    atomic(core!("Endpoints"), "subsets"),
    atomic(core!("EndpointSubset"), "addresses"),
    atomic(core!("EndpointSubset"), "notReadyAddresses"),
    atomic(core!("EndpointSubset"), "ports"),
    // ServiceAccount, Namespace, Node
    merge_map(core!("ServiceAccount"), "secrets", "name", NAME),
    atomic(core!("ServiceAccount"), "imagePullSecrets"),
    atomic(core!("NamespaceSpec"), "finalizers"),
    merge_map(core!("NamespaceStatus"), "conditions", "type", TYPE),
    merge_set(core!("NodeSpec"), "podCIDRs"),
    atomic(core!("NodeSpec"), "taints"),
    merge_map(core!("NodeStatus"), "conditions", "type", TYPE),
    merge_map(core!("NodeStatus"), "addresses", "type", TYPE),
    atomic(core!("NodeStatus"), "images"),
    atomic(core!("NodeStatus"), "volumesInUse"),
    atomic(core!("NodeStatus"), "volumesAttached"),
    atomic(core!("NodeStatus"), "runtimeHandlers"),
    atomic(core!("ContainerImage"), "names"),
    // apps/v1
    retain_keys(api!("apps.v1", "DeploymentSpec"), "strategy"),
    merge_map(
        api!("apps.v1", "DeploymentStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    merge_map(
        api!("apps.v1", "ReplicaSetStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    merge_map(
        api!("apps.v1", "StatefulSetStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    merge_map(
        api!("apps.v1", "DaemonSetStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    atomic(api!("apps.v1", "StatefulSetSpec"), "volumeClaimTemplates"),
    // certificates.k8s.io/v1
    atomic(
        api!("certificates.v1", "CertificateSigningRequestSpec"),
        "groups",
    ),
    atomic(
        api!("certificates.v1", "CertificateSigningRequestSpec"),
        "usages",
    ),
    map(
        api!("certificates.v1", "CertificateSigningRequestStatus"),
        "conditions",
        TYPE,
    ),
    // batch/v1
    atomic(api!("batch.v1", "CronJobStatus"), "active"),
    merge_atomic(api!("batch.v1", "JobStatus"), "conditions", "type"),
    atomic(api!("batch.v1", "PodFailurePolicy"), "rules"),
    atomic(api!("batch.v1", "PodFailurePolicyRule"), "onPodConditions"),
    set(
        api!("batch.v1", "PodFailurePolicyOnExitCodesRequirement"),
        "values",
    ),
    atomic(api!("batch.v1", "SuccessPolicy"), "rules"),
    set(api!("batch.v1", "UncountedTerminatedPods"), "succeeded"),
    set(api!("batch.v1", "UncountedTerminatedPods"), "failed"),
    // autoscaling/v2
    atomic(
        api!("autoscaling.v2", "HorizontalPodAutoscalerSpec"),
        "metrics",
    ),
    atomic(api!("autoscaling.v2", "HPAScalingRules"), "policies"),
    merge_map(
        api!("autoscaling.v2", "HorizontalPodAutoscalerStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    atomic(
        api!("autoscaling.v2", "HorizontalPodAutoscalerStatus"),
        "currentMetrics",
    ),
    // discovery.k8s.io/v1
    atomic(api!("discovery.v1", "EndpointSlice"), "endpoints"),
    atomic(api!("discovery.v1", "EndpointSlice"), "ports"),
    set(api!("discovery.v1", "Endpoint"), "addresses"),
    atomic(api!("discovery.v1", "EndpointHints"), "forZones"),
    atomic(api!("discovery.v1", "EndpointHints"), "forNodes"),
    // networking.k8s.io/v1
    atomic(api!("networking.v1", "IngressSpec"), "tls"),
    atomic(api!("networking.v1", "IngressSpec"), "rules"),
    atomic(api!("networking.v1", "IngressTLS"), "hosts"),
    atomic(api!("networking.v1", "HTTPIngressRuleValue"), "paths"),
    atomic(
        api!("networking.v1", "IngressLoadBalancerStatus"),
        "ingress",
    ),
    atomic(api!("networking.v1", "IngressLoadBalancerIngress"), "ports"),
    atomic(api!("networking.v1", "NetworkPolicySpec"), "ingress"),
    atomic(api!("networking.v1", "NetworkPolicySpec"), "egress"),
    atomic(api!("networking.v1", "NetworkPolicySpec"), "policyTypes"),
    atomic(api!("networking.v1", "NetworkPolicyIngressRule"), "ports"),
    atomic(api!("networking.v1", "NetworkPolicyIngressRule"), "from"),
    atomic(api!("networking.v1", "NetworkPolicyEgressRule"), "ports"),
    atomic(api!("networking.v1", "NetworkPolicyEgressRule"), "to"),
    atomic(api!("networking.v1", "IPBlock"), "except"),
    // policy/v1
    merge_map(
        api!("policy.v1", "PodDisruptionBudgetStatus"),
        "conditions",
        "type",
        TYPE,
    ),
    // rbac.authorization.k8s.io/v1
    atomic(api!("rbac.v1", "Role"), "rules"),
    atomic(api!("rbac.v1", "ClusterRole"), "rules"),
    atomic(api!("rbac.v1", "RoleBinding"), "subjects"),
    atomic(api!("rbac.v1", "ClusterRoleBinding"), "subjects"),
    atomic(api!("rbac.v1", "PolicyRule"), "verbs"),
    atomic(api!("rbac.v1", "PolicyRule"), "apiGroups"),
    atomic(api!("rbac.v1", "PolicyRule"), "resources"),
    atomic(api!("rbac.v1", "PolicyRule"), "resourceNames"),
    atomic(api!("rbac.v1", "PolicyRule"), "nonResourceURLs"),
    atomic(api!("rbac.v1", "AggregationRule"), "clusterRoleSelectors"),
    // authentication.k8s.io/v1
    atomic(api!("authentication.v1", "TokenRequestSpec"), "audiences"),
    atomic(api!("authentication.v1", "TokenReviewSpec"), "audiences"),
    atomic(api!("authentication.v1", "TokenReviewStatus"), "audiences"),
    atomic(api!("authentication.v1", "UserInfo"), "groups"),
    // authorization.k8s.io/v1
    atomic(
        api!("authorization.v1", "SubjectAccessReviewSpec"),
        "groups",
    ),
    atomic(
        api!("authorization.v1", "SubjectRulesReviewStatus"),
        "resourceRules",
    ),
    atomic(
        api!("authorization.v1", "SubjectRulesReviewStatus"),
        "nonResourceRules",
    ),
    atomic(api!("authorization.v1", "ResourceRule"), "verbs"),
    atomic(api!("authorization.v1", "ResourceRule"), "apiGroups"),
    atomic(api!("authorization.v1", "ResourceRule"), "resources"),
    atomic(api!("authorization.v1", "ResourceRule"), "resourceNames"),
    atomic(api!("authorization.v1", "NonResourceRule"), "verbs"),
    atomic(
        api!("authorization.v1", "NonResourceRule"),
        "nonResourceURLs",
    ),
    atomic(
        api!("authorization.v1", "FieldSelectorAttributes"),
        "requirements",
    ),
    atomic(
        api!("authorization.v1", "LabelSelectorAttributes"),
        "requirements",
    ),
];

const fn atomic_type(schema: &'static str) -> TypeExt {
    TypeExt {
        schema,
        map_type: MapType::Atomic,
    }
}

/// Types that are one value as a whole (`+structType=atomic`).
pub static TYPES: &[TypeExt] = &[
    atomic_type(meta!("LabelSelector")),
    atomic_type(meta!("OwnerReference")),
    atomic_type(core!("LocalObjectReference")),
    atomic_type(core!("ObjectReference")),
    atomic_type(core!("TypedLocalObjectReference")),
    atomic_type(core!("ConfigMapKeySelector")),
    atomic_type(core!("SecretKeySelector")),
    atomic_type(core!("ObjectFieldSelector")),
    atomic_type(core!("ResourceFieldSelector")),
    atomic_type(core!("NodeSelector")),
    atomic_type(api!("rbac.v1", "RoleRef")),
];
