//! Authorization decisions, made as kube-apiserver makes them with
//! `--authorization-mode=Node,RBAC`: the privileged group `system:masters` first, then the
//! node authorizer for kubelets, then RBAC over Roles, ClusterRoles and their bindings.
//! Sans IO: the server keeps an [`RbacSnapshot`] (and a [`NodeGraph`]) current from its watch
//! cache and asks them on every request.
//!
//! ```text
//!  request ──▶ Attributes ──▶ system:masters? ──yes──▶ allow
//!                                   │ no
//!                                   ▼
//!                       authorize_node (kubelets) ──allow──▶ allow
//!                                   │ no opinion (+ reason)
//!                                   ▼
//!       RbacSnapshot: bindings of this user (subject index) ─▶ roles ─▶ rules ──▶ allow / deny
//! ```
//!
//! - [`rule`]: PolicyRule parsing, matching, coverage.
//! - [`bootstrap`]: the default roles and bindings ([`bootstrap_objects`]).
//! - [`aggregate`](mod@aggregate): ClusterRole aggregation.
//! - [`node`]: the node authorizer and the NodeRestriction admission checks.
//! - [`escalation`]: who may create roles and bindings ([`can_grant`]).
//! - [`impersonate`]: `Impersonate-*` headers to the checks they need.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use serde_json::{Value, json};

pub mod aggregate;
pub mod bootstrap;
pub mod escalation;
pub mod impersonate;
pub mod node;
pub mod rule;

#[cfg(test)]
mod tests;

pub use aggregate::aggregate;
pub use bootstrap::bootstrap_objects;
pub use escalation::{can_grant, check_binding_write, check_role_write};
pub use impersonate::{
    Impersonation, ImpersonationError, ImpersonationRequest, authorize_impersonation,
    impersonation_attributes,
};
pub use node::{NodeGraph, authorize_node, node_restriction};
pub use rule::{PolicyRule, rules_allow};

/// The group whose members may do anything (kube-apiserver's privileged group).
pub const SYSTEM_MASTERS: &str = "system:masters";
/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Anonymous requests are in this group.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";
/// Kubelets authenticate as `system:node:<name>` in this group.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a kubelet's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The prefix of a service account's user name: `system:serviceaccount:<ns>:<name>`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Every service account is in this group, and in `system:serviceaccounts:<ns>`.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The API group of the RBAC kinds.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Who is asking (upstream `user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups, no uid or extra.
    #[must_use]
    pub fn new(username: &str, groups: &[&str]) -> Self {
        Self {
            username: username.to_owned(),
            groups: groups.iter().map(|&g| g.to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The identity of a service account's token: `system:serviceaccount:NS:NAME` in the groups
    /// `system:serviceaccounts`, `system:serviceaccounts:NS` and `system:authenticated`.
    #[must_use]
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            username: service_account_username(namespace, name),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_owned(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                AUTHENTICATED.to_owned(),
            ],
            ..Self::default()
        }
    }

    #[must_use]
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// `system:serviceaccount:NS:NAME`.
#[must_use]
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// What is asked (upstream `authorizer.Attributes`, less the user). The server fills a
/// `Resource` from the request path as upstream's `RequestInfo` does: the verb is the HTTP
/// verb mapped (`get` on a collection is `list`, or `watch` with `?watch=1`), and a list or
/// watch with the field selector `metadata.name=X` carries `name: X` (see
/// [`field_selector_value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        version: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Attributes {
    /// A resource request; `resource` may be `plural/subresource`. The version is `v1`:
    /// RBAC ignores versions.
    #[must_use]
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Self::Resource {
            verb: verb.to_owned(),
            group: group.to_owned(),
            version: "v1".to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A request for a path outside the resource tree (`/healthz`, `/api`, `/version`).
    #[must_use]
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Self::NonResource {
            verb: verb.to_owned(),
            path: path.to_owned(),
        }
    }

    #[must_use]
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource { verb, .. } | Self::NonResource { verb, .. } => verb,
        }
    }

    /// The request's namespace; "" for cluster-scoped and non-resource requests.
    #[must_use]
    pub fn namespace(&self) -> &str {
        match self {
            Self::Resource { namespace, .. } => namespace,
            Self::NonResource { .. } => "",
        }
    }
}

