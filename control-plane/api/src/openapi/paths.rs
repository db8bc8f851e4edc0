//! The `paths` of a group-version document: every resource and subresource with its
//! operations, parameters, request bodies and responses, shaped like kube-apiserver's.

use serde_json::{Map, Value, json};

use super::{
    kinds::{DELETE_OPTIONS, PATCH, STATUS},
    schema_ref,
};
use crate::registry::{self, Resource, Subresource};

/// The PATCH content types skiff accepts; kubectl's client-side apply uses strategic merge
/// patch only when the PATCH operation declares it.
pub const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

const JSON_YAML: &[&str] = &["application/json", "application/yaml"];
const LIST_CONTENT: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];

/// (group, version, kind, schema name) of the kinds the document has schemas for.
type Named = [(&'static str, &'static str, &'static str, String)];

fn schema_name<'n>(named: &'n Named, g: &str, v: &str, k: &str) -> Option<&'n str> {
    named
        .iter()
        .find(|(ng, nv, nk, _)| (*ng, *nv, *nk) == (g, v, k))
        .map(|(.., n)| n.as_str())
}

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    let mut p = json!({
        "name": name,
        "in": location,
        "description": description,
        "schema": { "type": ty, "uniqueItems": true },
    });
    if location == "path" {
        p["required"] = true.into();
    }
    p
}

fn q(name: &str, ty: &str, description: &str) -> Value {
    param(name, "query", ty, description)
}

fn pretty() -> Value {
    q(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    )
}

fn dry_run() -> Value {
    q(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. Valid values are: All.",
    )
}

fn field_manager() -> Value {
    q(
        "fieldManager",
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    )
}

fn field_validation() -> Value {
    q(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
    )
}

fn write_params() -> Vec<Value> {
    vec![dry_run(), field_manager(), field_validation()]
}

