//! Authentication: who is making a request. Client certificates (verified by TLS against the
//! cluster CA: CN is the user, O the groups) and static bearer tokens from a token file;
//! anything else is anonymous, which gets 401 unless anonymous access is enabled.

use std::{collections::HashMap, fs, path::Path, sync::Arc};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::Store;

use crate::{ApiServer, errors::ApiError, objects, serve::PeerCertificate};

/// An authenticated (or anonymous) user, as Kubernetes' `user.Info`.
pub use skiff_api::authz::UserInfo as User;

/// The user of a request without credentials.
#[must_use]
pub fn anonymous() -> User {
    User::new("system:anonymous", &["system:unauthenticated"])
}

fn authenticated(mut user: User) -> User {
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    user
}

/// The `userInfo` of reviews.
#[must_use]
pub fn user_json(user: &User) -> Value {
    let mut v = json!({"username": user.username, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        v["extra"] = json!(user.extra);
    }
    v
}

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    User(User),
    /// A bearer token no static entry knows: a ServiceAccount or bootstrap token, or nothing.
    Bearer(String),
    None,
}

#[derive(Debug, Default, Clone)]
pub struct Authenticator {
    tokens: HashMap<String, User>,
    /// Let unauthenticated requests through as system:anonymous (authorization decides).
    pub anonymous: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("token file {path}, line {line}: {message}")]
pub struct TokenFileError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

