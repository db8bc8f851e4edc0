//! The EndpointSlice and Endpoints controllers: a Service's selector and its pods' readiness
//! become discovery.k8s.io/v1 EndpointSlices and a core/v1 Endpoints object, as
//! kube-controller-manager's endpointslice and endpoints controllers make them.
//!
//! Slices are updated minimally: an endpoint stays in the slice that holds it, a slice is written
//! only when its content changes, new endpoints fill slices that are being written anyway before
//! any new slice is made. Node agents watch slices, so a needless write costs every node work.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures_util::{StreamExt as _, stream};
use k8s_openapi::{
    api::{
        core::v1::{
            EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node,
            ObjectReference, Pod, Service, ServicePort,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    Api, Resource as _, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{
        WatchStreamExt as _, applier,
        controller::{self, Action, trigger_owners, trigger_self, trigger_with},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{ControllerError, Ctx, events::EventType, pods};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`], as upstream spells it (so tools recognise our slices).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const SLICE_COMPONENT: &str = "endpoint-slice-controller";
const ENDPOINTS_COMPONENT: &str = "endpoint-controller";

struct State {
    ctx: Arc<Ctx>,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    let (services, service_writer) = reflector::store::<Service>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let (deleted_tx, mut deleted_rx) = mpsc::unbounded_channel::<Service>();

    let service_events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(move |event| {
        // A deleted service has no object left to reconcile: its Endpoints go from here.
        if let Ok(watcher::Event::Delete(svc)) = &event {
            let _ = deleted_tx.send(svc.clone());
        }
        event
    })
    .reflect(service_writer)
    .touched_objects();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let slice_events = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .touched_objects();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .for_each(|_| async {});

    let for_pods = {
        let services = services.clone();
        let pods = pod_store.clone();
        let last = LastLabels::default();
        move |pod: Pod| services_of_pod(&services, &pods, &last, &pod)
    };
    let queue = stream::select_all([
        trigger_self(service_events, ()).boxed(),
        trigger_with(pod_events, for_pods).boxed(),
        trigger_owners(slice_events, (), ()).boxed(),
    ]);
    let state = Arc::new(State {
        ctx: Arc::clone(&ctx),
        pods: pod_store,
        nodes,
    });
    let config = controller::Config::default()
        .debounce(Duration::from_millis(50))
        .concurrency(16);
    let reconciles = applier(
        |svc, state| Box::pin(reconcile(svc, state)),
        error_policy,
        state,
        services.clone(),
        queue,
        config,
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            debug!(error = %e, "endpoints reconcile");
        }
    });
    let cleanup = async {
        while let Some(svc) = deleted_rx.recv().await {
            delete_endpoints(&ctx, &services, &svc).await;
        }
    };
    info!("endpoints controller started");
    tokio::join!(reconciles, node_events, cleanup);
}

/// The labels each pod had when last seen, so that a pod whose labels move away from a selector
/// still triggers the service it leaves (instead of scanning every slice for it).
#[derive(Default)]
struct LastLabels(std::sync::Mutex<HashMap<String, BTreeMap<String, String>>>);

/// The services whose endpoints may change with `pod`: those selecting it now or before.
fn services_of_pod(
    services: &Store<Service>,
    pods: &Store<Pod>,
    last: &LastLabels,
    pod: &Pod,
) -> Vec<ObjectRef<Service>> {
    let ns = pod.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", pod.name_any());
    let previous = {
        let mut last = last
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The store already reflects this event: a pod no longer in it was deleted.
        if pods.get(&ObjectRef::from_obj(pod)).is_some() {
            last.insert(key, pod.labels().clone())
        } else {
            last.remove(&key)
        }
    };
    services
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| {
            selector_of(s).is_some_and(|sel| {
                selects_labels(sel, pod.labels())
                    || previous.as_ref().is_some_and(|p| selects_labels(sel, p))
            })
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn error_policy(_svc: Arc<Service>, _error: &ControllerError, _state: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

/// The service's selector, if it has one this controller acts on (empty or absent means
/// someone else manages its endpoints; ExternalName services have none).
fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    selects_labels(selector, pod.labels())
}

fn selects_labels(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, ControllerError> {
    let Some(selector) = selector_of(&svc) else {
        return Ok(Action::await_change());
    };
    if svc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // An empty store before the first list would look like "no pods": wait for the lists.
    let _ = state.pods.wait_until_ready().await;
    let _ = state.nodes.wait_until_ready().await;
    let ns = svc.namespace().unwrap_or_default();
    let mut selected: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && selects(selector, p))
        .collect();
    selected.sort_by_key(|p| p.name_any());
    let zones: HashMap<String, String> = state
        .nodes
        .state()
        .iter()
        .filter_map(|n| {
            let zone = n.labels().get("topology.kubernetes.io/zone")?;
            Some((n.name_any(), zone.clone()))
        })
        .collect();

    if let Err(e) = sync_slices(&state.ctx, &svc, &selected, &zones).await {
        let msg = format!(
            "Error updating Endpoint Slices for Service {ns}/{}: {e}",
            svc.name_any()
        );
        state
            .ctx
            .events
            .publish(
                SLICE_COMPONENT,
                svc.as_ref(),
                EventType::Warning,
                "FailedToUpdateEndpointSlices",
                &msg,
            )
            .await;
        return Err(e);
    }
    if let Err(e) = sync_endpoints(&state.ctx, &svc, &selected).await {
        let msg = format!("Failed to update endpoint {ns}/{}: {e}", svc.name_any());
        state
            .ctx
            .events
            .publish(
                ENDPOINTS_COMPONENT,
                svc.as_ref(),
                EventType::Warning,
                "FailedToUpdateEndpoint",
                &msg,
            )
            .await;
        return Err(e);
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

// ---------------------------------------------------------------------------------------------
// Per-pod facts shared by both outputs.

/// The pod's IPv4 address, if it has one and its containers may still serve.
fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ips = status
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.clone())
        .chain(status.pod_ip.clone());
    ips.into_iter()
        .find(|ip| !ip.is_empty() && !ip.contains(':'))
}

/// The container port a service port reaches on `pod` (upstream's `FindPort`): a named
/// targetPort must be declared by one of the pod's containers with the same protocol.
fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            // Sidecars (init containers that keep running) may serve too.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The endpoint ports of `pod` for the service's ports, leaving out those it cannot serve.
fn pod_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(find_port(pod, sp)?),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    sort_ports(&mut ports);
    ports
}

fn has_ports(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty())
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..ObjectReference::default()
    }
}

/// `spec.hostname` is published only for pods in the service's subdomain (upstream's rule).
fn pod_hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())).then_some(hostname)
}

fn sort_ports(ports: &mut [EndpointPort]) {
    ports.sort_by_key(port_key);
}

type PortKey = (String, i32, String, String);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or_default(),
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

fn ports_key(ports: &[EndpointPort]) -> Vec<PortKey> {
    let mut keys: Vec<PortKey> = ports.iter().map(port_key).collect();
    keys.sort();
    keys
}

// ---------------------------------------------------------------------------------------------
// EndpointSlices.

/// The endpoint for `pod`, grouped by its port set.
fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    zones: &HashMap<String, String>,
) -> BTreeMap<Vec<PortKey>, (Vec<EndpointPort>, Vec<Endpoint>)> {
    let publish = publish_not_ready(svc);
    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod_ipv4(pod) else { continue };
        let ports = pod_ports(svc, pod);
        if ports.is_empty() && has_ports(svc) {
            continue;
        }
        let serving = publish || pods::is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                // A terminating pod is never ready unless the service publishes not-ready ones.
                ready: Some(publish || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: pod_hostname(svc, pod),
            zone: node_name.as_ref().and_then(|n| zones.get(n).cloned()),
            node_name,
            target_ref: Some(pod_ref(pod)),
            ..Endpoint::default()
        };
        let entry = groups
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new()));
        entry.1.push(endpoint);
    }
    groups
}

/// What identifies an endpoint across updates: its address and its pod.
fn endpoint_key(e: &Endpoint) -> (String, String) {
    (
        e.addresses.first().cloned().unwrap_or_default(),
        e.target_ref
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default(),
    )
}

/// The fields this controller writes, so that server-side additions never look like a change.
fn same_endpoint(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating.unwrap_or(false))
    };
    let target = |e: &Endpoint| {
        e.target_ref.as_ref().map(|r| {
            (
                r.kind.clone(),
                r.namespace.clone(),
                r.name.clone(),
                r.uid.clone(),
            )
        })
    };
    a.addresses == b.addresses
        && conditions(a) == conditions(b)
        && a.hostname == b.hostname
        && a.node_name == b.node_name
        && a.zone == b.zone
        && target(a) == target(b)
}

/// The writes that take the service's existing slices to the desired endpoints.
#[derive(Debug, Default)]
pub(crate) struct SlicePlan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

fn new_slice(svc: &Service, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let mut prefix = format!("{}-", svc.name_any());
    // The server appends 5 characters to reach at most 63.
    prefix.truncate(58);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: svc.namespace(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![pods::controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    }
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    pods::controller_of(&slice.metadata)
        .is_some_and(|r| r.kind == "Service" && Some(&r.uid) == svc.meta().uid.as_ref())
}

/// Plans the slice writes for `svc` (pure, so it is tested without a server).
pub(crate) fn plan_slices(
    svc: &Service,
    pods: &[Arc<Pod>],
    zones: &HashMap<String, String>,
    existing: Vec<EndpointSlice>,
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let labels = slice_labels(svc);
    let mut desired = desired_endpoints(svc, pods, zones);
    let total: usize = desired.values().map(|(_, e)| e.len()).sum();

    let mut mine: Vec<EndpointSlice> = Vec::new();
    for slice in existing {
        if slice.address_type == "IPv4" && owned_by(&slice, svc) {
            mine.push(slice);
        } else {
            // Left by an earlier service of the same name, or of an address type we do not make.
            plan.delete.push(slice);
        }
    }
    mine.sort_by_key(ResourceExt::name_any);

    if total == 0 {
        // Upstream keeps one empty "placeholder" slice so that consumers see an empty service.
        let mut kept = false;
        for mut slice in mine {
            let empty =
                slice.endpoints.is_empty() && slice.ports.as_ref().is_none_or(Vec::is_empty);
            if empty && !kept {
                kept = true;
                if slice.labels() != &labels {
                    slice.metadata.labels = Some(labels.clone());
                    plan.update.push(slice);
                }
            } else {
                plan.delete.push(slice);
            }
        }
        if !kept {
            plan.create.push(new_slice(svc, Vec::new(), Vec::new()));
        }
        return plan;
    }

    for (key, (ports, wanted)) in &mut desired {
        let mut remaining: BTreeMap<(String, String), Endpoint> =
            wanted.drain(..).map(|e| (endpoint_key(&e), e)).collect();
        let mut updated: Vec<EndpointSlice> = Vec::new();
        let mut unchanged: Vec<EndpointSlice> = Vec::new();
        let (same_ports, others): (Vec<_>, Vec<_>) = mine
            .drain(..)
            .partition(|s| ports_key(s.ports.as_deref().unwrap_or_default()) == *key);
        mine = others;
        for mut slice in same_ports {
            let mut kept = Vec::with_capacity(slice.endpoints.len());
            for e in &slice.endpoints {
                if kept.len() < MAX_ENDPOINTS_PER_SLICE
                    && let Some(want) = remaining.remove(&endpoint_key(e))
                {
                    kept.push(want);
                }
            }
            let changed = kept.len() != slice.endpoints.len()
                || kept
                    .iter()
                    .zip(&slice.endpoints)
                    .any(|(a, b)| !same_endpoint(a, b))
                || slice.labels() != &labels;
            if kept.is_empty() {
                plan.delete.push(slice);
            } else if changed {
                slice.endpoints = kept;
                slice.metadata.labels = Some(labels.clone());
                updated.push(slice);
            } else {
                unchanged.push(slice);
            }
        }
        let mut rest: Vec<Endpoint> = remaining.into_values().collect();
        // New endpoints go first to slices written anyway, then to the fullest unchanged ones.
        for slice in &mut updated {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(slice.endpoints.len());
            slice.endpoints.extend(rest.drain(..room.min(rest.len())));
        }
        unchanged.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for mut slice in unchanged {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(slice.endpoints.len());
            if room > 0 && !rest.is_empty() {
                slice.endpoints.extend(rest.drain(..room.min(rest.len())));
                updated.push(slice);
            }
        }
        while !rest.is_empty() {
            let chunk: Vec<Endpoint> = rest
                .drain(..MAX_ENDPOINTS_PER_SLICE.min(rest.len()))
                .collect();
            plan.create.push(new_slice(svc, ports.clone(), chunk));
        }
        plan.update.extend(updated);
    }
    // Slices of port sets no pod has any more.
    plan.delete.extend(mine);
    plan
}

async fn sync_slices(
    ctx: &Ctx,
    svc: &Service,
    pods: &[Arc<Pod>],
    zones: &HashMap<String, String>,
) -> Result<(), ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    // Listed from the server, not a cache: a slice created a moment ago must not be made twice.
    let selector = format!(
        "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        svc.name_any()
    );
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let plan = plan_slices(svc, pods, zones, existing);
    for slice in &plan.create {
        api.create(&PostParams::default(), slice).await?;
    }
    for slice in &plan.update {
        api.replace(&slice.name_any(), &PostParams::default(), slice)
            .await?;
    }
    for slice in &plan.delete {
        match api
            .delete(&slice.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !plan.create.is_empty() || !plan.update.is_empty() || !plan.delete.is_empty() {
        debug!(
            service = %format!("{ns}/{}", svc.name_any()),
            created = plan.create.len(),
            updated = plan.update.len(),
            deleted = plan.delete.len(),
            "endpoint slices synced"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Endpoints.

fn core_port(p: &EndpointPort) -> CorePort {
    CorePort {
        name: p.name.clone().filter(|n| !n.is_empty()),
        port: p.port.unwrap_or_default(),
        protocol: p.protocol.clone(),
        app_protocol: p.app_protocol.clone(),
    }
}

/// A subset being built: its ports, ready and not-ready addresses.
type SubsetParts = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// The Endpoints subsets for `svc`: one per port set, ready and not-ready addresses apart, sorted
/// like upstream's RepackSubsets so an unchanged set compares equal.
pub(crate) fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = publish_not_ready(svc);
    let mut groups: BTreeMap<Vec<PortKey>, SubsetParts> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod_ipv4(pod) else { continue };
        // The Endpoints API has no terminating state: terminating pods leave unless published.
        if pod.metadata.deletion_timestamp.is_some() && !publish {
            continue;
        }
        let ports = pod_ports(svc, pod);
        if ports.is_empty() && has_ports(svc) {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: pod_hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
        };
        let entry = groups
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || pods::is_ready(pod) {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            let ports: Vec<CorePort> = ports.iter().map(core_port).collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// `subsets` as this controller would have written them (fields it does not set dropped).
fn canonical_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let address = |a: &EndpointAddress| EndpointAddress {
        ip: a.ip.clone(),
        hostname: a.hostname.clone(),
        node_name: a.node_name.clone(),
        target_ref: a.target_ref.as_ref().map(|r| ObjectReference {
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
            ..ObjectReference::default()
        }),
    };
    let list = |l: &Option<Vec<EndpointAddress>>| {
        l.as_ref()
            .map(|v| v.iter().map(address).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
    };
    subsets
        .iter()
        .map(|s| EndpointSubset {
            addresses: list(&s.addresses),
            not_ready_addresses: list(&s.not_ready_addresses),
            ports: s
                .ports
                .as_ref()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| CorePort {
                            name: p.name.clone().filter(|n| !n.is_empty()),
                            port: p.port,
                            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|v| !v.is_empty()),
        })
        .collect()
}

fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

async fn sync_endpoints(
    ctx: &Ctx,
    svc: &Service,
    pods: &[Arc<Pod>],
) -> Result<(), ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let subsets = desired_subsets(svc, pods);
    let labels = endpoints_labels(svc);
    match api.get_opt(&name).await? {
        Some(mut current) => {
            let same = canonical_subsets(current.subsets.as_deref().unwrap_or_default())
                == canonical_subsets(&subsets)
                && current.labels() == &labels;
            if same {
                return Ok(());
            }
            current.subsets = Some(subsets);
            current.metadata.labels = Some(labels);
            api.replace(&name, &PostParams::default(), &current).await?;
        }
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(ns),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                subsets: Some(subsets),
            };
            api.create(&PostParams::default(), &endpoints).await?;
        }
    }
    Ok(())
}

/// A deleted service's Endpoints go with it (they carry no owner reference for the garbage
/// collector), unless a service of the same name exists again or the service had no selector.
async fn delete_endpoints(ctx: &Ctx, services: &Store<Service>, svc: &Service) {
    if selector_of(svc).is_none() {
        return;
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    if services.get(&ObjectRef::new(&name).within(&ns)).is_some() {
        return;
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => {
            warn!(error = %e, endpoints = %format!("{ns}/{name}"), "deleting a deleted service's endpoints");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, ports: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                             "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
                "status": {"phase": "Running", "podIP": ip,
                           "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap(),
        )
    }

    fn named_port_service() -> Service {
        service(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "metrics", "port": 9000, "protocol": "TCP", "targetPort": 9100}]}))
    }

    #[test]
    fn named_ports_resolve_per_pod_and_group_by_port_set() {
        let svc = named_port_service();
        let pods = vec![
            pod(
                "a",
                "10.0.0.1",
                true,
                json!([{"name": "http", "containerPort": 8080}]),
            ),
            pod(
                "b",
                "10.0.0.2",
                false,
                json!([{"name": "http", "containerPort": 8081}]),
            ),
            pod("c", "10.0.0.3", true, json!([])),
        ];
        let plan = plan_slices(&svc, &pods, &HashMap::new(), Vec::new());
        assert!(plan.update.is_empty() && plan.delete.is_empty());
        let mut by_ports: Vec<(Vec<i32>, Vec<String>)> = plan
            .create
            .iter()
            .map(|s| {
                let ports = s.ports.iter().flatten().filter_map(|p| p.port).collect();
                let ips = s.endpoints.iter().map(|e| e.addresses[0].clone()).collect();
                (ports, ips)
            })
            .collect();
        by_ports.sort();
        assert_eq!(
            by_ports,
            vec![
                (vec![8080, 9100], vec!["10.0.0.1".to_owned()]),
                (vec![8081, 9100], vec!["10.0.0.2".to_owned()]),
                (vec![9100], vec!["10.0.0.3".to_owned()]),
            ]
        );
        let b = plan
            .create
            .iter()
            .flat_map(|s| &s.endpoints)
            .find(|e| e.addresses[0] == "10.0.0.2")
            .unwrap();
        let c = b.conditions.clone().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(false), Some(false))
        );
        let slice = &plan.create[0];
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.labels()[SERVICE_NAME_LABEL], "web");
        assert_eq!(slice.labels()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(slice.owner_references()[0].uid, "svc-uid");
    }

    #[test]
    fn unchanged_slices_are_not_rewritten_and_new_endpoints_fill_them() {
        let svc =
            service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}));
        let mut pods: Vec<Arc<Pod>> = (0..150)
            .map(|i| pod(&format!("p{i:03}"), &format!("10.0.1.{i}"), true, json!([])))
            .collect();
        let mut plan = plan_slices(&svc, &pods, &HashMap::new(), Vec::new());
        assert_eq!(plan.create.len(), 2);
        assert!(
            plan.create
                .iter()
                .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
        );
        for (i, s) in plan.create.iter_mut().enumerate() {
            s.metadata.name = Some(format!("web-{i}"));
        }
        let existing = plan.create.clone();
        let again = plan_slices(&svc, &pods, &HashMap::new(), existing.clone());
        assert!(
            again.create.is_empty() && again.update.is_empty() && again.delete.is_empty(),
            "{again:?}"
        );

        pods.push(pod("q", "10.0.2.1", true, json!([])));
        let grown = plan_slices(&svc, &pods, &HashMap::new(), existing.clone());
        assert!(grown.create.is_empty() && grown.delete.is_empty());
        assert_eq!(grown.update.len(), 1, "only the slice with room is written");
        assert_eq!(grown.update[0].endpoints.len(), 51);

        // Only pods of the second slice remain: the first goes, the second is rewritten.
        let second: BTreeSet<&str> = existing[1]
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        let keep: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| second.contains(p.status.as_ref().unwrap().pod_ip.as_deref().unwrap()))
            .take(10)
            .cloned()
            .collect();
        let shrunk = plan_slices(&svc, &keep, &HashMap::new(), existing);
        assert_eq!(shrunk.update.len(), 1);
        assert_eq!(shrunk.update[0].name_any(), "web-1");
        assert_eq!(shrunk.update[0].endpoints.len(), 10);
        assert_eq!(shrunk.delete.len(), 1);
        assert_eq!(shrunk.delete[0].name_any(), "web-0");
    }

    #[test]
    fn no_endpoints_keep_one_placeholder_and_foreign_slices_go() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let plan = plan_slices(&svc, &[], &HashMap::new(), Vec::new());
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        let mut stale = plan.create[0].clone();
        stale.metadata.name = Some("web-old".into());
        stale.metadata.owner_references.as_mut().unwrap()[0].uid = "previous".into();
        let plan = plan_slices(&svc, &[], &HashMap::new(), vec![stale]);
        assert_eq!((plan.create.len(), plan.delete.len()), (1, 1));
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_and_drop_terminating() {
        let svc = named_port_service();
        let mut gone = (*pod(
            "d",
            "10.0.0.4",
            true,
            json!([{"name": "http", "containerPort": 8080}]),
        ))
        .clone();
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let pods = vec![
            pod(
                "a",
                "10.0.0.1",
                true,
                json!([{"name": "http", "containerPort": 8080}]),
            ),
            pod(
                "b",
                "10.0.0.2",
                false,
                json!([{"name": "http", "containerPort": 8080}]),
            ),
            Arc::new(gone),
        ];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        let ips = |l: &Option<Vec<EndpointAddress>>| {
            l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.2"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap().len(), 2);
        assert_eq!(canonical_subsets(&subsets), subsets);
    }
}