fn list_params() -> Vec<Value> {
    vec![
        q(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        q(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        q(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        q(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        q(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        q(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        q(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        q(
            "sendInitialEvents",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
        ),
        q(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call.",
        ),
        q(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        q(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        q(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error.",
        ),
        q(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy.",
        ),
        q(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
        ),
    ]
}

fn content(types: &[&str], schema: &Value) -> Value {
    let mut m = Map::new();
    for t in types {
        m.insert((*t).to_owned(), json!({ "schema": schema }));
    }
    Value::Object(m)
}

fn responses(codes: &[(&str, &str)], types: &[&str], schema: &Value) -> Value {
    let mut m = Map::new();
    for (code, description) in codes {
        m.insert(
            (*code).to_owned(),
            json!({ "description": description, "content": content(types, schema) }),
        );
    }
    m.insert("401".into(), json!({ "description": "Unauthorized" }));
    Value::Object(m)
}

fn gvk(g: &str, v: &str, k: &str) -> Value {
    json!({ "group": g, "version": v, "kind": k })
}

/// `core` for "", `rbacAuthorization` for rbac.authorization.k8s.io, `apps` for apps.
fn group_tag(group: &str) -> String {
    if group.is_empty() {
        return "core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    let mut out = String::new();
    for (i, part) in trimmed.split('.').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            out.push_str(&capitalise(part));
        }
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

struct Op<'a> {
    tag: &'a str,
    id_infix: String,
    action: &'a str,
    gvk: Value,
}

impl Op<'_> {
    fn build(
        &self,
        verb: &str,
        id_suffix: &str,
        description: &str,
        params: Vec<Value>,
        body: Option<Value>,
        resp: Value,
    ) -> Value {
        let mut op = json!({
            "tags": [self.tag],
            "description": description,
            "operationId": format!("{verb}{}{id_suffix}", self.id_infix),
            "parameters": params,
            "responses": resp,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if let Some(b) = body {
            op["requestBody"] = b;
        }
        op
    }
}

fn json_body(schema: &Value) -> Value {
    json!({ "content": content(&["application/json", "application/yaml"], schema), "required": true })
}

fn patch_body() -> Value {
    json!({ "content": content(PATCH_CONTENT_TYPES, &schema_ref(PATCH)), "required": true })
}

/// Every path of a group version.
pub(super) fn paths(group: &str, version: &str, named: &Named) -> Map<String, Value> {
    let mut out = Map::new();
    let tag = format!("{}_{version}", group_tag(group));
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let gv_infix = format!("{}{}", capitalise(&group_tag(group)), capitalise(version));
    for r in registry::resources_of(group, version) {
        let Some(schema) = schema_name(named, r.group, r.version, r.kind) else {
            continue;
        };
        let obj = schema_ref(schema);
        let list = schema_ref(&format!("{schema}List"));
        let ns_seg = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let ns_infix = if r.namespaced { "Namespaced" } else { "" };
        let collection = format!("{prefix}{ns_seg}/{}", r.plural);
        let mut path_params = Vec::new();
        if r.namespaced {
            path_params.push(param(
                "namespace",
                "path",
                "string",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        path_params.push(pretty());
        let op = |action| Op {
            tag: &tag,
            id_infix: format!("{gv_infix}{ns_infix}{}", r.kind),
            action,
            gvk: gvk(r.group, r.version, r.kind),
        };

        if !r.is_stored() {
            // Reviews: a single create.
            let post = op("post").build(
                "create",
                "",
                &format!("create a {}", r.kind),
                write_params(),
                Some(json_body(&obj)),
                responses(
                    &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                    JSON_YAML,
                    &obj,
                ),
            );
            out.insert(
                collection,
                json!({ "parameters": path_params, "post": post }),
            );
            continue;
        }

        let mut coll = Map::new();
        coll.insert("parameters".into(), Value::Array(path_params.clone()));
        if r.verbs.contains(&"list") {
            coll.insert(
                "get".into(),
                op("list").build(
                    "list",
                    "",
                    &format!("list or watch objects of kind {}", r.kind),
                    list_params(),
                    None,
                    responses(&[("200", "OK")], LIST_CONTENT, &list),
                ),
            );
        }
        if r.verbs.contains(&"create") {
            coll.insert(
                "post".into(),
                op("post").build(
                    "create",
                    "",
                    &format!("create a {}", r.kind),
                    write_params(),
                    Some(json_body(&obj)),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        JSON_YAML,
                        &obj,
                    ),
                ),
            );
        }
        if r.verbs.contains(&"deletecollection") {
            let mut params = delete_params();
            params.extend(list_params());
            coll.insert(
                "delete".into(),
                op("deletecollection").build(
                    "deleteCollection",
                    "",
                    &format!("delete collection of {}", r.kind),
                    params,
                    Some(json_body(&schema_ref(DELETE_OPTIONS))),
                    responses(&[("200", "OK")], JSON_YAML, &schema_ref(STATUS)),
                ),
            );
        }
        out.insert(collection.clone(), Value::Object(coll));

        if r.namespaced && r.verbs.contains(&"list") {
            let all = format!("{prefix}/{}", r.plural);
            let list_all = Op {
                tag: &tag,
                id_infix: format!("{gv_infix}{}ForAllNamespaces", r.kind),
                action: "list",
                gvk: gvk(r.group, r.version, r.kind),
            }
            .build(
                "list",
                "",
                &format!("list or watch objects of kind {}", r.kind),
                list_params(),
                None,
                responses(&[("200", "OK")], LIST_CONTENT, &list),
            );
            out.insert(all, json!({ "parameters": [pretty()], "get": list_all }));
        }

        let mut item_params = vec![param(
            "name",
            "path",
            "string",
            &format!("name of the {}", r.kind),
        )];
        item_params.extend(path_params.iter().cloned());
        let item = format!("{collection}/{{name}}");
        out.insert(item.clone(), item_ops(r, &op, &obj, &item_params));

        for s in r.subresources {
            let path = format!("{item}/{}", s.name);
            let infix = format!("{gv_infix}{ns_infix}{}{}", r.kind, capitalise(s.name));
            let value = subresource_ops(r, s, named, &tag, &infix, &item_params);
            out.insert(path.clone(), value);
            if s.name == "proxy" {
                let mut params = item_params.clone();
                params.insert(0, param("path", "path", "string", "path to the resource"));
                out.insert(
                    format!("{path}/{{path}}"),
                    connect_ops(s, &tag, &format!("{infix}WithPath"), &params),
                );
            }
        }
    }
    out
}

fn item_ops<'a>(
    r: &Resource,
    op: &impl Fn(&'a str) -> Op<'a>,
    obj: &Value,
    params: &[Value],
) -> Value {
    let mut m = Map::new();
    m.insert("parameters".into(), Value::Array(params.to_vec()));
    if r.verbs.contains(&"get") {
        m.insert(
            "get".into(),
            op("get").build(
                "read",
                "",
                &format!("read the specified {}", r.kind),
                Vec::new(),
                None,
                responses(&[("200", "OK")], JSON_YAML, obj),
            ),
        );
    }
    if r.verbs.contains(&"update") {
        m.insert(
            "put".into(),
            op("put").build(
                "replace",
                "",
                &format!("replace the specified {}", r.kind),
                write_params(),
                Some(json_body(obj)),
                responses(&[("200", "OK"), ("201", "Created")], JSON_YAML, obj),
            ),
        );
    }
    if r.verbs.contains(&"patch") {
        let mut params = write_params();
        params.push(q(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
        ));
        m.insert(
            "patch".into(),
            op("patch").build(
                "patch",
                "",
                &format!("partially update the specified {}", r.kind),
                params,
                Some(patch_body()),
                responses(&[("200", "OK"), ("201", "Created")], JSON_YAML, obj),
            ),
        );
    }
    if r.verbs.contains(&"delete") {
        m.insert(
            "delete".into(),
            op("delete").build(
                "delete",
                "",
                &format!("delete a {}", r.kind),
                delete_params(),
                Some(json_body(&schema_ref(DELETE_OPTIONS))),
                responses(&[("200", "OK"), ("202", "Accepted")], JSON_YAML, obj),
            ),
        );
    }
    Value::Object(m)
}

fn is_connect(s: &Subresource) -> bool {
    matches!(s.name, "exec" | "attach" | "portforward" | "proxy")
}

fn subresource_ops(
    r: &Resource,
    s: &Subresource,
    named: &Named,
    tag: &str,
    infix: &str,
    params: &[Value],
) -> Value {
    if is_connect(s) {
        return connect_ops(s, tag, infix, params);
    }
    if s.name == "log" {
        let op = Op {
            tag,
            id_infix: infix.to_owned(),
            action: "get",
            gvk: gvk(s.group, s.version, s.kind),
        };
        let p = vec![
            q(
                "container",
                "string",
                "The container for which to stream logs.",
            ),
            q("follow", "boolean", "Follow the log stream of the pod."),
            q(
                "limitBytes",
                "integer",
                "The number of bytes to read from the server before terminating the log output.",
            ),
            q(
                "previous",
                "boolean",
                "Return previous terminated container logs.",
            ),
            q(
                "sinceSeconds",
                "integer",
                "A relative time in seconds before the current time from which to show logs.",
            ),
            q(
                "tailLines",
                "integer",
                "The number of lines from the end of the logs to show.",
            ),
            q(
                "timestamps",
                "boolean",
                "Add an RFC3339 timestamp at the beginning of every line of log output.",
            ),
        ];
        let get = op.build(
            "read",
            "",
            &format!("read log of the specified {}", r.kind),
            p,
            None,
            responses(
                &[("200", "OK")],
                &["text/plain", "application/json"],
                &json!({ "type": "string" }),
            ),
        );
        return json!({ "parameters": params, "get": get });
    }
    // Object subresources: status, scale, binding, eviction, token, finalize.
    let schema = schema_name(named, s.group, s.version, s.kind)
        .map_or_else(|| json!({ "type": "object" }), schema_ref);
    let op = |action| Op {
        tag,
        id_infix: infix.to_owned(),
        action,
        gvk: gvk(s.group, s.version, s.kind),
    };
    let mut m = Map::new();
    m.insert("parameters".into(), Value::Array(params.to_vec()));
    for verb in s.verbs {
        let (method, value) = match *verb {
            "get" => (
                "get",
                op("get").build(
                    "read",
                    "",
                    &format!("read {} of the specified {}", s.name, r.kind),
                    Vec::new(),
                    None,
                    responses(&[("200", "OK")], JSON_YAML, &schema),
                ),
            ),
            "update" => (
                "put",
                op("put").build(
                    "replace",
                    "",
                    &format!("replace {} of the specified {}", s.name, r.kind),
                    write_params(),
                    Some(json_body(&schema)),
                    responses(&[("200", "OK"), ("201", "Created")], JSON_YAML, &schema),
                ),
            ),
            "patch" => {
                let mut p = write_params();
                p.push(q(
                    "force",
                    "boolean",
                    "Force is going to \"force\" Apply requests.",
                ));
                (
                    "patch",
                    op("patch").build(
                        "patch",
                        "",
                        &format!("partially update {} of the specified {}", s.name, r.kind),
                        p,
                        Some(patch_body()),
                        responses(&[("200", "OK"), ("201", "Created")], JSON_YAML, &schema),
                    ),
                )
            }
            "create" => (
                "post",
                op("post").build(
                    "create",
                    "",
                    &format!("create {} of a {}", s.name, r.kind),
                    write_params(),
                    Some(json_body(&schema)),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        JSON_YAML,
                        &schema,
                    ),
                ),
            ),
            _ => continue,
        };
        m.insert(method.into(), value);
    }
    Value::Object(m)
}

fn connect_ops(s: &Subresource, tag: &str, infix: &str, params: &[Value]) -> Value {
    let op = Op {
        tag,
        id_infix: infix.to_owned(),
        action: "connect",
        gvk: gvk(s.group, s.version, s.kind),
    };
    let extra: Vec<Value> = match s.name {
        "exec" => vec![
            q(
                "command",
                "string",
                "Command is the remote command to execute. argv array.",
            ),
            q(
                "container",
                "string",
                "Container in which to execute the command.",
            ),
            q(
                "stderr",
                "boolean",
                "Redirect the standard error stream of the pod for this call.",
            ),
            q(
                "stdin",
                "boolean",
                "Redirect the standard input stream of the pod for this call.",
            ),
            q(
                "stdout",
                "boolean",
                "Redirect the standard output stream of the pod for this call.",
            ),
            q(
                "tty",
                "boolean",
                "TTY if true indicates that a tty will be allocated for the exec call.",
            ),
        ],
        "attach" => vec![
            q(
                "container",
                "string",
                "The container in which to execute the command.",
            ),
            q(
                "stderr",
                "boolean",
                "Stderr if true indicates that stderr is to be redirected for the attach call.",
            ),
            q(
                "stdin",
                "boolean",
                "Stdin if true, redirects the standard input stream of the pod for this call.",
            ),
            q(
                "stdout",
                "boolean",
                "Stdout if true indicates that stdout is to be redirected for the attach call.",
            ),
            q(
                "tty",
                "boolean",
                "TTY if true indicates that a tty will be allocated for the attach call.",
            ),
        ],
        "portforward" => vec![q("ports", "integer", "List of ports to forward.")],
        _ => vec![q(
            "path",
            "string",
            "Path is the URL path to use for the current proxy request.",
        )],
    };
    let mut m = Map::new();
    let mut all_params = params.to_vec();
    all_params.retain(|p| p["name"] != "pretty");
    all_params.extend(extra);
    m.insert("parameters".into(), Value::Array(all_params));
    let string = json!({ "type": "string" });
    for verb in s.verbs {
        let (method, id) = match *verb {
            "get" => ("get", "connectGet"),
            "create" => ("post", "connectPost"),
            "update" => ("put", "connectPut"),
            "delete" => ("delete", "connectDelete"),
            "patch" => ("patch", "connectPatch"),
            _ => continue,
        };
        m.insert(
            method.into(),
            op.build(
                id,
                "",
                &format!("connect {} requests to {}", method.to_uppercase(), s.name),
                Vec::new(),
                None,
                responses(&[("200", "OK")], &["*/*"], &string),
            ),
        );
    }
    Value::Object(m)
}
