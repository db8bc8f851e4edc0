//! CertificateSigningRequests: the approver for kubelet client certificates (a node joining with
//! a bootstrap token, or renewing its own) and the signer for the built-in client signers, as
//! kube-controller-manager's csrapproving and csrsigning controllers.
//!
//! Signing needs the cluster CA's key, which only the server process holds: it hands the
//! controller a [`Signer`]; without one (tests of the API alone) requests stay approved-unsigned.

use std::{fmt, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::{api::certificates::v1::CertificateSigningRequest, jiff::Timestamp};
use kube::{
    Api, ResourceExt as _,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{info, warn};

use crate::{ControllerError, Ctx, events::EventType};

const COMPONENT: &str = "certificate-controller";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// What a kubelet client certificate may be used for (upstream's allowed set).
const KUBELET_CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
/// What a kubelet serving certificate may be used for.
const KUBELET_SERVING_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];
/// Certificates last a year unless the request asks for less (spec.expirationSeconds).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Signs a PEM request for the given usages and lifetime; returns the PEM certificate.
pub type SignFn = dyn Fn(&str, &[&str], Duration) -> Result<String, String> + Send + Sync;

/// The cluster CA's signing function, given to the controllers by the server.
#[derive(Clone)]
pub struct Signer(pub Arc<SignFn>);

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(cluster CA)")
    }
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures_util::future::ready(()))
        .await;
}

fn error_policy(csr: Arc<CertificateSigningRequest>, err: &ControllerError, _: Arc<Ctx>) -> Action {
    warn!(csr = %csr.name_any(), error = %err, "handling a certificate signing request; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The subject (common name, organizations) of a PEM PKCS#10 request.
pub fn request_subject(pem: &[u8]) -> Result<(String, Vec<String>), String> {
    parse_request(pem).map(|r| (r.cn, r.orgs))
}

/// What a request asks for: subject and subject alternative names.
struct Requested {
    cn: String,
    orgs: Vec<String>,
    dns: Vec<String>,
    ips: usize,
    /// Email and URI names, which no kubelet certificate may carry.
    other: usize,
}

fn parse_request(pem: &[u8]) -> Result<Requested, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| format!("the request is not PEM: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "expected a CERTIFICATE REQUEST PEM block, found {:?}",
            block.label
        ));
    }
    use x509_parser::prelude::FromDer as _;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("the request is not a PKCS#10 certificate request: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let orgs = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    let (mut dns, mut ips, mut other) = (Vec::new(), 0, 0);
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(_) => ips += 1,
                    _ => other += 1,
                }
            }
        }
    }
    Ok(Requested {
        cn,
        orgs,
        dns,
        ips,
        other,
    })
}

