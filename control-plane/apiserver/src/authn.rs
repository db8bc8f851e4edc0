//! Authentication: who is making a request. Client certificates (verified by TLS against the
//! cluster CA: CN is the user, O the groups) and static bearer tokens from a token file;
//! anything else is anonymous, which gets 401 unless anonymous access is enabled.

use std::{collections::HashMap, fs, path::Path};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{errors::ApiError, serve::PeerCertificate};

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
pub fn user_json(user: &User) -> serde_json::Value {
    let mut v = json!({"username": user.username, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        v["extra"] = json!(user.extra);
    }
    v
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

    /// The user of a request, `None` when it presented no credentials this server knows.
    pub fn authenticate(&self, request: &Request) -> Result<Option<User>, ApiError> {
        if let Some(value) = request.headers().get(axum::http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(unauthorized)?;
            return match self.tokens.get(token) {
                Some(user) => Ok(Some(authenticated(user.clone()))),
                // A presented but unknown token is refused, never downgraded to anonymous.
                None => Err(unauthorized()),
            };
        }
        if let Some(PeerCertificate(Some((name, groups)))) =
            request.extensions().get::<PeerCertificate>()
        {
            let mut user = User::new(name, &[]);
            user.groups = groups.clone();
            return Ok(Some(authenticated(user)));
        }
        Ok(None)
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The authentication layer: puts the [`User`] into the request's extensions.
pub async fn layer(
    State(auth): State<std::sync::Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match auth.authenticate(&request) {
        Ok(Some(user)) => user,
        Ok(None) if auth.anonymous => anonymous(),
        Ok(None) => return unauthorized().into_response(),
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(user);
    next.run(request).await
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
        let alice = auth
            .authenticate(&req(Some("Bearer abc123")))
            .unwrap()
            .unwrap();
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert!(
            auth.authenticate(&req(Some("Bearer nope"))).is_err(),
            "a wrong token is refused"
        );
        assert!(
            auth.authenticate(&req(None)).unwrap().is_none(),
            "no credentials: anonymous"
        );
        let mut with_cert = req(None);
        with_cert.extensions_mut().insert(PeerCertificate(Some((
            "admin".into(),
            vec!["system:masters".into()],
        ))));
        assert_eq!(
            auth.authenticate(&with_cert).unwrap().unwrap().groups,
            ["system:masters", "system:authenticated"]
        );
        fs::write(&path, "onlytoken\n").unwrap();
        assert!(Authenticator::default().with_token_file(&path).is_err());
        fs::remove_file(path).unwrap();
    }
}
