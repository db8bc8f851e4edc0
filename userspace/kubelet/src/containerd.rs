//! The containerd configuration skiff runs a node's containerd with (the agent, and tests that
//! start their own): every path under one directory, the CRI with its CNI directories, and the
//! settings these machines need.

use std::path::Path;

/// Where a node's containerd keeps things and finds its CNI plugins.
pub struct ContainerdPaths<'a> {
    /// State, root and runc's directory go under here.
    pub dir: &'a Path,
    /// The gRPC socket (the ttrpc one is next to it).
    pub socket: &'a Path,
    pub cni_bin_dir: &'a Path,
    pub cni_conf_dir: &'a Path,
    /// The pod sandbox ("pause") image.
    pub sandbox_image: &'a str,
    /// containerd's registry host directory (`HOST[:PORT]/hosts.toml` files); see
    /// [`write_insecure_registry`].
    pub registry_hosts: Option<&'a Path>,
}

/// containerd 1.6's TOML (config version 2) for `paths`.
#[must_use]
pub fn config(paths: &ContainerdPaths<'_>) -> String {
    let (d, s) = (paths.dir.display(), paths.socket.display());
    let (bin, conf) = (paths.cni_bin_dir.display(), paths.cni_conf_dir.display());
    let image = paths.sandbox_image;
    let registry = paths.registry_hosts.map_or_else(String::new, |dir| {
        format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{}\"\n",
            dir.display()
        )
    });
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{s}"
[ttrpc]
  address = "{s}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  # Machines without CAP_SYS_RESOURCE cannot give the sandbox oom_score_adj -998.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{d}/runc"
{registry}"#
    )
}

/// Lets containerd pull from `registry` (`HOST[:PORT]`) over plain HTTP (or HTTPS without
/// verifying its certificate), as a local or lab registry needs: writes `DIR/HOST/hosts.toml`.
pub fn write_insecure_registry(dir: &Path, registry: &str) -> std::io::Result<()> {
    if registry.is_empty() || registry.contains(['/', '"', '\\']) || registry.starts_with('.') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{registry:?} is not a registry HOST[:PORT]"),
        ));
    }
    let host_dir = dir.join(registry);
    std::fs::create_dir_all(&host_dir)?;
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_lives_under_the_given_paths() {
        let text = config(&ContainerdPaths {
            dir: Path::new("/d"),
            socket: Path::new("/d/c.sock"),
            cni_bin_dir: Path::new("/cni/bin"),
            cni_conf_dir: Path::new("/cni/net.d"),
            sandbox_image: "local/pause:1",
            registry_hosts: Some(Path::new("/d/certs.d")),
        });
        for line in [
            "root = \"/d/root\"",
            "address = \"/d/c.sock\"",
            "address = \"/d/c.sock.ttrpc\"",
            "sandbox_image = \"local/pause:1\"",
            "restrict_oom_score_adj = true",
            "bin_dir = \"/cni/bin\"",
            "conf_dir = \"/cni/net.d\"",
            "Root = \"/d/runc\"",
            "config_path = \"/d/certs.d\"",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn insecure_registries_get_a_plain_http_host_file() {
        let dir = std::env::temp_dir().join(format!("skiff-registry-{}", std::process::id()));
        write_insecure_registry(&dir, "127.0.0.1:5000").expect("written");
        let text = std::fs::read_to_string(dir.join("127.0.0.1:5000/hosts.toml")).expect("file");
        assert!(
            text.contains("server = \"http://127.0.0.1:5000\""),
            "{text}"
        );
        assert!(text.contains("skip_verify = true"), "{text}");
        for bad in ["", "../x", "a/b", ".."] {
            assert!(write_insecure_registry(&dir, bad).is_err(), "{bad:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
