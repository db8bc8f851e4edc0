//! The node authorizer and the NodeRestriction admission checks (upstream
//! `plugin/pkg/auth/authorizer/node` with `AuthorizeNodeWithSelectors` on, and
//! `plugin/pkg/admission/noderestriction`): a kubelet (`system:node:<name>` in `system:nodes`)
//! may read the secrets, configmaps, PVCs and service accounts of pods bound to its node,
//! request tokens for those service accounts, read and write its own Node and Lease, list and
//! watch only its own pods, and use the static node rules for everything else.
//!
//! The relationships live in a [`NodeGraph`] the server keeps current from its pod watch
//! cache (`add_pod` on add/update, `remove_pod` on delete).

use std::{
    collections::{BTreeMap, HashMap},
    sync::OnceLock,
};

use serde_json::Value;

use super::{
    Attributes, Decision, NODE_USER_PREFIX, NODES_GROUP, UserInfo, bootstrap, field_selector_value,
    go_quote, meta_str,
    rule::{PolicyRule, rules_allow},
};

/// The namespace kubelets keep their heartbeat Leases in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The annotation that marks a mirror pod (a static pod's API object).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The node name of a kubelet's identity: `Some("")` for a node user whose name has nothing
/// after the prefix, `None` for a user that is not a node (upstream `NodeIdentity`).
#[must_use]
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let name = user.username.strip_prefix(NODE_USER_PREFIX)?;
    user.in_group(NODES_GROUP).then_some(name)
}

/// The kinds of objects a pod references that the graph tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vertex {
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    ServiceAccount,
    /// Kinds skiff does not serve but upstream's graph has (PVs, VolumeAttachments,
    /// ResourceClaims, ResourceSlices): never related to a node here, so always refused.
    Untracked,
}

fn key(kind: Vertex, namespace: &str, name: &str) -> (Vertex, String, String) {
    (kind, namespace.to_owned(), name.to_owned())
}

#[derive(Debug, Clone)]
struct PodEntry {
    node: String,
    uid: String,
    refs: Vec<(Vertex, String, String)>,
}

/// Which pods are bound to which node, and what each references.
#[derive(Debug, Clone, Default)]
pub struct NodeGraph {
    /// (namespace, name) -> the pod's node and references.
    pods: HashMap<(String, String), PodEntry>,
    /// A referenced object -> node -> how many of that node's pods reference it.
    refs: HashMap<(Vertex, String, String), BTreeMap<String, usize>>,
}

