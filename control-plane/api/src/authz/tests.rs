use std::time::Instant;

use serde_json::{Value, json};

use super::{
    node::{Vertex, node_identity},
    rule::{compact_string, covers},
    *,
};

fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes::resource(verb, group, resource, ns, name)
}

fn url(verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(verb, path)
}

fn subject(kind: &str, name: &str, ns: Option<&str>) -> Value {
    let mut s = json!({"kind": kind, "name": name});
    if let Some(ns) = ns {
        s["namespace"] = json!(ns);
    }
    s
}

fn role_binding(ns: &str, name: &str, role_kind: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

fn cluster_binding(name: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

/// The bootstrap policy plus `extra` objects.
fn cluster(extra: Vec<Value>) -> RbacSnapshot {
    let mut objects = bootstrap_objects();
    objects.extend(extra);
    RbacSnapshot::from_mixed(&objects)
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo::new(name, groups)
}

/// Checks a table of (attributes, allowed) for one user; names the failing row.
fn check_table(snapshot: &RbacSnapshot, who: &UserInfo, rows: &[(Attributes, bool)]) {
    for (attrs, want) in rows {
        let d = snapshot.authorize(who, attrs);
        assert_eq!(
            d.allowed, *want,
            "{} {attrs:?}: {} / {}",
            who.username, d.reason, d.denied_message
        );
        assert_eq!(d.denied_message.is_empty(), d.allowed);
    }
}

// The seed's walkthrough: `kubectl create sa viewer`, `kubectl create rolebinding
// viewercanview --clusterrole=view --serviceaccount=default:viewer`, then kubectl inside a pod
// running as that service account.
#[test]
fn seed_viewer_can_view_default_and_nothing_more() {
    let snapshot = cluster(vec![role_binding(
        "default",
        "viewercanview",
        "ClusterRole",
        "view",
        vec![subject("ServiceAccount", "viewer", Some("default"))],
    )]);
    let viewer = UserInfo::service_account("default", "viewer");
    check_table(
        &snapshot,
        &viewer,
        &[
            (res("get", "", "pods", "default", "eyepod"), true),
            (res("list", "", "pods", "default", ""), true),
            (res("watch", "", "pods", "default", ""), true),
            (res("get", "", "pods/log", "default", "eyepod"), true),
            (res("list", "apps", "deployments", "default", ""), true),
            (res("list", "", "pods", "kube-system", ""), false),
            (res("list", "", "pods", "", ""), false),
            (res("create", "apps", "deployments", "default", ""), false),
            (res("delete", "", "pods", "default", "eyepod"), false),
            (res("get", "", "secrets", "default", "default-token"), false),
            (res("list", "", "secrets", "default", ""), false),
            (res("create", "", "pods/exec", "default", "eyepod"), false),
            (res("list", "", "nodes", "", ""), false),
            (
                res(
                    "create",
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews",
                    "",
                    "",
                ),
                true,
            ),
        ],
    );

    let get = snapshot.authorize(&viewer, &res("get", "", "pods", "default", "eyepod"));
    assert_eq!(
        get.reason,
        r#"RBAC: allowed by RoleBinding "viewercanview/default" of ClusterRole "view" to ServiceAccount "viewer/default""#
    );
    let create = res("create", "apps", "deployments", "default", "");
    let denied = snapshot.authorize(&viewer, &create);
    let kubectl = r#"deployments.apps is forbidden: User "system:serviceaccount:default:viewer" cannot create resource "deployments" in API group "apps" in the namespace "default""#;
    assert_eq!(denied.denied_message, kubectl);
    assert_eq!(denied.reason, "");
    assert_eq!(forbidden_message(&viewer, &create), kubectl);
    let review = snapshot.authorize(
        &viewer,
        &res(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            "",
        ),
    );
    assert_eq!(
        review.reason,
        r#"RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" to Group "system:authenticated""#
    );
}

#[test]
fn forbidden_messages_read_as_kube_apiserver_writes_them() {
    let bob = user("bob", &[]);
    let cases = [
        (
            res("get", "", "pods", "default", "web"),
            r#"pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default""#,
        ),
        (
            res("create", "", "pods/exec", "default", "web"),
            r#"pods "web" is forbidden: User "bob" cannot create resource "pods/exec" in API group "" in the namespace "default""#,
        ),
        (
            res("list", "", "nodes", "", ""),
            r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#,
        ),
        (
            res(
                "get",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "view",
            ),
            r#"clusterroles.rbac.authorization.k8s.io "view" is forbidden: User "bob" cannot get resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#,
        ),
        (
            url("get", "/metrics"),
            r#"forbidden: User "bob" cannot get path "/metrics""#,
        ),
        (
            url("get", "/a<b>&c"),
            r#"forbidden: User "bob" cannot get path "/a&lt;b&gt;&amp;c""#,
        ),
    ];
    for (attrs, want) in cases {
        assert_eq!(forbidden_message(&bob, &attrs), want);
    }
    let quoted = user("e\"ve", &[]);
    assert_eq!(
        forbidden_message(&quoted, &url("get", "/x")),
        r#"forbidden: User "e\"ve" cannot get path "/x""#
    );
}

/// One user per default role, each bound by a RoleBinding in "team".
fn role_users() -> RbacSnapshot {
    let bind = |r: &str| {
        role_binding(
            "team",
            &format!("{r}-binding"),
            "ClusterRole",
            r,
            vec![subject("User", r, None)],
        )
    };
    cluster(vec![
        bind("view"),
        bind("edit"),
        bind("admin"),
        bind("cluster-admin"),
    ])
}

// Upstream: view reads workloads but no secrets; edit adds writes, secrets, pods/exec,
// attach, port-forward and impersonating service accounts, but no roles or bindings; admin
// adds roles, rolebindings and localsubjectaccessreviews.
#[test]
fn aggregated_view_edit_admin_grant_upstreams_rules() {
    let snapshot = role_users();
    let t = "team";
    let rows: &[(&str, Attributes, [bool; 4])] = &[
        // (label, request, [view, edit, admin, cluster-admin])
        ("get pods", res("get", "", "pods", t, "p"), [true; 4]),
        ("pod logs", res("get", "", "pods/log", t, "p"), [true; 4]),
        (
            "get scale",
            res("get", "apps", "deployments/scale", t, "d"),
            [true; 4],
        ),
        (
            "endpointslices",
            res("list", "discovery.k8s.io", "endpointslices", t, ""),
            [true; 4],
        ),
        (
            "get secrets",
            res("get", "", "secrets", t, "s"),
            [false, true, true, true],
        ),
        (
            "create secrets",
            res("create", "", "secrets", t, ""),
            [false, true, true, true],
        ),
        (
            "exec",
            res("create", "", "pods/exec", t, "p"),
            [false, true, true, true],
        ),
        (
            "exec (websocket)",
            res("get", "", "pods/exec", t, "p"),
            [false, true, true, true],
        ),
        (
            "port-forward",
            res("create", "", "pods/portforward", t, "p"),
            [false, true, true, true],
        ),
        (
            "create deploy",
            res("create", "apps", "deployments", t, ""),
            [false, true, true, true],
        ),
        (
            "scale",
            res("update", "apps", "deployments/scale", t, "d"),
            [false, true, true, true],
        ),
        (
            "svc proxy",
            res("get", "", "services/proxy", t, "s"),
            [false, true, true, true],
        ),
        (
            "impersonate sa",
            res("impersonate", "", "serviceaccounts", t, "x"),
            [false, true, true, true],
        ),
        (
            "sa token",
            res("create", "", "serviceaccounts/token", t, "x"),
            [false, true, true, true],
        ),
        (
            "leases",
            res("update", "coordination.k8s.io", "leases", t, "l"),
            [false, true, true, true],
        ),
        (
            "status write",
            res("update", "apps", "deployments/status", t, "d"),
            [false, false, false, true],
        ),
        (
            "list roles",
            res("list", RBAC_GROUP, "roles", t, ""),
            [false, false, true, true],
        ),
        (
            "create rb",
            res("create", RBAC_GROUP, "rolebindings", t, ""),
            [false, false, true, true],
        ),
        (
            "lsar",
            res(
                "create",
                "authorization.k8s.io",
                "localsubjectaccessreviews",
                t,
                "",
            ),
            [false, false, true, true],
        ),
        (
            "other ns",
            res("get", "", "pods", "default", "p"),
            [false; 4],
        ),
        (
            "cluster scope",
            res("list", "", "nodes", "", ""),
            [false; 4],
        ),
        (
            "namespaces",
            res("get", "", "namespaces", "", "team"),
            [false; 4],
        ),
    ];
    for (label, attrs, want) in rows {
        for (who, want) in ["view", "edit", "admin", "cluster-admin"].iter().zip(want) {
            let d = snapshot.authorize(&user(who, &[AUTHENTICATED]), attrs);
            assert_eq!(d.allowed, *want, "{who}: {label}");
        }
    }
}

fn rules_of(objects: &[Value], name: &str) -> Vec<PolicyRule> {
    objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
        .map(PolicyRule::list_from)
        .unwrap_or_default()
}

#[test]
fn bootstrap_aggregates_view_into_edit_into_admin() {
    let objects = bootstrap_objects();
    let (view, edit, admin) = (
        rules_of(&objects, "view"),
        rules_of(&objects, "edit"),
        rules_of(&objects, "admin"),
    );
    let mut view_parts = rules_of(&objects, "system:aggregate-to-view");
    view_parts.extend(rules_of(&objects, "system:aggregated-metrics-reader"));
    assert_eq!(view, view_parts);
    assert!(covers(&edit, &view).is_ok());
    assert!(covers(&edit, &rules_of(&objects, "system:aggregate-to-edit")).is_ok());
    assert!(covers(&admin, &edit).is_ok());
    assert!(covers(&admin, &rules_of(&objects, "system:aggregate-to-admin")).is_ok());
    assert!(covers(&view, &edit).is_err());
    assert!(covers(&edit, &admin).is_err());
    // Every rule once, in selector then name order: edit = aggregate-to-edit, then view's.
    let mut want = rules_of(&objects, "system:aggregate-to-edit");
    want.extend(view.iter().cloned());
    assert_eq!(edit, want);
    // Already filled in: aggregating again changes nothing.
    let cluster_roles: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .cloned()
        .collect();
    for (name, rules) in aggregate(&cluster_roles) {
        let stored: Vec<Value> = rules_of(&objects, &name)
            .iter()
            .map(PolicyRule::to_json)
            .collect();
        assert_eq!(rules, stored, "{name}");
    }
}

#[test]
fn aggregation_unions_matching_roles_by_selector_then_name() {
    let label = "rbac.example.com/aggregate-to-monitoring";
    let labelled = |name: &str, labels: Value, rules: Value| json!({"kind": "ClusterRole", "metadata": {"name": name, "labels": labels}, "rules": rules});
    let pods = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
    let nodes = json!({"verbs": ["list"], "apiGroups": [""], "resources": ["nodes"]});
    let metrics = json!({"verbs": ["get"], "nonResourceURLs": ["/metrics"]});
    let roles = vec![
        json!({
            "kind": "ClusterRole",
            "metadata": {"name": "monitoring", "labels": {label: "true"}},
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {label: "true"}},
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["metrics"]}]},
            ]},
            "rules": [{"verbs": ["stale"], "apiGroups": [""], "resources": ["x"]}],
        }),
        labelled("z-pods", json!({label: "true"}), json!([pods.clone()])),
        labelled(
            "a-nodes",
            json!({label: "true"}),
            json!([nodes.clone(), pods.clone()]),
        ),
        labelled(
            "unlabelled",
            json!({}),
            json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
        ),
        labelled(
            "m-metrics",
            json!({"tier": "metrics"}),
            json!([metrics.clone()]),
        ),
        // Aggregates the aggregate: gets its rules once they are computed.
        json!({
            "kind": "ClusterRole", "metadata": {"name": "super"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"kubernetes.io/metadata.name": "x"}}, {"matchExpressions": [{"key": label, "operator": "Exists"}]}]},
        }),
        json!({
            "kind": "ClusterRole", "metadata": {"name": "broken"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]},
        }),
    ];
    let out = aggregate(&roles);
    let get = |name: &str| out.iter().find(|(n, _)| n == name).map(|(_, r)| r.clone());
    // a-nodes then z-pods (by name), pods once, then the second selector's m-metrics; the
    // role's own stale rules are replaced.
    assert_eq!(
        get("monitoring"),
        Some(vec![nodes.clone(), pods.clone(), metrics.clone()])
    );
    // monitoring (labelled) now carries all three; a-nodes and z-pods add nothing new.
    assert_eq!(get("super"), Some(vec![nodes, pods, metrics]));
    assert_eq!(get("broken"), None);
    assert_eq!(out.len(), 2);

    // A cycle settles instead of looping.
    let cyclic = vec![
        json!({"kind": "ClusterRole", "metadata": {"name": "a", "labels": {"x": "a"}},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "b"}}]},
               "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["a"]}]}),
        json!({"kind": "ClusterRole", "metadata": {"name": "b", "labels": {"x": "b"}},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "a"}}]},
               "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["b"]}]}),
    ];
    assert_eq!(aggregate(&cyclic).len(), 2);
}

