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
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;

use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it (ID.SECRET) on stdout.
    Create(CreateArgs),
    /// List the bootstrap tokens, as `kubeadm token list` does.
    List(ListArgs),
    /// Delete bootstrap tokens by ID or ID.SECRET; nodes can no longer join with them.
    Delete(DeleteArgs),
}

/// How to reach the server as its admin.
#[derive(Args, Debug)]
pub struct Admin {
    /// The server's state directory: its CA and admin client certificate are used to talk to it.
    #[arg(long, default_value = "/var/lib/skiff/server")]
    data_dir: PathBuf,
    /// The API server.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    admin: Admin,
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

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    admin: Admin,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    admin: Admin,
    /// Token IDs (the part before the dot) or whole tokens.
    #[arg(required = true)]
    tokens: Vec<String>,
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

const NAMESPACE: &str = "kube-system";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            TokenCommand::Create(args) => println!("{}", create(&args).await?),
            TokenCommand::List(args) => {
                let list = secrets(&args.admin)
                    .await?
                    .list(&ListParams::default().fields(&format!("type={TOKEN_TYPE}")))
                    .await
                    .map_err(refused)?;
                let tokens: Vec<TokenInfo> = list
                    .items
                    .iter()
                    .filter_map(TokenInfo::from_secret)
                    .collect();
                print!("{}", render(&tokens, args.output, jiff::Timestamp::now())?);
            }
            TokenCommand::Delete(args) => {
                let api = secrets(&args.admin).await?;
                for token in &args.tokens {
                    let id = token.split('.').next().unwrap_or_default();
                    if id.len() != 6
                        || !id
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    {
                        bail!("{token:?} is not a token ID (6 characters of a-z0-9) or ID.SECRET");
                    }
                    match api
                        .delete(&format!("bootstrap-token-{id}"), &DeleteParams::default())
                        .await
                    {
                        Ok(_) => println!("bootstrap token {id:?} deleted"),
                        Err(kube::Error::Api(s)) if s.code == 404 => {
                            bail!("bootstrap token {id:?} not found")
                        }
                        Err(e) => return Err(refused(e)),
                    }
                }
            }
        }
        Ok(())
    })
}

/// Creates a bootstrap token as the admin; returns it (ID.SECRET).
pub async fn create(args: &CreateArgs) -> anyhow::Result<String> {
    for group in &args.groups {
        if !group.starts_with("system:bootstrappers:") {
            bail!("group {group:?}: bootstrap token groups must start with system:bootstrappers:");
        }
    }
    let (id, secret) = (random_chars(6)?, random_chars(16)?);
    let secret_obj = bootstrap_secret(&id, &secret, args, jiff::Timestamp::now());
    let secret_obj: Secret = serde_json::from_value(secret_obj)?;
    secrets(&args.admin)
        .await?
        .create(&PostParams::default(), &secret_obj)
        .await
        .map_err(refused)?;
    Ok(format!("{id}.{secret}"))
}

impl CreateArgs {
    /// A token for `server` with the CA and admin credentials of `data_dir`, valid for `ttl`.
    pub fn new(
        data_dir: &Path,
        server: &str,
        ttl: jiff::SignedDuration,
        description: &str,
    ) -> Self {
        Self {
            admin: Admin {
                data_dir: data_dir.to_owned(),
                server: server.to_owned(),
            },
            ttl,
            groups: Vec::new(),
            description: Some(description.to_owned()),
        }
    }
}

fn refused(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("the API server refused: {}", s.message),
        other => anyhow::Error::new(other)
            .context("talking to the API server: is `skiff server` running?"),
    }
}

/// The Secrets API of kube-system, as the admin of `--data-dir`.
async fn secrets(admin: &Admin) -> anyhow::Result<Api<Secret>> {
    let uri: hyper::Uri = admin
        .server
        .parse()
        .with_context(|| format!("--server {:?} is not a URL", admin.server))?;
    if uri.scheme_str() != Some("https") {
        bail!(
            "--server {:?}: skiff's API server speaks https",
            admin.server
        );
    }
    let tls_dir = admin.data_dir.join("tls");
    let read = |name: &str| {
        let file = tls_dir.join(name);
        fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {}: is --data-dir the server's state directory, and are you allowed to read it?",
                file.display()
            )
        })
    };
    let (ca, cert, key) = (read("ca.crt")?, read("admin.crt")?, read("admin.key")?);
    let client = crate::server::client_from_pem(&admin.server, &ca, &cert, &key, "admin").await?;
    Ok(Api::namespaced(client, NAMESPACE))
}

