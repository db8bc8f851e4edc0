//! Request handling: one dispatcher for every path, then one function per verb. The order of
//! steps on a write follows kube-apiserver: decode, check type and namespace, admit (defaults,
//! allocation), validate, store (or only answer, under dryRun=All).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Extension, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};
use skiff_api::registry::Resource;
use skiff_store::{Revision, Store, StoreError};

use crate::{
    ApiServer, alloc,
    authn::User,
    authz::Attributes,
    discovery,
    errors::{ApiError, ApiResult},
    machinery::{self, Selectors},
    negotiate, objects,
    paths::{self, Target},
    watch,
};

type Api<S> = Arc<ApiServer<S>>;

pub fn router<S: Store>(api: Api<S>) -> Router {
    Router::new().fallback(entry::<S>).with_state(api)
}

/// The node-facing subresources and the metrics API take the whole request (streamed bodies,
/// connection upgrades); everything else goes through [`dispatch`].
async fn entry<S: Store>(State(api): State<Api<S>>, req: axum::extract::Request) -> Response {
    if crate::nodeproxy::claims(req.uri().path()) {
        return crate::nodeproxy::handle(&api, req).await;
    }
    axum::handler::Handler::call(dispatch::<S>, req, api).await
}

/// Query parameters, last value wins (as Go's url.Values.Get takes the first; clients send each once).
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut r = (code, value.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn ok(value: &Value) -> ApiResult<Response> {
    Ok(json_response(StatusCode::OK, value))
}

async fn dispatch<S: Store>(
    State(api): State<Api<S>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    user: Option<Extension<User>>,
    body: Bytes,
) -> Response {
    let params = Params(query.into_iter().collect());
    let user = user.map(|Extension(u)| u);
    let path = uri.path().trim_end_matches('/');
    let result = match non_resource(&api, &method, path, &params, &headers) {
        Some(r) => r,
        None => match paths::parse(path) {
            Ok(Some(target)) => {
                resource(
                    &api,
                    &method,
                    target,
                    &params,
                    &headers,
                    user.as_ref(),
                    body,
                )
                .await
            }
            Ok(None) => Err(ApiError::no_route(uri.path())),
            Err(e) => Err(e),
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn non_resource<S: Store>(
    api: &Api<S>,
    method: &Method,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Option<ApiResult<Response>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let discovery_doc = |core: bool| match negotiate::discovery_version(headers) {
        Some(v) => {
            let mut r = json_response(StatusCode::OK, &discovery::aggregated(core, v));
            let ct =
                format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&ct).expect("ASCII"),
            );
            Ok(r)
        }
        None if core => ok(&discovery::api_versions()),
        None => ok(&discovery::api_group_list()),
    };
    Some(match path {
        "/version" => ok(&discovery::version(api.config.minor)),
        "/healthz" | "/livez" | "/readyz" => Ok((StatusCode::OK, "ok").into_response()),
        "/api" => discovery_doc(true),
        "/apis" => discovery_doc(false),
        "/api/v1" => ok(&discovery::api_resource_list("", "v1")?),
        "/openapi/v3" => ok(&skiff_api::openapi::v3_index(
            skiff_api::openapi::content_hash,
        )),
        _ if path.starts_with("/openapi/v3/") => openapi_document(path, params, headers),
        _ => {
            let rest = path.strip_prefix("/apis/")?;
            match rest.split('/').collect::<Vec<_>>().as_slice() {
                [group] => discovery::api_group(group)
                    .ok_or_else(|| ApiError::no_route(path))
                    .and_then(|d| ok(&d)),
                [group, version] => discovery::api_resource_list(group, version)
                    .ok_or_else(|| ApiError::no_route(path))
                    .and_then(|d| ok(&d)),
                _ => return None,
            }
        }
    })
}

/// One group version's OpenAPI v3 document. kubectl fetches it by its hashed URL and
/// revalidates with If-None-Match, so hashed URLs are immutable and answer 304 when unchanged.
fn openapi_document(path: &str, params: &Params, headers: &HeaderMap) -> ApiResult<Response> {
    let gv = path.trim_start_matches("/openapi/v3/");
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return Err(ApiError::no_route(path)),
    };
    let doc = skiff_api::openapi::cached(group, version).ok_or_else(|| ApiError::no_route(path))?;
    let etag = format!("\"{}\"", doc.hash);
    let cache = if params.get("hash") == Some(doc.hash.as_str()) {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(doc.json.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

async fn resource<S: Store>(
    api: &Api<S>,
    method: &Method,
    target: Target,
    params: &Params,
    headers: &HeaderMap,
    user: Option<&User>,
    body: Bytes,
) -> ApiResult<Response> {
    let r = target.resource;
    let verb_allowed = |verb: &str| {
        let verbs = match &target.subresource {
            Some(sub) => r.subresource(sub).map_or(&[][..], |s| s.verbs),
            None => r.verbs,
        };
        if verbs.contains(&verb) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(verb, r))
        }
    };
    if let Some(sub) = target.subresource.as_deref()
        && !matches!(
            sub,
            "status" | "scale" | "binding" | "finalize" | "token" | "approval"
        )
    {
        return Err(ApiError::unavailable(format!(
            "{}/{sub} is served by the node agent, which is not running in this cluster yet",
            r.plural
        )));
    }
    match (method, &target.name) {
        (&Method::GET, Some(_)) => {
            verb_allowed("get")?;
            get(api, &target, headers).await
        }
        (&Method::GET, None) if target.watch || params.flag("watch") => {
            verb_allowed("watch")?;
            watch(api, &target, params, headers).await
        }
        (&Method::GET, None) => {
            verb_allowed("list")?;
            list(api, &target, params, headers).await
        }
        (&Method::POST, None) if !r.is_stored() => {
            verb_allowed("create")?;
            review(api, &target, headers, user, &body)
        }
        (&Method::POST, None) => {
            verb_allowed("create")?;
            create(api, &target, params, headers, user, &body).await
        }
        (&Method::POST, Some(_)) if target.subresource.as_deref() == Some("binding") => {
            bind(api, &target, headers, &body).await
        }
        (&Method::POST, Some(_)) if target.subresource.as_deref() == Some("token") => {
            token_request(api, &target, headers, &body).await
        }
        (&Method::PUT, Some(_)) => {
            verb_allowed("update")?;
            update(api, &target, params, headers, user, &body).await
        }
        (&Method::PATCH, Some(_)) => {
            verb_allowed("patch")?;
            patch(api, &target, params, headers, user, &body).await
        }
        (&Method::DELETE, Some(_)) => {
            verb_allowed("delete")?;
            delete(api, &target, params, &body).await
        }
        (&Method::DELETE, None) => {
            verb_allowed("deletecollection")?;
            delete_collection(api, &target, params, headers, &body).await
        }
        _ => Err(ApiError::method_not_allowed(method.as_str(), r)),
    }
}

fn api_version(r: &Resource) -> String {
    r.api_version()
}

/// Namespace rules of a path: namespaced resources need one (except list/watch across all),
/// cluster-scoped ones must not have one.
fn namespace_of(target: &Target) -> ApiResult<Option<&str>> {
    let r = target.resource;
    match (r.namespaced, target.namespace.as_deref()) {
        (true, ns) => Ok(ns),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ApiError::no_route(&format!("namespaces/*/{}", r.plural))),
    }
}

fn name_of(target: &Target) -> &str {
    target.name.as_deref().unwrap_or_default()
}

fn output(target: &Target, headers: &HeaderMap, obj: &Value) -> ApiResult<Response> {
    match negotiate::table_version(headers) {
        Some(v) => ok(&machinery::table(
            target.resource,
            std::slice::from_ref(obj),
            json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
            v,
            None,
        )?),
        None => ok(obj),
    }
}

async fn read<S: Store>(api: &Api<S>, target: &Target) -> ApiResult<(Value, Revision)> {
    let ns = namespace_of(target)?;
    let name = name_of(target);
    let key = objects::key(target.resource, ns, name);
    match api.store.get(&key, None).await {
        Ok(Some(kv)) => Ok((
            present(target.resource, objects::decode(&kv)?),
            kv.mod_revision,
        )),
        Ok(None) => Err(ApiError::not_found(target.resource, name)),
        Err(e) => Err(ApiError::from_store(e, target.resource, name)),
    }
}

async fn get<S: Store>(api: &Api<S>, target: &Target, headers: &HeaderMap) -> ApiResult<Response> {
    let (obj, _) = read(api, target).await?;
    match target.subresource.as_deref() {
        Some("scale") => ok(&scale_of(&obj)),
        _ => output(target, headers, &obj),
    }
}

/// A continue token: the snapshot revision and the last key returned.
fn encode_continue(revision: Revision, last_key: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"rv": revision, "start": last_key}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(Revision, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: it may be from another list or expired")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_owned(),
    ))
}

