use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
use kube::runtime::watcher::Event;

use super::*;
use crate::testutil::*;

fn feed() -> Feed {
    Feed::new(&WatchConfig::default())
}

fn svc(event: Event<Service>) -> Change {
    Change::Service(Box::new(event))
}

fn sl(event: Event<EndpointSlice>) -> Change {
    Change::Slice(Box::new(event))
}

fn nd(event: Event<Node>) -> Change {
    Change::Node(Box::new(event))
}

fn listed(feed: &mut Feed, proxy: &mut Proxy<skiff_datapath::FakeLbMaps>) {
    for change in [
        svc(Event::Init),
        svc(Event::InitDone),
        sl(Event::Init),
        sl(Event::InitDone),
    ] {
        assert!(feed.handle(proxy, change).is_empty());
    }
}

fn node_object(name: &str, addresses: &[(&str, &str)]) -> Node {
    Node {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(type_, address)| NodeAddress {
                        type_: (*type_).to_owned(),
                        address: (*address).to_owned(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn not_listed_until_every_kind_is() {
    let mut proxy = proxy();
    let mut feed = Feed::new(&WatchConfig {
        node_name: Some(NODE.to_owned()),
        ..WatchConfig::default()
    });
    feed.handle(&mut proxy, svc(Event::Init));
    feed.handle(&mut proxy, svc(Event::InitApply(web("a", "10.96.0.1"))));
    feed.handle(&mut proxy, svc(Event::InitDone));
    feed.handle(&mut proxy, sl(Event::Init));
    feed.handle(&mut proxy, sl(Event::InitDone));
    assert!(!feed.listed(), "the Node has not been listed yet");
    feed.handle(&mut proxy, nd(Event::Init));
    feed.handle(&mut proxy, nd(Event::InitDone));
    assert!(feed.listed());
    // A later relist does not make it unlisted: the old state stays valid meanwhile.
    feed.handle(&mut proxy, svc(Event::Init));
    assert!(feed.listed());
}

#[test]
fn relist_is_buffered_then_replaces_everything() {
    let mut proxy = proxy();
    let mut feed = feed();
    listed(&mut feed, &mut proxy);
    for change in [
        svc(Event::Apply(web("a", "10.96.0.1"))),
        svc(Event::Apply(web("b", "10.96.0.2"))),
        sl(Event::Apply(web_slice("a-1", "a", vec![ep("10.244.0.1")]))),
        sl(Event::Apply(web_slice("b-1", "b", vec![ep("10.244.0.2")]))),
    ] {
        feed.handle(&mut proxy, change);
    }
    proxy.sync();
    assert_eq!(frontends(&proxy), ["10.96.0.1:80/TCP", "10.96.0.2:80/TCP"]);

    // A relist in which b and a's slice are gone and a has a new slice.
    feed.handle(&mut proxy, svc(Event::Init));
    feed.handle(&mut proxy, svc(Event::InitApply(web("a", "10.96.0.1"))));
    feed.handle(&mut proxy, sl(Event::Init));
    feed.handle(
        &mut proxy,
        sl(Event::InitApply(web_slice(
            "a-2",
            "a",
            vec![ep("10.244.0.3")],
        ))),
    );
    // Half-way through, a sync still sees the old, complete state.
    proxy.sync();
    assert_eq!(frontends(&proxy), ["10.96.0.1:80/TCP", "10.96.0.2:80/TCP"]);
    assert_eq!(backends_of(&proxy, "10.96.0.1:80/tcp"), ["10.244.0.1:8080"]);

    feed.handle(&mut proxy, svc(Event::InitDone));
    feed.handle(&mut proxy, sl(Event::InitDone));
    proxy.sync();
    assert_eq!(frontends(&proxy), ["10.96.0.1:80/TCP"]);
    assert_eq!(backends_of(&proxy, "10.96.0.1:80/tcp"), ["10.244.0.3:8080"]);
    assert_eq!(proxy.object_counts(), (1, 1));
}

#[test]
fn refused_objects_are_reported() {
    let mut proxy = proxy();
    let mut feed = feed();
    let mut nameless = web("x", "10.96.0.9");
    nameless.metadata.name = None;
    let refused = feed.handle(&mut proxy, svc(Event::Apply(nameless.clone())));
    assert_eq!(refused.len(), 1, "{refused:?}");
    feed.handle(&mut proxy, svc(Event::Init));
    feed.handle(&mut proxy, svc(Event::InitApply(nameless)));
    let refused = feed.handle(&mut proxy, svc(Event::InitDone));
    assert!(refused[0].contains("no metadata.name"), "{refused:?}");
}

#[test]
fn node_sets_identity_from_its_addresses() {
    let mut proxy = proxy();
    let mut feed = Feed::new(&WatchConfig {
        node_name: Some("n1".to_owned()),
        ..WatchConfig::default()
    });
    let node = node_object(
        "n1",
        &[
            ("Hostname", "n1"),
            ("InternalIP", "192.168.5.2"),
            ("InternalIP", "fd00::2"),
            ("ExternalIP", "203.0.113.7"),
            ("InternalIP", "192.168.5.2"),
        ],
    );
    feed.handle(&mut proxy, nd(Event::Init));
    feed.handle(&mut proxy, nd(Event::InitApply(node)));
    assert_eq!(proxy.node().name, NODE, "applied only at InitDone");
    feed.handle(&mut proxy, nd(Event::InitDone));
    assert_eq!(
        *proxy.node(),
        NodeIdentity::new(
            "n1",
            vec![Ipv4Addr::new(192, 168, 5, 2), Ipv4Addr::new(203, 0, 113, 7)]
        )
    );
    // Another node's object is not ours.
    let other = node_object("n2", &[("InternalIP", "192.168.5.3")]);
    feed.handle(&mut proxy, nd(Event::Apply(other)));
    assert_eq!(proxy.node().name, "n1");
    // Deleting the Node keeps the last addresses.
    let gone = node_object("n1", &[]);
    feed.handle(&mut proxy, nd(Event::Delete(gone)));
    assert_eq!(proxy.node().addresses.len(), 2);
}

#[test]
fn fixed_node_addresses_override_the_node() {
    let mut proxy = proxy();
    let mut feed = Feed::new(&WatchConfig {
        node_name: Some("n1".to_owned()),
        node_addresses: Some(vec![Ipv4Addr::new(10, 0, 0, 1)]),
        ..WatchConfig::default()
    });
    let node = node_object("n1", &[("InternalIP", "192.168.5.2")]);
    feed.handle(&mut proxy, nd(Event::Apply(node)));
    assert_eq!(proxy.node().addresses, [Ipv4Addr::new(10, 0, 0, 1)]);
}

#[test]
fn metrics_render_as_prometheus_text() {
    let handle = WatchHandle::new();
    assert!(!handle.is_ready());
    handle.record_sync(
        SyncReport {
            upserted: 3,
            failed: 1,
            ..SyncReport::default()
        },
        Duration::from_millis(2),
        1,
    );
    handle.mark_ready();
    let metrics = handle.metrics();
    assert!(metrics.ready);
    assert_eq!(metrics.syncs, 1);
    assert_eq!(metrics.frontends_upserted, 3);
    assert_eq!(metrics.frontends_pending, 1);
    let text = handle.render_prometheus();
    assert!(text.contains("skiff_proxy_ready 1\n"), "{text}");
    assert!(text.contains("skiff_proxy_syncs_total 1\n"), "{text}");
    assert!(
        text.contains("skiff_proxy_last_sync_duration_seconds 0.002\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE skiff_proxy_frontend_failures_total counter\n"),
        "{text}"
    );
}