#[test]
fn system_masters_may_do_anything_without_bindings() {
    let empty = RbacSnapshot::default();
    let admin = user("kubernetes-admin", &[SYSTEM_MASTERS, AUTHENTICATED]);
    for attrs in [
        res("delete", "", "nodes", "", "n1"),
        res("escalate", RBAC_GROUP, "clusterroles", "", "x"),
        res("get", "", "secrets", "kube-system", "s"),
        url("post", "/anything"),
    ] {
        let d = empty.authorize(&admin, &attrs);
        assert!(d.allowed, "{attrs:?}");
        assert_eq!(d.reason, "");
    }
    let d = authorize_node_rbac(
        &empty,
        &NodeGraph::default(),
        &admin,
        &res("delete", "", "nodes", "", "n1"),
        "",
    );
    assert!(d.allowed);
    // ... but not a user who merely has that name.
    assert!(
        !empty
            .authorize(&user("system:masters", &[]), &url("get", "/api"))
            .allowed
    );
    let (resource, non_resource, incomplete) = empty.rules_for(&admin, "default");
    assert_eq!(
        resource,
        [json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})]
    );
    assert_eq!(
        non_resource,
        [json!({"verbs": ["*"], "nonResourceURLs": ["*"]})]
    );
    assert!(!incomplete);
}

#[test]
fn non_resource_urls_for_anonymous_and_authenticated_users() {
    let snapshot = cluster(Vec::new());
    let anonymous = user(ANONYMOUS, &[UNAUTHENTICATED]);
    let alice = user("alice", &[AUTHENTICATED]);
    let monitor = user("prometheus", &[AUTHENTICATED, "system:monitoring"]);
    let rows: &[(Attributes, [bool; 3])] = &[
        // [anonymous, alice, monitor]
        (url("get", "/healthz"), [true, true, true]),
        (url("get", "/livez"), [true, true, true]),
        (url("get", "/readyz"), [true, true, true]),
        (url("get", "/version"), [true, true, true]),
        (url("get", "/version/"), [true, true, true]),
        (url("get", "/api"), [false, true, true]),
        (url("get", "/api/v1"), [false, true, true]),
        (url("get", "/apis"), [false, true, true]),
        (url("get", "/apis/apps/v1"), [false, true, true]),
        (url("get", "/openapi/v3"), [false, true, true]),
        (url("post", "/api"), [false, false, false]),
        (url("get", "/healthz/etcd"), [false, false, true]),
        (url("get", "/metrics"), [false, false, true]),
        (url("get", "/version/x"), [false, false, false]),
        (
            url("get", "/.well-known/openid-configuration"),
            [false, false, false],
        ),
    ];
    for (attrs, want) in rows {
        for (who, want) in [&anonymous, &alice, &monitor].into_iter().zip(want) {
            assert_eq!(
                snapshot.authorize(who, attrs).allowed,
                *want,
                "{} {attrs:?}",
                who.username
            );
        }
    }
    let healthz = snapshot.authorize(&anonymous, &url("get", "/healthz"));
    assert_eq!(
        healthz.reason,
        r#"RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole "system:public-info-viewer" to Group "system:unauthenticated""#
    );
    assert_eq!(
        snapshot
            .authorize(&anonymous, &url("get", "/api"))
            .denied_message,
        r#"forbidden: User "system:anonymous" cannot get path "/api""#
    );
    // Service accounts may fetch the issuer discovery documents.
    let sa = UserInfo::service_account("default", "x");
    assert!(
        snapshot
            .authorize(&sa, &url("get", "/openid/v1/jwks"))
            .allowed
    );
}