/// An object as this resource version shows it (HPAs are stored in whichever version wrote
/// them).
fn present(r: &Resource, mut obj: Value) -> Value {
    skiff_api::convert::to_version(&mut obj, &r.api_version());
    obj
}

fn with_type_meta(r: &Resource, mut obj: Value) -> Value {
    obj = present(r, obj);
    if let Some(map) = obj.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| json!(api_version(r)));
        map.entry("kind").or_insert_with(|| json!(r.kind));
    }
    obj
}

async fn list<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let r = target.resource;
    let ns = namespace_of(target)?;
    let selectors = Selectors::parse(r, params.get("labelSelector"), params.get("fieldSelector"))?;
    let limit: Option<usize> = params
        .get("limit")
        .map(|l| {
            l.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))
        })
        .transpose()?
        .filter(|l| *l > 0);
    let prefix = objects::list_prefix(r, ns);
    let (mut revision, mut start) = match params.get("continue") {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            (Some(rv), Some(start))
        }
        None => {
            let rv = params
                .get("resourceVersion")
                .filter(|rv| *rv != "0")
                .map(|rv| {
                    rv.parse::<Revision>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })
                })
                .transpose()?;
            // Without resourceVersionMatch=Exact a resourceVersion is a lower bound: the
            // latest state satisfies it.
            let exact = params.get("resourceVersionMatch") == Some("Exact");
            (rv.filter(|_| exact), None)
        }
    };
    let mut items = Vec::new();
    let (list_revision, more_token, remaining) = loop {
        let want = limit.map(|l| l - items.len());
        let page = api
            .store
            .list(&prefix, revision, start.as_deref(), want)
            .await
            .map_err(|e| ApiError::from_store(e, r, ""))?;
        let last = page.items.last().map(|kv| kv.key.clone());
        for kv in &page.items {
            let obj = objects::decode(kv)?;
            if selectors.matches(r, &obj) {
                items.push(with_type_meta(r, obj));
            }
        }
        revision = Some(page.revision);
        let full = limit.is_some_and(|l| items.len() >= l);
        match (page.more, last) {
            (true, Some(last)) if full => {
                break (
                    page.revision,
                    Some(encode_continue(page.revision, &last)),
                    Some(page.remaining),
                );
            }
            (true, Some(last)) => start = Some(last),
            _ => break (page.revision, None, None),
        }
    };
    let mut metadata = json!({"resourceVersion": list_revision.to_string()});
    if let Some(token) = more_token {
        metadata["continue"] = json!(token);
        if selectors.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    if let Some(v) = negotiate::table_version(headers) {
        return ok(&machinery::table(
            r,
            &items,
            metadata,
            v,
            params.get("includeObject"),
        )?);
    }
    ok(&json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": api_version(r),
        "metadata": metadata,
        "items": items,
    }))
}

