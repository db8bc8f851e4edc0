//! Registry credentials from a pod's imagePullSecrets (`kubernetes.io/dockerconfigjson` and
//! the older `kubernetes.io/dockercfg`), matched to the image's registry.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use serde::Deserialize;

use crate::runtime::cri;

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 of `user:password`.
    #[serde(default)]
    auth: String,
}

#[derive(Debug, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The registry host of an image reference (`docker.io` for Docker Hub short names).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The host a credentials key names: `https://index.docker.io/v1/` and friends -> `docker.io`.
fn key_host(key: &str) -> &str {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

fn entries(data: &BTreeMap<String, ByteString>) -> BTreeMap<String, Entry> {
    if let Some(json) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<DockerConfigJson>(&json.0)
            .map(|c| c.auths)
            .unwrap_or_default()
    } else if let Some(cfg) = data.get(".dockercfg") {
        serde_json::from_slice(&cfg.0).unwrap_or_default()
    } else {
        BTreeMap::new()
    }
}

/// Credentials for `image` from `secrets`, in the order to try them.
pub fn credentials_for(image: &str, secrets: &[Secret]) -> Vec<cri::AuthConfig> {
    let registry = registry_of(image);
    let mut out = Vec::new();
    for secret in secrets {
        for (key, e) in entries(secret.data.as_ref().unwrap_or(&BTreeMap::new())) {
            if key_host(&key) != registry {
                continue;
            }
            let (mut username, mut password) = (e.username, e.password);
            if username.is_empty()
                && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&e.auth)
                && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
            {
                (username, password) = (u.to_owned(), p.to_owned());
            }
            out.push(cri::AuthConfig {
                username,
                password,
                server_address: registry.to_owned(),
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, value: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn registries_of_references() {
        assert_eq!(registry_of("busybox:1.35"), "docker.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("docker.io/library/busybox:1.35"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("ghcr.io/o/app@sha256:abc"), "ghcr.io");
    }

    #[test]
    fn matching_credentials_from_both_secret_formats() {
        let json = secret(
            ".dockerconfigjson",
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"hub","password":"pw"}}}"#,
        );
        let cfg = secret(
            ".dockercfg",
            r#"{"127.0.0.1:5000":{"username":"old","password":"x"}}"#,
        );
        let creds = credentials_for("127.0.0.1:5000/app:v1", &[json.clone(), cfg]);
        let users: Vec<(&str, &str)> = creds
            .iter()
            .map(|c| (c.username.as_str(), c.password.as_str()))
            .collect();
        assert_eq!(users, [("user", "pass"), ("old", "x")]);
        assert_eq!(creds[0].server_address, "127.0.0.1:5000");
        let hub = credentials_for("busybox", std::slice::from_ref(&json));
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].username, "hub");
        assert!(credentials_for("quay.io/x/y", &[json]).is_empty());
        // Garbage is no credential, not a panic.
        assert!(credentials_for("busybox", &[secret(".dockerconfigjson", "{")]).is_empty());
    }
}
