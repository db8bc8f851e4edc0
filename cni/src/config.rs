//! The network configuration a runtime passes on stdin (one plugin of a conflist, with `name`
//! and `cniVersion` injected), the `CNI_*` environment, and version negotiation.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{CniError, Code, Result},
    ipam::Ipv4Net,
    types::CniResult,
};

/// Every `cniVersion` this plugin understands, oldest first. 0.1/0.2 results had another
/// shape and no runtime in use still asks for them.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used when the runtime's request cannot be decoded at all.
pub const LATEST_VERSION: &str = "1.1.0";

/// The plugin `type` this binary answers to.
pub const PLUGIN_TYPE: &str = "skiff-cni";

/// Where the agent writes its readiness and the node's pod CIDR (see [`AgentStatus`]).
pub const DEFAULT_AGENT_STATUS_FILE: &str = "/run/skiff/cni-status.json";

/// Default IPAM state directory (one subdirectory per network name).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/skiff";

/// The pod side's default gateway: a link-local address no pod uses, answered by a static
/// neighbour entry for the host veth's MAC, so no ARP proxying or bridge is needed.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Parses a version string into a comparable tuple.
fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    );
    parts.next().is_none().then_some(t)
}

/// True when `v` is at least `min` (both dotted versions).
#[must_use]
pub fn version_at_least(v: &str, min: &str) -> bool {
    matches!((version_tuple(v), version_tuple(min)), (Some(a), Some(b)) if a >= b)
}

/// Fails with code 1 unless `v` is a version this plugin speaks.
pub fn check_version(v: &str) -> Result<()> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            Code::IncompatibleVersion,
            "incompatible CNI version",
            format!(
                "config asks for cniVersion {v:?}; this plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// One plugin's configuration. Unknown keys are ignored on purpose: runtimes add their own
/// (`capabilities`, `args`, `runtimeConfig`, ...) and the spec requires plugins to tolerate them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The spec version the runtime expects the result in.
    pub cni_version: String,
    /// The network's name; IPAM state and attachments are keyed by it.
    pub name: String,
    /// Must be [`PLUGIN_TYPE`].
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// MTU of both veth ends (default 1500).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Address management.
    #[serde(default)]
    pub ipam: IpamConf,
    /// Passed through into the result's `dns`.
    #[serde(default)]
    pub dns: Option<Value>,
    /// Where the agent reports readiness and the pod CIDR. When unset, STATUS consults
    /// [`DEFAULT_AGENT_STATUS_FILE`] only if the subnet also comes from the agent.
    #[serde(default)]
    pub agent_status_file: Option<PathBuf>,
    /// A bpffs directory (the agent's, e.g. `/sys/fs/bpf/skiff`): when set, each pod's host
    /// veth gets the `skiff-pod` tc program and the pod an entry in the endpoint map pinned
    /// there, so traffic between pods of this node skips the node's routing. When unset, pods
    /// are plain routed veths.
    #[serde(default)]
    pub bpffs: Option<PathBuf>,
    /// The previous plugin's result (chaining), or ADD's result on CHECK and DEL.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments that must survive (CNI 1.1).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC: the same list under the key libcni 1.2.0 also sends (containernetworking/cni#1101).
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments_alias: Option<Vec<Attachment>>,
}

/// IPAM settings: skiff's built-in host-local-like allocator.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// Only the built-in allocator is supported: absent, empty or `"skiff"`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The pool. When absent, the `podCIDR` in the agent status file is used.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// An address of the subnet never handed out (default: the subnet's first address).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Where allocations are persisted (default [`DEFAULT_DATA_DIR`]).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

/// One attachment in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// What the agent writes to its status file: whether pods can be networked, and the node's
/// pod CIDR (from `Node.spec.podCIDR`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The agent has set up the node's data path and can network new pods.
    pub ready: bool,
    /// False when existing pods may have lost connectivity too (STATUS answers 51, not 50).
    #[serde(default = "yes")]
    pub datapath_ready: bool,
    /// The node's pod CIDR.
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<Ipv4Net>,
    /// Why the agent is not ready.
    #[serde(default)]
    pub message: Option<String>,
}

fn yes() -> bool {
    true
}

impl AgentStatus {
    /// Reads the status file; a missing or unreadable file means "not available" (code 50).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CniError::new(
                Code::NotAvailable,
                "skiff agent is not running on this node",
                format!("reading {}: {e}", path.display()),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            CniError::new(
                Code::NotAvailable,
                "skiff agent status is unreadable",
                format!("{}: {e}", path.display()),
            )
        })
    }
}

