//! Privilege escalation prevention for writes of RBAC objects (upstream's policy-based
//! storage for roles and bindings with `validation.ConfirmNoEscalation`): a user may create or
//! update a Role or ClusterRole only with rules they already hold (or with the `escalate`
//! verb on it), and a binding only to a role whose rules they hold (or with `bind` on it).

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    Attributes, RBAC_GROUP, RbacSnapshot, SYSTEM_MASTERS, UserInfo, go_quote, meta_str,
    rule::{self, PolicyRule},
};

/// `*` on everything: what it takes to set an aggregationRule.
#[must_use]
pub fn full_authority() -> Vec<PolicyRule> {
    let all = || vec![rule::ALL.to_owned()];
    vec![
        PolicyRule {
            verbs: all(),
            api_groups: all(),
            resources: all(),
            ..PolicyRule::default()
        },
        PolicyRule {
            verbs: all(),
            non_resource_urls: all(),
            ..PolicyRule::default()
        },
    ]
}

fn go_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// Whether `granter` holds every permission in `rules` in `namespace` ("" for cluster-wide),
/// as their RBAC rules there resolve (upstream `ConfirmNoEscalation`; `system:masters` holds
/// everything). `Err` names the missing permissions:
/// `user "alice" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not
/// currently held:\n{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}`.
/// Malformed rules in `rules` grant nothing and need nothing.
pub fn can_grant(
    granter: &UserInfo,
    rules: &[Value],
    snapshot: &RbacSnapshot,
    namespace: &str,
) -> Result<(), String> {
    let wanted: Vec<PolicyRule> = rules.iter().filter_map(PolicyRule::from_json).collect();
    confirm_no_escalation(granter, &wanted, snapshot, namespace)
}

fn confirm_no_escalation(
    granter: &UserInfo,
    wanted: &[PolicyRule],
    snapshot: &RbacSnapshot,
    namespace: &str,
) -> Result<(), String> {
    if granter.in_group(SYSTEM_MASTERS) {
        return Ok(());
    }
    let (owned, errors) = snapshot.rbac_rules(granter, namespace);
    let Err(missing) = rule::covers(&owned, wanted) else {
        return Ok(());
    };
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(&granter.username),
        go_list(&granter.groups),
        rule::describe_missing(missing)
    );
    if let Some(errors) = super::aggregate_errors(&errors) {
        let _ = write!(msg, "; resolution errors: [{errors}]");
    }
    Err(msg)
}

fn rbac_attrs(verb: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes::Resource {
        verb: verb.to_owned(),
        group: RBAC_GROUP.to_owned(),
        version: "*".to_owned(),
        resource: resource.to_owned(),
        subresource: String::new(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn forbidden(resource: &str, name: &str, msg: &str) -> String {
    if name.is_empty() {
        format!("{resource}.{RBAC_GROUP} is forbidden: {msg}")
    } else {
        format!(
            "{resource}.{RBAC_GROUP} {} is forbidden: {msg}",
            go_quote(name)
        )
    }
}

/// The escalation check on a create or update of a Role or ClusterRole, after the write
/// itself was authorized. `old` is the stored object on update. Allowed for `system:masters`,
/// for users with `escalate` on the role, and otherwise only with rules the user holds; an
/// aggregationRule newly set needs `*` on everything. `Err` is the 403 Status message.
pub fn check_role_write(
    snapshot: &RbacSnapshot,
    user: &UserInfo,
    role: &Value,
    old: Option<&Value>,
) -> Result<(), String> {
    let cluster = role.get("kind").and_then(Value::as_str) == Some("ClusterRole");
    let (resource, namespace) = if cluster {
        ("clusterroles", "")
    } else {
        ("roles", meta_str(role, "namespace"))
    };
    let name = meta_str(role, "name");
    if user.in_group(SYSTEM_MASTERS)
        || snapshot
            .authorize(user, &rbac_attrs("escalate", resource, namespace, name))
            .allowed
    {
        return Ok(());
    }
    let rules = PolicyRule::list_from(role);
    confirm_no_escalation(user, &rules, snapshot, namespace)
        .map_err(|e| forbidden(resource, name, &e))?;
    let has_aggregation = |o: &Value| o.get("aggregationRule").is_some_and(|a| !a.is_null());
    if cluster && has_aggregation(role) && !old.is_some_and(has_aggregation) {
        confirm_no_escalation(user, &full_authority(), snapshot, namespace).map_err(|_| {
            forbidden(
                resource,
                name,
                "must have cluster-admin privileges to use the aggregationRule",
            )
        })?;
    }
    Ok(())
}

/// The escalation check on a create or update of a RoleBinding or ClusterRoleBinding, after
/// the write itself was authorized: allowed for `system:masters`, for users with `bind` on the
/// referenced role, and otherwise only if the user holds every rule of that role (in the
/// binding's namespace). `Err` is the 403 Status message (or the role's not-found message).
pub fn check_binding_write(
    snapshot: &RbacSnapshot,
    user: &UserInfo,
    binding: &Value,
) -> Result<(), String> {
    let cluster = binding.get("kind").and_then(Value::as_str) == Some("ClusterRoleBinding");
    let (resource, namespace) = if cluster {
        ("clusterrolebindings", "")
    } else {
        ("rolebindings", meta_str(binding, "namespace"))
    };
    let name = meta_str(binding, "name");
    let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
    let role_kind = role_ref
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role_name = role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if user.in_group(SYSTEM_MASTERS) {
        return Ok(());
    }
    let role_resource = if role_kind == "ClusterRole" {
        "clusterroles"
    } else {
        "roles"
    };
    if snapshot
        .authorize(
            user,
            &rbac_attrs("bind", role_resource, namespace, role_name),
        )
        .allowed
    {
        return Ok(());
    }
    let rules = snapshot.role_ref_rules(role_kind, role_name, namespace)?;
    confirm_no_escalation(user, &rules, snapshot, namespace)
        .map_err(|e| forbidden(resource, name, &e))
}