/// Decodes a write's body and checks its type against the path.
fn body_object(target: &Target, headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let r = target.resource;
    let mut obj = machinery::decode_body(&negotiate::content_type(headers), body)?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let expected_version = match target.subresource.as_deref() {
        Some("scale") => "autoscaling/v1".to_owned(),
        _ => api_version(r),
    };
    if let Some(v) = obj["apiVersion"].as_str()
        && v != expected_version
        && !(r.group == "autoscaling" && v.starts_with("autoscaling/"))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({expected_version})"
        )));
    }
    obj["apiVersion"] = json!(expected_version);
    if target.subresource.as_deref() != Some("scale") {
        obj["kind"] = json!(r.kind);
    }
    let ns = namespace_of(target)?;
    let meta = objects::meta_mut(&mut obj)?;
    if r.namespaced {
        match (meta.get("namespace").and_then(Value::as_str), ns) {
            (Some(given), Some(path)) if !given.is_empty() && given != path => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (_, Some(path)) => {
                meta.insert("namespace".into(), json!(path));
            }
            _ => {}
        }
    } else {
        meta.remove("namespace");
    }
    Ok(obj)
}

/// A name from generateName: the prefix plus five characters, as Kubernetes makes them.
fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    let suffix: String = id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The `automountServiceAccountToken` of the pod's ServiceAccount, if it says.
async fn account_automount<S: Store>(api: &Api<S>, ns: Option<&str>, pod: &Value) -> Option<bool> {
    let name = pod["spec"]["serviceAccountName"].as_str()?;
    let r = skiff_api::registry::find("", "v1", "serviceaccounts")?;
    let kv = api
        .store
        .get(&objects::key(r, ns, name), None)
        .await
        .ok()??;
    objects::decode(&kv).ok()?["automountServiceAccountToken"].as_bool()
}

async fn check_namespace<S: Store>(
    api: &Api<S>,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    let Some(ns) = ns.filter(|_| r.namespaced) else {
        return Ok(());
    };
    let namespaces =
        skiff_api::registry::find("", "v1", "namespaces").expect("namespaces are served");
    let key = objects::key(namespaces, None, ns);
    match api.store.get(&key, None).await {
        Ok(Some(kv)) => {
            let obj = objects::decode(&kv)?;
            if obj["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null())
            {
                return Err(ApiError::forbidden(
                    r,
                    name,
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        r.qualified_name()
                    ),
                ));
            }
            Ok(())
        }
        Ok(None) => Err(ApiError::namespace_not_found(ns)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

fn field_validation(r: &Resource, obj: &Value, params: &Params) -> ApiResult<Vec<String>> {
    let unknown = machinery::unknown_fields(r, obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match params.get("fieldValidation").unwrap_or("Warn") {
        "Strict" => Err(ApiError::bad_request(format!(
            ".{}: field not declared in schema",
            unknown.join(", .")
        ))),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect()),
    }
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// Who a write's managedFields entry is for: `fieldManager`, else the client's user agent
/// (its program name, as kube-apiserver takes it).
fn field_manager(params: &Params, headers: &HeaderMap) -> String {
    params.get("fieldManager").map_or_else(
        || {
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|m| !m.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        },
        str::to_owned,
    )
}

async fn create<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    user: Option<&User>,
    body: &[u8],
) -> ApiResult<Response> {
    let mut obj = body_object(target, headers, body)?;
    let manager = field_manager(params, headers);
    obj = machinery::record_update(None, &obj, &manager);
    create_object(api, target, params, user, obj).await
}

/// Creates `obj` (decoded, type-checked, with its managedFields already recorded).
async fn create_object<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    user: Option<&User>,
    mut obj: Value,
) -> ApiResult<Response> {
    let r = target.resource;
    let meta = objects::meta_mut(&mut obj)?;
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(prefix)) if !prefix.is_empty() => generate_name(prefix),
        _ => {
            return Err(ApiError::invalid(
                r,
                "",
                vec![
                    json!({"reason": "FieldValueRequired", "message": "name or generateName is required", "field": "metadata.name"}),
                ],
            ));
        }
    };
    meta.insert("name".into(), json!(name));
    for field in [
        "uid",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    check_namespace(api, r, ns.as_deref(), &name).await?;
    // Before the uid: a new Namespace's `kubernetes` finalizer is added only while it has none.
    machinery::apply_defaults(r, &mut obj);
    // The ServiceAccount admission plugin's token volume; without a token issuer (the insecure
    // test mode) there would be no token to mount.
    if r.kind == "Pod" && r.group.is_empty() && api.tokens.is_some() {
        let automount = account_automount(api, ns.as_deref(), &obj).await;
        let suffix = generate_name("");
        skiff_api::defaults::mount_service_account_token(&mut obj, automount, &suffix);
    }
    let meta = objects::meta_mut(&mut obj)?;
    meta.insert("uid".into(), json!(objects::new_uid()));
    meta.insert("creationTimestamp".into(), json!(objects::now()));
    meta.insert("generation".into(), json!(1));
    if r.kind == "Job" && r.group == "batch" {
        job_selector(&mut obj, &name);
    }
    let warnings = field_validation(r, &obj, params)?;
    machinery::validate(r, &obj, None)?;
    rbac_write_check(api, user, r, &obj, None)?;
    if r.kind == "Secret" && r.group.is_empty() {
        fill_legacy_token(api, &mut obj).await?;
    }
    if r.kind == "CertificateSigningRequest" {
        fill_requestor(user, &mut obj);
    }
    let owner = format!("{}/{name}", ns.as_deref().unwrap_or_default());
    let held = if r.kind == "Service" && r.group.is_empty() {
        let held = api.alloc.assign(&*api.store, &mut obj, &owner).await?;
        // The IP families follow from the address just allocated.
        machinery::apply_defaults(r, &mut obj);
        Some(held)
    } else {
        None
    };
    let release = |held: Option<alloc::Held>| async move {
        if let Some(held) = held {
            api.alloc.release(&*api.store, &held).await;
        }
    };
    if params.dry_run() {
        release(held).await;
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &obj),
            &warnings,
        ));
    }
    let key = objects::key(r, ns.as_deref(), &name);
    match api.store.create(&key, objects::encode(&obj)).await {
        Ok(kv) => {
            let stored = objects::decode(&kv)?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &stored),
                &warnings,
            ))
        }
        Err(e) => {
            release(held).await;
            Err(ApiError::from_store(e, r, &name))
        }
    }
}

