//! Direct routing between nodes: each other node's pod CIDR is routed via that node's
//! InternalIP from this node's network namespace (DESIGN.md: L3, no overlay, for nodes that share
//! an L2 segment; `--overlay vxlan`, in overlay.rs, is for nodes that do not). A reconciler
//! over the Node list: routes follow nodes as they come and go.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt as _, api::ListParams};
use tracing::{info, warn};

/// Pod CIDR -> the node address it is reached through, for every node but `me` that has both.
pub fn desired(nodes: &[Node], me: &str) -> BTreeMap<String, Ipv4Addr> {
    nodes
        .iter()
        .filter(|n| n.name_any() != me)
        .filter_map(|n| {
            let cidr = n
                .spec
                .as_ref()?
                .pod_cidr
                .clone()
                .filter(|c| !c.is_empty())?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|ip| !ip.is_loopback())?;
            Some((cidr, ip))
        })
        .collect()
}

/// Keeps the routes of the node's namespace (`netns`, or the agent's own) in line with the
/// Nodes, every few seconds.
pub async fn run(client: Client, me: String, netns: Option<PathBuf>) {
    let nodes: Api<Node> = Api::all(client);
    let mut installed: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    loop {
        match nodes.list(&ListParams::default()).await {
            Ok(list) => {
                let want = desired(&list.items, &me);
                for (cidr, via) in &want {
                    if installed.get(cidr) == Some(via) {
                        continue;
                    }
                    let gateway = via.to_string();
                    match ip(
                        netns.as_deref(),
                        &["route", "replace", cidr, "via", &gateway],
                    ) {
                        Ok(()) => {
                            info!(%cidr, %via, "routing another node's pods");
                            installed.insert(cidr.clone(), *via);
                        }
                        Err(e) => {
                            warn!(%cidr, %via, error = %e, "adding a route to another node's pods");
                        }
                    }
                }
                let gone: Vec<String> = installed
                    .keys()
                    .filter(|c| !want.contains_key(*c))
                    .cloned()
                    .collect();
                for cidr in gone {
                    if let Err(e) = ip(netns.as_deref(), &["route", "del", &cidr]) {
                        warn!(%cidr, error = %e, "removing the route of a node that left");
                    }
                    installed.remove(&cidr);
                }
            }
            Err(e) => warn!(error = %e, "listing nodes for pod routes"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn ip(netns: Option<&Path>, args: &[&str]) -> Result<(), String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", ns.display())).arg("ip");
            cmd
        }
        None => Command::new("ip"),
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": name},
                                      {"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_address_is_routed() {
        let nodes = [
            node("n1", Some("10.244.0.0/24"), "198.18.0.1"),
            node("n2", Some("10.244.1.0/24"), "198.18.0.2"),
            node("n3", None, "198.18.0.3"),
            node("n4", Some("10.244.3.0/24"), "127.0.0.1"),
        ];
        let routes = desired(&nodes, "n1");
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![("10.244.1.0/24".to_owned(), Ipv4Addr::new(198, 18, 0, 2))],
            "not itself, not without a CIDR, never via loopback"
        );
    }
}
