//! Node credentials through CertificateSigningRequests, with the real kubectl and openssl: a
//! node joining with a bootstrap token gets its system:node client certificate auto-approved and
//! signed; other requests wait for `kubectl certificate approve` (or are denied); a bootstrap
//! token asking for more than a node identity gets nothing.

mod common;

use std::{process::Command, thread, time::Duration};

use base64::Engine as _;
use common::{ControlPlane, eventually};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A new key and a PEM request for `subject` (openssl's `/O=../CN=..` form): (key path, request).
fn request(cp: &ControlPlane, name: &str, subject: &str) -> (String, String) {
    let key = cp.dir.join(format!("{name}.key"));
    let csr = cp.dir.join(format!("{name}.csr"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", subject])
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        key.display().to_string(),
        std::fs::read_to_string(csr).unwrap(),
    )
}

fn manifest(name: &str, signer: &str, pem: &str, usages: &[&str]) -> String {
    let usages: Vec<String> = usages.iter().map(|u| format!("  - {u}")).collect();
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  signerName: {signer}\n  request: {}\n  usages:\n{}\n",
        B64.encode(pem),
        usages.join("\n")
    )
}

fn certificate(cp: &ControlPlane, name: &str) -> Option<String> {
    let csr = cp.json(&["get", "csr", name]);
    let cert = csr["status"]["certificate"].as_str()?;
    String::from_utf8(B64.decode(cert).ok()?).ok()
}

/// A kubeconfig like the admin's, authenticating with `cert` and `key` instead.
fn kubeconfig_for(cp: &ControlPlane, name: &str, cert: &str, key_path: &str) -> String {
    let key = std::fs::read_to_string(key_path).unwrap();
    let admin = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    let text: Vec<String> = admin
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("client-certificate-data:") {
                format!("    client-certificate-data: {}", B64.encode(cert))
            } else if l.trim_start().starts_with("client-key-data:") {
                format!("    client-key-data: {}", B64.encode(&key))
            } else {
                l.to_owned()
            }
        })
        .collect();
    cp.file(&format!("{name}.kubeconfig"), &(text.join("\n") + "\n"))
}

fn whoami(cp: &ControlPlane, kubeconfig: &str) -> String {
    let out = cp
        .kubectl(&["auth", "whoami", "--kubeconfig", kubeconfig])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn nodes_join_with_a_bootstrap_token_and_csrs_follow_approval() {
    let cp = ControlPlane::start_secure();
    let token = cp.skiff_token(&["create", "--groups", "system:bootstrappers:workers"]);

    // The joining node: its own key, a request for system:node:n1 in system:nodes.
    let (key, pem) = request(&cp, "n1", "/O=system:nodes/CN=system:node:n1");
    let file = cp.file(
        "n1-csr.yaml",
        &manifest(
            "node-n1",
            "kubernetes.io/kube-apiserver-client-kubelet",
            &pem,
            &["digital signature", "client auth"],
        ),
    );
    cp.ok(&["create", "-f", &file, "--token", &token]);
    let cert = eventually("the node certificate", Duration::from_secs(20), || {
        certificate(&cp, "node-n1")
    });
    let csr = cp.json(&["get", "csr", "node-n1"]);
    assert!(
        csr["spec"]["username"]
            .as_str()
            .unwrap()
            .starts_with("system:bootstrap:"),
        "the requestor is the token's user: {csr}"
    );
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    let table = cp.ok(&["get", "csr", "node-n1"]);
    assert!(table.contains("Approved,Issued"), "{table}");
    assert!(
        table.contains("kubernetes.io/kube-apiserver-client-kubelet"),
        "{table}"
    );
    let node = kubeconfig_for(&cp, "n1", &cert, &key);
    let me = whoami(&cp, &node);
    assert!(
        me.contains("system:node:n1") && me.contains("system:nodes"),
        "{me}"
    );

    // A bootstrap token asking for anything else is not approved.
    let (_, pem) = request(&cp, "evil", "/O=system:masters/CN=system:node:n2");
    let file = cp.file(
        "evil.yaml",
        &manifest(
            "evil",
            "kubernetes.io/kube-apiserver-client-kubelet",
            &pem,
            &["client auth"],
        ),
    );
    cp.ok(&["create", "-f", &file, "--token", &token]);
    // ... nor may it read what others asked for beyond CSRs, or act as a node.
    assert!(
        cp.fails(&["get", "pods", "--token", &token])
            .contains("Forbidden")
    );

    // Other signers wait for a human: approve one, deny another.
    let (alice_key, pem) = request(&cp, "alice", "/O=devs/CN=alice");
    let file = cp.file(
        "alice.yaml",
        &manifest(
            "alice",
            "kubernetes.io/kube-apiserver-client",
            &pem,
            &["client auth"],
        ),
    );
    cp.ok(&["create", "-f", &file]);
    let (_, pem) = request(&cp, "bob", "/CN=bob");
    let file = cp.file(
        "bob.yaml",
        &manifest(
            "bob",
            "kubernetes.io/kube-apiserver-client",
            &pem,
            &["client auth"],
        ),
    );
    cp.ok(&["create", "-f", &file]);
    thread::sleep(Duration::from_secs(1));
    let pending = cp.ok(&["get", "csr"]);
    assert!(
        pending
            .lines()
            .any(|l| l.starts_with("alice ") && l.contains("Pending")),
        "{pending}"
    );
    assert!(
        pending
            .lines()
            .any(|l| l.starts_with("evil ") && l.contains("Pending")),
        "{pending}"
    );
    cp.ok(&["certificate", "approve", "alice"]);
    cp.ok(&["certificate", "deny", "bob"]);
    let cert = eventually("alice's certificate", Duration::from_secs(20), || {
        certificate(&cp, "alice")
    });
    let me = whoami(&cp, &kubeconfig_for(&cp, "alice", &cert, &alice_key));
    assert!(me.contains("alice") && me.contains("devs"), "{me}");
    thread::sleep(Duration::from_secs(1));
    let table = cp.ok(&["get", "csr"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains("Denied")),
        "{table}"
    );
    assert!(
        certificate(&cp, "bob").is_none(),
        "a denied request is never signed"
    );
    assert!(
        certificate(&cp, "evil").is_none(),
        "an unapproved request is never signed"
    );

    // The token is listed, and once deleted no longer lets anyone in.
    let list = cp.skiff_token(&["list"]);
    assert!(list.starts_with("TOKEN"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&token) && l.contains("system:bootstrappers:workers")),
        "{list}"
    );
    let id = token.split('.').next().unwrap();
    assert!(cp.skiff_token(&["delete", id]).contains("deleted"));
    assert!(!cp.skiff_token(&["list"]).contains(&token));
    assert!(
        cp.fails(&["auth", "whoami", "--token", &token])
            .contains("Unauthorized")
    );
}