/// The value a field selector (`spec.nodeName=n1,metadata.namespace!=x`) requires `field` to
/// equal exactly, if it does (upstream `fields.Selector.RequiresExactMatch`).
#[must_use]
pub fn field_selector_value<'a>(selector: &'a str, field: &str) -> Option<&'a str> {
    selector.split(',').find_map(|term| {
        if term.contains("!=") {
            return None;
        }
        let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (key.trim() == field).then(|| value.trim())
    })
}

/// An authorization outcome. `reason` is the authorizer's reason (upstream's second return
/// value: `RBAC: allowed by ...` on allow, often empty on deny); `denied_message` is the
/// Status message a 403 carries (empty when allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    pub denied_message: String,
}

impl Decision {
    fn allow(reason: String) -> Self {
        Self {
            allowed: true,
            reason,
            denied_message: String::new(),
        }
    }

    fn deny(user: &UserInfo, attrs: &Attributes, reason: String) -> Self {
        Self {
            allowed: false,
            denied_message: forbidden_status_message(user, attrs, &reason),
            reason,
        }
    }
}

/// Go's `%q` for the strings these messages carry.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The 403 Status message kubectl prints, without an authorizer reason, e.g.
/// `deployments.apps is forbidden: User "system:serviceaccount:default:viewer" cannot create
/// resource "deployments" in API group "apps" in the namespace "default"`.
#[must_use]
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    forbidden_status_message(user, attrs, "")
}

/// Upstream `responsewriters.Forbidden`: the sanitized "User cannot" sentence, `: reason` if
/// there is one, wrapped as `apierrors.NewForbidden(group resource, name, ...)` wraps it.
fn forbidden_status_message(user: &UserInfo, attrs: &Attributes, reason: &str) -> String {
    let mut err = sanitize(&cannot_sentence(user, attrs));
    if !reason.is_empty() {
        let _ = write!(err, ": {reason}");
    }
    match attrs {
        Attributes::Resource {
            group,
            resource,
            name,
            ..
        } if !(group.is_empty() && resource.is_empty()) => {
            let gr = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            if name.is_empty() {
                format!("{gr} is forbidden: {err}")
            } else {
                format!("{gr} {} is forbidden: {err}", go_quote(name))
            }
        }
        _ => format!("forbidden: {err}"),
    }
}

fn cannot_sentence(user: &UserInfo, attrs: &Attributes) -> String {
    let who = go_quote(&user.username);
    match attrs {
        Attributes::NonResource { verb, path } => {
            format!("User {who} cannot {verb} path {}", go_quote(path))
        }
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let resource = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let (resource, group) = (go_quote(&resource), go_quote(group));
            if namespace.is_empty() {
                format!(
                    "User {who} cannot {verb} resource {resource} in API group {group} at the cluster scope"
                )
            } else {
                format!(
                    "User {who} cannot {verb} resource {resource} in API group {group} in the namespace {}",
                    go_quote(namespace)
                )
            }
        }
    }
}

