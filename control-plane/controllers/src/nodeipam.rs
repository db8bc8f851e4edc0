//! Node IPAM: every Node gets a pod CIDR (a /24 of the cluster CIDR 10.244.0.0/16 by default),
//! written once to `spec.podCIDR(s)` as kube-controller-manager's range allocator does; the
//! node's CNI plugin hands pod addresses out of it.

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{info, warn};

use crate::{ControllerError, Ctx, events::EventType};

const COMPONENT: &str = "node-controller";

/// An IPv4 network as (address, prefix length).
pub type Cidr = (Ipv4Addr, u8);

/// Parses `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip, len))
}

/// The `index`th subnet of length `sub` inside `cluster`, if there is one.
pub fn subnet(cluster: Cidr, sub: u8, index: u32) -> Option<Cidr> {
    if sub < cluster.1 || sub > 32 {
        return None;
    }
    let count = 1u64 << (sub - cluster.1);
    if u64::from(index) >= count {
        return None;
    }
    let base = u32::from(cluster.0) & mask(cluster.1);
    let size = 1u64 << (32 - sub);
    let start = u64::from(base) + u64::from(index) * size;
    Some((Ipv4Addr::from(u32::try_from(start).ok()?), sub))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let api = Api::<Node>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        // One allocation at a time: two nodes must never get the same range.
        .with_config(kube::runtime::controller::Config::default().concurrency(1))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures_util::future::ready(()))
        .await;
}

fn error_policy(node: Arc<Node>, err: &ControllerError, _: Arc<Ctx>) -> Action {
    warn!(node = %node.name_any(), error = %err, "allocating a pod CIDR; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_some_and(|c| !c.is_empty())
    {
        return Ok(Action::await_change());
    }
    let (cluster, sub) = (ctx.options.cluster_cidr, ctx.options.node_cidr_mask);
    let api: Api<Node> = Api::all(ctx.client.clone());
    // The ranges in use, from the server (not a cache): a node allocated a moment ago counts.
    let used: BTreeSet<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let free = (0..)
        .map_while(|i| subnet(cluster, sub, i))
        .map(|(ip, len)| format!("{ip}/{len}"))
        .find(|c| !used.contains(c));
    let Some(cidr) = free else {
        let message = format!(
            "Node {} has no pod CIDR: every /{sub} of {}/{} is taken",
            node.name_any(),
            cluster.0,
            cluster.1
        );
        ctx.events
            .publish(
                COMPONENT,
                node.as_ref(),
                EventType::Warning,
                "CIDRNotAvailable",
                &message,
            )
            .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    // The resourceVersion makes this a compare-and-swap: a concurrent writer means retry.
    let patch = json!({"metadata": {"resourceVersion": node.resource_version()},
                       "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    api.patch(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    info!(node = %node.name_any(), %cidr, "allocated the node's pod CIDR");
    ctx.events
        .publish(
            COMPONENT,
            node.as_ref(),
            EventType::Normal,
            "CIDRAssignmentSucceeded",
            &format!("Node {} got pod CIDR {cidr}", node.name_any()),
        )
        .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_tile_the_cluster_cidr() {
        let cluster = parse_cidr("10.244.0.0/16").unwrap();
        assert_eq!(
            subnet(cluster, 24, 0),
            Some((Ipv4Addr::new(10, 244, 0, 0), 24))
        );
        assert_eq!(
            subnet(cluster, 24, 3),
            Some((Ipv4Addr::new(10, 244, 3, 0), 24))
        );
        assert_eq!(
            subnet(cluster, 24, 255),
            Some((Ipv4Addr::new(10, 244, 255, 0), 24))
        );
        assert_eq!(subnet(cluster, 24, 256), None);
        assert_eq!(
            subnet(cluster, 8, 0),
            None,
            "a subnet larger than the cluster"
        );
        assert_eq!(parse_cidr("10.244.0.0/33"), None);
        assert_eq!(parse_cidr("nope"), None);
    }
}