#[test]
fn rules_match_as_upstream_matches_them() {
    let rule = |v: Value| PolicyRule::from_json(&v).unwrap();
    let cases: &[(Value, Attributes, bool)] = &[
        // verbs
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}),
            res("deletecollection", "", "pods", "d", ""),
            true,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
            res("list", "", "pods", "d", ""),
            false,
        ),
        // groups: "" is the core group only, "*" every group
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["deployments"]}),
            res("get", "apps", "deployments", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["deployments"]}),
            res("get", "apps", "deployments", "d", "x"),
            true,
        ),
        (
            json!({"verbs": ["get"], "resources": ["pods"]}),
            res("get", "", "pods", "d", "x"),
            false,
        ),
        // resources
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}),
            res("get", "", "pods/log", "d", "x"),
            true,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
            res("get", "", "pods/log", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
            res("get", "", "pods/log", "d", "x"),
            true,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
            res("get", "", "pods", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
            res("get", "", "pods/exec", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["podsx/log"]}),
            res("get", "", "pods/log", "d", "x"),
            false,
        ),
        // "pods/*" is no wildcard upstream
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/*"]}),
            res("get", "", "pods/log", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/*"]}),
            res("get", "", "pods", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}),
            res("get", "apps", "deployments/scale", "d", "x"),
            true,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}),
            res("get", "apps", "statefulsets/scale", "d", "x"),
            true,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}),
            res("get", "apps", "deployments", "d", "x"),
            false,
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}),
            res("get", "apps", "deployments/status", "d", "x"),
            false,
        ),
        // resourceNames: only requests that carry one of the names
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
            res("get", "", "configmaps", "d", "a"),
            true,
        ),
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
            res("get", "", "configmaps", "d", "b"),
            false,
        ),
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
            res("list", "", "configmaps", "d", ""),
            false,
        ),
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
            res("watch", "", "configmaps", "d", ""),
            false,
        ),
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
            res("create", "", "configmaps", "d", ""),
            false,
        ),
        // a list/watch with fieldSelector=metadata.name=a carries the name
        (
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
            res("watch", "", "configmaps", "d", "a"),
            true,
        ),
        // non-resource URLs
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}),
            url("get", "/logs/kubelet.log"),
            true,
        ),
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}),
            url("get", "/logs"),
            false,
        ),
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["/logs*"]}),
            url("get", "/logs"),
            true,
        ),
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}),
            url("get", "/healthz/ping"),
            false,
        ),
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["*"]}),
            url("get", "/anything"),
            true,
        ),
        // resource rules never match paths and the other way round
        (
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            url("get", "/api"),
            false,
        ),
        (
            json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
            res("get", "", "pods", "d", "x"),
            false,
        ),
    ];
    for (r, attrs, want) in cases {
        assert_eq!(rule(r.clone()).allows(attrs), *want, "{r} {attrs:?}");
    }
    // Malformed rules are refused.
    for bad in [
        json!({"verbs": "get"}),
        json!({"verbs": ["get", 1]}),
        json!("rule"),
        json!({"verbs": ["get"], "resourceNames": {}}),
    ] {
        assert_eq!(PolicyRule::from_json(&bad), None, "{bad}");
    }
}

#[test]
fn subresources_are_granted_separately() {
    let snapshot = cluster(vec![
        role(
            "default",
            "ops",
            json!([
                {"verbs": ["update", "patch"], "apiGroups": ["apps"], "resources": ["deployments/scale"]},
                {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
                {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"], "resourceNames": ["debug"]},
                {"verbs": ["get"], "apiGroups": [""], "resources": ["services/proxy"]},
            ]),
        ),
        role_binding(
            "default",
            "ops",
            "Role",
            "ops",
            vec![subject("User", "bob", None)],
        ),
    ]);
    let bob = user("bob", &[AUTHENTICATED]);
    check_table(
        &snapshot,
        &bob,
        &[
            (
                res("update", "apps", "deployments/scale", "default", "web"),
                true,
            ),
            (
                res("patch", "apps", "deployments/scale", "default", "web"),
                true,
            ),
            (
                res("update", "apps", "deployments", "default", "web"),
                false,
            ),
            (
                res("update", "apps", "statefulsets/scale", "default", "db"),
                false,
            ),
            (res("get", "", "pods/log", "default", "web"), true),
            (res("get", "", "pods", "default", "web"), false),
            (res("create", "", "pods/exec", "default", "debug"), true),
            (res("create", "", "pods/exec", "default", "web"), false),
            (res("get", "", "services/proxy", "default", "web"), true),
            (res("get", "", "services", "default", "web"), false),
            (res("get", "", "services/proxy", "other", "web"), false),
        ],
    );
    assert_eq!(
        snapshot
            .authorize(&bob, &res("create", "", "pods/exec", "default", "web"))
            .denied_message,
        r#"pods "web" is forbidden: User "bob" cannot create resource "pods/exec" in API group "" in the namespace "default""#
    );
}

#[test]
fn subjects_match_users_groups_and_service_accounts() {
    let secrets_reader = cluster_role(
        "secrets-reader",
        json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]),
    );
    let snapshot = cluster(vec![
        secrets_reader,
        // A RoleBinding grants a ClusterRole in its own namespace only.
        role_binding(
            "apps",
            "by-user",
            "ClusterRole",
            "secrets-reader",
            vec![subject("User", "ann", None)],
        ),
        role_binding(
            "apps",
            "by-group",
            "ClusterRole",
            "secrets-reader",
            vec![subject("Group", "devs", None)],
        ),
        // Every service account of namespace "ci".
        role_binding(
            "apps",
            "ci-sas",
            "ClusterRole",
            "secrets-reader",
            vec![subject("Group", "system:serviceaccounts:ci", None)],
        ),
        // A service account without a namespace means the binding's.
        role_binding(
            "apps",
            "local-sa",
            "ClusterRole",
            "secrets-reader",
            vec![subject("ServiceAccount", "builder", None)],
        ),
        // An unknown kind and a ServiceAccount subject of a ClusterRoleBinding without a
        // namespace match nobody.
        role_binding(
            "apps",
            "odd",
            "ClusterRole",
            "secrets-reader",
            vec![subject("Robot", "ann2", None)],
        ),
        cluster_binding(
            "no-ns-sa",
            "secrets-reader",
            vec![subject("ServiceAccount", "builder", None)],
        ),
        cluster_binding(
            "all-sas",
            "view",
            vec![subject("Group", "system:serviceaccounts", None)],
        ),
    ]);
    let secret = |ns: &str| res("get", "", "secrets", ns, "s");
    let rows: &[(UserInfo, &str, bool)] = &[
        (user("ann", &[AUTHENTICATED]), "apps", true),
        (user("ann", &[AUTHENTICATED]), "other", false),
        (user("ann2", &[AUTHENTICATED]), "apps", false),
        (user("carl", &["devs"]), "apps", true),
        (user("carl", &["devs"]), "other", false),
        (UserInfo::service_account("ci", "runner"), "apps", true),
        (UserInfo::service_account("cd", "runner"), "apps", false),
        (UserInfo::service_account("apps", "builder"), "apps", true),
        (UserInfo::service_account("apps", "builder"), "other", false),
        (UserInfo::service_account("other", "builder"), "apps", false),
        // A service account's user name alone is enough: SA subjects match on the name.
        (
            user("system:serviceaccount:apps:builder", &[]),
            "apps",
            true,
        ),
        // A ClusterRoleBinding's ServiceAccount subject without a namespace matches nobody,
        // not even a user named as if the namespace were empty.
        (user("system:serviceaccount::builder", &[]), "apps", false),
    ];
    for (who, ns, want) in rows {
        assert_eq!(
            snapshot.authorize(who, &secret(ns)).allowed,
            *want,
            "{} in {ns}",
            who.username
        );
    }
    let d = snapshot.authorize(
        &UserInfo::service_account("x", "y"),
        &res("list", "", "pods", "", ""),
    );
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by ClusterRoleBinding "all-sas" of ClusterRole "view" to Group "system:serviceaccounts""#
    );
    let d = snapshot.authorize(
        &UserInfo::service_account("apps", "builder"),
        &secret("apps"),
    );
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by RoleBinding "local-sa/apps" of ClusterRole "secrets-reader" to ServiceAccount "builder/apps""#
    );
}

#[test]
fn missing_roles_become_reasons_and_malformed_objects_are_skipped() {
    let snapshot = RbacSnapshot::from_objects(
        &[
            role(
                "ns",
                "good",
                json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]),
            ),
            role(
                "ns",
                "bad-rules",
                json!([{"verbs": "get"}, 7, {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]),
            ),
            json!({"kind": "Role", "metadata": {"name": "no-namespace"}, "rules": []}),
            json!(null),
            json!([1, 2]),
        ],
        &[json!({"metadata": {"name": 5}}), json!({"rules": "x"})],
        &[
            role_binding("ns", "ok", "Role", "good", vec![subject("User", "u", None)]),
            role_binding(
                "ns",
                "partial",
                "Role",
                "bad-rules",
                vec![subject("User", "u", None)],
            ),
            role_binding(
                "ns",
                "ghost",
                "Role",
                "ghost",
                vec![subject("User", "u", None)],
            ),
            role_binding(
                "ns",
                "ghost2",
                "ClusterRole",
                "ghost",
                vec![subject("User", "u", None), json!(3), json!({"kind": 1})],
            ),
            json!({"kind": "RoleBinding", "metadata": {"name": "no-ref", "namespace": "ns"}, "subjects": [{"kind": "User", "name": "v"}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "no-subjects", "namespace": "ns"}, "subjects": "everyone"}),
            json!({"metadata": {"namespace": "ns"}}),
            json!(false),
        ],
        &[json!({"metadata": {}}), json!("crb")],
    );
    let u = user("u", &[]);
    assert!(
        snapshot
            .authorize(&u, &res("get", "", "pods", "ns", "p"))
            .allowed
    );
    assert!(
        snapshot
            .authorize(&u, &res("list", "", "pods", "ns", ""))
            .allowed
    );
    let denied = snapshot.authorize(&u, &res("delete", "", "pods", "ns", "p"));
    assert_eq!(
        denied.reason,
        r#"RBAC: [role.rbac.authorization.k8s.io "ghost" not found, clusterrole.rbac.authorization.k8s.io "ghost" not found]"#
    );
    assert_eq!(
        denied.denied_message,
        r#"pods "p" is forbidden: User "u" cannot delete resource "pods" in API group "" in the namespace "ns": RBAC: [role.rbac.authorization.k8s.io "ghost" not found, clusterrole.rbac.authorization.k8s.io "ghost" not found]"#
    );
    let v = snapshot.authorize(&user("v", &[]), &res("get", "", "pods", "ns", "p"));
    assert_eq!(v.reason, r#"RBAC: unsupported role reference kind: """#);
    let review = snapshot.rules_review(&u, "ns");
    assert_eq!(review.resource_rules.len(), 2);
    assert_eq!(
        review.evaluation_error,
        r#"[role.rbac.authorization.k8s.io "ghost" not found, clusterrole.rbac.authorization.k8s.io "ghost" not found]"#
    );
    assert!(!review.incomplete);
}

fn pod(ns: &str, name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    json!({"kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}, "spec": spec})
}

fn node_graph() -> NodeGraph {
    NodeGraph::from_pods(&[
        pod(
            "default",
            "p1",
            "n1",
            json!({
                "serviceAccountName": "sa1",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                ], "envFrom": [{"secretRef": {"name": "from-secret"}}]}],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "s1"}},
                    {"name": "c", "configMap": {"name": "c1"}},
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-secret"}}, {"configMap": {"name": "proj-cm"}}]}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "claim1"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                    {"name": "csi", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
                ],
            }),
        ),
        pod(
            "default",
            "p2",
            "n2",
            json!({"serviceAccountName": "sa2", "volumes": [{"name": "s", "secret": {"secretName": "s2"}}]}),
        ),
        // Shared by pods on both nodes.
        pod(
            "default",
            "p3",
            "n2",
            json!({"volumes": [{"name": "s", "secret": {"secretName": "s1"}}]}),
        ),
        // Not scheduled: grants nothing.
        json!({"metadata": {"name": "pending", "namespace": "default"}, "spec": {"volumes": [{"name": "s", "secret": {"secretName": "pending-secret"}}]}}),
        json!("garbage"),
    ])
}

#[test]
fn node_authorizer_scopes_kubelets_to_their_pods() {
    let graph = node_graph();
    let n1 = user("system:node:n1", &[NODES_GROUP, AUTHENTICATED]);
    let d = "default";
    let no_rel = "no relationship found between node 'n1' and this object";
    let rows: &[(Attributes, &str, bool, &str)] = &[
        // (request, field selector, allowed, reason)
        (res("get", "", "secrets", d, "s1"), "", true, ""),
        (res("watch", "", "secrets", d, "s1"), "", true, ""),
        (res("get", "", "secrets", d, "pull"), "", true, ""),
        (res("get", "", "secrets", d, "env-secret"), "", true, ""),
        (res("get", "", "secrets", d, "from-secret"), "", true, ""),
        (res("get", "", "secrets", d, "proj-secret"), "", true, ""),
        (res("get", "", "secrets", d, "csi-secret"), "", true, ""),
        (res("get", "", "secrets", d, "s2"), "", false, no_rel),
        (res("get", "", "secrets", "other", "s1"), "", false, no_rel),
        (
            res("get", "", "secrets", d, "pending-secret"),
            "",
            false,
            no_rel,
        ),
        (
            res("list", "", "secrets", d, ""),
            "",
            false,
            "No Object name found",
        ),
        (
            res("update", "", "secrets", d, "s1"),
            "",
            false,
            "can only read resources of this type",
        ),
        (
            res("get", "", "secrets", "", "s1"),
            "",
            false,
            "can only read namespaced object of this type",
        ),
        (res("get", "", "configmaps", d, "c1"), "", true, ""),
        (res("get", "", "configmaps", d, "env-cm"), "", true, ""),
        (res("get", "", "configmaps", d, "init-cm"), "", true, ""),
        (res("get", "", "configmaps", d, "proj-cm"), "", true, ""),
        (
            res("get", "", "configmaps", d, "kube-root-ca.crt"),
            "",
            false,
            no_rel,
        ),
        (
            res("get", "", "persistentvolumeclaims", d, "claim1"),
            "",
            true,
            "",
        ),
        (
            res("get", "", "persistentvolumeclaims", d, "p1-scratch"),
            "",
            true,
            "",
        ),
        (
            res("list", "", "persistentvolumeclaims", d, ""),
            "",
            false,
            "can only get individual resources of this type",
        ),
        (
            res("patch", "", "persistentvolumeclaims/status", d, "claim1"),
            "",
            true,
            "",
        ),
        (
            res("get", "", "persistentvolumes", "", "pv1"),
            "",
            false,
            no_rel,
        ),
        (res("get", "", "serviceaccounts", d, "sa1"), "", true, ""),
        (
            res("get", "", "serviceaccounts", d, "sa2"),
            "",
            false,
            no_rel,
        ),
        (
            res("create", "", "serviceaccounts/token", d, "sa1"),
            "",
            true,
            "",
        ),
        (
            res("create", "", "serviceaccounts/token", d, "sa2"),
            "",
            false,
            no_rel,
        ),
        (
            res("list", "", "serviceaccounts", d, ""),
            "",
            false,
            "can only create tokens for individual service accounts",
        ),
        (res("get", "", "nodes", "", "n1"), "", true, ""),
        (res("update", "", "nodes/status", "", "n1"), "", true, ""),
        (
            res("get", "", "nodes", "", "n2"),
            "",
            false,
            "node 'n1' cannot read 'n2', only its own Node object",
        ),
        (
            res("list", "", "nodes", "", ""),
            "",
            false,
            "node 'n1' cannot read all nodes, only its own Node object",
        ),
        (res("watch", "", "nodes", "", "n1"), "", true, ""),
        (res("delete", "", "nodes", "", "n1"), "", false, ""),
        (
            res("list", "", "pods", "", ""),
            "spec.nodeName=n1",
            true,
            "",
        ),
        (
            res("watch", "", "pods", "", ""),
            "metadata.namespace=x,spec.nodeName==n1",
            true,
            "",
        ),
        (
            res("list", "", "pods", "", ""),
            "spec.nodeName=n2",
            false,
            "can only list/watch pods with spec.nodeName field selector",
        ),
        (
            res("list", "", "pods", "", ""),
            "spec.nodeName!=n1",
            false,
            "can only list/watch pods with spec.nodeName field selector",
        ),
        (res("get", "", "pods", d, "p1"), "", true, ""),
        (res("get", "", "pods", d, "p2"), "", false, no_rel),
        (res("patch", "", "pods/status", d, "p1"), "", true, ""),
        (res("create", "", "pods/eviction", d, "p1"), "", true, ""),
        (res("create", "", "pods/exec", d, "p1"), "", false, ""),
        (
            res(
                "get",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "n1",
            ),
            "",
            true,
            "",
        ),
        (
            res(
                "create",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "",
            ),
            "",
            true,
            "",
        ),
        (
            res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "n2",
            ),
            "",
            false,
            "can only access node lease with the same name as the requesting node",
        ),
        (
            res("get", "coordination.k8s.io", "leases", d, "n1"),
            "",
            false,
            r#"can only access leases in the "kube-node-lease" system namespace"#,
        ),
        (res("list", "", "services", "", ""), "", true, ""),
        (res("get", "", "endpoints", d, "kubernetes"), "", true, ""),
        (
            res("watch", "discovery.k8s.io", "endpointslices", "", ""),
            "",
            true,
            "",
        ),
        (res("create", "", "events", d, ""), "", true, ""),
        (res("create", "apps", "deployments", d, ""), "", false, ""),
        (url("get", "/api"), "", false, ""),
    ];
    for (attrs, selector, allowed, reason) in rows {
        let got = authorize_node(&n1, attrs, selector, &graph).unwrap();
        assert_eq!(
            (got.allowed, got.reason.as_str()),
            (*allowed, *reason),
            "{attrs:?} {selector}"
        );
    }
    // Not a node: no opinion at all.
    let ann = user("ann", &[AUTHENTICATED]);
    assert_eq!(
        authorize_node(&ann, &res("get", "", "secrets", d, "s1"), "", &graph),
        None
    );
    assert_eq!(
        node_identity(&user("system:node:n1", &[AUTHENTICATED])),
        None
    );
    let nameless = user("system:node:", &[NODES_GROUP]);
    let d = authorize_node(&nameless, &res("get", "", "nodes", "", "x"), "", &graph).unwrap();
    assert_eq!(d.reason, r#"unknown node for user "system:node:""#);
}

#[test]
fn node_rbac_chain_explains_denials_and_follows_the_graph() {
    let snapshot = cluster(Vec::new());
    let mut graph = node_graph();
    let n1 = user("system:node:n1", &[NODES_GROUP, AUTHENTICATED]);
    let s2 = res("get", "", "secrets", "default", "s2");
    let d = authorize_node_rbac(&snapshot, &graph, &n1, &s2, "");
    assert!(!d.allowed);
    assert_eq!(
        d.denied_message,
        r#"secrets "s2" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#
    );
    // RBAC still applies after the node authorizer: discovery for every authenticated user.
    assert!(authorize_node_rbac(&snapshot, &graph, &n1, &url("get", "/api"), "").allowed);
    // The system:node binding has no subjects: RBAC alone gives a kubelet nothing.
    assert!(
        !snapshot
            .authorize(&n1, &res("get", "", "secrets", "default", "s1"))
            .allowed
    );

    let s1 = res("get", "", "secrets", "default", "s1");
    assert!(authorize_node_rbac(&snapshot, &graph, &n1, &s1, "").allowed);
    graph.remove_pod("default", "p1");
    assert!(!authorize_node_rbac(&snapshot, &graph, &n1, &s1, "").allowed);
    // p3 on n2 still uses s1.
    let n2 = user("system:node:n2", &[NODES_GROUP]);
    assert!(authorize_node_rbac(&snapshot, &graph, &n2, &s1, "").allowed);
    // Rescheduling (an update with another node) moves the relationship.
    graph.add_pod(&pod(
        "default",
        "p3",
        "n1",
        json!({"volumes": [{"name": "s", "secret": {"secretName": "s1"}}]}),
    ));
    assert!(authorize_node_rbac(&snapshot, &graph, &n1, &s1, "").allowed);
    assert!(!authorize_node_rbac(&snapshot, &graph, &n2, &s1, "").allowed);
    assert!(graph.related(Vertex::Secret, "default", "s1", "n1"));
    assert!(!graph.related(Vertex::Secret, "default", "s1", "n2"));
}

#[test]
fn node_restriction_limits_kubelet_writes_to_their_own_objects() {
    let graph = node_graph();
    let n1 = user("system:node:n1", &[NODES_GROUP, AUTHENTICATED]);
    let snapshot = cluster(Vec::new());
    let lease = |name: &str| json!({"metadata": {"name": name, "namespace": "kube-node-lease"}});
    let token = |bound: Value| json!({"kind": "TokenRequest", "spec": {"boundObjectRef": bound}});
    let mirror = |node: &str, spec: Value| {
        let mut p = pod("default", "static-web", node, spec);
        p["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "x"});
        p
    };
    const MIRROR_ANNOTATION: &str = node::MIRROR_POD_ANNOTATION;
    let rows: Vec<(Attributes, Option<Value>, Result<(), &str>)> = vec![
        (res("update", "", "nodes/status", "", "n1"), None, Ok(())),
        (res("patch", "", "nodes", "", "n1"), None, Ok(())),
        (
            res("create", "", "nodes", "", ""),
            Some(json!({"metadata": {"name": "n1"}})),
            Ok(()),
        ),
        (
            res("update", "", "nodes/status", "", "n2"),
            None,
            Err(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#),
        ),
        (
            res("create", "", "nodes", "", ""),
            Some(json!({"metadata": {"name": "n2"}})),
            Err(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#),
        ),
        (
            res("create", "", "pods", "default", ""),
            Some(mirror("n1", json!({}))),
            Ok(()),
        ),
        (
            res("create", "", "pods", "default", ""),
            Some(pod("default", "static-web", "n1", json!({}))),
            Err(
                r#"pods "static-web" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can only create mirror pods"#,
            ),
        ),
        (
            res("create", "", "pods", "default", ""),
            Some(mirror("n2", json!({}))),
            Err(
                r#"pods "static-web" is forbidden: node "n1" can only create pods with spec.nodeName set to itself"#,
            ),
        ),
        (
            res("create", "", "pods", "default", ""),
            Some(mirror(
                "n1",
                json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]}),
            )),
            Err(
                r#"pods "static-web" is forbidden: node "n1" can not create pods that reference secrets"#,
            ),
        ),
        (res("delete", "", "pods", "default", "p1"), None, Ok(())),
        (
            res("delete", "", "pods", "default", "p2"),
            None,
            Err(
                r#"pods "p2" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself"#,
            ),
        ),
        (
            res("patch", "", "pods/status", "default", "p1"),
            None,
            Ok(()),
        ),
        (
            res("update", "", "pods/status", "default", "p2"),
            None,
            Err(
                r#"pods "p2" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself"#,
            ),
        ),
        (
            res("create", "", "pods/eviction", "default", "p2"),
            None,
            Err(
                r#"pods "p2" is forbidden: node "n1" can only evict pods with spec.nodeName set to itself"#,
            ),
        ),
        (
            res(
                "create",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "",
            ),
            Some(lease("n1")),
            Ok(()),
        ),
        (
            res(
                "create",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "",
            ),
            Some(lease("n2")),
            Err(
                r#"leases.coordination.k8s.io "n2" is forbidden: can only access node lease with the same name as the requesting node"#,
            ),
        ),
        (
            res("create", "", "serviceaccounts/token", "default", "sa1"),
            Some(token(
                json!({"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": "uid-p1"}),
            )),
            Ok(()),
        ),
        (
            res("create", "", "serviceaccounts/token", "default", "sa1"),
            Some(json!({"spec": {}})),
            Err(r#"serviceaccounts "sa1" is forbidden: node requested token not bound to a pod"#),
        ),
        (
            res("create", "", "serviceaccounts/token", "default", "sa2"),
            Some(token(json!({"kind": "Pod", "name": "p2"}))),
            Err(
                r#"serviceaccounts "sa2" is forbidden: node requested token bound to a pod scheduled on a different node"#,
            ),
        ),
        (
            res("create", "", "serviceaccounts/token", "default", "sa1"),
            Some(token(json!({"kind": "Pod", "name": "p1", "uid": "stale"}))),
            Err(
                r#"serviceaccounts "sa1" is forbidden: the UID in the bound object reference (stale) does not match the UID in record. The object might have been deleted and then recreated"#,
            ),
        ),
        (res("get", "", "secrets", "default", "s2"), None, Ok(())),
    ];
    for (attrs, object, want) in rows {
        let got = node_restriction(&n1, &attrs, object.as_ref(), &graph);
        assert_eq!(
            got.as_ref().err().map(String::as_str),
            want.err(),
            "{attrs:?}"
        );
    }
    // The whole pipeline for "a node updates only its own Node status": authorized for any
    // node name, refused at admission for another node's.
    for (node, ok) in [("n1", true), ("n2", false)] {
        let attrs = res("update", "", "nodes/status", "", node);
        assert!(authorize_node_rbac(&snapshot, &graph, &n1, &attrs, "").allowed);
        assert_eq!(
            node_restriction(&n1, &attrs, None, &graph).is_ok(),
            ok,
            "{node}"
        );
    }
    // Others pass through.
    let ann = user("ann", &[]);
    assert!(
        node_restriction(
            &ann,
            &res("update", "", "nodes/status", "", "n2"),
            None,
            &graph
        )
        .is_ok()
    );
}

/// alice edits in "team"; a ClusterRole "pod-reader" and a Role "scaler" exist.
fn escalation_cluster(extra: Vec<Value>) -> RbacSnapshot {
    let mut objects = vec![
        role_binding(
            "team",
            "alice-edit",
            "ClusterRole",
            "edit",
            vec![subject("User", "alice", None)],
        ),
        cluster_role(
            "pod-reader",
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]),
        ),
        role(
            "team",
            "scaler",
            json!([{"verbs": ["update"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}]),
        ),
    ];
    objects.extend(extra);
    cluster(objects)
}

#[test]
fn users_grant_only_what_they_hold() {
    let snapshot = escalation_cluster(Vec::new());
    let alice = user("alice", &[AUTHENTICATED]);
    let rule = |verbs: Value, groups: Value, resources: Value| json!({"verbs": verbs, "apiGroups": groups, "resources": resources});
    let held = rule(
        json!(["get", "list"]),
        json!([""]),
        json!(["pods", "configmaps"]),
    );
    assert_eq!(
        can_grant(&alice, std::slice::from_ref(&held), &snapshot, "team"),
        Ok(())
    );
    assert_eq!(
        can_grant(&alice, &[rule(json!(["create"]), json!([RBAC_GROUP]), json!(["roles"]))], &snapshot, "team"),
        Err("user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"rbac.authorization.k8s.io\"], Resources:[\"roles\"], Verbs:[\"create\"]}".to_owned())
    );
    // Held in "team" only.
    assert!(can_grant(&alice, &[held], &snapshot, "other").is_err());
    // Missing pieces are compacted per resource and listed sorted.
    assert_eq!(
        can_grant(
            &alice,
            &[rule(json!(["create", "delete", "get"]), json!([""]), json!(["nodes", "pods"]))],
            &snapshot,
            "team"
        ),
        Err("user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"create\" \"delete\" \"get\"]}".to_owned())
    );
    // The privileged group may grant anything.
    let root = user("root", &[SYSTEM_MASTERS]);
    assert_eq!(
        can_grant(
            &root,
            &[json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
            &snapshot,
            ""
        ),
        Ok(())
    );

    // Coverage details: */scale, resourceNames, URL prefixes.
    let owner = |v: Value| PolicyRule::list_from(&json!({"rules": v}));
    let wanted = |v: Value| PolicyRule::list_from(&json!({"rules": [v]}));
    let cases = [
        (
            json!([{"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}]),
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}),
            true,
        ),
        (
            json!([{"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}]),
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}),
            false,
        ),
        (
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["cm"], "resourceNames": ["a", "b"]}]),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["cm"], "resourceNames": ["a"]}),
            true,
        ),
        (
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["cm"], "resourceNames": ["a"]}]),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["cm"]}),
            false,
        ),
        (
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["cm"]}]),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["cm"], "resourceNames": ["a"]}),
            true,
        ),
        (
            json!([{"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}]),
            json!({"verbs": ["get"], "nonResourceURLs": ["/logs/a", "/logs/*"]}),
            true,
        ),
        (
            json!([{"verbs": ["get"], "nonResourceURLs": ["/logs/a"]}]),
            json!({"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}),
            false,
        ),
        // A role holding both halves of a rule covers it across two owner rules.
        (
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]),
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
            true,
        ),
    ];
    for (o, w, want) in cases {
        assert_eq!(
            covers(&owner(o.clone()), &wanted(w.clone())).is_ok(),
            want,
            "{o} covers {w}"
        );
    }
    assert_eq!(
        compact_string(
            &PolicyRule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/x"]})).unwrap()
        ),
        r#"{NonResourceURLs:["/x"], Verbs:["get"]}"#
    );
}

#[test]
fn role_and_binding_writes_need_the_rules_or_escalate_and_bind() {
    let extra = vec![
        cluster_role(
            "escalator",
            json!([{"verbs": ["escalate"], "apiGroups": [RBAC_GROUP], "resources": ["roles"]}]),
        ),
        role_binding(
            "team",
            "bob-escalates",
            "ClusterRole",
            "escalator",
            vec![subject("User", "bob", None)],
        ),
        cluster_role(
            "binder",
            json!([{"verbs": ["bind"], "apiGroups": [RBAC_GROUP], "resources": ["clusterroles"], "resourceNames": ["admin"]}]),
        ),
        role_binding(
            "team",
            "carol-binds",
            "ClusterRole",
            "binder",
            vec![subject("User", "carol", None)],
        ),
    ];
    let snapshot = escalation_cluster(extra);
    let (alice, bob, carol) = (
        user("alice", &[AUTHENTICATED]),
        user("bob", &[AUTHENTICATED]),
        user("carol", &[AUTHENTICATED]),
    );
    let root = user("root", &[SYSTEM_MASTERS]);
    let new_role = |rules: Value| json!({"kind": "Role", "metadata": {"name": "r", "namespace": "team"}, "rules": rules});
    let pods = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
    let roles = json!([{"verbs": ["create"], "apiGroups": [RBAC_GROUP], "resources": ["roles"]}]);
    assert_eq!(
        check_role_write(&snapshot, &alice, &new_role(pods), None),
        Ok(())
    );
    let err = check_role_write(&snapshot, &alice, &new_role(roles.clone()), None).unwrap_err();
    assert!(
        err.starts_with(r#"roles.rbac.authorization.k8s.io "r" is forbidden: user "alice" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{err}"
    );
    assert_eq!(
        check_role_write(&snapshot, &bob, &new_role(roles.clone()), None),
        Ok(())
    );
    assert_eq!(
        check_role_write(&snapshot, &root, &new_role(roles), None),
        Ok(())
    );
    // Setting an aggregationRule takes cluster-admin.
    let aggregating = json!({"kind": "ClusterRole", "metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": []}});
    assert_eq!(
        check_role_write(&snapshot, &alice, &aggregating, None),
        Err(r#"clusterroles.rbac.authorization.k8s.io "agg" is forbidden: must have cluster-admin privileges to use the aggregationRule"#.to_owned())
    );
    assert_eq!(
        check_role_write(&snapshot, &root, &aggregating, None),
        Ok(())
    );

    let binding = |role_kind: &str, role: &str| {
        role_binding(
            "team",
            "b",
            role_kind,
            role,
            vec![subject("User", "dave", None)],
        )
    };
    let rows = [
        (&alice, binding("ClusterRole", "view"), true),
        (&alice, binding("ClusterRole", "edit"), true),
        (&alice, binding("ClusterRole", "pod-reader"), true),
        (&alice, binding("Role", "scaler"), true),
        (&alice, binding("ClusterRole", "admin"), false),
        (&alice, binding("ClusterRole", "cluster-admin"), false),
        (&carol, binding("ClusterRole", "admin"), true),
        (&carol, binding("ClusterRole", "edit"), false),
        (&root, binding("ClusterRole", "cluster-admin"), true),
    ];
    for (who, b, want) in rows {
        assert_eq!(
            check_binding_write(&snapshot, who, &b).is_ok(),
            want,
            "{} binds {}",
            who.username,
            b["roleRef"]
        );
    }
    assert_eq!(
        check_binding_write(&snapshot, &alice, &binding("Role", "ghost")),
        Err(r#"role.rbac.authorization.k8s.io "ghost" not found"#.to_owned())
    );
    let err = check_binding_write(&snapshot, &alice, &binding("ClusterRole", "admin")).unwrap_err();
    assert!(
        err.starts_with(r#"rolebindings.rbac.authorization.k8s.io "b" is forbidden: user "alice""#),
        "{err}"
    );
}

#[test]
fn impersonation_asks_for_each_attribute_upstream_asks_for() {
    let headers = |h: &[(&'static str, &'static str)]| {
        ImpersonationRequest::from_headers(h.iter().copied()).unwrap()
    };
    let imp = |verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str| {
        Attributes::Resource {
            verb: verb.to_owned(),
            group: group.to_owned(),
            version: if group.is_empty() { "" } else { "v1" }.to_owned(),
            resource: resource.to_owned(),
            subresource: sub.to_owned(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
        }
    };

    // A service account: its own check, and its groups when none are asked for.
    let sa = impersonation_attributes(&headers(&[(
        "Impersonate-User",
        "system:serviceaccount:default:viewer",
    )]))
    .unwrap();
    assert_eq!(
        sa.checks,
        [imp(
            "impersonate",
            "",
            "serviceaccounts",
            "",
            "default",
            "viewer"
        )]
    );
    assert_eq!(sa.user, UserInfo::service_account("default", "viewer"));

    // A user with groups, extras (keys lower-cased and unescaped) and a uid.
    let full = impersonation_attributes(&headers(&[
        ("impersonate-user", "jane"),
        ("Impersonate-Group", "devs"),
        ("Impersonate-Group", "system:authenticated"),
        ("Impersonate-Extra-Scopes", "view"),
        ("Impersonate-Extra-Scopes", "edit"),
        ("Impersonate-Extra-acme.com%2Fproject", "x"),
        ("Impersonate-Uid", "1234"),
        ("Accept", "application/json"),
    ]))
    .unwrap();
    assert_eq!(
        full.checks,
        [
            imp("impersonate", "", "users", "", "", "jane"),
            imp("impersonate", "", "groups", "", "", "devs"),
            imp("impersonate", "", "groups", "", "", "system:authenticated"),
            imp(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                "acme.com/project",
                "",
                "x"
            ),
            imp(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                "scopes",
                "",
                "view"
            ),
            imp(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                "scopes",
                "",
                "edit"
            ),
            imp(
                "impersonate",
                "authentication.k8s.io",
                "uids",
                "",
                "",
                "1234"
            ),
        ]
    );
    assert_eq!(full.user.username, "jane");
    assert_eq!(full.user.uid, "1234");
    assert_eq!(full.user.groups, ["devs", "system:authenticated"]);
    assert_eq!(full.user.extra["scopes"], ["view", "edit"]);

    // system:authenticated is added unless anonymous or unauthenticated.
    let plain = impersonation_attributes(&headers(&[
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "devs"),
    ]))
    .unwrap();
    assert_eq!(plain.user.groups, ["devs", AUTHENTICATED]);
    let anon = impersonation_attributes(&headers(&[("Impersonate-User", ANONYMOUS)])).unwrap();
    assert!(anon.user.groups.is_empty());
    let unauth = impersonation_attributes(&headers(&[
        ("Impersonate-User", "x"),
        ("Impersonate-Group", UNAUTHENTICATED),
    ]))
    .unwrap();
    assert_eq!(unauth.user.groups, [UNAUTHENTICATED]);
    // Not a valid service account name: an ordinary user.
    let odd = impersonation_attributes(&headers(&[(
        "Impersonate-User",
        "system:serviceaccount:Bad_NS:x",
    )]))
    .unwrap();
    assert_eq!(
        odd.checks[0],
        imp(
            "impersonate",
            "",
            "users",
            "",
            "",
            "system:serviceaccount:Bad_NS:x"
        )
    );
    // Groups without a user is a bad request; no headers, no impersonation.
    assert!(matches!(
        impersonation_attributes(&headers(&[("Impersonate-Group", "devs")])),
        Err(ImpersonationError::WithoutUser { .. })
    ));
    assert_eq!(ImpersonationRequest::from_headers([("Accept", "x")]), None);

    // edit may impersonate service accounts of its namespace, not users.
    let snapshot = role_users();
    let editor = user("edit", &[AUTHENTICATED]);
    let as_sa = impersonation_attributes(&headers(&[(
        "Impersonate-User",
        "system:serviceaccount:team:bot",
    )]))
    .unwrap();
    assert_eq!(
        authorize_impersonation(&snapshot, &editor, &as_sa),
        Ok(UserInfo::service_account("team", "bot"))
    );
    let denied = authorize_impersonation(&snapshot, &editor, &plain).unwrap_err();
    assert_eq!(
        denied.denied_message,
        r#"users "jane" is forbidden: User "edit" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );
}

#[test]
fn rules_for_answers_self_subject_rules_reviews() {
    let snapshot = cluster(vec![
        role_binding(
            "default",
            "viewercanview",
            "ClusterRole",
            "view",
            vec![subject("ServiceAccount", "viewer", Some("default"))],
        ),
        role(
            "default",
            "cm",
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"]}]),
        ),
        role_binding(
            "default",
            "cm",
            "Role",
            "cm",
            vec![subject("ServiceAccount", "viewer", None)],
        ),
    ]);
    let viewer = UserInfo::service_account("default", "viewer");
    let (resource, non_resource, incomplete) = snapshot.rules_for(&viewer, "default");
    assert!(!incomplete);
    // ClusterRoleBindings first (by name), then the namespace's RoleBindings (by name).
    assert_eq!(
        resource[0],
        json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})
    );
    assert_eq!(
        resource[2],
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"]})
    );
    assert_eq!(
        resource[3],
        json!({"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": [
            "configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status",
            "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
            "services", "services/status"]})
    );
    assert_eq!(
        resource.len(),
        2 + 1 + rules_of(&bootstrap_objects(), "view").len()
    );
    assert!(
        resource
            .iter()
            .all(|r| r["verbs"].is_array() && r["resources"].is_array())
    );
    assert_eq!(
        non_resource[0],
        json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]})
    );
    assert_eq!(non_resource.len(), 3);

    // Elsewhere only the cluster-wide rules remain.
    let (elsewhere, _, _) = snapshot.rules_for(&viewer, "kube-system");
    assert_eq!(elsewhere.len(), 2);

    let status = snapshot.rules_review(&viewer, "kube-system").to_status();
    assert_eq!(status["incomplete"], false);
    assert!(status.get("evaluationError").is_none());
    assert_eq!(status["nonResourceRules"].as_array().map(Vec::len), Some(3));

    // Kubelets' rules cannot be listed: the node authorizer marks them incomplete.
    let n1 = user("system:node:n1", &[NODES_GROUP, AUTHENTICATED]);
    let review = snapshot.rules_review(&n1, "default");
    assert!(review.incomplete);
    assert_eq!(
        review.evaluation_error,
        "node authorizer does not support user rule resolution"
    );
    assert_eq!(
        review.to_status()["evaluationError"],
        "node authorizer does not support user rule resolution"
    );
}

