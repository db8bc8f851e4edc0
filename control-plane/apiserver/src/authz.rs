//! Authorization: may this user do this? Request attributes are derived the way
//! kube-apiserver derives them (verb from method and path, resource, subresource, namespace,
//! name), then decided by the configured authorizer.

use axum::{
    extract::{Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{authn::User, errors::ApiError, paths};

pub use skiff_api::authz::{Attributes, forbidden_message};

/// The attributes of a request, as the RBAC rules see it.
#[must_use]
pub fn attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    if let Some(m) = crate::metrics::parse(path) {
        let verb = match (method, m.name.is_some()) {
            (&Method::GET | &Method::HEAD, true) => "get",
            (&Method::GET | &Method::HEAD, false) if watch => "watch",
            (&Method::GET | &Method::HEAD, false) => "list",
            _ => "unknown",
        };
        return Attributes::Resource {
            verb: verb.into(),
            group: crate::metrics::GROUP.into(),
            version: crate::metrics::VERSION.into(),
            resource: m.plural.into(),
            subresource: String::new(),
            namespace: m.namespace.unwrap_or_default(),
            name: m.name.unwrap_or_default(),
        };
    }
    match paths::parse(path.trim_end_matches('/')) {
        Ok(Some(t)) => {
            let verb = match (method, t.name.is_some()) {
                (&Method::GET | &Method::HEAD, _) if t.watch || (watch && t.name.is_none()) => {
                    "watch"
                }
                // A WebSocket exec, attach or port-forward starts with a GET: it needs the
                // `create` SPDY's POST needs (upstream's AuthorizePodWebsocketUpgradeCreatePermission).
                (&Method::GET | &Method::HEAD, true)
                    if t.resource.plural == "pods"
                        && t.resource.group.is_empty()
                        && matches!(
                            t.subresource.as_deref(),
                            Some("exec" | "attach" | "portforward")
                        ) =>
                {
                    "create"
                }
                (&Method::GET | &Method::HEAD, true) => "get",
                (&Method::GET | &Method::HEAD, false) => "list",
                (&Method::POST, _) => "create",
                (&Method::PUT, _) => "update",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, true) => "delete",
                (&Method::DELETE, false) => "deletecollection",
                _ => "unknown",
            };
            Attributes::Resource {
                verb: verb.into(),
                group: t.resource.group.into(),
                version: t.resource.version.into(),
                resource: t.resource.plural.into(),
                subresource: t.subresource.unwrap_or_default(),
                namespace: t.namespace.unwrap_or_default(),
                name: t.name.unwrap_or_default(),
            }
        }
        _ => Attributes::NonResource {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_owned(),
        },
    }
}

/// Decides requests.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok(())` to allow; `Err(message)` to refuse with that Forbidden message.
    /// `field_selector` is the request's (kubelets may list only their own pods).
    fn authorize(
        &self,
        user: &User,
        attrs: &Attributes,
        field_selector: &str,
    ) -> Result<(), String>;

    /// The decision and its reason as an access review reports it (upstream's RBAC gives no
    /// reason for a plain "no", so kubectl auth can-i prints just that).
    fn review(&self, user: &User, attrs: &Attributes) -> (bool, String) {
        match self.authorize(user, attrs, "") {
            Ok(()) => (true, String::new()),
            Err(message) => (false, message),
        }
    }

    /// The user an impersonating request acts as, if `requestor` may impersonate it.
    fn impersonate(
        &self,
        requestor: &User,
        request: &skiff_api::authz::ImpersonationRequest,
    ) -> Result<User, ApiError> {
        let _ = (requestor, request);
        Err(ApiError::new(
            403,
            "Forbidden",
            "impersonation is not allowed by this server",
        ))
    }

    /// Escalation prevention on writes of RBAC objects (Roles, ClusterRoles and their bindings).
    fn check_rbac_write(
        &self,
        user: &User,
        obj: &serde_json::Value,
        old: Option<&serde_json::Value>,
    ) -> Result<(), String> {
        let _ = (user, obj, old);
        Ok(())
    }

    /// What `user` may do in `namespace`, as SelfSubjectRulesReview reports it:
    /// (resourceRules, nonResourceRules, incomplete).
    fn rules_for(
        &self,
        user: &User,
        namespace: &str,
    ) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, bool);
}