/// A Job's pods are selected by its uid, which only exists once it is created (upstream's
/// generateSelector), unless the client manages the selector itself (`manualSelector`).
fn job_selector(obj: &mut Value, name: &str) {
    if obj["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let labels = json!({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    });
    let template = &mut obj["spec"]["template"]["metadata"]["labels"];
    if !template.is_object() {
        *template = json!({});
    }
    if let (Some(template), Some(labels)) = (template.as_object_mut(), labels.as_object()) {
        for (k, v) in labels {
            template.insert(k.clone(), v.clone());
        }
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
}

/// A CertificateSigningRequest records who asked, from the authenticated identity (never from
/// the body: approvers and signers decide on it), and starts with no status.
fn fill_requestor(user: Option<&User>, obj: &mut Value) {
    let spec = &mut obj["spec"];
    match user {
        Some(u) => {
            spec["username"] = json!(u.username);
            spec["uid"] = json!(u.uid);
            spec["groups"] = json!(u.groups);
            spec["extra"] = json!(u.extra);
        }
        None => {
            for field in ["username", "uid", "groups", "extra"] {
                spec.as_object_mut().map(|m| m.remove(field));
            }
        }
    }
    obj.as_object_mut().map(|m| m.remove("status"));
}

/// Escalation prevention: a Role or binding may only grant what its writer holds (or may
/// `escalate`/`bind`).
fn rbac_write_check<S>(
    api: &Api<S>,
    user: Option<&User>,
    r: &Resource,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let (Some(authz), Some(user)) = (&api.authorizer, user) else {
        return Ok(());
    };
    if r.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    authz.check_rbac_write(user, obj, old).map_err(|message| {
        ApiError::forbidden(
            r,
            objects::meta_str(obj, "name").unwrap_or_default(),
            message,
        )
    })
}

/// Keeps what a write through the main resource may not change (status, when the resource
/// has a status subresource) or what a status write may not change (everything else).
fn merge_for_subresource(r: &Resource, sub: Option<&str>, old: &Value, new: &mut Value) {
    let has_status = r.subresource("status").is_some();
    match sub {
        Some("status") => {
            let status = new.get("status").cloned();
            *new = old.clone();
            if let Some(status) = status {
                new["status"] = status;
            }
        }
        // Only the approval conditions change through /approval (kubectl certificate approve).
        Some("approval") => {
            let conditions = new["status"]["conditions"].clone();
            *new = old.clone();
            new["status"]["conditions"] = conditions;
        }
        // A request is immutable once made: what was asked, and by whom, stays what was signed.
        None if r.kind == "CertificateSigningRequest" => {
            new["spec"] = old["spec"].clone();
            new["status"] = old["status"].clone();
        }
        None if has_status => match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        },
        _ => {}
    }
}

/// Everything but metadata and status: a change here bumps metadata.generation.
fn spec_of(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// Writes `new` over the stored `old` (at `revision`): the shared tail of update and patch.
async fn write<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    user: Option<&User>,
    old: &Value,
    revision: Revision,
    mut new: Value,
) -> ApiResult<Value> {
    let r = target.resource;
    let name = name_of(target);
    merge_for_subresource(r, target.subresource.as_deref(), old, &mut new);
    {
        let meta = objects::meta_mut(&mut new)?;
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
        ] {
            match old["metadata"].get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.insert("name".into(), json!(name));
        meta.remove("resourceVersion");
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        meta.insert("generation".into(), json!(generation));
    }
    if spec_of(&new) != spec_of(old) {
        new["metadata"]["generation"] =
            json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
    }
    if target.subresource.is_none() {
        machinery::apply_defaults(r, &mut new);
    }
    machinery::validate(r, &new, Some(old))?;
    rbac_write_check(api, user, r, &new, Some(old))?;
    let owner = format!("{}/{name}", target.namespace.as_deref().unwrap_or_default());
    let mut to_release = None;
    if r.kind == "Service" && r.group.is_empty() {
        let (claimed, released) = api
            .alloc
            .reassign(&*api.store, old, &mut new, &owner)
            .await?;
        if params.dry_run() {
            api.alloc.release(&*api.store, &claimed).await;
        } else {
            to_release = Some((claimed, released));
        }
    }
    if params.dry_run() {
        objects::set_resource_version(&mut new, revision);
        return Ok(new);
    }
    let key = objects::key(r, namespace_of(target)?, name);
    // An object being deleted goes once its last finalizer does.
    let finalized = new["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null())
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
    let result = if finalized {
        api.store
            .delete(&key, Some(revision))
            .await
            .map(|(kv, rev)| {
                let mut obj = objects::decode(&kv).unwrap_or_default();
                objects::set_resource_version(&mut obj, rev);
                obj
            })
    } else {
        api.store
            .update(&key, objects::encode(&new), revision)
            .await
            .and_then(|kv| {
                objects::decode(&kv).map_err(|e| StoreError::Backend {
                    context: "decoding the stored object".into(),
                    source: e.message.into(),
                })
            })
    };
    match (result, to_release) {
        (Ok(stored), released) => {
            if let Some((_, released)) = released {
                api.alloc.release(&*api.store, &released).await;
            }
            Ok(stored)
        }
        (Err(e), claimed) => {
            if let Some((claimed, _)) = claimed {
                api.alloc.release(&*api.store, &claimed).await;
            }
            Err(ApiError::from_store(e, r, name))
        }
    }
}

async fn update<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    user: Option<&User>,
    body: &[u8],
) -> ApiResult<Response> {
    let r = target.resource;
    let name = name_of(target);
    let mut new = body_object(target, headers, body)?;
    if let Some(given) = objects::meta_str(&new, "name")
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let (old, revision) = read(api, target).await?;
    let expected = objects::resource_version(&new)?;
    if expected.is_some_and(|e| e != revision) {
        return Err(ApiError::conflict(r, name));
    }
    let sub = target.subresource.as_deref();
    new = from_subresource(sub, &old, new);
    new = machinery::record_update(Some(&old), &new, &field_manager(params, headers));
    let warnings = field_validation(r, &new, params)?;
    let stored = write(api, target, params, user, &old, revision, new).await?;
    Ok(with_warnings(
        output(target, headers, &to_subresource(sub, stored))?,
        &warnings,
    ))
}

async fn patch<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    user: Option<&User>,
    body: &[u8],
) -> ApiResult<Response> {
    let r = target.resource;
    let name = name_of(target);
    let content_type = negotiate::content_type(headers);
    let manager = field_manager(params, headers);
    let force = params.flag("force");
    // Retried on conflict: a patch applies to whatever is current, as kube-apiserver does.
    for _ in 0..8 {
        let (old, revision) = match read(api, target).await {
            Ok(found) => found,
            Err(e)
                if e.code == 404
                    && content_type == "application/apply-patch+yaml"
                    && target.subresource.is_none() =>
            {
                // Applying to nothing creates the object, with the applier owning every field.
                let applied = body_object(target, headers, body)?;
                let obj = machinery::apply(r, None, &applied, &manager, force)?;
                return create_object(api, target, params, user, obj).await;
            }
            Err(e) => return Err(e),
        };
        let sub = target.subresource.as_deref();
        let view = machinery::patch(
            r,
            sub,
            &content_type,
            &to_subresource(sub, old.clone()),
            body,
            &manager,
            force,
        )?;
        // The precondition is the view's: a subresource's projection keeps only its own fields.
        if let Some(expected) = objects::resource_version(&view)?
            && expected != revision
        {
            return Err(ApiError::conflict(r, name));
        }
        let mut new = from_subresource(sub, &old, view);
        if content_type != "application/apply-patch+yaml" {
            new = machinery::record_update(Some(&old), &new, &manager);
        }
        let warnings = field_validation(r, &new, params)?;
        match write(api, target, params, user, &old, revision, new).await {
            Ok(stored) => {
                return Ok(with_warnings(
                    output(target, headers, &to_subresource(sub, stored))?,
                    &warnings,
                ));
            }
            Err(e) if e.reason == "Conflict" => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// DeleteOptions from the body or the query.
fn delete_options(params: &Params, body: &[u8]) -> ApiResult<Value> {
    let mut opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    for key in ["propagationPolicy", "gracePeriodSeconds"] {
        if let Some(v) = params.get(key) {
            opts[key] = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
        }
    }
    if params.dry_run() {
        opts["dryRun"] = json!(["All"]);
    }
    Ok(opts)
}

async fn delete<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    body: &[u8],
) -> ApiResult<Response> {
    let opts = delete_options(params, body)?;
    let obj = delete_one(api, target, &opts).await?;
    ok(&obj)
}

async fn delete_one<S: Store>(api: &Api<S>, target: &Target, opts: &Value) -> ApiResult<Value> {
    let r = target.resource;
    let name = name_of(target);
    let dry_run = opts["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    for _ in 0..8 {
        let (mut obj, revision) = read(api, target).await?;
        if let Some(uid) = opts["preconditions"]["uid"].as_str()
            && obj["metadata"]["uid"] != uid
        {
            return Err(ApiError::conflict(r, name));
        }
        if let Some(rv) = opts["preconditions"]["resourceVersion"].as_str()
            && rv != revision.to_string()
        {
            return Err(ApiError::conflict(r, name));
        }
        let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let policy = opts["propagationPolicy"].as_str().unwrap_or("Background");
        let foreground = json!("foregroundDeletion");
        if policy == "Foreground" && !finalizers.contains(&foreground) {
            finalizers.push(foreground);
        }
        if policy == "Orphan" && !finalizers.contains(&json!("orphan")) {
            finalizers.push(json!("orphan"));
        }
        let grace = graceful_seconds(r, &obj, opts);
        let namespace_cleanup = r.kind == "Namespace";
        if !finalizers.is_empty() || grace > 0 || namespace_cleanup {
            if obj["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null())
            {
                return Ok(obj);
            }
            obj["metadata"]["finalizers"] = json!(finalizers);
            obj["metadata"]["deletionTimestamp"] = json!(objects::now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            if namespace_cleanup {
                obj["status"]["phase"] = json!("Terminating");
            }
            if dry_run {
                return Ok(obj);
            }
            let key = objects::key(r, namespace_of(target)?, name);
            match api
                .store
                .update(&key, objects::encode(&obj), revision)
                .await
            {
                Ok(kv) => return objects::decode(&kv),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, r, name)),
            }
        }
        if dry_run {
            return Ok(obj);
        }
        let key = objects::key(r, namespace_of(target)?, name);
        match api.store.delete(&key, Some(revision)).await {
            Ok((kv, rev)) => {
                let mut gone = objects::decode(&kv)?;
                objects::set_resource_version(&mut gone, rev);
                if r.kind == "Service" && r.group.is_empty() {
                    api.alloc.release(&*api.store, &alloc::held_by(&gone)).await;
                }
                return Ok(gone);
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, r, name)),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// Pods bound to a node terminate gracefully (their kubelet finishes the deletion); anything
/// else goes at once.
fn graceful_seconds(r: &Resource, obj: &Value, opts: &Value) -> i64 {
    if r.kind != "Pod" || obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        return 0;
    }
    opts["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

async fn delete_collection<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let r = target.resource;
    let opts = delete_options(params, body)?;
    let selectors = Selectors::parse(r, params.get("labelSelector"), params.get("fieldSelector"))?;
    let prefix = objects::list_prefix(r, namespace_of(target)?);
    let page = api
        .store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::from_store(e, r, ""))?;
    let mut deleted = Vec::new();
    for kv in &page.items {
        let obj = objects::decode(kv)?;
        if !selectors.matches(r, &obj) {
            continue;
        }
        let one = Target {
            name: objects::meta_str(&obj, "name").map(str::to_owned),
            namespace: objects::meta_str(&obj, "namespace").map(str::to_owned),
            ..target.clone()
        };
        match delete_one(api, &one, &opts).await {
            Ok(gone) => deleted.push(with_type_meta(r, gone)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let _ = headers;
    ok(
        &json!({"kind": format!("{}List", r.kind), "apiVersion": api_version(r), "metadata": {}, "items": deleted}),
    )
}

/// The autoscaling/v1 Scale view of a scalable object.
/// The object a write through `subresource` stores: the fields that subresource owns, taken
/// from what the client sent (`view`), over everything else of `old`.
fn from_subresource(subresource: Option<&str>, old: &Value, view: Value) -> Value {
    let owned = match subresource {
        Some("scale") => ["spec", "replicas"],
        Some("finalize") => ["spec", "finalizers"],
        _ => return view,
    };
    let mut new = old.clone();
    new[owned[0]][owned[1]] = view[owned[0]][owned[1]].clone();
    new
}

/// What a client reading or writing through `subresource` sees of `obj`.
fn to_subresource(subresource: Option<&str>, obj: Value) -> Value {
    match subresource {
        Some("scale") => scale_of(&obj),
        _ => obj,
    }
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// `POST serviceaccounts/NAME/token` (TokenRequest): a bound, expiring token for the account,
/// optionally bound to a pod or secret too.
async fn token_request<S: Store>(
    api: &Api<S>,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let r = target.resource;
    let Some(keys) = &api.tokens else {
        return Err(ApiError::unavailable(
            "this server issues no ServiceAccount tokens (insecure loopback mode)",
        ));
    };
    let (sa, _) = read(api, target).await?;
    let mut req = machinery::decode_body(&negotiate::content_type(headers), body)?;
    let spec = req["spec"].clone();
    let seconds = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(crate::satoken::DEFAULT_EXPIRATION_SECONDS);
    if seconds < crate::satoken::MIN_EXPIRATION_SECONDS {
        return Err(ApiError::invalid(
            r,
            name_of(target),
            vec![
                json!({"reason": "FieldValueInvalid", "message": "may not specify a duration less than 10 minutes", "field": "spec.expirationSeconds"}),
            ],
        ));
    }
    let audiences = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let namespace = target.namespace.clone().unwrap_or_default();
    let mut claims = crate::satoken::KubernetesClaims {
        namespace,
        serviceaccount: crate::satoken::BoundRef {
            name: name_of(target).to_owned(),
            uid: sa["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        },
        pod: None,
        secret: None,
    };
    let bound = &spec["boundObjectRef"];
    if let Some(kind) = bound["kind"].as_str() {
        let reference = crate::satoken::BoundRef {
            name: bound["name"].as_str().unwrap_or_default().to_owned(),
            uid: bound["uid"].as_str().unwrap_or_default().to_owned(),
        };
        match kind {
            "Pod" => claims.pod = Some(reference),
            "Secret" => claims.secret = Some(reference),
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind a token to a {other}"
                )));
            }
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let token = keys
        .issue_bound(claims, audiences, now, seconds)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["status"] = crate::satoken::token_request_status(&token, now + seconds);
    Ok(json_response(StatusCode::CREATED, &req))
}

/// A new Secret of type kubernetes.io/service-account-token gets its (legacy, non-expiring)
/// token, the cluster's namespace and, like upstream's token controller would fill in.
async fn fill_legacy_token<S: Store>(api: &Api<S>, secret: &mut Value) -> ApiResult<()> {
    let Some(keys) = &api.tokens else {
        return Ok(());
    };
    if secret["type"] != "kubernetes.io/service-account-token" {
        return Ok(());
    }
    let namespace = objects::meta_str(secret, "namespace")
        .unwrap_or_default()
        .to_owned();
    let secrets = skiff_api::registry::find("", "v1", "secrets").expect("served");
    let name = objects::meta_str(secret, "name")
        .unwrap_or_default()
        .to_owned();
    let Some(sa_name) = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        .as_str()
        .map(str::to_owned)
    else {
        return Err(ApiError::invalid(
            secrets,
            &name,
            vec![
                json!({"reason": "FieldValueRequired", "message": "Required value", "field": "metadata.annotations[kubernetes.io/service-account.name]"}),
            ],
        ));
    };
    let accounts = skiff_api::registry::find("", "v1", "serviceaccounts").expect("served");
    let sa = match api
        .store
        .get(&objects::key(accounts, Some(&namespace), &sa_name), None)
        .await
    {
        Ok(Some(kv)) => objects::decode(&kv)?,
        Ok(None) => {
            return Err(ApiError::invalid(
                secrets,
                &name,
                vec![
                    json!({"reason": "FieldValueNotFound", "message": format!("service account {sa_name} does not exist"), "field": "metadata.annotations[kubernetes.io/service-account.name]"}),
                ],
            ));
        }
        Err(e) => return Err(ApiError::from_store(e, accounts, &sa_name)),
    };
    let sa_uid = sa["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(sa_uid);
    let claims = crate::satoken::KubernetesClaims {
        namespace: namespace.clone(),
        serviceaccount: crate::satoken::BoundRef {
            name: sa_name,
            uid: sa_uid,
        },
        pod: None,
        secret: Some(crate::satoken::BoundRef {
            name,
            uid: objects::meta_str(secret, "uid")
                .unwrap_or_default()
                .to_owned(),
        }),
    };
    let token = keys
        .issue_legacy(claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    secret["data"]["token"] = json!(b64(&token));
    secret["data"]["namespace"] = json!(b64(&namespace));
    Ok(())
}

/// `POST pods/NAME/binding`: assigns a pending pod to a node, once.
async fn bind<S: Store>(
    api: &Api<S>,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let r = target.resource;
    let name = name_of(target);
    let binding = machinery::decode_body(&negotiate::content_type(headers), body)?;
    let Some(node) = binding["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::invalid(
            r,
            name,
            vec![
                json!({"reason": "FieldValueRequired", "message": "Required value", "field": "target.name"}),
            ],
        ));
    };
    for _ in 0..8 {
        let (mut pod, revision) = read(api, target).await?;
        if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
                ),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        set_pod_scheduled(&mut pod);
        let key = objects::key(r, namespace_of(target)?, name);
        match api
            .store
            .update(&key, objects::encode(&pod), revision)
            .await
        {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ));
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, r, name)),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// A bound pod is scheduled: PodScheduled=True replaces the scheduler's Unschedulable verdict
/// (upstream's binding registry does the same).
fn set_pod_scheduled(pod: &mut Value) {
    let now = objects::now();
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                           "lastTransitionTime": now});
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c["type"] != "PodScheduled");
        list.insert(0, scheduled);
    }
}

/// Access and identity reviews, answered by the server's authorizer. Without one (the
/// loopback test mode) every request is allowed and made by system:anonymous.
fn review<S>(
    api: &Api<S>,
    target: &Target,
    headers: &HeaderMap,
    user: Option<&User>,
    body: &[u8],
) -> ApiResult<Response> {
    let r = target.resource;
    let mut obj = machinery::decode_body(&negotiate::content_type(headers), body)?;
    obj["apiVersion"] = json!(api_version(r));
    obj["kind"] = json!(r.kind);
    let me = user.cloned().unwrap_or_else(crate::authn::anonymous);
    let spec = obj["spec"].clone();
    let subject = match r.kind {
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let mut u = User::new(spec["user"].as_str().unwrap_or_default(), &[]);
            u.uid = spec["uid"].as_str().unwrap_or_default().to_owned();
            u.groups = spec["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect();
            u
        }
        _ => me.clone(),
    };
    let decide = |attrs: &Attributes| -> Value {
        match &api.authorizer {
            None => {
                json!({"allowed": true, "reason": "no authorizer is configured (insecure loopback mode)"})
            }
            Some(a) => {
                let (allowed, reason) = a.review(&subject, attrs);
                let mut status = json!({"allowed": allowed});
                if !reason.is_empty() {
                    status["reason"] = json!(reason);
                }
                status
            }
        }
    };
    obj["status"] = match r.kind {
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let attrs = if let Some(ra) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
                let s = |k: &str| ra[k].as_str().unwrap_or_default().to_owned();
                let namespace = if r.kind == "LocalSubjectAccessReview" {
                    target.namespace.clone().unwrap_or_default()
                } else {
                    s("namespace")
                };
                Attributes::Resource {
                    verb: s("verb"),
                    group: s("group"),
                    version: s("version"),
                    resource: s("resource"),
                    subresource: s("subresource"),
                    namespace,
                    name: s("name"),
                }
            } else {
                let nra = &spec["nonResourceAttributes"];
                Attributes::NonResource {
                    verb: nra["verb"].as_str().unwrap_or_default().to_owned(),
                    path: nra["path"].as_str().unwrap_or_default().to_owned(),
                }
            };
            decide(&attrs)
        }
        "SelfSubjectRulesReview" => match &api.authorizer {
            None => json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }),
            Some(a) => {
                let (resource_rules, non_resource_rules, incomplete) =
                    a.rules_for(&me, spec["namespace"].as_str().unwrap_or("default"));
                json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete})
            }
        },
        "SelfSubjectReview" => json!({"userInfo": crate::authn::user_json(&me)}),
        "TokenReview" => {
            json!({"authenticated": false, "error": "token review is not served by this server"})
        }
        other => return Err(ApiError::internal(format!("no review handler for {other}"))),
    };
    Ok(json_response(StatusCode::CREATED, &obj))
}