fn each(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// The objects a pod references (upstream's graph populator with `VisitPodSecretNames` and
/// `VisitPodConfigmapNames`): its service account, image pull secrets, secrets and configmaps
/// in env, envFrom and volumes (projected ones too), and PVCs, generic ephemeral volumes'
/// included (`<pod>-<volume>`).
fn pod_refs(pod: &Value) -> Vec<(Vertex, String, String)> {
    let ns = meta_str(pod, "namespace");
    let spec = &pod["spec"];
    let mut out: Vec<(Vertex, String, String)> = Vec::new();
    let mut add = |kind: Vertex, v: &Value| {
        if let Some(name) = v.as_str().filter(|n| !n.is_empty()) {
            let k = key(kind, ns, name);
            if !out.contains(&k) {
                out.push(k);
            }
        }
    };
    add(Vertex::ServiceAccount, &spec["serviceAccountName"]);
    for s in each(&spec["imagePullSecrets"]) {
        add(Vertex::Secret, &s["name"]);
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|field| each(&spec[field]));
    for c in containers {
        for e in each(&c["env"]) {
            add(Vertex::Secret, &e["valueFrom"]["secretKeyRef"]["name"]);
            add(
                Vertex::ConfigMap,
                &e["valueFrom"]["configMapKeyRef"]["name"],
            );
        }
        for e in each(&c["envFrom"]) {
            add(Vertex::Secret, &e["secretRef"]["name"]);
            add(Vertex::ConfigMap, &e["configMapRef"]["name"]);
        }
    }
    for v in each(&spec["volumes"]) {
        add(Vertex::Secret, &v["secret"]["secretName"]);
        add(Vertex::ConfigMap, &v["configMap"]["name"]);
        for src in each(&v["projected"]["sources"]) {
            add(Vertex::Secret, &src["secret"]["name"]);
            add(Vertex::ConfigMap, &src["configMap"]["name"]);
        }
        add(Vertex::Secret, &v["azureFile"]["secretName"]);
        for plugin in [
            "cephfs",
            "cinder",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
        ] {
            add(Vertex::Secret, &v[plugin]["secretRef"]["name"]);
        }
        add(Vertex::Secret, &v["csi"]["nodePublishSecretRef"]["name"]);
        add(
            Vertex::PersistentVolumeClaim,
            &v["persistentVolumeClaim"]["claimName"],
        );
        if v["ephemeral"].is_object()
            && let Some(volume) = v["name"].as_str()
        {
            let claim = format!("{}-{volume}", meta_str(pod, "name"));
            add(Vertex::PersistentVolumeClaim, &Value::String(claim));
        }
    }
    out
}

impl NodeGraph {
    /// A graph of the given pods (unscheduled ones are left out).
    #[must_use]
    pub fn from_pods(pods: &[Value]) -> Self {
        let mut graph = Self::default();
        for pod in pods {
            graph.add_pod(pod);
        }
        graph
    }

    /// Whether a pod's change from `prev` to `new` can change the graph (its node, uid or
    /// references): status updates, by far the most frequent pod writes, cannot.
    #[must_use]
    pub fn affected_by(prev: Option<&Value>, new: &Value) -> bool {
        let Some(prev) = prev else {
            return true;
        };
        prev["spec"]["nodeName"] != new["spec"]["nodeName"]
            || meta_str(prev, "uid") != meta_str(new, "uid")
            || pod_refs(prev) != pod_refs(new)
    }

    /// Adds or replaces a pod (call on every add and update from the watch).
    pub fn add_pod(&mut self, pod: &Value) {
        let (ns, name) = (meta_str(pod, "namespace"), meta_str(pod, "name"));
        if name.is_empty() {
            return;
        }
        self.remove_pod(ns, name);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let refs = pod_refs(pod);
        for r in &refs {
            *self
                .refs
                .entry(r.clone())
                .or_default()
                .entry(node.to_owned())
                .or_default() += 1;
        }
        self.pods.insert(
            (ns.to_owned(), name.to_owned()),
            PodEntry {
                node: node.to_owned(),
                uid: meta_str(pod, "uid").to_owned(),
                refs,
            },
        );
    }

    /// Forgets a pod (call on delete).
    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        let Some(entry) = self.pods.remove(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        for r in entry.refs {
            if let Some(nodes) = self.refs.get_mut(&r) {
                if let Some(count) = nodes.get_mut(&entry.node) {
                    *count -= 1;
                    if *count == 0 {
                        nodes.remove(&entry.node);
                    }
                }
                if nodes.is_empty() {
                    self.refs.remove(&r);
                }
            }
        }
    }

    /// The node a pod is bound to, and its uid.
    #[must_use]
    pub fn pod(&self, namespace: &str, name: &str) -> Option<(&str, &str)> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|p| (p.node.as_str(), p.uid.as_str()))
    }

    /// Whether a pod bound to `node` references the object.
    #[must_use]
    pub fn related(&self, kind: Vertex, namespace: &str, name: &str, node: &str) -> bool {
        self.refs
            .get(&key(kind, namespace, name))
            .is_some_and(|nodes| nodes.contains_key(node))
    }
}

fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        bootstrap::node_rules()
            .iter()
            .filter_map(PolicyRule::from_json)
            .collect()
    })
}

/// The node authorizer's verdict for one request, with the reason it gives when it has no
/// opinion.
struct Verdict(bool, String);

fn allow() -> Verdict {
    Verdict(true, String::new())
}

fn no(reason: impl Into<String>) -> Verdict {
    Verdict(false, reason.into())
}

/// The fields of a resource request the node authorizer looks at.
struct Req<'a> {
    node: &'a str,
    verb: &'a str,
    sub: &'a str,
    namespace: &'a str,
    name: &'a str,
    field_selector: &'a str,
}

