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

/// What a request asks to do.
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

/// The attributes of a request, as the RBAC rules see it.
#[must_use]
pub fn attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match paths::parse(path.trim_end_matches('/')) {
        Ok(Some(t)) => {
            let verb = match (method, t.name.is_some()) {
                (&Method::GET | &Method::HEAD, _) if t.watch || (watch && t.name.is_none()) => {
                    "watch"
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
    fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), String>;

    /// What `user` may do in `namespace`, as SelfSubjectRulesReview reports it:
    /// (resourceRules, nonResourceRules, incomplete).
    fn rules_for(
        &self,
        user: &User,
        namespace: &str,
    ) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, bool);
}

/// The message kubectl shows for a refusal.
#[must_use]
pub fn forbidden_message(user: &User, attrs: &Attributes) -> String {
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
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let target = if name.is_empty() {
                qualified.clone()
            } else {
                format!("{qualified} \"{name}\"")
            };
            let what = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            format!(
                "{target} is forbidden: User \"{}\" cannot {verb} resource \"{what}\" in API group \"{group}\" {scope}",
                user.name
            )
        }
        Attributes::NonResource { verb, path } => {
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            )
        }
    }
}

/// Until RBAC objects are evaluated, only cluster administrators (group system:masters) may
/// do anything, and everyone may read health and version.
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), String> {
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

/// The authorization layer (after authentication).
pub async fn layer(
    State(authz): State<std::sync::Arc<dyn Authorizer>>,
    request: Request,
    next: Next,
) -> Response {
    let user = request
        .extensions()
        .get::<User>()
        .cloned()
        .unwrap_or_else(User::anonymous);
    let attrs = attributes(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    if let Err(message) = authz.authorize(&user, &attrs) {
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
        let user = User {
            name: "system:serviceaccount:default:viewer".into(),
            ..User::default()
        };
        let attrs = attributes(
            &Method::POST,
            "/apis/apps/v1/namespaces/default/deployments",
            None,
        );
        assert_eq!(
            forbidden_message(&user, &attrs),
            "deployments.apps is forbidden: User \"system:serviceaccount:default:viewer\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        assert!(MastersOnly.authorize(&user, &attrs).is_err());
        let admin = User {
            groups: vec!["system:masters".into()],
            ..User::default()
        };
        assert!(MastersOnly.authorize(&admin, &attrs).is_ok());
        assert!(
            MastersOnly
                .authorize(
                    &User::anonymous(),
                    &attributes(&Method::GET, "/version", None)
                )
                .is_ok()
        );
    }
}
