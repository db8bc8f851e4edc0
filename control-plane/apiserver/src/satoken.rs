//! ServiceAccount tokens: JWTs signed with a key under the data directory. Bound tokens come
//! from the TokenRequest subresource and expire; legacy tokens fill Secrets of type
//! `kubernetes.io/service-account-token` and live as long as their Secret. Either is refused
//! once its ServiceAccount (or Secret) is gone or was recreated with another uid.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::tls::{PkiError, write_private};

/// The issuer of bound tokens, and their default audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer upstream puts in legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// Bound tokens default to an hour, as kubectl create token does.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// ... and may not ask for less than ten minutes.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").finish_non_exhaustive()
    }
}

/// What a bound token names beyond its ServiceAccount.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoundRef {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: BoundRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<BoundRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

/// Who a valid token says the caller is; the server still checks that the named objects exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub claims: KubernetesClaims,
    pub legacy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("signing the token: {0}")]
    Sign(String),
}

impl TokenKeys {
    /// The signing key at `path` (0600), created on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, PkiError> {
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate()?;
                write_private(path, key.serialize_pem().as_bytes())?;
                key.serialize_pem()
            }
            Err(source) => {
                return Err(PkiError::Io {
                    what: "reading",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let key = KeyPair::from_pem(&pem)?;
        let bad = |e: jsonwebtoken::errors::Error| {
            PkiError::Tls(format!("service account key {}: {e}", path.display()))
        };
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).map_err(bad)?,
            decoding: DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).map_err(bad)?,
        })
    }

    /// A bound token for `claims`, valid for `audiences` until `now + seconds`.
    pub fn issue_bound(
        &self,
        claims: KubernetesClaims,
        audiences: Vec<String>,
        now: i64,
        seconds: i64,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!(
                "system:serviceaccount:{}:{}",
                claims.namespace, claims.serviceaccount.name
            ),
            aud: if audiences.is_empty() {
                vec![ISSUER.into()]
            } else {
                audiences
            },
            exp: Some(now + seconds),
            iat: Some(now),
            nbf: Some(now),
            kubernetes: claims,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// A legacy token for a token Secret: no expiry, valid while the Secret exists.
    pub fn issue_legacy(&self, claims: KubernetesClaims) -> Result<String, TokenError> {
        let claims = Claims {
            iss: LEGACY_ISSUER.into(),
            sub: format!(
                "system:serviceaccount:{}:{}",
                claims.namespace, claims.serviceaccount.name
            ),
            aud: Vec::new(),
            exp: None,
            iat: None,
            nbf: None,
            kubernetes: claims,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Checks the signature, the issuer, and for bound tokens the audience and expiry.
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER, LEGACY_ISSUER]);
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        if c.iss == ISSUER {
            let now = jiff::Timestamp::now().as_second();
            match c.exp {
                Some(exp) if exp > now => {}
                _ => return Err(TokenError::Invalid("token has expired".into())),
            }
            if !c.aud.iter().any(|a| a == ISSUER) {
                return Err(TokenError::Invalid(
                    "token audience does not include the API server".into(),
                ));
            }
        }
        if c.sub
            != format!(
                "system:serviceaccount:{}:{}",
                c.kubernetes.namespace, c.kubernetes.serviceaccount.name
            )
        {
            return Err(TokenError::Invalid(
                "subject does not match the service account".into(),
            ));
        }
        Ok(TokenIdentity {
            claims: c.kubernetes,
            legacy: c.iss == LEGACY_ISSUER,
        })
    }
}

/// The status of a TokenRequest answered with `token`.
#[must_use]
pub fn token_request_status(token: &str, expires_at: i64) -> Value {
    let when = jiff::Timestamp::from_second(expires_at)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    json!({"token": token, "expirationTimestamp": when})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (TokenKeys, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("sa-{}.key", uuid::Uuid::new_v4()));
        (TokenKeys::load_or_create(&path).unwrap(), path)
    }

    fn viewer() -> KubernetesClaims {
        KubernetesClaims {
            namespace: "default".into(),
            serviceaccount: BoundRef {
                name: "viewer".into(),
                uid: "u-1".into(),
            },
            pod: None,
            secret: None,
        }
    }

    #[test]
    fn bound_tokens_verify_until_they_expire() {
        let (k, path) = keys();
        let now = jiff::Timestamp::now().as_second();
        let token = k.issue_bound(viewer(), vec![], now, 3600).unwrap();
        let id = k.verify(&token).unwrap();
        assert_eq!(id.claims, viewer());
        assert!(!id.legacy);
        let expired = k.issue_bound(viewer(), vec![], now - 7200, 3600).unwrap();
        assert!(
            k.verify(&expired)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        let other_audience = k
            .issue_bound(viewer(), vec!["vault".into()], now, 3600)
            .unwrap();
        assert!(k.verify(&other_audience).is_err());
        // Tampering with the payload breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].replace('A', "B");
        assert!(k.verify(&parts.join(".")).is_err());
        // Another key (another cluster) does not verify it.
        let (other, other_path) = keys();
        assert!(other.verify(&token).is_err());
        // The key is reused on restart.
        assert!(
            TokenKeys::load_or_create(&path)
                .unwrap()
                .verify(&token)
                .is_ok()
        );
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(other_path).unwrap();
    }

    #[test]
    fn legacy_tokens_do_not_expire() {
        let (k, path) = keys();
        let mut claims = viewer();
        claims.secret = Some(BoundRef {
            name: "viewer-token".into(),
            uid: "s-1".into(),
        });
        let id = k.verify(&k.issue_legacy(claims.clone()).unwrap()).unwrap();
        assert!(id.legacy);
        assert_eq!(id.claims, claims);
        std::fs::remove_file(path).unwrap();
    }
}