impl Req<'_> {
    fn no_relationship(&self) -> Verdict {
        no(format!(
            "no relationship found between node '{}' and this object",
            self.node
        ))
    }

    /// The object must be related to the node through one of its pods.
    fn related(&self, graph: &NodeGraph, kind: Vertex) -> Verdict {
        if self.name.is_empty() {
            return no("No Object name found");
        }
        if graph.related(kind, self.namespace, self.name, self.node) {
            allow()
        } else {
            self.no_relationship()
        }
    }

    /// get, list or watch of a single named object in a namespace (secrets, configmaps).
    fn read_namespaced(&self, graph: &NodeGraph, kind: Vertex) -> Verdict {
        if !matches!(self.verb, "get" | "list" | "watch") {
            return no("can only read resources of this type");
        }
        if !self.sub.is_empty() {
            return no("cannot read subresource");
        }
        if self.namespace.is_empty() {
            return no("can only read namespaced object of this type");
        }
        self.related(graph, kind)
    }

    fn get(&self, graph: &NodeGraph, kind: Vertex) -> Verdict {
        if self.verb != "get" {
            return no("can only get individual resources of this type");
        }
        if !self.sub.is_empty() {
            return no("cannot get subresource");
        }
        self.related(graph, kind)
    }

    fn status_update(&self, graph: &NodeGraph, kind: Vertex) -> Verdict {
        if !matches!(self.verb, "update" | "patch") {
            return no("can only get/update/patch this type");
        }
        self.related(graph, kind)
    }

    /// Tokens for the service accounts of the node's pods. skiff also lets a kubelet get
    /// those service accounts (upstream does with
    /// `KubeletServiceAccountTokenForCredentialProviders`).
    fn service_account(&self, graph: &NodeGraph) -> Verdict {
        if self.verb == "get" && self.sub.is_empty() {
            return self.related(graph, Vertex::ServiceAccount);
        }
        if self.verb != "create" || self.name.is_empty() {
            return no("can only create tokens for individual service accounts");
        }
        if self.sub != "token" {
            return no("can only create token subresource of serviceaccount");
        }
        self.related(graph, Vertex::ServiceAccount)
    }

    fn lease(&self) -> Verdict {
        if !matches!(self.verb, "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a node lease");
        }
        if self.namespace != NODE_LEASE_NAMESPACE {
            return no(format!(
                "can only access leases in the {} system namespace",
                go_quote(NODE_LEASE_NAMESPACE)
            ));
        }
        // create carries no name; NodeRestriction checks the object's.
        if self.verb != "create" && self.name != self.node {
            return no("can only access node lease with the same name as the requesting node");
        }
        allow()
    }

    fn csi_node(&self) -> Verdict {
        if !matches!(self.verb, "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a CSINode");
        }
        if !self.sub.is_empty() {
            return no("cannot authorize CSINode subresources");
        }
        if self.verb != "create" && self.name != self.node {
            return no("can only access CSINode with the same name as the requesting node");
        }
        allow()
    }

    fn resource_slice(&self, graph: &NodeGraph) -> Verdict {
        if !self.sub.is_empty() {
            return no("cannot authorize ResourceSlice subresources");
        }
        match self.verb {
            "create" => allow(),
            "get" | "update" | "patch" | "delete" => self.related(graph, Vertex::Untracked),
            "watch" | "list" | "deletecollection" => {
                if field_selector_value(self.field_selector, "nodeName") == Some(self.node) {
                    allow()
                } else {
                    no(
                        "can only list/watch/deletecollection resourceslices with nodeName field selector",
                    )
                }
            }
            _ => no(
                "only the following verbs are allowed for a ResourceSlice: get, watch, list, create, update, patch, delete, deletecollection",
            ),
        }
    }

    /// Its own Node only for reads; create, update and status writes are allowed here and
    /// limited to its own Node by [`node_restriction`].
    fn node_object(&self) -> Verdict {
        match (self.sub, self.verb) {
            ("", "create" | "update" | "patch") | ("status", "update" | "patch") => allow(),
            ("", "get" | "list" | "watch") => {
                if self.name == self.node {
                    allow()
                } else if self.name.is_empty() {
                    no(format!(
                        "node '{}' cannot read all nodes, only its own Node object",
                        self.node
                    ))
                } else {
                    no(format!(
                        "node '{}' cannot read '{}', only its own Node object",
                        self.node, self.name
                    ))
                }
            }
            _ => no(""),
        }
    }

    /// Its own pods: get by relationship, list/watch with `spec.nodeName=<node>`; create and
    /// delete (mirror pods), status and eviction here, limited by [`node_restriction`].
    fn pod(&self, graph: &NodeGraph) -> Verdict {
        match (self.sub, self.verb) {
            ("", "get") => {
                if self.name.is_empty() {
                    return no("No Object name found");
                }
                self.pod_related(graph)
            }
            ("", "list" | "watch") => {
                if field_selector_value(self.field_selector, "spec.nodeName") == Some(self.node) {
                    allow()
                } else if !self.name.is_empty() {
                    self.pod_related(graph)
                } else {
                    no("can only list/watch pods with spec.nodeName field selector")
                }
            }
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                allow()
            }
            _ => no(""),
        }
    }

    fn pod_related(&self, graph: &NodeGraph) -> Verdict {
        match graph.pod(self.namespace, self.name) {
            Some((node, _)) if node == self.node => allow(),
            _ => self.no_relationship(),
        }
    }
}

