//! What the node agent does for the plugin: install the binary and a conflist where the
//! runtime looks (defaults `/opt/cni/bin`, `/etc/cni/net.d`), and publish its readiness and
//! pod CIDR in the status file the plugin reads (STATUS, and IPAM without a configured subnet).
//! The binary and the status file go to a temporary file first and are renamed into place, so
//! nothing ever executes or parses a half-written one.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::config::{AgentStatus, DEFAULT_AGENT_STATUS_FILE, DEFAULT_DATA_DIR, PLUGIN_TYPE};

/// Default directory runtimes search for plugin binaries.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Default directory runtimes read network configs from.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// The conflist's file name: sorts before the usual `87-podman-bridge.conflist` and
/// `10-containerd-net.conflist`, as runtimes pick the first file.
pub const CONFLIST_NAME: &str = "05-skiff.conflist";

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct InstallError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError { what, path, source }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("skiff"),
        std::process::id()
    ));
    fs::write(&tmp, bytes).map_err(err("writing", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(err("chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err("renaming into", path)(e)
    })
}

/// Copies the plugin binary into `bin_dir` as `skiff-cni` (replacing an older one atomically,
/// so a runtime exec'ing it meanwhile gets either the old or the new file, never ETXTBSY).
pub fn install_binary(binary: &Path, bin_dir: &Path) -> Result<PathBuf, InstallError> {
    let bytes = fs::read(binary).map_err(err("reading", binary))?;
    let dest = bin_dir.join(PLUGIN_TYPE);
    write_atomic(&dest, &bytes, 0o755)?;
    Ok(dest)
}

/// The settings of the conflist the agent installs.
#[derive(Debug, Clone)]
pub struct ConflistOptions {
    /// The network name (IPAM state and GC are per name).
    pub network: String,
    pub mtu: u32,
    /// IPAM state directory.
    pub data_dir: PathBuf,
    /// The agent's status file (readiness and pod CIDR).
    pub status_file: PathBuf,
    /// The agent's bpffs directory, for the eBPF fast path; `None` for plain routing.
    pub bpffs: Option<PathBuf>,
    /// Chain Debian's `portmap` after skiff-cni, for hostPort.
    pub portmap: bool,
}

impl Default for ConflistOptions {
    fn default() -> Self {
        Self {
            network: "skiff".into(),
            mtu: 1500,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            status_file: PathBuf::from(DEFAULT_AGENT_STATUS_FILE),
            bpffs: None,
            portmap: false,
        }
    }
}

/// The conflist JSON for `opts`.
#[must_use]
pub fn conflist(opts: &ConflistOptions) -> Value {
    let mut plugin = json!({
        "type": PLUGIN_TYPE,
        "mtu": opts.mtu,
        "agentStatusFile": opts.status_file,
        "ipam": {"dataDir": opts.data_dir},
    });
    if let Some(bpffs) = &opts.bpffs {
        plugin["bpffs"] = json!(bpffs);
    }
    let mut plugins = vec![plugin];
    if opts.portmap {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    json!({
        // 1.0.0 for runtimes that predate 1.1 (containerd 1.6, podman 4); 1.1 ones pick
        // the newest of cniVersions and get GC and STATUS.
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": opts.network,
        "plugins": plugins,
    })
}

/// Writes the conflist into `conf_dir`; returns its path. Unlike the binary it is written in
/// place (one small write): containerd 1.6 reloads its CNI config on write events and misses
/// a file renamed into the directory.
pub fn install_conflist(conf_dir: &Path, opts: &ConflistOptions) -> Result<PathBuf, InstallError> {
    fs::create_dir_all(conf_dir).map_err(err("creating", conf_dir))?;
    let dest = conf_dir.join(CONFLIST_NAME);
    let mut text = serde_json::to_vec_pretty(&conflist(opts)).unwrap_or_default();
    text.push(b'\n');
    if fs::read(&dest).is_ok_and(|old| old == text) {
        return Ok(dest);
    }
    fs::write(&dest, &text).map_err(err("writing", &dest))?;
    Ok(dest)
}

/// Publishes the agent's status for the plugin.
pub fn write_status(path: &Path, status: &AgentStatus) -> Result<(), InstallError> {
    let text = serde_json::to_vec(status).unwrap_or_default();
    write_atomic(path, &text, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NetConf, config::AgentStatus, types::plugin_config};

    #[test]
    fn installs_binary_conflist_and_status() {
        let dir = std::env::temp_dir().join(format!("skiff-cni-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let src = dir.join("src-binary");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&src, b"#!/bin/true\n").unwrap();
        let bin = install_binary(&src, &dir.join("bin")).unwrap();
        assert_eq!(bin, dir.join("bin/skiff-cni"));
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        fs::write(&src, b"#!/bin/false\n").unwrap();
        install_binary(&src, &dir.join("bin")).unwrap();
        assert_eq!(fs::read(&bin).unwrap(), b"#!/bin/false\n");

        let opts = ConflistOptions {
            status_file: dir.join("status.json"),
            bpffs: Some(PathBuf::from("/sys/fs/bpf/skiff")),
            portmap: true,
            ..ConflistOptions::default()
        };
        let path = install_conflist(&dir.join("net.d"), &opts).unwrap();
        let list: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(list["plugins"][1]["type"], "portmap");
        // The runtime's view of our plugin is a valid config that takes its subnet from the
        // agent's status file.
        let conf = plugin_config(&list, 0, None).unwrap();
        let conf = NetConf::parse(&serde_json::to_vec(&conf).unwrap()).unwrap();
        assert_eq!(conf.status_file(), Some(dir.join("status.json")));
        write_status(
            &dir.join("status.json"),
            &AgentStatus {
                ready: true,
                datapath_ready: true,
                pod_cidr: Some("10.244.3.0/24".parse().unwrap()),
                message: None,
            },
        )
        .unwrap();
        assert_eq!(conf.subnet().unwrap().to_string(), "10.244.3.0/24");
        let leftovers: Vec<_> = fs::read_dir(dir.join("net.d")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