fn sanitize(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `metadata.name` (or "" when absent or not a string).
fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn str_field<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// A binding subject as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

/// A RoleBinding or ClusterRoleBinding as the authorizer needs it.
#[derive(Debug, Clone)]
struct Binding {
    name: String,
    /// "" for a ClusterRoleBinding.
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    /// `None` without a name: such an object cannot have been stored.
    fn from_json(obj: &Value, namespaced: bool) -> Option<Self> {
        let name = meta_str(obj, "name");
        let namespace = if namespaced {
            meta_str(obj, "namespace")
        } else {
            ""
        };
        if name.is_empty() || (namespaced && namespace.is_empty()) {
            return None;
        }
        let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
        let subjects = obj
            .get("subjects")
            .and_then(Value::as_array)
            .map(|subjects| {
                subjects
                    .iter()
                    .filter_map(|s| {
                        Some(Subject {
                            kind: s.get("kind")?.as_str()?.to_owned(),
                            name: s.get("name")?.as_str()?.to_owned(),
                            namespace: str_field(s, "namespace").to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            role_kind: str_field(role_ref, "kind").to_owned(),
            role_name: str_field(role_ref, "name").to_owned(),
            subjects,
        })
    }

    /// The user name a ServiceAccount subject stands for, if it names a namespace (its own or,
    /// in a RoleBinding, the binding's).
    fn service_account_user(&self, s: &Subject) -> Option<String> {
        let ns = if s.namespace.is_empty() {
            &self.namespace
        } else {
            &s.namespace
        };
        (!ns.is_empty()).then(|| service_account_username(ns, &s.name))
    }

    /// Upstream `appliesToUser`, with the binding's namespace as the request's (a RoleBinding
    /// is only consulted for requests in its namespace).
    fn subject_applies(&self, s: &Subject, user: &UserInfo) -> bool {
        match s.kind.as_str() {
            "User" => s.name == user.username,
            "Group" => user.in_group(&s.name),
            "ServiceAccount" => self
                .service_account_user(s)
                .is_some_and(|u| u == user.username),
            _ => false,
        }
    }

    /// The first subject that applies to `user` (upstream `appliesTo`).
    fn applies_to(&self, user: &UserInfo) -> Option<&Subject> {
        self.subjects.iter().find(|s| self.subject_applies(s, user))
    }

    /// `ClusterRoleBinding "x" of ClusterRole "view" to Group "g"`, or for a RoleBinding
    /// `RoleBinding "x/ns" of ...` (upstream's binding describers).
    fn describe(&self, subject: &Subject) -> String {
        let who = if subject.kind == "ServiceAccount" {
            let ns = if subject.namespace.is_empty() {
                &self.namespace
            } else {
                &subject.namespace
            };
            format!(
                "ServiceAccount {}",
                go_quote(&format!("{}/{ns}", subject.name))
            )
        } else {
            format!("{} {}", subject.kind, go_quote(&subject.name))
        };
        let (kind, name) = if self.namespace.is_empty() {
            ("ClusterRoleBinding", self.name.clone())
        } else {
            ("RoleBinding", format!("{}/{}", self.name, self.namespace))
        };
        format!(
            "{kind} {} of {} {} to {who}",
            go_quote(&name),
            self.role_kind,
            go_quote(&self.role_name)
        )
    }
}

/// Bindings of one scope (the cluster, or one namespace), indexed by the subjects they name so
/// a decision looks only at the bindings that can apply to the user.
#[derive(Debug, Default)]
struct BindingSet {
    /// Sorted by name: the order bindings are consulted in, so reasons are deterministic.
    bindings: Vec<Binding>,
    /// User name (ServiceAccount subjects by their `system:serviceaccount:..` name) to
    /// indices in `bindings`, ascending.
    by_user: HashMap<String, Vec<usize>>,
    /// Group name to indices in `bindings`, ascending.
    by_group: HashMap<String, Vec<usize>>,
}

impl BindingSet {
    fn new(mut bindings: Vec<Binding>) -> Self {
        bindings.sort_by(|a, b| a.name.cmp(&b.name));
        let mut set = Self {
            bindings,
            ..Self::default()
        };
        for (i, b) in set.bindings.iter().enumerate() {
            for s in &b.subjects {
                let (map, key) = match s.kind.as_str() {
                    "User" => (&mut set.by_user, s.name.clone()),
                    "Group" => (&mut set.by_group, s.name.clone()),
                    "ServiceAccount" => match b.service_account_user(s) {
                        Some(user) => (&mut set.by_user, user),
                        None => continue,
                    },
                    _ => continue,
                };
                let list = map.entry(key).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        set
    }

    /// The bindings naming `user`, its name or one of its groups, in binding order.
    fn candidates(&self, user: &UserInfo) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        if let Some(list) = self.by_user.get(&user.username) {
            out.extend_from_slice(list);
        }
        for g in &user.groups {
            if let Some(list) = self.by_group.get(g) {
                out.extend_from_slice(list);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// One step of walking a user's rules: a binding that applies with its role's rules, or an
/// error resolving the role it references.
enum Visit<'a> {
    Rules {
        binding: &'a Binding,
        subject: &'a Subject,
        rules: &'a [PolicyRule],
    },
    Error(String),
}

/// The RBAC objects an authorizer evaluates against (a snapshot the server keeps current from
/// its watch cache). Built once per change; cheap to query.
#[derive(Debug, Default)]
pub struct RbacSnapshot {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// namespace -> role name -> rules.
    roles: HashMap<String, HashMap<String, Vec<PolicyRule>>>,
    cluster_bindings: BindingSet,
    /// namespace -> its RoleBindings.
    role_bindings: HashMap<String, BindingSet>,
}

impl RbacSnapshot {
    /// Builds a snapshot from stored objects of the four kinds. Objects without a name (or
    /// without a namespace, for the namespaced kinds) are skipped, as are malformed rules and
    /// subjects; nothing here panics on any input.
    #[must_use]
    pub fn from_objects(
        roles: &[Value],
        cluster_roles: &[Value],
        role_bindings: &[Value],
        cluster_role_bindings: &[Value],
    ) -> Self {
        let mut snapshot = Self::default();
        for role in cluster_roles {
            let name = meta_str(role, "name");
            if !name.is_empty() {
                snapshot
                    .cluster_roles
                    .insert(name.to_owned(), PolicyRule::list_from(role));
            }
        }
        for role in roles {
            let (name, ns) = (meta_str(role, "name"), meta_str(role, "namespace"));
            if !name.is_empty() && !ns.is_empty() {
                snapshot
                    .roles
                    .entry(ns.to_owned())
                    .or_default()
                    .insert(name.to_owned(), PolicyRule::list_from(role));
            }
        }
        snapshot.cluster_bindings = BindingSet::new(
            cluster_role_bindings
                .iter()
                .filter_map(|b| Binding::from_json(b, false))
                .collect(),
        );
        let mut by_ns: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in role_bindings
            .iter()
            .filter_map(|b| Binding::from_json(b, true))
        {
            by_ns.entry(b.namespace.clone()).or_default().push(b);
        }
        snapshot.role_bindings = by_ns
            .into_iter()
            .map(|(ns, bindings)| (ns, BindingSet::new(bindings)))
            .collect();
        snapshot
    }

    /// Builds a snapshot from a mixed list of objects, sorted by `kind`; other kinds are
    /// ignored. Handy with [`bootstrap_objects`].
    #[must_use]
    pub fn from_mixed(objects: &[Value]) -> Self {
        let of = |kind: &str| -> Vec<Value> {
            objects
                .iter()
                .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
                .cloned()
                .collect()
        };
        Self::from_objects(
            &of("Role"),
            &of("ClusterRole"),
            &of("RoleBinding"),
            &of("ClusterRoleBinding"),
        )
    }

    /// The rules a role reference names (upstream `GetRoleReferenceRules`), or the error
    /// message upstream reports when it cannot be resolved.
    fn role_rules(&self, kind: &str, name: &str, namespace: &str) -> Result<&[PolicyRule], String> {
        match kind {
            "Role" => self
                .roles
                .get(namespace)
                .and_then(|roles| roles.get(name))
                .map(Vec::as_slice)
                .ok_or_else(|| format!("role.{RBAC_GROUP} {} not found", go_quote(name))),
            "ClusterRole" => self
                .cluster_roles
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("clusterrole.{RBAC_GROUP} {} not found", go_quote(name))),
            other => Err(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )),
        }
    }

    /// Public form of [`Self::role_rules`] for escalation checks on bindings.
    pub(crate) fn role_ref_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, String> {
        self.role_rules(kind, name, namespace).map(<[_]>::to_vec)
    }

    /// Walks the rules that apply to `user` in `namespace`: ClusterRoleBindings first, then the
    /// namespace's RoleBindings (upstream `VisitRulesFor`). Stops when `f` returns false.
    fn visit(&self, user: &UserInfo, namespace: &str, mut f: impl FnMut(Visit<'_>) -> bool) {
        let scopes = std::iter::once(&self.cluster_bindings).chain(
            (!namespace.is_empty())
                .then(|| self.role_bindings.get(namespace))
                .flatten(),
        );
        for set in scopes {
            for i in set.candidates(user) {
                let binding = &set.bindings[i];
                let Some(subject) = binding.applies_to(user) else {
                    continue;
                };
                let visit = match self.role_rules(
                    &binding.role_kind,
                    &binding.role_name,
                    &binding.namespace,
                ) {
                    Ok(rules) => Visit::Rules {
                        binding,
                        subject,
                        rules,
                    },
                    Err(e) => Visit::Error(e),
                };
                if !f(visit) {
                    return;
                }
            }
        }
    }

    /// The privileged group, then RBAC (what kube-apiserver decides for a user that is not a
    /// node; see [`authorize_node_rbac`] for the full chain).
    #[must_use]
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        if user.in_group(SYSTEM_MASTERS) {
            return Decision::allow(String::new());
        }
        self.authorize_rbac(user, attrs)
    }

    /// RBAC alone (upstream `RBACAuthorizer.Authorize`): allowed by the first rule that
    /// matches; denied with the errors met on the way as the reason.
    #[must_use]
    pub fn authorize_rbac(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let mut allowed_by = None;
        let mut errors: Vec<String> = Vec::new();
        self.visit(user, attrs.namespace(), |visit| match visit {
            Visit::Rules {
                binding,
                subject,
                rules,
            } => {
                if rules_allow(attrs, rules) {
                    allowed_by = Some(binding.describe(subject));
                    return false;
                }
                true
            }
            Visit::Error(e) => {
                errors.push(e);
                true
            }
        });
        match allowed_by {
            Some(source) => Decision::allow(format!("RBAC: allowed by {source}")),
            None => {
                let reason = aggregate_errors(&errors)
                    .map(|e| format!("RBAC: {e}"))
                    .unwrap_or_default();
                Decision::deny(user, attrs, reason)
            }
        }
    }

    /// The RBAC rules that apply to `user` in `namespace` and the errors met resolving them
    /// (upstream `DefaultRuleResolver.RulesFor`).
    #[must_use]
    pub fn rbac_rules(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit(user, namespace, |visit| {
            match visit {
                Visit::Rules { rules: r, .. } => rules.extend_from_slice(r),
                Visit::Error(e) => errors.push(e),
            }
            true
        });
        (rules, errors)
    }

    /// Rules that apply to `user` in `namespace`, for SelfSubjectRulesReview (`kubectl auth
    /// can-i --list`): `(resourceRules, nonResourceRules, incomplete)` in the review's wire
    /// form. See [`Self::rules_review`] for the whole status, with `evaluationError`.
    #[must_use]
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>, bool) {
        let review = self.rules_review(user, namespace);
        (
            review.resource_rules,
            review.non_resource_rules,
            review.incomplete,
        )
    }

    /// The status of a SelfSubjectRulesReview, as the union of kube-apiserver's rule resolvers
    /// answers it: the privileged group's `*` rules, then the node authorizer (which cannot
    /// enumerate a kubelet's rules, so marks them incomplete), then RBAC.
    #[must_use]
    pub fn rules_review(&self, user: &UserInfo, namespace: &str) -> RulesReview {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let mut incomplete = false;
        if user.in_group(SYSTEM_MASTERS) {
            rules.extend(escalation::full_authority());
        }
        if node::node_identity(user).is_some() {
            incomplete = true;
            errors.push("node authorizer does not support user rule resolution".to_owned());
        }
        let (rbac, rbac_errors) = self.rbac_rules(user, namespace);
        rules.extend(rbac);
        errors.extend(rbac_errors);
        let mut review = RulesReview {
            incomplete,
            evaluation_error: aggregate_errors(&errors).unwrap_or_default(),
            ..RulesReview::default()
        };
        for r in &rules {
            if !r.resources.is_empty() {
                let mut o = serde_json::Map::new();
                o.insert("verbs".into(), json!(r.verbs));
                if !r.api_groups.is_empty() {
                    o.insert("apiGroups".into(), json!(r.api_groups));
                }
                o.insert("resources".into(), json!(r.resources));
                if !r.resource_names.is_empty() {
                    o.insert("resourceNames".into(), json!(r.resource_names));
                }
                review.resource_rules.push(Value::Object(o));
            }
            if !r.non_resource_urls.is_empty() {
                review
                    .non_resource_rules
                    .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
            }
        }
        review
    }
}

/// The status of a SelfSubjectRulesReview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesReview {
    /// `ResourceRule`s: `verbs`, `apiGroups`, `resources`, `resourceNames`.
    pub resource_rules: Vec<Value>,
    /// `NonResourceRule`s: `verbs`, `nonResourceURLs`.
    pub non_resource_rules: Vec<Value>,
    /// True when some authorizer could not list its rules (kubelets under the node
    /// authorizer).
    pub incomplete: bool,
    /// Errors met resolving rules (a binding to a missing role), "" when none.
    pub evaluation_error: String,
}

impl RulesReview {
    /// The `status` of a SelfSubjectRulesReview response.
    #[must_use]
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "resourceRules": self.resource_rules,
            "nonResourceRules": self.non_resource_rules,
            "incomplete": self.incomplete,
        });
        if !self.evaluation_error.is_empty() {
            status["evaluationError"] = json!(self.evaluation_error);
        }
        status
    }
}

/// Upstream `utilerrors.NewAggregate(errs).Error()`: one message as is, several de-duplicated
/// as `[a, b]`.
fn aggregate_errors(errors: &[String]) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [] => None,
        [one] => Some((*one).to_owned()),
        many => Some(format!("[{}]", many.join(", "))),
    }
}

/// The whole chain kube-apiserver runs with `--authorization-mode=Node,RBAC`: the privileged
/// group, the node authorizer, then RBAC. Reasons of authorizers that had no opinion are
/// joined with newlines, as upstream's union authorizer joins them. `field_selector` is the
/// request's `fieldSelector` ("" if none); the node authorizer lets kubelets list and watch
/// only their own pods with `spec.nodeName=<node>`.
#[must_use]
pub fn authorize_node_rbac(
    snapshot: &RbacSnapshot,
    nodes: &NodeGraph,
    user: &UserInfo,
    attrs: &Attributes,
    field_selector: &str,
) -> Decision {
    if user.in_group(SYSTEM_MASTERS) {
        return Decision::allow(String::new());
    }
    let mut reasons = Vec::new();
    if let Some(d) = authorize_node(user, attrs, field_selector, nodes) {
        if d.allowed {
            return d;
        }
        if !d.reason.is_empty() {
            reasons.push(d.reason);
        }
    }
    let rbac = snapshot.authorize_rbac(user, attrs);
    if rbac.allowed {
        return rbac;
    }
    if !rbac.reason.is_empty() {
        reasons.push(rbac.reason);
    }
    Decision::deny(user, attrs, reasons.join("\n"))
}
