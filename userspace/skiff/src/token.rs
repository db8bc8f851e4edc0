//! `skiff token create`: bootstrap tokens for joining nodes, stored the way Kubernetes stores
//! them (a `bootstrap.kubernetes.io/token` Secret named `bootstrap-token-ID` in kube-system), so
//! the API server's bootstrap authenticator and anything written for kubeadm tokens understand
//! them.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use skiff_apiserver::tls::{Leaf, client_config, not_after};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it (ID.SECRET) on stdout.
    Create(CreateArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The server's state directory: its CA and admin client certificate are used to talk to it.
    #[arg(long, default_value = "/var/lib/skiff/server")]
    data_dir: PathBuf,
    /// The API server.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    /// How long the token stays valid (e.g. 24h, 90m, 1h30m); 0 never expires.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: jiff::SignedDuration,
    /// Extra groups the token authenticates as (each must start with system:bootstrappers:).
    #[arg(long = "groups", value_delimiter = ',')]
    groups: Vec<String>,
    /// A human-readable note stored with the token.
    #[arg(long)]
    description: Option<String>,
}

fn parse_ttl(s: &str) -> Result<jiff::SignedDuration, String> {
    if s == "0" {
        return Ok(jiff::SignedDuration::ZERO);
    }
    let ttl: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 24h, 90m or 1h30m: {e}"))?;
    if ttl.is_negative() {
        return Err(format!("{s:?}: the time to live cannot be negative"));
    }
    Ok(ttl)
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => {
            for group in &args.groups {
                if !group.starts_with("system:bootstrappers:") {
                    bail!(
                        "group {group:?}: bootstrap token groups must start with system:bootstrappers:"
                    );
                }
            }
            let (id, secret) = (random_chars(6)?, random_chars(16)?);
            let secret_obj = bootstrap_secret(&id, &secret, &args, jiff::Timestamp::now());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(post(
                &args.server,
                &args.data_dir,
                "/api/v1/namespaces/kube-system/secrets",
                &secret_obj,
            ))?;
            println!("{id}.{secret}");
            Ok(())
        }
    }
}

/// The Secret a bootstrap token lives in (the layout kubeadm and the bootstrap authenticator
/// share).
fn bootstrap_secret(
    id: &str,
    secret: &str,
    args: &CreateArgs,
    now: jiff::Timestamp,
) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    data.insert("token-id".into(), id.into());
    data.insert("token-secret".into(), secret.into());
    data.insert("usage-bootstrap-authentication".into(), "true".into());
    data.insert("usage-bootstrap-signing".into(), "true".into());
    if !args.ttl.is_zero() {
        let expiration = now
            .checked_add(args.ttl)
            .unwrap_or(jiff::Timestamp::MAX)
            .round(jiff::Unit::Second)
            .unwrap_or(now);
        data.insert("expiration".into(), expiration.to_string().into());
    }
    if !args.groups.is_empty() {
        data.insert("auth-extra-groups".into(), args.groups.join(",").into());
    }
    if let Some(description) = &args.description {
        data.insert("description".into(), description.clone().into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    })
}

/// `n` characters of [a-z0-9] from the kernel's random source (the token alphabet Kubernetes
/// accepts).
fn random_chars(n: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut urandom = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut byte = [0u8; 1];
    while out.len() < n {
        urandom.read_exact(&mut byte)?;
        // Rejection sampling keeps the characters uniform: 252 = 7 * 36.
        if byte[0] < 252 {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// POSTs `body` to the API server as the admin of `data_dir`, failing with the server's message
/// unless it answers 2xx.
async fn post(
    server: &str,
    data_dir: &Path,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let tls_dir = data_dir.join("tls");
    let read = |name: &str| {
        let file = tls_dir.join(name);
        fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {}: is --data-dir the server's state directory, and are you allowed to read it?",
                file.display()
            )
        })
    };
    let (ca_pem, cert_pem, key_pem) = (read("ca.crt")?, read("admin.crt")?, read("admin.key")?);
    let admin = Leaf {
        not_after: not_after(&cert_pem, &tls_dir.join("admin.crt"))?,
        cert_pem,
        key_pem,
    };
    let tls = tokio_rustls::TlsConnector::from(client_config(&ca_pem, &admin)?);

    let uri: hyper::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--server {server:?}: skiff's API server speaks https");
    }
    let host = uri.host().context("--server has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {server}: is `skiff server` running?"))?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .with_context(|| format!("{host:?} is not a server name"))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {server}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let request = Request::post(path)
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = conn.await;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        bail!("the API server refused: {status}: {message}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ttl: &str, groups: &[&str]) -> CreateArgs {
        CreateArgs {
            data_dir: PathBuf::new(),
            server: String::new(),
            ttl: parse_ttl(ttl).unwrap(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            description: Some("join node-2".into()),
        }
    }

    #[test]
    fn token_parts_use_the_kubernetes_alphabet() {
        let id = random_chars(6).unwrap();
        let secret = random_chars(16).unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(
            (id.clone() + &secret)
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(secret, random_chars(16).unwrap());
    }

    #[test]
    fn secret_has_the_bootstrap_layout() {
        let now: jiff::Timestamp = "2026-11-27T08:00:00.5Z".parse().unwrap();
        let s = bootstrap_secret(
            "abcdef",
            "0123456789abcdef",
            &args("1h30m", &["system:bootstrappers:workers"]),
            now,
        );
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        let d = &s["stringData"];
        assert_eq!(d["token-id"], "abcdef");
        assert_eq!(d["token-secret"], "0123456789abcdef");
        assert_eq!(d["usage-bootstrap-authentication"], "true");
        assert_eq!(d["expiration"], "2026-11-27T09:30:01Z");
        assert_eq!(d["auth-extra-groups"], "system:bootstrappers:workers");
        assert_eq!(d["description"], "join node-2");
    }

    #[test]
    fn zero_ttl_never_expires_and_bad_ttls_are_refused() {
        let s = bootstrap_secret(
            "abcdef",
            "0123456789abcdef",
            &args("0", &[]),
            jiff::Timestamp::now(),
        );
        assert!(s["stringData"].get("expiration").is_none());
        assert!(s["stringData"].get("auth-extra-groups").is_none());
        assert_eq!(
            parse_ttl("24h").unwrap(),
            jiff::SignedDuration::from_hours(24)
        );
        assert!(parse_ttl("soon").unwrap_err().contains("not a duration"));
        assert!(parse_ttl("-1h").is_err());
    }
}
