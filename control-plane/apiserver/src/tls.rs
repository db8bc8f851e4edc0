//! The cluster's PKI: a CA, the API server's serving certificate and the admin's client
//! certificate, kept under the data directory (keys 0600). Leaf certificates are renewed
//! automatically long before they expire (k3s users get locked out by expired one-year
//! certificates; skiff renews at startup and while running, and swaps the serving certificate
//! without a restart).

use std::{
    fmt, fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

/// Leaf certificates live a year ...
const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// ... and are replaced once less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(120 * 24 * 3600);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const CA_NAME: &str = "skiff-ca";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path} is not a valid certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(
        "usage {0:?} cannot be signed (allowed: digital signature, key encipherment, client auth, server auth)"
    )]
    Usage(String),
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (serving certificates).
    pub sans: Vec<String>,
    pub server: bool,
    pub client: bool,
}

/// A certificate and its key, PEM encoded.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: time::OffsetDateTime,
}

impl Leaf {
    /// The certificate chain and private key in the form rustls takes.
    fn der(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok((certs, key))
    }
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_key: KeyPair,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Writes `data` to `path` with mode 0600, atomically (a crash leaves the old file or the new).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    let io = |what, source| PkiError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    f.write_all(data).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The expiry of a PEM certificate.
pub fn not_after(pem: &str, path: &Path) -> Result<time::OffsetDateTime, PkiError> {
    let bad = |message: String| PkiError::BadCertificate {
        path: path.to_owned(),
        message,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| bad(e.to_string()))
}

impl Pki {
    /// The PKI under `dir`, creating the CA on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            what: "creating",
            path: dir.to_owned(),
            source,
        })?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if let (Some(ca_pem), Some(key_pem)) = (read(&cert_path)?, read(&key_path)?) {
            let ca_key = KeyPair::from_pem(&key_pem)?;
            return Ok(Self {
                dir: dir.to_owned(),
                ca_pem,
                ca_key,
            });
        }
        let ca_key = KeyPair::generate()?;
        let mut params = ca_params();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&ca_key)?;
        write_private(&key_path, ca_key.serialize_pem().as_bytes())?;
        write_private(&cert_path, cert.pem().as_bytes())?;
        Ok(Self {
            dir: dir.to_owned(),
            ca_pem: cert.pem(),
            ca_key,
        })
    }

    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a new leaf certificate.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, PkiError> {
        let mut params = CertificateParams::new(spec.sans.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        for org in &spec.organizations {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + LEAF_LIFETIME;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params(), &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        })
    }

    /// Signs a PKCS#10 request (PEM) with the cluster CA for `usages`, as kube-controller-manager's
    /// csrsigning does: subject and SANs come from the request (whose signature is checked), key
    /// usages only from what the approved request allows, never the CA flag.
    pub fn sign_request(
        &self,
        request_pem: &str,
        usages: &[&str],
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(request_pem)?;
        let params = &mut csr.params;
        params.is_ca = IsCa::NoCa;
        params.key_usages = Vec::new();
        params.extended_key_usages = Vec::new();
        for usage in usages {
            match *usage {
                "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                other => return Err(PkiError::Usage(other.to_owned())),
            }
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + lifetime.min(LEAF_LIFETIME);
        params.serial_number = Some(SerialNumber::from_slice(uuid::Uuid::new_v4().as_bytes()));
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(ca_params(), &self.ca_key);
        Ok(csr.signed_by(&issuer)?.pem())
    }

    /// The leaf `name` (files NAME.crt and NAME.key), issued anew when missing, expiring
    /// within [`RENEW_BEFORE`], or issued for other names and addresses than `spec` asks for.
    /// Returns it and whether it was (re)issued.
    pub fn ensure(&self, name: &str, spec: &LeafSpec) -> Result<(Leaf, bool), PkiError> {
        let (cert_path, key_path, spec_path) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.names")),
        );
        let wanted = format!(
            "{}|{}|{}",
            spec.common_name,
            spec.organizations.join(","),
            spec.sans.join(",")
        );
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path)?, read(&key_path)?) {
            let expires = not_after(&cert_pem, &cert_path)?;
            let fresh = expires - time::OffsetDateTime::now_utc() > RENEW_BEFORE;
            if fresh && read(&spec_path)?.as_deref() == Some(wanted.as_str()) {
                return Ok((
                    Leaf {
                        cert_pem,
                        key_pem,
                        not_after: expires,
                    },
                    false,
                ));
            }
        }
        let leaf = self.issue(spec)?;
        write_private(&key_path, leaf.key_pem.as_bytes())?;
        write_private(&cert_path, leaf.cert_pem.as_bytes())?;
        write_private(&spec_path, wanted.as_bytes())?;
        Ok((leaf, true))
    }
}

/// The serving certificate, replaceable while the server runs.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<CertifiedKey>>);