impl NetConf {
    /// Decodes and validates stdin. Decode failures are code 6, invalid values code 7, an
    /// unsupported version code 1.
    pub fn parse(stdin: &[u8]) -> Result<Self> {
        let conf: Self = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(Code::Decode, "cannot decode network config", e))?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<()> {
        check_version(&self.cni_version)?;
        let invalid =
            |msg: &str, details: String| Err(CniError::new(Code::InvalidConfig, msg, details));
        if self.plugin_type != PLUGIN_TYPE {
            return invalid(
                "wrong plugin type",
                format!("type is {:?}, expected {PLUGIN_TYPE:?}", self.plugin_type),
            );
        }
        // The name becomes a directory under dataDir; the spec's charset keeps it safe.
        if !valid_id(&self.name) {
            return invalid(
                "invalid network name",
                format!(
                    "{:?} must be non-empty [A-Za-z0-9_.-], not . or ..",
                    self.name
                ),
            );
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return invalid("invalid mtu", format!("{mtu} is outside 68..=65535"));
        }
        match self.ipam.kind.as_deref() {
            None | Some("" | "skiff") => {}
            Some(other) => {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    "unsupported ipam type",
                    format!("ipam.type {other:?}: skiff-cni only has its built-in allocator"),
                ));
            }
        }
        if let Some(subnet) = self.ipam.subnet {
            subnet.check_pool()?;
            if let Some(gw) = self.ipam.gateway
                && !subnet.contains(gw)
            {
                return invalid("invalid ipam.gateway", format!("{gw} is outside {subnet}"));
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500)
    }

    #[must_use]
    pub fn data_dir(&self) -> &Path {
        self.ipam
            .data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR))
    }

    /// The status file STATUS must consult, if any: the configured one, or the default when the
    /// subnet itself comes from the agent.
    #[must_use]
    pub fn status_file(&self) -> Option<PathBuf> {
        match (&self.agent_status_file, self.ipam.subnet) {
            (Some(p), _) => Some(p.clone()),
            (None, None) => Some(PathBuf::from(DEFAULT_AGENT_STATUS_FILE)),
            (None, Some(_)) => None,
        }
    }

    /// The pool: from the config, else from the agent's status file (code 11 while the agent
    /// has not written one yet, as the node's podCIDR may simply not be assigned yet).
    pub fn subnet(&self) -> Result<Ipv4Net> {
        if let Some(s) = self.ipam.subnet {
            return Ok(s);
        }
        let path = self
            .status_file()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_STATUS_FILE));
        let status = AgentStatus::read(&path)
            .map_err(|e| CniError::new(Code::TryAgainLater, "no pod CIDR yet", e))?;
        let cidr = status.pod_cidr.ok_or_else(|| {
            CniError::new(
                Code::TryAgainLater,
                "no pod CIDR yet",
                format!("{} has no podCIDR", path.display()),
            )
        })?;
        cidr.check_pool()?;
        Ok(cidr)
    }

    /// The decoded prevResult, if any.
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        self.prev_result
            .as_ref()
            .map(|v| {
                serde_json::from_value(v.clone())
                    .map_err(|e| CniError::new(Code::Decode, "cannot decode prevResult", e))
            })
            .transpose()
    }

    /// GC's list of attachments to keep (empty when the runtime sent none).
    #[must_use]
    pub fn valid_attachments(&self) -> Vec<Attachment> {
        self.valid_attachments
            .clone()
            .or_else(|| self.attachments_alias.clone())
            .unwrap_or_default()
    }
}

