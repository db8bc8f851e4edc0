//! Authentication and authorization with the real kubectl against `skiff server` as it runs
//! for real (TLS, client certificates, ServiceAccount tokens, RBAC): the seed's walkthrough,
//! and every way in that must be refused.

mod common;

use std::{process::Command, thread, time::Duration};

use common::ControlPlane;
use skiff_apiserver::satoken::{BoundRef, KubernetesClaims, TokenKeys};

const FORBIDDEN_CREATE: &str = "deployments.apps is forbidden: User \"system:serviceaccount:default:viewer\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\"";

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "-k"])
        .args(args)
        .output()
        .expect("running curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn rbac_walkthrough_and_refusals() {
    let cp = ControlPlane::start_secure();
    let url = cp.server_url();
    assert!(url.starts_with("https://"), "{url}");

    // The admin (client certificate, O=system:masters) may do anything.
    assert_eq!(cp.ok(&["auth", "can-i", "list", "nodes"]).trim(), "yes");
    assert_eq!(cp.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    let as_other = cp
        .kubectl(&["auth", "can-i", "list", "nodes", "--as", "someone"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&as_other.stdout).trim(), "no");
    assert!(cp.ok(&["auth", "whoami"]).contains("system:masters"));

    // The seed: a viewer ServiceAccount bound to the view role.
    cp.ok(&["create", "sa", "viewer"]);
    cp.ok(&[
        "create",
        "rolebinding",
        "viewercanview",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    let token = cp.ok(&["create", "token", "viewer"]).trim().to_owned();
    cp.ok(&["get", "pods", "--token", &token]);
    let refused = cp.fails(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--token",
        &token,
    ]);
    assert!(refused.contains(FORBIDDEN_CREATE), "{refused}");
    let whoami = cp.ok(&["auth", "whoami", "--token", &token]);
    assert!(
        whoami.contains("system:serviceaccount:default:viewer"),
        "{whoami}"
    );
    assert!(
        cp.fails(&["get", "secrets", "--token", &token])
            .contains("forbidden"),
        "view excludes secrets"
    );

    // No credentials: 401 with a Status body.
    let (_, body) = curl(&[&format!("{url}/api")]);
    let status: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(
        (status["kind"].as_str(), status["code"].as_i64()),
        (Some("Status"), Some(401))
    );

    // A tampered token.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(
        cp.fails(&["get", "pods", "--token", &tampered])
            .contains("Unauthorized")
    );

    // An expired token, signed with the cluster's own key.
    let keys = TokenKeys::load_or_create(&cp.dir.join("tls/sa.key")).unwrap();
    let uid = cp.json(&["get", "sa", "viewer"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = KubernetesClaims {
        namespace: "default".into(),
        serviceaccount: BoundRef {
            name: "viewer".into(),
            uid,
        },
        pod: None,
        secret: None,
    };
    let expired = keys
        .issue_bound(claims, vec![], jiff_now() - 7200, 3600)
        .unwrap();
    assert!(
        cp.fails(&["get", "pods", "--token", &expired])
            .contains("Unauthorized")
    );

    // Bootstrap tokens: valid until their expiration.
    for (id, expiration, ok) in [
        ("abcdef", "2099-01-01T00:00:00Z", true),
        ("zyxwvu", "2020-01-01T00:00:00Z", false),
    ] {
        cp.ok(&[
            "-n",
            "kube-system",
            "create",
            "secret",
            "generic",
            &format!("bootstrap-token-{id}"),
            "--type=bootstrap.kubernetes.io/token",
            &format!("--from-literal=token-id={id}"),
            "--from-literal=token-secret=0123456789abcdef",
            "--from-literal=usage-bootstrap-authentication=true",
            &format!("--from-literal=expiration={expiration}"),
        ]);
        let bootstrap = format!("{id}.0123456789abcdef");
        let out = cp
            .kubectl(&["auth", "whoami", "--token", &bootstrap])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            ok,
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if ok {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&format!("system:bootstrap:{id}"))
            );
        }
    }

    // `skiff token create` makes such tokens: the one it prints logs in until its ttl runs out.
    let create = |ttl: &str| {
        let out = Command::new(common::skiff_bin())
            .args(["token", "create", "--server", &url, "--ttl", ttl])
            .args(["--groups", "system:bootstrappers:workers"])
            .arg("--data-dir")
            .arg(&cp.dir)
            .output()
            .expect("running skiff token create");
        assert!(
            out.status.success(),
            "skiff token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (lasting, brief) = (create("1h"), create("4s"));
    for token in [&lasting, &brief] {
        let (id, secret) = token.split_once('.').expect("ID.SECRET");
        assert_eq!((id.len(), secret.len()), (6, 16), "{token}");
        let whoami = cp.ok(&["auth", "whoami", "--token", token]);
        assert!(
            whoami.contains(&format!("system:bootstrap:{id}"))
                && whoami.contains("system:bootstrappers:workers"),
            "{whoami}"
        );
    }
    thread::sleep(Duration::from_secs(5));
    assert!(
        cp.fails(&["auth", "whoami", "--token", &brief])
            .contains("Unauthorized")
    );
    cp.ok(&["auth", "whoami", "--token", &lasting]);
    let refused = Command::new(common::skiff_bin())
        .args(["token", "create", "--server", &url, "--groups", "admins"])
        .arg("--data-dir")
        .arg(&cp.dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("system:bootstrappers:"));

    // A certificate from another CA is no way in.
    let other = cp.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let openssl = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=admin/O=system:masters",
        ])
        .arg("-keyout")
        .arg(other.join("key.pem"))
        .arg("-out")
        .arg(other.join("cert.pem"))
        .output()
        .expect("running openssl");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let (ok, body) = curl(&[
        "--cert",
        other.join("cert.pem").to_str().unwrap(),
        "--key",
        other.join("key.pem").to_str().unwrap(),
        &format!("{url}/api/v1/namespaces"),
    ]);
    assert!(
        !body.contains("NamespaceList"),
        "a foreign certificate listed namespaces: {body}"
    );
    // Refused in the TLS handshake (the server stays up: kubectl uses it just below).
    assert!(!ok, "a foreign certificate got an answer: {body}");

    // A token of a deleted ServiceAccount.
    cp.ok(&["delete", "sa", "viewer"]);
    assert!(
        cp.fails(&["get", "pods", "--token", &token])
            .contains("Unauthorized")
    );
}

fn jiff_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}
