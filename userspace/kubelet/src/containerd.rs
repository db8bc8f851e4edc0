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
}

/// containerd 1.6's TOML (config version 2) for `paths`.
#[must_use]
pub fn config(paths: &ContainerdPaths<'_>) -> String {
    let (d, s) = (paths.dir.display(), paths.socket.display());
    let (bin, conf) = (paths.cni_bin_dir.display(), paths.cni_conf_dir.display());
    let image = paths.sandbox_image;
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
"#
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
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
