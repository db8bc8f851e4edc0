//! The resources skiff serves: group, version, kind, names, scope, verbs, subresources. This
//! one table drives routing, discovery (aggregated and legacy), OpenAPI paths, RBAC resource
//! names and `kubectl api-resources`.

use serde::Serialize;

/// Verbs of a resource that stores objects.
pub const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of a resource that only answers a POST (reviews).
pub const CREATE_ONLY: &[&str] = &["create"];

/// A subresource of a resource (`pods/status`, `deployments/scale`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind the subresource answers with: (group, version, kind).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource at one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL segment (plural, lower case).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

impl Resource {
    /// `v1` for the core group, `group/version` otherwise.
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as RBAC rules and `kubectl get` name it.
    #[must_use]
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether objects of this resource are stored (reviews are computed, not stored).
    #[must_use]
    pub fn is_stored(&self) -> bool {
        self.verbs.contains(&"get")
    }

    #[must_use]
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

const fn sub(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        group,
        version,
        kind,
        verbs,
    }
}

const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
const CONNECT_VERBS: &[&str] = &["create", "get"];
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

macro_rules! status {
    ($g:expr, $v:expr, $k:expr) => {
        sub("status", $g, $v, $k, STATUS_VERBS)
    };
}

macro_rules! scale {
    () => {
        sub("scale", "autoscaling", "v1", "Scale", STATUS_VERBS)
    };
}

#[expect(clippy::too_many_arguments, reason = "a table row constructor")]
const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        verbs,
        short_names,
        categories,
        subresources,
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every served resource. Order matters: discovery lists them in this order, and `kubectl get
/// all` walks the `all` category in discovery order.
pub static RESOURCES: &[Resource] = &[
    // core/v1
    res(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        CRUD,
        &["po"],
        ALL,
        &[
            status!("", "v1", "Pod"),
            sub("binding", "", "v1", "Binding", CREATE_ONLY),
            sub("eviction", "policy", "v1", "Eviction", CREATE_ONLY),
            sub("log", "", "v1", "Pod", &["get"]),
            sub("exec", "", "v1", "PodExecOptions", CONNECT_VERBS),
            sub("attach", "", "v1", "PodAttachOptions", CONNECT_VERBS),
            sub(
                "portforward",
                "",
                "v1",
                "PodPortForwardOptions",
                CONNECT_VERBS,
            ),
            sub("proxy", "", "v1", "PodProxyOptions", PROXY_VERBS),
        ],
    ),
    res(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        CRUD,
        &["svc"],
        ALL,
        &[
            status!("", "v1", "Service"),
            sub("proxy", "", "v1", "ServiceProxyOptions", PROXY_VERBS),
        ],
    ),
    res(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        CRUD,
        &["ep"],
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        CRUD,
        &["cm"],
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        CRUD,
        &["sa"],
        NONE,
        &[sub(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            CREATE_ONLY,
        )],
    ),
    res(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        &["ns"],
        NONE,
        &[
            status!("", "v1", "Namespace"),
            sub("finalize", "", "v1", "Namespace", &["update"]),
        ],
    ),
    res(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        CRUD,
        &["no"],
        NONE,
        &[
            status!("", "v1", "Node"),
            sub("proxy", "", "v1", "NodeProxyOptions", PROXY_VERBS),
        ],
    ),
    res(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        CRUD,
        &["ev"],
        NONE,
        &[],
    ),
    // apps/v1
    res(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        CRUD,
        &["deploy"],
        ALL,
        &[status!("apps", "v1", "Deployment"), scale!()],
    ),
    res(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        CRUD,
        &["rs"],
        ALL,
        &[status!("apps", "v1", "ReplicaSet"), scale!()],
    ),
    res(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        CRUD,
        &["sts"],
        ALL,
        &[status!("apps", "v1", "StatefulSet"), scale!()],
    ),
    res(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        CRUD,
        &["ds"],
        ALL,
        &[status!("apps", "v1", "DaemonSet")],
    ),
    res(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    // batch/v1
    res(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        CRUD,
        NONE,
        ALL,
        &[status!("batch", "v1", "Job")],
    ),
    res(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        CRUD,
        &["cj"],
        ALL,
        &[status!("batch", "v1", "CronJob")],
    ),
    // autoscaling
    res(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        CRUD,
        &["hpa"],
        ALL,
        &[status!("autoscaling", "v2", "HorizontalPodAutoscaler")],
    ),
    res(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        CRUD,
        &["hpa"],
        ALL,
        &[status!("autoscaling", "v1", "HorizontalPodAutoscaler")],
    ),
    // discovery.k8s.io/v1
    res(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    // networking.k8s.io/v1
    res(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        CRUD,
        &["ing"],
        NONE,
        &[status!("networking.k8s.io", "v1", "Ingress")],
    ),
    res(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        CRUD,
        &["netpol"],
        NONE,
        &[],
    ),
    // policy/v1
    res(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        CRUD,
        &["pdb"],
        NONE,
        &[status!("policy", "v1", "PodDisruptionBudget")],
    ),
    // rbac.authorization.k8s.io/v1
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    // coordination.k8s.io/v1
    res(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        CRUD,
        NONE,
        NONE,
        &[],
    ),
    // certificates.k8s.io/v1
    res(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        CRUD,
        &["csr"],
        NONE,
        &[
            status!("certificates.k8s.io", "v1", "CertificateSigningRequest"),
            sub(
                "approval",
                "certificates.k8s.io",
                "v1",
                "CertificateSigningRequest",
                STATUS_VERBS,
            ),
        ],
    ),
    // reviews: computed per request, never stored
    res(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        &[],
    ),
    res(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        &[],
    ),
    res(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        &[],
    ),
    res(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true,
        CREATE_ONLY,
        NONE,
        NONE,
        &[],
    ),
    res(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        "tokenreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        &[],
    ),
    res(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        &[],
    ),
];

/// A group and its versions, preferred version first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: &'static str,
    pub versions: Vec<&'static str>,
}

/// The API groups in discovery order (the core group "" first), each with its versions in
/// order of preference (the first listed in [`RESOURCES`] wins).
#[must_use]
pub fn groups() -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|g| g.name == r.group) {
            Some(g) if !g.versions.contains(&r.version) => g.versions.push(r.version),
            Some(_) => {}
            None => out.push(Group {
                name: r.group,
                versions: vec![r.version],
            }),
        }
    }
    out
}