async fn watch<S: Store>(
    api: &Api<S>,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let r = target.resource;
    let ns = namespace_of(target)?;
    let selectors = Selectors::parse(r, params.get("labelSelector"), params.get("fieldSelector"))?;
    let table = negotiate::table_version(headers);
    let bookmarks = params.flag("allowWatchBookmarks");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let namespace_prefix = objects::list_prefix(r, ns);
    let initial_events = params.flag("sendInitialEvents");
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let include = params.get("includeObject").map(str::to_owned);
    // Lines encoded once for every watcher hold the default includeObject only.
    let shared_table = include.is_none();
    let encode_row = {
        let version = table;
        move |obj: &Value| -> Value {
            match version {
                Some(v) => machinery::table(
                    r,
                    std::slice::from_ref(obj),
                    json!({}),
                    v,
                    include.as_deref(),
                )
                .unwrap_or_else(|e| e.status()),
                None => obj.clone(),
            }
        }
    };
    let start_rv = params.get("resourceVersion").filter(|rv| *rv != "0");
    // Sent by the streaming task ahead of live events, waiting for the client as they go: a
    // bounded channel filled before anyone reads it would drop all but its capacity.
    let mut initial = Vec::new();
    let mut after: Revision = match start_rv {
        Some(rv) if !initial_events => rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        _ => {
            // No starting point: the current state first, as synthetic ADDED events.
            let page = api
                .store
                .list(&namespace_prefix, None, None, None)
                .await
                .map_err(|e| ApiError::from_store(e, r, ""))?;
            for kv in &page.items {
                let obj = with_type_meta(r, objects::decode(kv)?);
                if selectors.matches(r, &obj) {
                    initial.push(watch::event_line("ADDED", &encode_row(&obj)));
                }
            }
            if initial_events {
                let bookmark = json!({"kind": r.kind, "apiVersion": api_version(r), "metadata": {"resourceVersion": page.revision.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                initial.push(watch::event_line("BOOKMARK", &bookmark));
            }
            page.revision
        }
    };
    let mut subscription = match api
        .hub
        .subscribe(&skiff_api::registry::storage_prefix(r), after)
        .await
    {
        Ok(s) => s,
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            let status = ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            ))
            .status();
            let _ = tx.try_send(watch::event_line("ERROR", &status));
            drop(tx);
            return Ok(stream_response(rx));
        }
        Err(e) => return Err(ApiError::from_store(e, r, "")),
    };
    let interval = api.config.bookmark_interval;
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = &mut deadline => break,
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"kind": r.kind, "apiVersion": api_version(r), "metadata": {"resourceVersion": after.to_string()}});
                    if tx.send(watch::event_line("BOOKMARK", &bookmark)).await.is_err() { break; }
                }
                change = subscription.next() => {
                    let change = match change {
                        Some(Ok(c)) => c,
                        Some(Err(StoreError::Compacted { requested, compacted })) => {
                            let status = ApiError::gone(format!("too old resource version: {requested} ({compacted})")).status();
                            let _ = tx.send(watch::event_line("ERROR", &status)).await;
                            break;
                        }
                        _ => break,
                    };
                    after = change.revision;
                    if !change.key.starts_with(&namespace_prefix) {
                        continue;
                    }
                    let now_matches = selectors.matches(r, &change.object);
                    let was_matching = change.prev.as_ref().is_some_and(|p| selectors.matches(r, p));
                    let same_version = change.object["apiVersion"] == r.api_version();
                    let line = if selectors.is_empty() && same_version && shared_table {
                        match table {
                            Some(version) => change.table_line(version, |o| encode_row(o)).to_vec(),
                            None => change.json_line().to_vec(),
                        }
                    } else {
                        let event_type = match (change.deleted, was_matching, now_matches) {
                            (true, _, true) => "DELETED",
                            (false, true, true) => "MODIFIED",
                            (false, false, true) => "ADDED",
                            (false, true, false) => "DELETED",
                            _ => continue,
                        };
                        watch::event_line(event_type, &encode_row(&with_type_meta(r, (*change.object).clone())))
                    };
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