/// Until RBAC objects are evaluated, only cluster administrators (group system:masters) may
/// do anything, and everyone may read health and version.
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize(
        &self,
        user: &User,
        attrs: &Attributes,
        _field_selector: &str,
    ) -> Result<(), String> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        if let Attributes::NonResource { verb, path } = attrs
            && verb == "get"
            && matches!(
                path.as_str(),
                "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
            )
        {
            return Ok(());
        }
        Err(forbidden_message(user, attrs))
    }

    fn rules_for(
        &self,
        user: &User,
        _namespace: &str,
    ) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, bool) {
        if user.groups.iter().any(|g| g == "system:masters") {
            return (
                vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
                vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
                false,
            );
        }
        (
            Vec::new(),
            vec![
                json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}),
            ],
            false,
        )
    }
}

/// The request's `fieldSelector`, percent-decoded ("" when there is none).
fn field_selector(query: Option<&str>) -> String {
    let Some(raw) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("fieldSelector="))
    else {
        return String::new();
    };
    let bytes = raw.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(x) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The authorization layer (after authentication): impersonation, then the request itself.
pub async fn layer(
    State(authz): State<std::sync::Arc<dyn Authorizer>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut user = request
        .extensions()
        .get::<User>()
        .cloned()
        .unwrap_or_else(crate::authn::anonymous);
    // Almost no request impersonates: only look closer when one of its headers is there.
    let impersonates = request
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"));
    if impersonates {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if let Some(imp) = skiff_api::authz::ImpersonationRequest::from_headers(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ) {
            match authz.impersonate(&user, &imp) {
                Ok(as_user) => {
                    user = as_user;
                    request.extensions_mut().insert(user.clone());
                }
                Err(e) => return e.into_response(),
            }
        }
    }
    let attrs = attributes(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    if let Err(message) = authz.authorize(&user, &attrs, &field_selector(request.uri().query())) {
        let details = match &attrs {
            Attributes::Resource {
                group,
                resource,
                name,
                ..
            } => json!({"name": name, "group": group, "kind": resource}),
            Attributes::NonResource { .. } => json!({}),
        };
        return ApiError::new(403, "Forbidden", message)
            .with_details(details)
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_kube_apiserver() {
        let a = attributes(
            &Method::GET,
            "/api/v1/namespaces/default/pods",
            Some("watch=true&resourceVersion=5"),
        );
        assert!(
            matches!(&a, Attributes::Resource { verb, resource, namespace, .. } if verb == "watch" && resource == "pods" && namespace == "default")
        );
        let a = attributes(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            None,
        );
        assert!(
            matches!(&a, Attributes::Resource { verb, subresource, name, group, .. } if verb == "patch" && subresource == "scale" && name == "web" && group == "apps")
        );
        let a = attributes(&Method::DELETE, "/api/v1/namespaces/d/pods", None);
        assert!(matches!(&a, Attributes::Resource { verb, .. } if verb == "deletecollection"));
        assert_eq!(
            attributes(&Method::GET, "/healthz", None),
            Attributes::NonResource {
                verb: "get".into(),
                path: "/healthz".into()
            }
        );
    }

    #[test]
    fn refusals_read_like_kubectl_expects() {
        let user = User::service_account("default", "viewer");
        let attrs = attributes(
            &Method::POST,
            "/apis/apps/v1/namespaces/default/deployments",
            None,
        );
        assert_eq!(
            forbidden_message(&user, &attrs),
            "deployments.apps is forbidden: User \"system:serviceaccount:default:viewer\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        assert!(MastersOnly.authorize(&user, &attrs, "").is_err());
        let admin = User::new("admin", &["system:masters"]);
        assert!(MastersOnly.authorize(&admin, &attrs, "").is_ok());
        let version = attributes(&Method::GET, "/version", None);
        assert!(
            MastersOnly
                .authorize(&crate::authn::anonymous(), &version, "")
                .is_ok()
        );
    }

    #[test]
    fn field_selectors_are_decoded() {
        assert_eq!(
            field_selector(Some("limit=5&fieldSelector=spec.nodeName%3Dn1")),
            "spec.nodeName=n1"
        );
        assert_eq!(field_selector(None), "");
    }
}