#[test]
fn bootstrap_policy_is_complete_and_serves_each_component() {
    let objects = bootstrap_objects();
    let mut seen = std::collections::BTreeSet::new();
    for o in &objects {
        let meta = &o["metadata"];
        assert_eq!(
            meta["annotations"][bootstrap::AUTOUPDATE_ANNOTATION],
            "true",
            "{meta}"
        );
        assert_eq!(
            meta["labels"][bootstrap::BOOTSTRAP_LABEL],
            "rbac-defaults",
            "{meta}"
        );
        assert!(
            seen.insert((
                o["kind"].to_string(),
                meta["namespace"].to_string(),
                meta["name"].to_string()
            )),
            "duplicate {meta}"
        );
    }
    let names = |kind: &str| -> Vec<&str> {
        objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect()
    };
    let cluster_roles = names("ClusterRole");
    for want in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node",
        "system:node-proxier",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:controller:deployment-controller",
        "system:controller:replicaset-controller",
        "system:controller:daemon-set-controller",
        "system:controller:statefulset-controller",
        "system:controller:job-controller",
        "system:controller:cronjob-controller",
        "system:controller:endpointslice-controller",
        "system:controller:endpoint-controller",
        "system:controller:namespace-controller",
        "system:controller:generic-garbage-collector",
        "system:controller:service-account-controller",
        "system:controller:node-controller",
        "system:controller:horizontal-pod-autoscaler",
        "system:controller:ttl-after-finished-controller",
    ] {
        assert!(cluster_roles.contains(&want), "{want}");
    }
    // Every binding's role exists.
    let snapshot = RbacSnapshot::from_mixed(&objects);
    for o in objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
    {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
        let role_ref = &o["roleRef"];
        assert!(
            snapshot
                .role_ref_rules(
                    role_ref["kind"].as_str().unwrap(),
                    role_ref["name"].as_str().unwrap(),
                    ns
                )
                .is_ok(),
            "{}",
            o["metadata"]
        );
    }
    // Each component may do its job and no more.
    let controller = |name: &str| UserInfo::service_account("kube-system", name);
    let rows: &[(UserInfo, Attributes, bool)] = &[
        (
            controller("deployment-controller"),
            res("create", "apps", "replicasets", "d", ""),
            true,
        ),
        (
            controller("deployment-controller"),
            res("update", "apps", "deployments/status", "d", "x"),
            true,
        ),
        (
            controller("deployment-controller"),
            res("create", "", "pods", "d", ""),
            false,
        ),
        (
            controller("replicaset-controller"),
            res("create", "", "pods", "d", ""),
            true,
        ),
        (
            controller("daemon-set-controller"),
            res("create", "apps", "controllerrevisions", "d", ""),
            true,
        ),
        (
            controller("statefulset-controller"),
            res("create", "", "persistentvolumeclaims", "d", ""),
            true,
        ),
        (
            controller("job-controller"),
            res("create", "", "pods", "d", ""),
            true,
        ),
        (
            controller("cronjob-controller"),
            res("create", "batch", "jobs", "d", ""),
            true,
        ),
        (
            controller("endpointslice-controller"),
            res("create", "discovery.k8s.io", "endpointslices", "d", ""),
            true,
        ),
        (
            controller("endpoint-controller"),
            res("update", "", "endpoints", "d", "x"),
            true,
        ),
        (
            controller("namespace-controller"),
            res("deletecollection", "apps", "deployments", "d", ""),
            true,
        ),
        (
            controller("namespace-controller"),
            res("update", "", "namespaces/finalize", "", "d"),
            true,
        ),
        (
            controller("generic-garbage-collector"),
            res("delete", "apps", "replicasets", "d", "x"),
            true,
        ),
        (
            controller("generic-garbage-collector"),
            res("create", "apps", "replicasets", "d", ""),
            false,
        ),
        (
            controller("service-account-controller"),
            res("create", "", "serviceaccounts", "d", ""),
            true,
        ),
        (
            controller("node-controller"),
            res("delete", "", "nodes", "", "n"),
            true,
        ),
        (
            controller("horizontal-pod-autoscaler"),
            res("update", "apps", "deployments/scale", "d", "x"),
            true,
        ),
        (
            controller("ttl-after-finished-controller"),
            res("delete", "batch", "jobs", "d", "x"),
            true,
        ),
        (
            controller("clusterrole-aggregation-controller"),
            res("escalate", RBAC_GROUP, "clusterroles", "", "admin"),
            true,
        ),
        (
            user("system:kube-scheduler", &[AUTHENTICATED]),
            res("create", "", "pods/binding", "d", "p"),
            true,
        ),
        (
            user("system:kube-scheduler", &[AUTHENTICATED]),
            res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "kube-scheduler",
            ),
            true,
        ),
        (
            user("system:kube-scheduler", &[AUTHENTICATED]),
            res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "other",
            ),
            true,
        ),
        (
            user("system:kube-scheduler", &[AUTHENTICATED]),
            res("create", "", "pods", "d", ""),
            false,
        ),
        (
            user("system:kube-proxy", &[AUTHENTICATED]),
            res("watch", "discovery.k8s.io", "endpointslices", "", ""),
            true,
        ),
        (
            user("system:kube-proxy", &[AUTHENTICATED]),
            res("get", "", "secrets", "d", "s"),
            false,
        ),
        (
            user("system:kube-controller-manager", &[AUTHENTICATED]),
            res("list", "apps", "deployments", "", ""),
            true,
        ),
        (
            user("system:kube-controller-manager", &[AUTHENTICATED]),
            res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "kube-controller-manager",
            ),
            true,
        ),
        // skiff runs every controller under this one identity, so it holds the union of the
        // controllers' roles (the replicaset controller creates pods) and nothing beyond them.
        (
            user("system:kube-controller-manager", &[AUTHENTICATED]),
            res("create", "", "pods", "d", ""),
            true,
        ),
        (
            user("system:kube-controller-manager", &[AUTHENTICATED]),
            res(
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                "",
                "",
            ),
            false,
        ),
        (
            user(
                "system:bootstrap:abcdef",
                &["system:bootstrappers", AUTHENTICATED],
            ),
            res(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                "",
            ),
            true,
        ),
        (
            user(
                "system:bootstrap:abcdef",
                &["system:bootstrappers", AUTHENTICATED],
            ),
            res("list", "", "pods", "", ""),
            false,
        ),
    ];
    for (who, attrs, want) in rows {
        assert_eq!(
            snapshot.authorize(who, attrs).allowed,
            *want,
            "{} {attrs:?}",
            who.username
        );
    }
}

