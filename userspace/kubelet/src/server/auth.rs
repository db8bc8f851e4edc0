//! Who is calling (the client certificate) and whether they may (a SubjectAccessReview, cached
//! as the upstream kubelet's webhook authorizer caches: allowed for 5 minutes, denied for 30 s).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::{Api, api::PostParams};
use rustls::{
    RootCertStore, ServerConfig as TlsConfig, pki_types::CertificateDer,
    server::WebPkiClientVerifier,
};

use super::{ServerConfig, ServerError};

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

/// A caller, from its verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("reading certificates: {e}")))
}

/// TLS with optional client certificates: a caller without one gets a 401 from the handler
/// (a clearer answer than a failed handshake), one with a certificate from another CA fails
/// the handshake.
pub fn tls_config(config: &ServerConfig) -> Result<Arc<TlsConfig>, ServerError> {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject as _};
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(&config.ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| ServerError::Tls(format!("the cluster CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServerError::Tls(format!("the client verifier: {e}")))?;
    let chain = pem_certs(&config.cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes())
        .map_err(|e| ServerError::Tls(format!("the serving key: {e}")))?;
    let mut tls = TlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ServerError::Tls(format!("the serving certificate: {e}")))?;
    // Upgrades (exec, port-forward) are HTTP/1.1 only.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The user a verified client certificate names (CN, O...), if one was presented.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<User> {
    use x509_parser::prelude::FromDer as _;
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(User { name, groups })
}

/// The node subresource a kubelet path is authorized as (upstream's mapping).
pub fn subresource_of(path: &str) -> &'static str {
    if path.starts_with("/stats") {
        "stats"
    } else if path.starts_with("/metrics") {
        "metrics"
    } else if path.starts_with("/logs") {
        "log"
    } else {
        "proxy"
    }
}

pub fn verb_of(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "create",
    }
}

type Key = (User, &'static str, &'static str);

/// Asks the API server whether a user may use this node's subresources.
pub struct Authorizer {
    client: kube::Client,
    node: String,
    cache: Mutex<HashMap<Key, (bool, Instant)>>,
}

impl Authorizer {
    pub fn new(client: kube::Client, node: String) -> Self {
        Self {
            client,
            node,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn allowed(
        &self,
        user: &User,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, kube::Error> {
        let key = (user.clone(), verb, subresource);
        if let Some((allowed, at)) = self.lock().get(&key).copied() {
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if at.elapsed() < ttl {
                return Ok(allowed);
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    resource: Some("nodes".to_owned()),
                    subresource: Some(subresource.to_owned()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let mut cache = self.lock();
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, (allowed, Instant::now()));
        Ok(allowed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (bool, Instant)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstreams_node_subresources() {
        assert_eq!(subresource_of("/stats/summary"), "stats");
        assert_eq!(subresource_of("/metrics/resource"), "metrics");
        assert_eq!(subresource_of("/logs/syslog"), "log");
        assert_eq!(subresource_of("/containerLogs/a/b/c"), "proxy");
        assert_eq!(subresource_of("/exec/a/b/c"), "proxy");
        assert_eq!(verb_of(&Method::POST), "create");
        assert_eq!(verb_of(&Method::GET), "get");
        assert_eq!(verb_of(&Method::CONNECT), "create");
    }
}