/// The node authorizer. `None` when the user is not a node (no opinion, nothing to say);
/// otherwise allowed, or not allowed with upstream's reason (no opinion: the caller goes on to
/// RBAC, see [`super::authorize_node_rbac`]). `field_selector` is the request's
/// `fieldSelector`, "" if none.
#[must_use]
pub fn authorize_node(
    user: &UserInfo,
    attrs: &Attributes,
    field_selector: &str,
    graph: &NodeGraph,
) -> Option<Decision> {
    let node = node_identity(user)?;
    let Verdict(allowed, reason) = if node.is_empty() {
        no(format!(
            "unknown node for user {}",
            go_quote(&user.username)
        ))
    } else {
        match attrs {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
                ..
            } => {
                let req = Req {
                    node,
                    verb,
                    sub: subresource,
                    namespace,
                    name,
                    field_selector,
                };
                match (group.as_str(), resource.as_str()) {
                    ("", "secrets") => req.read_namespaced(graph, Vertex::Secret),
                    ("", "configmaps") => req.read_namespaced(graph, Vertex::ConfigMap),
                    ("", "persistentvolumeclaims") if subresource == "status" => {
                        req.status_update(graph, Vertex::PersistentVolumeClaim)
                    }
                    ("", "persistentvolumeclaims") => req.get(graph, Vertex::PersistentVolumeClaim),
                    ("", "persistentvolumes")
                    | ("resource.k8s.io", "resourceclaims")
                    | ("storage.k8s.io", "volumeattachments") => req.get(graph, Vertex::Untracked),
                    ("", "serviceaccounts") => req.service_account(graph),
                    ("coordination.k8s.io", "leases") => req.lease(),
                    ("storage.k8s.io", "csinodes") => req.csi_node(),
                    ("resource.k8s.io", "resourceslices") => req.resource_slice(graph),
                    ("", "nodes") => req.node_object(),
                    ("", "pods") => req.pod(graph),
                    _ => Verdict(rules_allow(attrs, node_rules()), String::new()),
                }
            }
            Attributes::NonResource { .. } => {
                Verdict(rules_allow(attrs, node_rules()), String::new())
            }
        }
    };
    Some(if allowed {
        Decision::allow(reason)
    } else {
        Decision::deny(user, attrs, reason)
    })
}

/// An admission refusal: `apierrors.NewForbidden(group resource, name, err)`.
fn forbidden(attrs: &Attributes, name: &str, msg: &str) -> String {
    let (group, resource) = match attrs {
        Attributes::Resource {
            group, resource, ..
        } => (group.as_str(), resource.as_str()),
        Attributes::NonResource { .. } => ("", ""),
    };
    let gr = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        format!("{gr} is forbidden: {msg}")
    } else {
        format!("{gr} {} is forbidden: {msg}", go_quote(name))
    }
}