#[test]
fn field_selectors_yield_exact_matches_only() {
    assert_eq!(
        field_selector_value("spec.nodeName=n1", "spec.nodeName"),
        Some("n1")
    );
    assert_eq!(
        field_selector_value("a=b,spec.nodeName==n1", "spec.nodeName"),
        Some("n1")
    );
    assert_eq!(
        field_selector_value("spec.nodeName!=n1", "spec.nodeName"),
        None
    );
    assert_eq!(field_selector_value("", "spec.nodeName"), None);
    assert_eq!(
        field_selector_value("metadata.name=x", "spec.nodeName"),
        None
    );
}

/// 10,000 RoleBindings, 100 in each of 100 namespaces plus 10,000 in one namespace, one user
/// each, all to `view`.
fn many_bindings() -> RbacSnapshot {
    let mut bindings = Vec::new();
    for i in 0..10_000 {
        bindings.push(role_binding(
            &format!("ns-{}", i % 100),
            &format!("b-{i}"),
            "ClusterRole",
            "view",
            vec![subject("User", &format!("user-{i}"), None)],
        ));
        bindings.push(role_binding(
            "crowded",
            &format!("b-{i}"),
            "ClusterRole",
            "view",
            vec![subject("User", &format!("user-{i}"), None)],
        ));
    }
    cluster(bindings)
}