/// The resources of one group version, in table order.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    let (group, version) = (group.to_owned(), version.to_owned());
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// The resource served at `group/version/plural`.
#[must_use]
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of a kind at an apiVersion (`v1`, `apps/v1`).
#[must_use]
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The storage identity of a resource: versions of one group and kind share objects (as
/// autoscaling/v1 and v2 HPAs do), so they share a key prefix.
#[must_use]
pub fn storage_prefix(resource: &Resource) -> String {
    if resource.group.is_empty() {
        format!("/registry/{}/", resource.plural)
    } else {
        format!("/registry/{}/{}/", resource.group, resource.plural)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_per_group_version() {
        let mut seen = BTreeSet::new();
        for r in RESOURCES {
            assert!(
                seen.insert((r.group, r.version, r.plural)),
                "{} twice",
                r.plural
            );
            assert_eq!(r.plural, r.plural.to_lowercase());
        }
    }

    #[test]
    fn groups_put_core_first_and_prefer_the_first_version() {
        let groups = groups();
        assert_eq!(groups[0].name, "");
        let autoscaling = groups.iter().find(|g| g.name == "autoscaling").unwrap();
        assert_eq!(autoscaling.versions, ["v2", "v1"]);
    }

    #[test]
    fn lookups_by_path_and_kind_agree() {
        let d = find("apps", "v1", "deployments").unwrap();
        assert_eq!(find_kind("apps/v1", "Deployment"), Some(d));
        assert_eq!(d.subresource("scale").unwrap().kind, "Scale");
        assert_eq!(find_kind("v1", "Pod").unwrap().qualified_name(), "pods");
        assert_eq!(d.qualified_name(), "deployments.apps");
        assert!(
            !find("authorization.k8s.io", "v1", "selfsubjectaccessreviews")
                .unwrap()
                .is_stored()
        );
        assert_eq!(storage_prefix(d), "/registry/apps/deployments/");
    }

    #[test]
    fn kubectl_get_all_sees_the_workloads_in_order() {
        let all: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| {
                r.categories.contains(&"all") && (r.group, r.version) != ("autoscaling", "v1")
            })
            .map(|r| r.plural)
            .collect();
        assert_eq!(
            all,
            [
                "pods",
                "services",
                "deployments",
                "replicasets",
                "statefulsets",
                "daemonsets",
                "jobs",
                "cronjobs",
                "horizontalpodautoscalers"
            ]
        );
    }
}