impl Authenticator {
    /// Reads a static token file as kube-apiserver does: `token,user,uid[,"group1,group2"]`
    /// per line.
    pub fn with_token_file(mut self, path: &Path) -> Result<Self, TokenFileError> {
        let err = |line, message: &str| TokenFileError {
            path: path.display().to_string(),
            line,
            message: message.to_owned(),
        };
        let content = fs::read_to_string(path).map_err(|e| err(0, &e.to_string()))?;
        for (i, line) in content
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let mut fields = line.splitn(4, ',');
            let (Some(token), Some(user), Some(uid)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(err(i + 1, "expected token,user,uid[,\"groups\"]"));
            };
            if token.is_empty() || user.is_empty() {
                return Err(err(i + 1, "token and user must not be empty"));
            }
            let groups = fields
                .next()
                .map(|g| {
                    g.trim_matches('"')
                        .split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let mut info = User::new(user, &[]);
            info.uid = uid.to_owned();
            info.groups = groups;
            self.tokens.insert(token.to_owned(), info);
        }
        Ok(self)
    }

    /// What the request presents: a user known from its certificate or a static token, a
    /// bearer token to check against the store (ServiceAccount or bootstrap token), or nothing.
    pub fn authenticate(&self, request: &Request) -> Result<Credentials, ApiError> {
        if let Some(value) = request.headers().get(axum::http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(unauthorized)?;
            return Ok(match self.tokens.get(token) {
                Some(user) => Credentials::User(authenticated(user.clone())),
                None => Credentials::Bearer(token.to_owned()),
            });
        }
        if let Some(PeerCertificate(Some((name, groups)))) =
            request.extensions().get::<PeerCertificate>()
        {
            let mut user = User::new(name, &[]);
            user.groups = groups.clone();
            return Ok(Credentials::User(authenticated(user)));
        }
        Ok(Credentials::None)
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The authentication layer: puts the [`User`] into the request's extensions. A presented
/// but unknown token is refused, never downgraded to anonymous.
pub async fn layer<S: Store>(
    State((auth, api)): State<(Arc<Authenticator>, Arc<ApiServer<S>>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match auth.authenticate(&request) {
        Ok(Credentials::User(user)) => user,
        Ok(Credentials::Bearer(token)) => match token_user(&api, &token).await {
            Some(user) => authenticated(user),
            None => return unauthorized().into_response(),
        },
        Ok(Credentials::None) if auth.anonymous => anonymous(),
        Ok(Credentials::None) => return unauthorized().into_response(),
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(user);
    next.run(request).await
}

async fn stored<S: Store>(
    api: &ApiServer<S>,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Option<Value> {
    let r = registry::find("", "v1", plural)?;
    let kv = api
        .store
        .get(&objects::key(r, Some(namespace), name), None)
        .await
        .ok()??;
    objects::decode(&kv).ok()
}

/// The user a ServiceAccount token or a bootstrap token stands for, if it is valid now.
async fn token_user<S: Store>(api: &ApiServer<S>, token: &str) -> Option<User> {
    if token.split('.').count() == 3 {
        let id = api.tokens.as_ref()?.verify(token).ok()?;
        let c = &id.claims;
        let sa = stored(api, "serviceaccounts", &c.namespace, &c.serviceaccount.name).await?;
        if sa["metadata"]["uid"] != c.serviceaccount.uid.as_str() {
            return None;
        }
        if let Some(secret) = &c.secret {
            let s = stored(api, "secrets", &c.namespace, &secret.name).await?;
            if s["metadata"]["uid"] != secret.uid.as_str() {
                return None;
            }
        }
        if let Some(pod) = &c.pod {
            let p = stored(api, "pods", &c.namespace, &pod.name).await?;
            if p["metadata"]["uid"] != pod.uid.as_str() {
                return None;
            }
        }
        let mut user = User::service_account(&c.namespace, &c.serviceaccount.name);
        user.uid.clone_from(&c.serviceaccount.uid);
        return Some(user);
    }
    bootstrap_user(api, token).await
}

/// Bootstrap tokens (`ID.SECRET`, 6 and 16 lower-case alphanumerics) live in Secrets
/// `kube-system/bootstrap-token-ID` of type bootstrap.kubernetes.io/token.
async fn bootstrap_user<S: Store>(api: &ApiServer<S>, token: &str) -> Option<User> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !valid(id, 6) || !valid(secret, 16) {
        return None;
    }
    let obj = stored(
        api,
        "secrets",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    )
    .await?;
    if obj["type"] != "bootstrap.kubernetes.io/token" {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let raw = obj["data"][k].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        String::from_utf8(bytes).ok()
    };
    if field("token-id").as_deref() != Some(id)
        || field("token-secret").as_deref() != Some(secret)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        let expires: jiff::Timestamp = expiration.parse().ok()?;
        if expires <= jiff::Timestamp::now() {
            return None;
        }
    }
    let mut user = User::new(&format!("system:bootstrap:{id}"), &["system:bootstrappers"]);
    if let Some(extra) = field("auth-extra-groups") {
        user.groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_owned),
        );
    }
    Some(user)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    #[test]
    fn token_file_and_headers() {
        let path = std::env::temp_dir().join(format!("tokens-{}", uuid::Uuid::new_v4()));
        fs::write(
            &path,
            "# comment\nabc123,alice,u1,\"dev,ops\"\nxyz,bob,u2\n",
        )
        .unwrap();
        let auth = Authenticator::default().with_token_file(&path).unwrap();
        let req = |h: Option<&str>| {
            let mut b = Request::builder();
            if let Some(h) = h {
                b = b.header("authorization", h);
            }
            b.body(Body::empty()).unwrap()
        };
        let Credentials::User(alice) = auth.authenticate(&req(Some("Bearer abc123"))).unwrap()
        else {
            panic!("alice is a static token user");
        };
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(
            auth.authenticate(&req(Some("Bearer nope"))).unwrap(),
            Credentials::Bearer("nope".into()),
            "an unknown token is checked against the store next"
        );
        assert_eq!(auth.authenticate(&req(None)).unwrap(), Credentials::None);
        let mut with_cert = req(None);
        with_cert.extensions_mut().insert(PeerCertificate(Some((
            "admin".into(),
            vec!["system:masters".into()],
        ))));
        let Credentials::User(admin) = auth.authenticate(&with_cert).unwrap() else {
            panic!("a verified certificate names a user");
        };
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);
        fs::write(&path, "onlytoken\n").unwrap();
        assert!(Authenticator::default().with_token_file(&path).is_err());
        fs::remove_file(path).unwrap();
    }
}