/// Network names and container IDs: the spec's `[A-Za-z0-9_.-]`, not `.`/`..`.
#[must_use]
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Interface names: what the kernel accepts (1-15 bytes, no `/`, `:` or whitespace).
#[must_use]
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The verb and the `CNI_*` environment variables it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime has no netns any more (containerd's second DEL).
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

/// The CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Env {
    /// Reads the environment through `get` (so tests need not touch the process
    /// environment). Code 4 for anything missing or malformed.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad =
            |msg: String| CniError::new(Code::InvalidEnvironment, "invalid CNI environment", msg);
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("GC") => Command::Gc,
            Some("STATUS") => Command::Status,
            Some("VERSION") => Command::Version,
            Some(other) => return Err(bad(format!("unknown CNI_COMMAND {other:?}"))),
            None => return Err(bad("CNI_COMMAND is not set".into())),
        };
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let var = |name: &str| get(name).unwrap_or_default();
        let env = Self {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        };
        if needs_attachment {
            if !valid_id(&env.container_id) {
                return Err(bad(format!(
                    "CNI_CONTAINERID {:?} must be non-empty [A-Za-z0-9_.-]",
                    env.container_id
                )));
            }
            if !valid_ifname(&env.ifname) {
                return Err(bad(format!(
                    "CNI_IFNAME {:?} is not a valid interface name",
                    env.ifname
                )));
            }
            if command != Command::Del && env.netns.is_empty() {
                return Err(bad("CNI_NETNS is not set".into()));
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn conf(json: &str) -> Result<NetConf> {
        NetConf::parse(json.as_bytes())
    }

    #[test]
    fn parses_a_full_config() {
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"skiff","type":"skiff-cni","mtu":9000,
                "ipam":{"subnet":"10.244.1.0/24","dataDir":"/tmp/x"},
                "dns":{"nameservers":["10.96.0.10"]},"capabilities":{"portMappings":true}}"#,
        )
        .unwrap();
        assert_eq!(c.mtu(), 9000);
        assert_eq!(c.subnet().unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(c.data_dir(), Path::new("/tmp/x"));
        assert_eq!(c.status_file(), None);
    }

    #[test]
    fn rejects_bad_configs_with_the_spec_codes() {
        let code = |json: &str| conf(json).unwrap_err().code;
        assert_eq!(code("{not json"), Code::Decode);
        assert_eq!(code(r#"{"cniVersion":"1.1.0"}"#), Code::Decode);
        assert_eq!(
            code(r#"{"cniVersion":"9.9.9","name":"n","type":"skiff-cni"}"#),
            Code::IncompatibleVersion
        );
        assert_eq!(
            code(r#"{"cniVersion":"0.2.0","name":"n","type":"skiff-cni"}"#),
            Code::IncompatibleVersion
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#),
            Code::InvalidConfig
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"../etc","type":"skiff-cni"}"#),
            Code::InvalidConfig
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","mtu":10}"#),
            Code::InvalidConfig
        );
        assert_eq!(
            code(
                r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.0.0.0/33"}}"#
            ),
            Code::Decode
        );
        assert_eq!(
            code(
                r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.0.0.0/31"}}"#
            ),
            Code::InvalidConfig
        );
        assert_eq!(
            code(
                r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}}"#
            ),
            Code::InvalidConfig
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"type":"dhcp"}}"#),
            Code::UnsupportedField
        );
    }

    #[test]
    fn subnet_comes_from_the_agent_status_file() {
        let dir = std::env::temp_dir().join(format!("skiff-cni-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = dir.join("status.json");
        let json = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"skiff-cni","agentStatusFile":"{}"}}"#,
            status.display()
        );
        let c = conf(&json).unwrap();
        assert_eq!(c.subnet().unwrap_err().code, Code::TryAgainLater);
        std::fs::write(&status, r#"{"ready":true,"podCIDR":"10.244.7.0/24"}"#).unwrap();
        assert_eq!(c.subnet().unwrap().to_string(), "10.244.7.0/24");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.1.0", "1.0.0"));
        assert!(version_at_least("0.4.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(version_at_least("0.10.0", "0.4.0"));
        assert!(!version_at_least("garbage", "0.4.0"));
    }

    #[test]
    fn environment_is_validated_per_verb() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Env::from_vars(|k| map.get(k).cloned())
        };
        let add = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(add.command, Command::Add);
        let code = |pairs: &[(&str, &str)]| env(pairs).unwrap_err().code;
        assert_eq!(code(&[]), Code::InvalidEnvironment);
        assert_eq!(code(&[("CNI_COMMAND", "FROB")]), Code::InvalidEnvironment);
        assert_eq!(
            code(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0")
            ]),
            Code::InvalidEnvironment
        );
        assert_eq!(
            code(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a/b"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "eth0")
            ]),
            Code::InvalidEnvironment
        );
        assert_eq!(
            code(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "waytoolonginterface")
            ]),
            Code::InvalidEnvironment
        );
        // DEL tolerates an empty CNI_NETNS (containerd's second DEL); VERSION needs nothing.
        env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        env(&[("CNI_COMMAND", "VERSION")]).unwrap();
        env(&[("CNI_COMMAND", "GC")]).unwrap();
    }
}