/// Why a kubelet client request is not a valid one (upstream's ValidateKubeletClientCSR).
fn kubelet_client_problem(csr: &CertificateSigningRequest) -> Option<String> {
    let (cn, orgs) = match request_subject(&csr.spec.request.0) {
        Ok(subject) => subject,
        Err(e) => return Some(e),
    };
    if orgs != ["system:nodes"] {
        return Some(format!(
            "the organization must be exactly [system:nodes], not {orgs:?}"
        ));
    }
    if !cn.starts_with("system:node:") || cn.len() == "system:node:".len() {
        return Some(format!(
            "the common name must be system:node:NODENAME, not {cn:?}"
        ));
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if let Some(bad) = usages
        .iter()
        .find(|u| !KUBELET_CLIENT_USAGES.contains(&u.as_str()))
    {
        return Some(format!(
            "usage {bad:?} is not allowed for kubelet client certificates"
        ));
    }
    None
}

/// Why a kubelet serving request is not one skiff signs: upstream's ValidateKubeletServingCSR,
/// narrowed so that auto-approval is safe. The API server checks a kubelet's certificate
/// against the node's NAME, so the only DNS name allowed is the requester's own node name; IP
/// names are refused because nothing could vouch that an address belongs to that node.
fn kubelet_serving_problem(csr: &CertificateSigningRequest) -> Option<String> {
    let r = match parse_request(&csr.spec.request.0) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    if r.orgs != ["system:nodes"] {
        return Some(format!(
            "the organization must be exactly [system:nodes], not {:?}",
            r.orgs
        ));
    }
    let Some(node) = r.cn.strip_prefix("system:node:").filter(|n| !n.is_empty()) else {
        return Some(format!(
            "the common name must be system:node:NODENAME, not {:?}",
            r.cn
        ));
    };
    if r.dns != [node] || r.ips > 0 || r.other > 0 {
        return Some(format!(
            "a kubelet serving certificate names exactly its node ({node:?}) as its only DNS name, \
             with no IP, email or URI names; the request has DNS names {:?}, {} IP and {} other names",
            r.dns, r.ips, r.other
        ));
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "server auth") {
        return Some("a kubelet serving certificate needs the \"server auth\" usage".into());
    }
    if let Some(bad) = usages
        .iter()
        .find(|u| !KUBELET_SERVING_USAGES.contains(&u.as_str()))
    {
        return Some(format!(
            "usage {bad:?} is not allowed for kubelet serving certificates"
        ));
    }
    None
}

/// Whether the request is auto-approved, and why: a kubelet client certificate asked for by a
/// bootstrap token (a joining node) or by the very node it names (a renewal).
fn auto_approval(csr: &CertificateSigningRequest) -> Option<&'static str> {
    if csr.spec.signer_name == KUBELET_SERVING {
        let (cn, _) = request_subject(&csr.spec.request.0).ok()?;
        return (kubelet_serving_problem(csr).is_none()
            && csr.spec.username.as_deref() == Some(cn.as_str()))
        .then_some("Auto approving the kubelet serving certificate its own node asked for.");
    }
    if csr.spec.signer_name != KUBELET_CLIENT || kubelet_client_problem(csr).is_some() {
        return None;
    }
    let groups = csr.spec.groups.clone().unwrap_or_default();
    if groups.iter().any(|g| g == "system:bootstrappers") {
        return Some("Auto approving kubelet client certificate requested with a bootstrap token.");
    }
    let (cn, _) = request_subject(&csr.spec.request.0).ok()?;
    (csr.spec.username.as_deref() == Some(cn.as_str()))
        .then_some("Auto approving self kubelet client certificate after SubjectAccessReview.")
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.name_any();
    let denied = has_condition(&csr, "Denied") || has_condition(&csr, "Failed");
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if denied || issued {
        return Ok(Action::await_change());
    }
    let mut approved = has_condition(&csr, "Approved");
    if !approved && let Some(message) = auto_approval(&csr) {
        let now = Timestamp::now().to_string();
        let patch = json!({"status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": message, "lastUpdateTime": now, "lastTransitionTime": now}]}});
        api.patch_subresource(
            "approval",
            &name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        info!(csr = %name, signer = %csr.spec.signer_name, "auto-approved a certificate request");
        approved = true;
    }
    let Some(signer) = ctx.options.signer.clone() else {
        return Ok(Action::await_change());
    };
    let ours = [KUBELET_CLIENT, KUBELET_SERVING, CLIENT].contains(&csr.spec.signer_name.as_str());
    if !approved || !ours {
        return Ok(Action::await_change());
    }
    let problem = match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT => kubelet_client_problem(&csr),
        KUBELET_SERVING => kubelet_serving_problem(&csr),
        _ => None,
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let usages: Vec<&str> = usages.iter().map(String::as_str).collect();
    let lifetime = csr
        .spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(s.max(600)));
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let signed = match problem {
        Some(p) => Err(p),
        None => (signer.0)(&pem, &usages, lifetime),
    };
    match signed {
        Ok(cert) => {
            let patch =
                json!({"status": {"certificate": k8s_openapi::ByteString(cert.into_bytes())}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(csr = %name, signer = %csr.spec.signer_name, "signed a certificate");
        }
        Err(message) => {
            let now = Timestamp::now().to_string();
            let mut conditions = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            conditions.push(json!({"type": "Failed", "status": "True",
                "reason": "SignerValidationFailure", "message": message,
                "lastUpdateTime": now, "lastTransitionTime": now}));
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conditions}})),
            )
            .await?;
            ctx.events
                .publish(
                    COMPONENT,
                    csr.as_ref(),
                    EventType::Warning,
                    "SignerValidationFailure",
                    &message,
                )
                .await;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        usages: &[&str],
        user: &str,
    ) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let mut csr = CertificateSigningRequest::default();
        csr.spec.signer_name = KUBELET_SERVING.into();
        csr.spec.request = k8s_openapi::ByteString(pem.into_bytes());
        csr.spec.usages = Some(usages.iter().map(|u| (*u).to_owned()).collect());
        csr.spec.username = Some(user.into());
        csr
    }

    const SERVING: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

    #[test]
    fn a_node_gets_a_serving_certificate_for_its_own_name_only() {
        let good = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &SERVING,
            "system:node:n1",
        );
        assert_eq!(kubelet_serving_problem(&good), None);
        assert!(auto_approval(&good).is_some());

        // Asked for by another identity: valid, but not auto-approved.
        let other = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &SERVING,
            "system:node:n2",
        );
        assert!(auto_approval(&other).is_none());

        for (csr, why) in [
            (
                request(
                    "system:node:n1",
                    &["system:nodes"],
                    &["n2"],
                    &SERVING,
                    "system:node:n1",
                ),
                "DNS name",
            ),
            (
                request(
                    "system:node:n1",
                    &["system:nodes"],
                    &["n1", "10.0.0.1"],
                    &SERVING,
                    "system:node:n1",
                ),
                "IP",
            ),
            (
                request(
                    "system:node:n1",
                    &["system:masters"],
                    &["n1"],
                    &SERVING,
                    "system:node:n1",
                ),
                "organization",
            ),
            (
                request("n1", &["system:nodes"], &["n1"], &SERVING, "n1"),
                "common name",
            ),
            (
                request(
                    "system:node:n1",
                    &["system:nodes"],
                    &["n1"],
                    &["digital signature", "client auth"],
                    "system:node:n1",
                ),
                "usage",
            ),
        ] {
            let problem = kubelet_serving_problem(&csr).expect(why);
            assert!(
                problem.contains(why) || problem.contains("server auth"),
                "{why}: {problem}"
            );
            assert!(auto_approval(&csr).is_none(), "{why}");
        }
    }
}