#[test]
fn decisions_look_only_at_the_users_bindings() {
    let snapshot = many_bindings();
    let u = user("user-4242", &[AUTHENTICATED]);
    check_table(
        &snapshot,
        &u,
        &[
            (res("get", "", "pods", "ns-42", "p"), true),
            (res("get", "", "pods", "crowded", "p"), true),
            (res("get", "", "pods", "ns-43", "p"), false),
            (res("create", "", "pods", "crowded", ""), false),
        ],
    );
    // The subject index hands the decision one binding out of 10,000.
    let crowded = &snapshot.role_bindings["crowded"];
    assert_eq!(crowded.bindings.len(), 10_000);
    assert_eq!(crowded.candidates(&u).len(), 1);
    assert!(
        crowded
            .candidates(&user("nobody", &[AUTHENTICATED]))
            .is_empty()
    );
}

#[test]
#[ignore = "micro-benchmark: prints ns per decision"]
fn bench_decisions_with_10k_role_bindings() {
    let snapshot = many_bindings();
    let users: Vec<UserInfo> = (0..100)
        .map(|i| user(&format!("user-{}", i * 97), &[AUTHENTICATED]))
        .collect();
    let cases = [
        (
            "allowed, RoleBinding",
            res("list", "", "pods", "crowded", ""),
        ),
        (
            "denied",
            res("create", "apps", "deployments", "crowded", ""),
        ),
        (
            "allowed, ClusterRoleBinding",
            res(
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
            ),
        ),
    ];
    for (label, attrs) in &cases {
        let rounds = 200;
        let start = Instant::now();
        let mut allowed = 0;
        for _ in 0..rounds {
            for u in &users {
                allowed += usize::from(snapshot.authorize(u, attrs).allowed);
            }
        }
        let n = rounds * users.len();
        let ns = start.elapsed().as_nanos() / n as u128;
        eprintln!("{label}: {ns} ns/decision ({allowed}/{n} allowed)");
    }
}

#[test]
fn only_node_or_reference_changes_affect_the_node_graph() {
    let spec = json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}]});
    let bound = pod("default", "p", "n1", spec.clone());
    assert!(NodeGraph::affected_by(None, &bound), "a new pod");
    let mut running = bound.clone();
    running["status"] = json!({"phase": "Running", "podIP": "10.244.0.5"});
    assert!(
        !NodeGraph::affected_by(Some(&bound), &running),
        "a status update"
    );
    let moved = pod("default", "p", "n2", spec);
    assert!(NodeGraph::affected_by(Some(&bound), &moved), "another node");
    let other_ref = pod(
        "default",
        "p",
        "n1",
        json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "t"}}]}]}),
    );
    assert!(
        NodeGraph::affected_by(Some(&bound), &other_ref),
        "another secret"
    );
}
