//! skiff-cni: the CNI 1.1 plugin library (config, results, IPAM, pod network setup).
//!
//! The data path per pod: a veth pair, the pod side (`CNI_IFNAME`, usually eth0) with the pod
//! address as a /32 and a default route through the link-local gateway 169.254.1.1, which a
//! permanent neighbour entry maps to the host side's MAC; the host side with a /32 route and a
//! permanent neighbour entry back to the pod. No bridge, no ARP, no iptables.

pub mod config;
pub mod error;
pub mod install;
pub mod ipam;
pub mod netlink;
pub mod plugin;
pub mod types;

pub use config::{AgentStatus, Command, Env, NetConf};
pub use error::{CniError, Code};
pub use plugin::run;