/// A bootstrap token as `skiff token list` shows it.
#[derive(Debug, serde::Serialize)]
struct TokenInfo {
    token: String,
    expires: Option<jiff::Timestamp>,
    usages: Vec<String>,
    description: String,
    extra_groups: Vec<String>,
}

impl TokenInfo {
    fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        };
        let id = text("token-id")?;
        let usages = data
            .keys()
            .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
            .filter(|u| text(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .map(str::to_owned)
            .collect();
        Some(Self {
            token: format!("{id}.{}", text("token-secret").unwrap_or_default()),
            expires: text("expiration").and_then(|e| e.parse().ok()),
            usages,
            description: text("description").unwrap_or_default(),
            extra_groups: text("auth-extra-groups")
                .map(|g| g.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

fn render(tokens: &[TokenInfo], format: Format, now: jiff::Timestamp) -> anyhow::Result<String> {
    if format == Format::Json {
        return Ok(serde_json::to_string_pretty(&json!({"tokens": tokens}))? + "\n");
    }
    if tokens.is_empty() {
        return Ok("No bootstrap tokens.\n".to_owned());
    }
    let rows = tokens
        .iter()
        .map(|t| {
            let (ttl, expires) = match t.expires {
                None => ("<forever>".to_owned(), "<never>".to_owned()),
                Some(e) if e <= now => ("<invalid>".to_owned(), e.to_string()),
                Some(e) => {
                    let left = e.duration_since(now);
                    let ttl = if left.as_hours() >= 1 {
                        format!("{}h", left.as_hours())
                    } else {
                        format!("{}m", left.as_mins().max(1))
                    };
                    (ttl, e.to_string())
                }
            };
            vec![
                t.token.clone(),
                ttl,
                expires,
                t.usages.join(","),
                if t.description.is_empty() {
                    "<none>".into()
                } else {
                    t.description.clone()
                },
                t.extra_groups.join(","),
            ]
        })
        .collect();
    Ok(output::table(
        &[
            "token",
            "ttl",
            "expires",
            "usages",
            "description",
            "extra groups",
        ],
        rows,
    ) + "\n")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ttl: &str, groups: &[&str]) -> CreateArgs {
        CreateArgs {
            admin: Admin {
                data_dir: PathBuf::new(),
                server: String::new(),
            },
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

    #[test]
    fn tokens_list_like_kubeadm() {
        let now: jiff::Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
        let secret = |id: &str, expiration: Option<&str>| -> Secret {
            let mut s = bootstrap_secret(
                id,
                "0123456789abcdef",
                &args("0", &["system:bootstrappers:workers"]),
                now,
            );
            if let Some(e) = expiration {
                s["stringData"]["expiration"] = json!(e);
            }
            // The server turns stringData into data.
            let data: serde_json::Map<String, serde_json::Value> = s["stringData"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    use base64::Engine as _;
                    (
                        k.clone(),
                        json!(
                            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap())
                        ),
                    )
                })
                .collect();
            s["data"] = json!(data);
            serde_json::from_value(s).unwrap()
        };
        let tokens: Vec<TokenInfo> = [
            secret("abcdef", Some("2026-11-27T10:30:00Z")),
            secret("ghijkl", None),
            secret("mnopqr", Some("2026-11-27T07:00:00Z")),
        ]
        .iter()
        .filter_map(TokenInfo::from_secret)
        .collect();
        let table = render(&tokens, Format::Table, now).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TOKEN"), "{table}");
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            first,
            [
                "abcdef.0123456789abcdef",
                "2h",
                "2026-11-27T10:30:00Z",
                "authentication,signing",
                "join",
                "node-2",
                "system:bootstrappers:workers"
            ],
            "{table}"
        );
        assert!(
            lines[2].contains("<forever>") && lines[2].contains("<never>"),
            "{table}"
        );
        assert!(lines[3].contains("<invalid>"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&tokens, Format::Json, now).unwrap()).unwrap();
        assert_eq!(
            json["tokens"][0]["extra_groups"][0],
            "system:bootstrappers:workers"
        );
        assert_eq!(
            render(&[], Format::Table, now).unwrap(),
            "No bootstrap tokens.\n"
        );
    }
}