/// The NodeRestriction admission plugin, for writes a kubelet's authorization allowed:
/// a node may create and modify only its own Node and Lease, create only mirror pods bound to
/// itself that reference no secrets, configmaps, PVCs or service account, delete, update the
/// status of and evict only pods bound to itself, and request tokens only bound to its own
/// pods. `object` is the incoming object of a create or update (the TokenRequest for
/// `serviceaccounts/token`). `Err` is the 403 Status message.
///
/// Not checked (yet): label and taint restrictions on Node objects, PVC status fields,
/// ResourceSlices and CSINodes on create.
pub fn node_restriction(
    user: &UserInfo,
    attrs: &Attributes,
    object: Option<&Value>,
    graph: &NodeGraph,
) -> Result<(), String> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource,
        namespace,
        name,
        ..
    } = attrs
    else {
        return Ok(());
    };
    if !matches!(
        verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        return Ok(());
    }
    let object_name = object.map(|o| meta_str(o, "name")).unwrap_or_default();
    let name = if name.is_empty() { object_name } else { name };
    let deny = |msg: String| Err(forbidden(attrs, name, &msg));
    let q = go_quote(node);
    if node.is_empty() {
        return deny(format!(
            "could not determine node from user {}",
            go_quote(&user.username)
        ));
    }
    let bound_here = || graph.pod(namespace, name).is_some_and(|(n, _)| n == node);
    match (group.as_str(), resource.as_str(), subresource.as_str()) {
        ("", "nodes", _) if name != node => {
            return deny(format!(
                "node {q} is not allowed to modify node {}",
                go_quote(name)
            ));
        }
        ("", "pods", "") if verb == "create" => {
            let pod = object.unwrap_or(&Value::Null);
            if pod["metadata"]["annotations"][MIRROR_POD_ANNOTATION].is_null() {
                return deny(format!(
                    "pod does not have {} annotation, node {q} can only create mirror pods",
                    go_quote(MIRROR_POD_ANNOTATION)
                ));
            }
            if pod["spec"]["nodeName"].as_str() != Some(node) {
                return deny(format!(
                    "node {q} can only create pods with spec.nodeName set to itself"
                ));
            }
            for (kind, what) in [
                (Vertex::ServiceAccount, "a service account"),
                (Vertex::Secret, "secrets"),
                (Vertex::ConfigMap, "configmaps"),
                (Vertex::PersistentVolumeClaim, "persistentvolumeclaims"),
            ] {
                if pod_refs(pod).iter().any(|(k, _, _)| *k == kind) {
                    return deny(format!(
                        "node {q} can not create pods that reference {what}"
                    ));
                }
            }
        }
        ("", "pods", "") if verb == "delete" && !bound_here() => {
            return deny(format!(
                "node {q} can only delete pods with spec.nodeName set to itself"
            ));
        }
        ("", "pods", "status") if !bound_here() => {
            return deny(format!(
                "node {q} can only update pod status for pods with spec.nodeName set to itself"
            ));
        }
        ("", "pods", "eviction") if !bound_here() => {
            return deny(format!(
                "node {q} can only evict pods with spec.nodeName set to itself"
            ));
        }
        ("coordination.k8s.io", "leases", _) => {
            if namespace != NODE_LEASE_NAMESPACE {
                return deny(format!(
                    "can only access leases in the {} system namespace",
                    go_quote(NODE_LEASE_NAMESPACE)
                ));
            }
            if name != node {
                return deny(
                    "can only access node lease with the same name as the requesting node"
                        .to_owned(),
                );
            }
        }
        ("", "serviceaccounts", "token") => {
            let bound = object
                .map(|o| &o["spec"]["boundObjectRef"])
                .filter(|r| r.is_object());
            let Some(bound) = bound else {
                return deny("node requested token not bound to a pod".to_owned());
            };
            if bound["kind"].as_str() != Some("Pod") {
                return deny(format!(
                    "node requested token bound to a {}, not a pod",
                    bound["kind"].as_str().unwrap_or_default()
                ));
            }
            let pod_name = bound["name"].as_str().unwrap_or_default();
            match graph.pod(namespace, pod_name) {
                Some((pod_node, _)) if pod_node != node => {
                    return deny(
                        "node requested token bound to a pod scheduled on a different node"
                            .to_owned(),
                    );
                }
                Some((_, uid)) => {
                    let want = bound["uid"].as_str().unwrap_or_default();
                    if !want.is_empty() && want != uid {
                        return deny(format!(
                            "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                        ));
                    }
                }
                None => {
                    return deny(
                        "node requested token bound to a pod scheduled on a different node"
                            .to_owned(),
                    );
                }
            }
        }
        _ => {}
    }
    Ok(())
}