impl ServingCert {
    pub fn new(leaf: &Leaf) -> Result<Self, PkiError> {
        Ok(Self(RwLock::new(Arc::new(certified(leaf)?))))
    }

    pub fn replace(&self, leaf: &Leaf) -> Result<(), PkiError> {
        let key = Arc::new(certified(leaf)?);
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

fn certified(leaf: &Leaf) -> Result<CertifiedKey, PkiError> {
    let (certs, key) = leaf.der()?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    Ok(CertifiedKey::new(certs, signer))
}

/// The server's TLS configuration: HTTP/2 and HTTP/1.1 (upgrades for exec and port-forward need
/// 1.1), client certificates verified against the cluster CA but optional (tokens are the other
/// way in).
pub fn server_config(ca_pem: &str, cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(ca_pem)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The cluster CA as a trust store.
fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(der.map_err(|e| PkiError::Tls(e.to_string()))?)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
    }
    Ok(roots)
}

/// A client's TLS configuration for talking to the API server: the server verified against the
/// cluster CA, and the client's certificate presented (the admin's, a node's).
pub fn client_config(ca_pem: &str, client: &Leaf) -> Result<Arc<ClientConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(ca_pem)?;
    let (certs, key) = client.der()?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The user a verified client certificate names: CN the user, each O a group.
#[must_use]
pub fn certificate_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some((cn, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-pki-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pki_is_created_once_reused_and_private() {
        let d = dir();
        let pki = Pki::load_or_create(&d).unwrap();
        let again = Pki::load_or_create(&d).unwrap();
        assert_eq!(pki.ca_pem(), again.ca_pem(), "a restart keeps the CA");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(d.join("ca.key")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let spec = LeafSpec {
            common_name: "admin".into(),
            organizations: vec!["system:masters".into()],
            sans: vec![],
            server: false,
            client: true,
        };
        let (first, issued) = pki.ensure("admin", &spec).unwrap();
        assert!(issued);
        let (second, issued) = again.ensure("admin", &spec).unwrap();
        assert!(!issued, "a fresh certificate is reused");
        assert_eq!(first.cert_pem, second.cert_pem);
        let der = CertificateDer::from_pem_slice(first.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            certificate_identity(&der),
            Some(("admin".into(), vec!["system:masters".into()]))
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn expiring_or_renamed_leaves_are_reissued() {
        let d = dir();
        let pki = Pki::load_or_create(&d).unwrap();
        let spec = LeafSpec {
            common_name: "kube-apiserver".into(),
            organizations: vec![],
            sans: vec!["localhost".into(), "127.0.0.1".into()],
            server: true,
            client: false,
        };
        let (leaf, _) = pki.ensure("server", &spec).unwrap();
        assert!(leaf.not_after - time::OffsetDateTime::now_utc() > RENEW_BEFORE);
        // A certificate with 30 days left is replaced.
        let mut short = pki.issue(&spec).unwrap();
        let mut params = CertificateParams::new(spec.sans.clone()).unwrap();
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let key = KeyPair::generate().unwrap();
        short.cert_pem = params
            .signed_by(&key, &Issuer::new(ca_params(), &pki.ca_key))
            .unwrap()
            .pem();
        short.key_pem = key.serialize_pem();
        write_private(&d.join("server.crt"), short.cert_pem.as_bytes()).unwrap();
        write_private(&d.join("server.key"), short.key_pem.as_bytes()).unwrap();
        let (renewed, issued) = pki.ensure("server", &spec).unwrap();
        assert!(issued, "30 days left is within the renewal window");
        assert!(renewed.not_after - time::OffsetDateTime::now_utc() > RENEW_BEFORE);
        let mut more = spec.clone();
        more.sans.push("10.96.0.1".into());
        assert!(
            pki.ensure("server", &more).unwrap().1,
            "new names get a new certificate"
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn requests_are_signed_for_the_granted_usages_only() {
        let d = dir();
        let pki = Pki::load_or_create(&d).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        // Asking to be a CA gets nothing of the kind.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let request = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = pki
            .sign_request(
                &request,
                &["digital signature", "client auth"],
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let (cn, groups) = certificate_identity(&der).unwrap();
        assert_eq!(
            (cn.as_str(), groups),
            ("system:node:n1", vec!["system:nodes".to_owned()])
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!parsed.is_ca());
        let validity = parsed.validity().time_to_expiration().unwrap();
        assert!(validity.whole_seconds() <= 3600 && validity.whole_seconds() > 3000);
        assert!(matches!(
            pki.sign_request(&request, &["cert sign"], Duration::from_secs(60)),
            Err(PkiError::Usage(_))
        ));
        assert!(
            pki.sign_request("not a request", &["client auth"], Duration::from_secs(60))
                .is_err()
        );
        fs::remove_dir_all(d).unwrap();
    }
}
