//! Server-side printing: `meta.k8s.io/v1` `Table`s, the answer to
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, with the columns and cells
//! kube-apiserver's printers (`pkg/printers/internalversion`) produce. kubectl prints nothing
//! but `NAME AGE` without them.
//!
//! The server always prints every column (as kube-apiserver does, with `Wide: true`);
//! `kubectl get -o wide` shows the columns of `priority` > 0 as well. Each row's `object` is
//! a `PartialObjectMetadata` unless the request asked `includeObject=Object|None`; kubectl's
//! `-A` NAMESPACE column comes from it.
//!
//! A watch event carries a Table of one row: call [`table_for_watch_event`] with the event's
//! object (column definitions may be left out after the first event; kubectl reuses the last
//! ones it saw).
//!
//! Ages are computed against a `now` passed in, so the output is deterministic, and formatted
//! like `k8s.io/apimachinery/pkg/util/duration.HumanDuration` ([`human_duration`]).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet},
        autoscaling::{v1 as autoscaling_v1, v2 as autoscaling_v2},
        batch::v1::{CronJob, Job},
        certificates::v1::CertificateSigningRequest,
        coordination::v1::Lease,
        core::v1::{
            ConfigMap, Container, ContainerStatus, Endpoints, Event, Namespace, Node, Pod, Secret,
            Service, ServiceAccount,
        },
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, NetworkPolicy},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRoleBinding, RoleBinding, Subject},
    },
    apimachinery::pkg::{
        apis::meta::v1::{MicroTime, ObjectMeta, Time},
        util::intstr::IntOrString,
    },
    jiff::{SignedDuration, Timestamp},
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::{registry::Resource, selector::LabelSelector};

#[cfg(test)]
mod tests;

/// Why a Table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A stored object does not have the shape of its kind.
    #[error("cannot print item {index} ({kind} {name:?}): {source}")]
    Decode {
        kind: &'static str,
        index: usize,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object (`null`).
    None,
    /// A `meta.k8s.io/v1` `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object (kubectl asks for it with `--sort-by`).
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; "" is the default, `Metadata`.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "" | "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// The `meta.k8s.io/v1` `TableOptions` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    pub include_object: IncludeObject,
    /// Leave out `columnDefinitions` (watch events after the first).
    pub no_headers: bool,
}

/// The Table of a list, its ages computed against the current time.
///
/// # Errors
/// An item that does not decode as the resource's kind.
pub fn to_table(
    resource: &Resource,
    items: &[Value],
    list_metadata: Value,
) -> Result<Value, TableError> {
    to_table_at(resource, items, list_metadata, now())
}

/// The current time (jiff is built without its `std` feature, so without `Timestamp::now`).
#[must_use]
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs())
        .ok()
        .and_then(|secs| {
            Timestamp::new(secs, i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0)).ok()
        })
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The Table of a list, ages computed against `now`.
///
/// # Errors
/// An item that does not decode as the resource's kind.
pub fn to_table_at(
    resource: &Resource,
    items: &[Value],
    list_metadata: Value,
    now: Timestamp,
) -> Result<Value, TableError> {
    to_table_with(resource, items, list_metadata, now, TableOptions::default())
}

/// The Table of one watch event's object: one row, `metadata.resourceVersion` the object's.
/// Pass `with_columns` false to leave out the column definitions after the first event.
///
/// # Errors
/// An object that does not decode as the resource's kind.
pub fn table_for_watch_event(
    resource: &Resource,
    object: &Value,
    now: Timestamp,
    with_columns: bool,
) -> Result<Value, TableError> {
    let mut metadata = Map::new();
    if let Some(rv) = object.pointer("/metadata/resourceVersion") {
        metadata.insert("resourceVersion".to_owned(), rv.clone());
    }
    to_table_with(
        resource,
        std::slice::from_ref(object),
        Value::Object(metadata),
        now,
        TableOptions {
            include_object: IncludeObject::Metadata,
            no_headers: !with_columns,
        },
    )
}

/// The Table of a list with explicit [`TableOptions`].
///
/// # Errors
/// An item that does not decode as the resource's kind.
pub fn to_table_with(
    resource: &Resource,
    items: &[Value],
    list_metadata: Value,
    now: Timestamp,
    options: TableOptions,
) -> Result<Value, TableError> {
    let printer = Printer::of(resource);
    let mut rows = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let row = printer
            .row(item, now)
            .map_err(|source| TableError::Decode {
                kind: resource.kind,
                index,
                name: item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                source,
            })?;
        let object = match options.include_object {
            IncludeObject::None => Value::Null,
            IncludeObject::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
            IncludeObject::Object => item.clone(),
        };
        let mut out = Map::new();
        out.insert("cells".to_owned(), Value::Array(row.cells));
        if let Some(conditions) = row.conditions {
            out.insert("conditions".to_owned(), conditions);
        }
        out.insert("object".to_owned(), object);
        rows.push(Value::Object(out));
    }
    let columns: Vec<Value> = if options.no_headers {
        Vec::new()
    } else {
        printer
            .columns()
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.ty,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect()
    };
    let metadata = match list_metadata {
        Value::Object(m) => Value::Object(m),
        _ => json!({}),
    };
    Ok(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

/// The column names of a resource's Table (upper-cased, as kubectl shows them), wide
/// columns included.
#[must_use]
pub fn column_names(resource: &Resource) -> Vec<String> {
    Printer::of(resource)
        .columns()
        .iter()
        .map(|c| c.name.to_uppercase())
        .collect()
}

/// `duration.HumanDuration` of apimachinery: ~2-3 significant figures ("5s", "2m3s", "10m",
/// "3h4m", "5d", "2y"); up to 1s in the future is "0s", further is `"<invalid>"`.
#[must_use]
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: "Name must be unique within a namespace. Cannot be updated.",
    priority: 0,
};
const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide(
    "Selector",
    "string",
    "A label query over pods that should match the replica count.",
);

const POD: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", "IP address allocated to the pod."),
    wide("Node", "string", "The node the pod is scheduled onto."),
    wide(
        "Nominated Node",
        "string",
        "The node the scheduler nominated for this pod when preempting.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "Pod readiness gates that are met, of those declared.",
    ),
];
const SERVICE: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "How the Service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
    ),
    col(
        "Cluster-IP",
        "string",
        "The IP address of the service, usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "IP addresses (or hostname) on which the service is reachable from outside the cluster.",
    ),
    col("Port(s)", "string", "The ports exposed by this service."),
    AGE,
    wide(
        "Selector",
        "string",
        "Pods with labels matching this selector receive the service's traffic.",
    ),
];
const ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints (addresses and ports) of the service.",
    ),
    AGE,
];
const CONFIGMAP: &[Column] = &[
    NAME,
    col(
        "Data",
        "string",
        "The number of keys in data and binaryData.",
    ),
    AGE,
];
const SECRET: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "The number of keys in data."),
    AGE,
];
const SERVICEACCOUNT: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "The number of secrets listed by the service account.",
    ),
    AGE,
];
const NAMESPACE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];
const NODE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "The first InternalIP address of the node.",
    ),
    wide(
        "External-IP",
        "string",
        "The first ExternalIP address of the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release.",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r'.",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API.",
    ),
];
const EVENT: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col("Type", "string", "Type of this event (Normal, Warning)."),
    col(
        "Reason",
        "string",
        "A short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "The part of the object this event is about, e.g. spec.containers{name}.",
    ),
    wide("Source", "string", "The component reporting this event."),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded.",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        priority: 1,
        ..NAME
    },
];
const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const REPLICASET: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const STATEFULSET: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];
const DAEMONSET: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod.",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod.",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const CONTROLLERREVISION: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];
const JOB: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const CRONJOB: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule.",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const HPA: &[Column] = &[
    NAME,
    col("Reference", "string", "The target resource to scale."),
    col(
        "Targets",
        "string",
        "The metrics used to calculate the desired replica count: current/target.",
    ),
    col(
        "MinPods",
        "string",
        "The lower limit for the number of replicas.",
    ),
    col(
        "MaxPods",
        "string",
        "The upper limit for the number of replicas.",
    ),
    col(
        "Replicas",
        "string",
        "Current number of replicas of pods managed by this autoscaler.",
    ),
    AGE,
];
const ENDPOINTSLICE: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "The type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "The ports exposed by this EndpointSlice.",
    ),
    col(
        "Endpoints",
        "string",
        "The addresses of the endpoints of this EndpointSlice.",
    ),
    AGE,
];
const INGRESS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];
const NETWORKPOLICY: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];
const PDB: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];
const BINDING: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can reference a Role or a ClusterRole.",
    ),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];
const LEASE: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "HolderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];
const CSR: &[Column] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "Only requests with this signer are served by it.",
    ),
    col(
        "Requestor",
        "string",
        "Name of the user that created the request.",
    ),
    col(
        "RequestedDuration",
        "string",
        "Requested validity of the issued certificate.",
    ),
    col(
        "Condition",
        "string",
        "Approved, Denied, Failed and Issued, as they apply.",
    ),
];
/// kube-apiserver's default table convertor (roles, cluster roles, reviews).
const DEFAULT: &[Column] = &[
    NAME,
    col(
        "Created At",
        "date",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
];

/// Which printer serves a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    Namespace,
    Node,
    Event,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    ControllerRevision,
    Job,
    CronJob,
    HpaV2,
    HpaV1,
    EndpointSlice,
    Ingress,
    NetworkPolicy,
    Pdb,
    ClusterRoleBinding,
    RoleBinding,
    Lease,
    CertificateSigningRequest,
    Default,
}

struct Row {
    cells: Vec<Value>,
    conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Self {
        Self {
            cells,
            conditions: None,
        }
    }
}

/// Decodes an object as `T`, ignoring `apiVersion`/`kind` (the resource says what it is).
fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, serde_json::Error> {
    let Some(map) = obj.as_object() else {
        return T::deserialize(obj);
    };
    let entries = map
        .iter()
        .filter(|(k, _)| *k != "apiVersion" && *k != "kind")
        .map(|(k, v)| (k.as_str(), v));
    T::deserialize(serde::de::value::MapDeserializer::<_, serde_json::Error>::new(entries))
}

impl Printer {
    fn of(resource: &Resource) -> Self {
        match (resource.group, resource.version, resource.kind) {
            ("", _, "Pod") => Self::Pod,
            ("", _, "Service") => Self::Service,
            ("", _, "Endpoints") => Self::Endpoints,
            ("", _, "ConfigMap") => Self::ConfigMap,
            ("", _, "Secret") => Self::Secret,
            ("", _, "ServiceAccount") => Self::ServiceAccount,
            ("", _, "Namespace") => Self::Namespace,
            ("", _, "Node") => Self::Node,
            ("", _, "Event") => Self::Event,
            ("apps", _, "Deployment") => Self::Deployment,
            ("apps", _, "ReplicaSet") => Self::ReplicaSet,
            ("apps", _, "StatefulSet") => Self::StatefulSet,
            ("apps", _, "DaemonSet") => Self::DaemonSet,
            ("apps", _, "ControllerRevision") => Self::ControllerRevision,
            ("batch", _, "Job") => Self::Job,
            ("batch", _, "CronJob") => Self::CronJob,
            ("autoscaling", "v1", "HorizontalPodAutoscaler") => Self::HpaV1,
            ("autoscaling", _, "HorizontalPodAutoscaler") => Self::HpaV2,
            ("discovery.k8s.io", _, "EndpointSlice") => Self::EndpointSlice,
            ("networking.k8s.io", _, "Ingress") => Self::Ingress,
            ("networking.k8s.io", _, "NetworkPolicy") => Self::NetworkPolicy,
            ("policy", _, "PodDisruptionBudget") => Self::Pdb,
            ("rbac.authorization.k8s.io", _, "ClusterRoleBinding") => Self::ClusterRoleBinding,
            ("rbac.authorization.k8s.io", _, "RoleBinding") => Self::RoleBinding,
            ("coordination.k8s.io", _, "Lease") => Self::Lease,
            ("certificates.k8s.io", _, "CertificateSigningRequest") => {
                Self::CertificateSigningRequest
            }
            _ => Self::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Self::Pod => POD,
            Self::Service => SERVICE,
            Self::Endpoints => ENDPOINTS,
            Self::ConfigMap => CONFIGMAP,
            Self::Secret => SECRET,
            Self::ServiceAccount => SERVICEACCOUNT,
            Self::Namespace => NAMESPACE,
            Self::Node => NODE,
            Self::Event => EVENT,
            Self::Deployment => DEPLOYMENT,
            Self::ReplicaSet => REPLICASET,
            Self::StatefulSet => STATEFULSET,
            Self::DaemonSet => DAEMONSET,
            Self::ControllerRevision => CONTROLLERREVISION,
            Self::Job => JOB,
            Self::CronJob => CRONJOB,
            Self::HpaV1 | Self::HpaV2 => HPA,
            Self::EndpointSlice => ENDPOINTSLICE,
            Self::Ingress => INGRESS,
            Self::NetworkPolicy => NETWORKPOLICY,
            Self::Pdb => PDB,
            Self::ClusterRoleBinding | Self::RoleBinding => BINDING,
            Self::Lease => LEASE,
            Self::CertificateSigningRequest => CSR,
            Self::Default => DEFAULT,
        }
    }

    fn row(self, obj: &Value, now: Timestamp) -> Result<Row, serde_json::Error> {
        if !obj.is_object() {
            return Err(serde::de::Error::custom(format!(
                "expected an object, found {obj}"
            )));
        }
        let t = Clock(now);
        Ok(match self {
            Self::Pod => pod_row(&decode(obj)?, t),
            Self::Service => service_row(&decode(obj)?, t).into(),
            Self::Endpoints => endpoints_row(&decode(obj)?, t).into(),
            Self::ConfigMap => {
                let cm: ConfigMap = decode(obj)?;
                let n = cm.data.map_or(0, |d| d.len()) + cm.binary_data.map_or(0, |d| d.len());
                vec![name(&cm.metadata), json!(n), t.age(&cm.metadata)].into()
            }
            Self::Secret => {
                let s: Secret = decode(obj)?;
                vec![
                    name(&s.metadata),
                    json!(s.type_.unwrap_or_default()),
                    json!(s.data.map_or(0, |d| d.len())),
                    t.age(&s.metadata),
                ]
                .into()
            }
            Self::ServiceAccount => {
                let sa: ServiceAccount = decode(obj)?;
                vec![
                    name(&sa.metadata),
                    json!(sa.secrets.map_or(0, |s| s.len())),
                    t.age(&sa.metadata),
                ]
                .into()
            }
            Self::Namespace => {
                let ns: Namespace = decode(obj)?;
                let phase = ns.status.and_then(|s| s.phase).unwrap_or_default();
                vec![name(&ns.metadata), json!(phase), t.age(&ns.metadata)].into()
            }
            Self::Node => node_row(&decode(obj)?, t).into(),
            Self::Event => event_row(&decode(obj)?, t).into(),
            Self::Deployment => deployment_row(&decode(obj)?, obj, t).into(),
            Self::ReplicaSet => {
                let rs: ReplicaSet = decode(obj)?;
                let spec = rs.spec.unwrap_or_default();
                let status = rs.status.unwrap_or_default();
                let (names, images) = containers(spec.template.and_then(|t| t.spec).as_ref());
                vec![
                    name(&rs.metadata),
                    json!(spec.replicas.unwrap_or(1)),
                    json!(status.replicas),
                    json!(status.ready_replicas.unwrap_or(0)),
                    t.age(&rs.metadata),
                    json!(names),
                    json!(images),
                    json!(format_label_selector(obj.pointer("/spec/selector"))),
                ]
                .into()
            }
            Self::StatefulSet => {
                let sts: StatefulSet = decode(obj)?;
                let spec = sts.spec.unwrap_or_default();
                let ready = sts.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                let (names, images) = containers(spec.template.spec.as_ref());
                vec![
                    name(&sts.metadata),
                    json!(format!("{ready}/{}", spec.replicas.unwrap_or(1))),
                    t.age(&sts.metadata),
                    json!(names),
                    json!(images),
                ]
                .into()
            }
            Self::DaemonSet => {
                let ds: DaemonSet = decode(obj)?;
                let spec = ds.spec.unwrap_or_default();
                let status = ds.status.unwrap_or_default();
                let pod_spec = spec.template.spec;
                let node_selector = pod_spec
                    .as_ref()
                    .and_then(|s| s.node_selector.clone())
                    .unwrap_or_default();
                let (names, images) = containers(pod_spec.as_ref());
                vec![
                    name(&ds.metadata),
                    json!(status.desired_number_scheduled),
                    json!(status.current_number_scheduled),
                    json!(status.number_ready),
                    json!(status.updated_number_scheduled.unwrap_or(0)),
                    json!(status.number_available.unwrap_or(0)),
                    json!(format_labels(&node_selector)),
                    t.age(&ds.metadata),
                    json!(names),
                    json!(images),
                    json!(format_label_selector(obj.pointer("/spec/selector"))),
                ]
                .into()
            }
            Self::ControllerRevision => {
                let cr: ControllerRevision = decode(obj)?;
                let controller = cr
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true))
                    .map_or_else(
                        || "<none>".to_owned(),
                        |r| {
                            let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
                            let kind = if group.is_empty() {
                                r.kind.clone()
                            } else {
                                format!("{}.{group}", r.kind)
                            };
                            if kind.is_empty() {
                                r.name.clone()
                            } else {
                                format!("{}/{}", kind.to_lowercase(), r.name)
                            }
                        },
                    );
                vec![
                    name(&cr.metadata),
                    json!(controller),
                    json!(cr.revision),
                    t.age(&cr.metadata),
                ]
                .into()
            }
            Self::Job => job_row(&decode(obj)?, obj, t).into(),
            Self::CronJob => {
                let cj: CronJob = decode(obj)?;
                let spec = cj.spec.unwrap_or_default();
                let status = cj.status.unwrap_or_default();
                let last = status
                    .last_schedule_time
                    .as_ref()
                    .map_or_else(|| "<none>".to_owned(), |ts| t.since(Some(ts)));
                let (names, images) = containers(
                    spec.job_template
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref()),
                );
                vec![
                    name(&cj.metadata),
                    json!(spec.schedule),
                    json!(spec.time_zone.unwrap_or_else(|| "<none>".to_owned())),
                    spec.suspend.map_or_else(|| json!("<unset>"), |s| json!(s)),
                    json!(status.active.map_or(0, |a| a.len())),
                    json!(last),
                    t.age(&cj.metadata),
                    json!(names),
                    json!(images),
                    json!(format_label_selector(
                        obj.pointer("/spec/jobTemplate/spec/selector")
                    )),
                ]
                .into()
            }
            Self::HpaV2 => hpa_v2_row(&decode(obj)?, t).into(),
            Self::HpaV1 => hpa_v1_row(&decode(obj)?, t).into(),
            Self::EndpointSlice => endpoint_slice_row(&decode(obj)?, t).into(),
            Self::Ingress => ingress_row(&decode(obj)?, t).into(),
            Self::NetworkPolicy => {
                let np: NetworkPolicy = decode(obj)?;
                let selector = match obj.pointer("/spec/podSelector") {
                    // podSelector is required: a missing one is the empty selector.
                    None | Some(Value::Null) => "<none>".to_owned(),
                    sel => format_label_selector(sel),
                };
                vec![name(&np.metadata), json!(selector), t.age(&np.metadata)].into()
            }
            Self::Pdb => {
                let pdb: PodDisruptionBudget = decode(obj)?;
                let spec = pdb.spec.unwrap_or_default();
                let allowed = pdb.status.map_or(0, |s| s.disruptions_allowed);
                vec![
                    name(&pdb.metadata),
                    json!(int_or_string(spec.min_available.as_ref())),
                    json!(int_or_string(spec.max_unavailable.as_ref())),
                    json!(allowed),
                    t.age(&pdb.metadata),
                ]
                .into()
            }
            Self::ClusterRoleBinding => {
                let b: ClusterRoleBinding = decode(obj)?;
                binding_row(
                    &b.metadata,
                    &b.role_ref.kind,
                    &b.role_ref.name,
                    b.subjects.as_deref(),
                    t,
                )
                .into()
            }
            Self::RoleBinding => {
                let b: RoleBinding = decode(obj)?;
                binding_row(
                    &b.metadata,
                    &b.role_ref.kind,
                    &b.role_ref.name,
                    b.subjects.as_deref(),
                    t,
                )
                .into()
            }
            Self::Lease => {
                let lease: Lease = decode(obj)?;
                let holder = lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                vec![name(&lease.metadata), json!(holder), t.age(&lease.metadata)].into()
            }
            Self::CertificateSigningRequest => {
                let csr: CertificateSigningRequest = decode(obj)?;
                let requested = csr.spec.expiration_seconds.map_or_else(
                    || "<none>".to_owned(),
                    |s| human_duration(SignedDuration::from_secs(i64::from(s))),
                );
                let mut condition: Vec<String> = csr
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|c| c.status == "True")
                    .map(|c| c.type_.clone())
                    .collect();
                if csr
                    .status
                    .as_ref()
                    .is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()))
                {
                    condition.push("Issued".into());
                }
                let condition = if condition.is_empty() {
                    "Pending".to_owned()
                } else {
                    condition.join(",")
                };
                vec![
                    name(&csr.metadata),
                    t.age(&csr.metadata),
                    json!(csr.spec.signer_name),
                    json!(csr.spec.username.unwrap_or_default()),
                    json!(requested),
                    json!(condition),
                ]
                .into()
            }
            Self::Default => {
                let meta: ObjectMeta = match obj.get("metadata") {
                    Some(m) if !m.is_null() => decode(m)?,
                    _ => ObjectMeta::default(),
                };
                let created = meta.creation_timestamp.as_ref().map_or_else(
                    || "0001-01-01T00:00:00Z".to_owned(),
                    |ts| ts.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
                vec![name(&meta), json!(created)].into()
            }
        })
    }
}

/// Ages against a fixed `now`.
#[derive(Clone, Copy)]
struct Clock(Timestamp);

impl Clock {
    /// `translateTimestampSince`: "<unknown>" for a missing time.
    fn since(self, ts: Option<&Time>) -> String {
        ts.map_or_else(
            || "<unknown>".to_owned(),
            |ts| human_duration(self.0.duration_since(ts.0)),
        )
    }

    fn since_micro(self, ts: Option<&MicroTime>) -> String {
        ts.map_or_else(
            || "<unknown>".to_owned(),
            |ts| human_duration(self.0.duration_since(ts.0)),
        )
    }

    fn age(self, meta: &ObjectMeta) -> Value {
        json!(self.since(meta.creation_timestamp.as_ref()))
    }
}

fn name(meta: &ObjectMeta) -> Value {
    json!(meta.name.clone().unwrap_or_default())
}

/// `labels.FormatLabels`: sorted `k=v` joined by commas, "<none>" when empty.
fn format_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: "<none>" for a missing or empty selector, "<error>" for a
/// bad one.
fn format_label_selector(selector: Option<&Value>) -> String {
    match LabelSelector::from_json(selector.unwrap_or(&Value::Null)) {
        Ok(s) => {
            let s = s.to_string();
            if s.is_empty() { "<none>".to_owned() } else { s }
        }
        Err(_) => "<error>".to_owned(),
    }
}

/// `IntOrString.String()`, "N/A" when unset.
fn int_or_string(v: Option<&IntOrString>) -> String {
    match v {
        Some(IntOrString::Int(i)) => i.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "N/A".to_owned(),
    }
}

/// `layoutContainerCells`: container names and images, comma-joined.
fn containers(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> (String, String) {
    let list: &[Container] = spec.map_or(&[], |s| s.containers.as_slice());
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = list
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    (names.join(","), images.join(","))
}

fn pod_row(pod: &Pod, t: Clock) -> Row {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let init_specs = spec.init_containers.unwrap_or_default();
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    let conditions = status.conditions.unwrap_or_default();
    let phase = status.phase.unwrap_or_default();

    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let total = spec.containers.len()
        + init_specs
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .count();
    let mut ready = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| phase.clone());
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".to_owned();
    }

    let finished = |cs: &ContainerStatus| -> Option<Timestamp> {
        cs.last_state
            .as_ref()?
            .terminated
            .as_ref()?
            .finished_at
            .as_ref()
            .map(|t| t.0)
    };

    let mut initializing = false;
    let init_statuses = status.init_container_statuses.unwrap_or_default();
    for (i, cs) in init_statuses.iter().enumerate() {
        restarts += i64::from(cs.restart_count);
        if let Some(f) = finished(cs) {
            last_restart = last_restart.max(Some(f));
        }
        let sidecar = is_sidecar(&cs.name);
        if sidecar {
            sidecar_restarts += i64::from(cs.restart_count);
            if let Some(f) = finished(cs) {
                last_sidecar_restart = last_sidecar_restart.max(Some(f));
            }
        }
        let state = cs.state.clone().unwrap_or_default();
        let terminated = state.terminated.as_ref();
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && cs.started == Some(true) {
            if cs.ready {
                ready += 1;
            }
            continue;
        }
        if let Some(term) = terminated {
            reason = match term.reason.as_deref() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => match term.signal {
                    Some(sig) if sig != 0 => format!("Init:Signal:{sig}"),
                    _ => format!("Init:ExitCode:{}", term.exit_code),
                },
            };
        } else if let Some(r) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(cs.restart_count);
            if let Some(f) = finished(cs) {
                last_restart = last_restart.max(Some(f));
            }
            let state = cs.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting {
                reason = w;
            } else if let Some(term) = &state.terminated {
                reason = match term.reason.as_deref() {
                    Some(r) if !r.is_empty() => r.to_owned(),
                    _ => match term.signal {
                        Some(sig) if sig != 0 => format!("Signal:{sig}"),
                        _ => format!("ExitCode:{}", term.exit_code),
                    },
                };
            } else if cs.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.reason.as_deref() == Some("NodeLost") {
            reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_owned();
        }
    }

    let restarts_cell = match last_restart {
        Some(ts) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(t.0.duration_since(ts))
        ),
        _ => restarts.to_string(),
    };

    // `podIP` is authoritative when set (v1 conversion), else the first of `podIPs`.
    let ip = status
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .or_else(|| status.pod_ips.iter().flatten().next().map(|p| p.ip.clone()))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".to_owned());
    let none_if_empty = |s: Option<String>| {
        s.filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".to_owned())
    };
    let gates = spec.readiness_gates.unwrap_or_default();
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let met = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| c.type_ == g.condition_type)
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };

    let row_conditions = match phase.as_str() {
        "Succeeded" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        }])),
        _ => None,
    };

    Row {
        cells: vec![
            name(&pod.metadata),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            t.age(&pod.metadata),
            json!(ip),
            json!(none_if_empty(spec.node_name)),
            json!(none_if_empty(status.nominated_node_name)),
            json!(readiness_gates),
        ],
        conditions: row_conditions,
    }
}

fn service_row(svc: &Service, t: Clock) -> Vec<Value> {
    let spec = svc.spec.clone().unwrap_or_default();
    let ty = spec.type_.clone().unwrap_or_default();
    let cluster_ip = spec
        .cluster_ips
        .iter()
        .flatten()
        .next()
        .cloned()
        .or_else(|| spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".to_owned());
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let external = match ty.as_str() {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<String> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.ip.clone()
                        .filter(|ip| !ip.is_empty())
                        .or_else(|| i.hostname.clone().filter(|h| !h.is_empty()))
                })
                .collect();
            lb.sort();
            lb.dedup();
            lb.extend(external_ips);
            if lb.is_empty() {
                "<pending>".to_owned()
            } else {
                lb.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("");
            match p.node_port {
                Some(np) if np > 0 => format!("{}:{np}/{proto}", p.port),
                _ => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    };
    vec![
        name(&svc.metadata),
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        t.age(&svc.metadata),
        json!(format_labels(&spec.selector.unwrap_or_default())),
    ]
}

fn endpoints_row(ep: &Endpoints, t: Clock) -> Vec<Value> {
    const MAX: usize = 3;
    let subsets = ep.subsets.clone().unwrap_or_default();
    let cell = if subsets.is_empty() {
        "<none>".to_owned()
    } else {
        let mut list: Vec<String> = Vec::new();
        let mut more = false;
        let mut count = 0;
        for ss in &subsets {
            let addresses = ss.addresses.clone().unwrap_or_default();
            let ports = ss.ports.clone().unwrap_or_default();
            if ports.is_empty() {
                count += addresses.len();
                for a in &addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(a.ip.clone());
                }
                continue;
            }
            for p in &ports {
                count += addresses.len();
                for a in &addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(join_host_port(&a.ip, p.port));
                }
            }
        }
        let joined = list.join(",");
        if more {
            format!("{joined} + {} more...", count - MAX)
        } else {
            joined
        }
    };
    vec![name(&ep.metadata), json!(cell), t.age(&ep.metadata)]
}

/// `net.JoinHostPort`: brackets around IPv6 hosts.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `listWithMoreString`: "<unset>" when empty.
fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - max)
    } else if joined.is_empty() {
        "<unset>".to_owned()
    } else {
        joined
    }
}

fn endpoint_slice_row(es: &EndpointSlice, t: Clock) -> Vec<Value> {
    const MAX: usize = 3;
    let (mut ports, mut more, mut count) = (Vec::new(), false, 0);
    for p in es.ports.iter().flatten() {
        if ports.len() < MAX {
            ports.push(match (p.port, &p.name) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => "*".to_owned(),
            });
        } else if ports.len() == MAX {
            more = true;
        }
        count += 1;
    }
    let ports = list_with_more(&ports, more, count, MAX);
    let (mut addrs, mut more, mut count) = (Vec::new(), false, 0);
    for a in es.endpoints.iter().flat_map(|e| e.addresses.iter()) {
        if addrs.len() < MAX {
            addrs.push(a.clone());
        } else if addrs.len() == MAX {
            more = true;
        }
        count += 1;
    }
    let endpoints = list_with_more(&addrs, more, count, MAX);
    vec![
        name(&es.metadata),
        json!(es.address_type),
        json!(ports),
        json!(endpoints),
        t.age(&es.metadata),
    ]
}

fn node_row(node: &Node, t: Clock) -> Vec<Value> {
    let status = node.status.clone().unwrap_or_default();
    let mut states: Vec<String> = Vec::new();
    if let Some(ready) = status
        .conditions
        .iter()
        .flatten()
        .rev()
        .find(|c| c.type_ == "Ready")
    {
        states.push(if ready.status == "True" {
            "Ready".to_owned()
        } else {
            "NotReady".to_owned()
        });
    }
    if states.is_empty() {
        states.push("Unknown".to_owned());
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        states.push("SchedulingDisabled".to_owned());
    }
    let mut roles: Vec<String> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then(|| role.to_owned())
            } else if k == "kubernetes.io/role" && !v.is_empty() {
                Some(v.clone())
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    };
    let address = |ty: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == ty)
            .map_or_else(|| "<none>".to_owned(), |a| a.address.clone())
    };
    let info = status.node_info.clone().unwrap_or_default();
    let unknown = |s: String| {
        if s.is_empty() {
            "<unknown>".to_owned()
        } else {
            s
        }
    };
    vec![
        name(&node.metadata),
        json!(states.join(",")),
        json!(roles),
        t.age(&node.metadata),
        json!(info.kubelet_version),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown(info.os_image)),
        json!(unknown(info.kernel_version)),
        json!(unknown(info.container_runtime_version)),
    ]
}

fn event_row(ev: &Event, t: Clock) -> Vec<Value> {
    let first = if ev.first_timestamp.is_some() {
        t.since(ev.first_timestamp.as_ref())
    } else {
        t.since_micro(ev.event_time.as_ref())
    };
    let mut last = if ev.last_timestamp.is_some() {
        t.since(ev.last_timestamp.as_ref())
    } else {
        first.clone()
    };
    let mut count = ev.count.unwrap_or(0);
    if let Some(series) = &ev.series {
        last = t.since_micro(series.last_observed_time.as_ref());
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let io = &ev.involved_object;
    let kind = io.kind.clone().unwrap_or_default().to_lowercase();
    let target = match io.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{kind}/{n}"),
        _ => kind,
    };
    let source = ev.source.clone().unwrap_or_default();
    let component = source
        .component
        .filter(|s| !s.is_empty())
        .or_else(|| ev.reporting_component.clone())
        .unwrap_or_default();
    let instance = source
        .host
        .filter(|s| !s.is_empty())
        .or_else(|| ev.reporting_instance.clone())
        .unwrap_or_default();
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(ev.type_.clone().unwrap_or_default()),
        json!(ev.reason.clone().unwrap_or_default()),
        json!(target),
        json!(io.field_path.clone().unwrap_or_default()),
        json!(source),
        json!(ev.message.clone().unwrap_or_default().trim()),
        json!(first),
        json!(count),
        name(&ev.metadata),
    ]
}

fn deployment_row(d: &Deployment, obj: &Value, t: Clock) -> Vec<Value> {
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    // A deployment prints its selector without FormatLabelSelector's "<none>".
    let selector =
        match LabelSelector::from_json(obj.pointer("/spec/selector").unwrap_or(&Value::Null)) {
            Ok(s) => s.to_string(),
            Err(_) => "<invalid>".to_owned(),
        };
    let (names, images) = containers(spec.template.spec.as_ref());
    vec![
        name(&d.metadata),
        json!(format!(
            "{}/{}",
            status.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        )),
        json!(status.updated_replicas.unwrap_or(0)),
        json!(status.available_replicas.unwrap_or(0)),
        t.age(&d.metadata),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

fn job_row(job: &Job, obj: &Value, t: Clock) -> Vec<Value> {
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let succeeded = status.succeeded.unwrap_or(0);
    let completions = match spec.completions {
        Some(c) => format!("{succeeded}/{c}"),
        None => match spec.parallelism.unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (&status.start_time, &status.completion_time) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(t.0.duration_since(start.0)),
        (Some(start), Some(end)) => human_duration(end.0.duration_since(start.0)),
    };
    let has = |ty: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == ty)
            .is_some_and(|c| c.status == "True")
    };
    let state = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(spec.template.spec.as_ref());
    vec![
        name(&job.metadata),
        json!(state),
        json!(completions),
        json!(duration),
        t.age(&job.metadata),
        json!(names),
        json!(images),
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
}

fn quantity(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> String {
    q.map_or_else(|| "<nil>".to_owned(), |q| q.0.clone())
}

/// `formatHPAMetrics` of the printers: at most two targets, `current/target` each.
fn hpa_metrics(
    specs: &[autoscaling_v2::MetricSpec],
    statuses: &[autoscaling_v2::MetricStatus],
) -> String {
    const MAX: usize = 2;
    if specs.is_empty() {
        return "<none>".to_owned();
    }
    let mut list = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let item = match spec.type_.as_str() {
            "External" => spec.external.as_ref().map(|ext| {
                let cur = status.and_then(|s| s.external.as_ref()).map(|s| &s.current);
                if ext.target.average_value.is_some() {
                    let current = cur
                        .and_then(|c| c.average_value.as_ref())
                        .map_or_else(|| "<unknown>".to_owned(), |q| q.0.clone());
                    format!(
                        "{current}/{} (avg)",
                        quantity(ext.target.average_value.as_ref())
                    )
                } else {
                    let current =
                        cur.map_or_else(|| "<unknown>".to_owned(), |c| quantity(c.value.as_ref()));
                    format!("{current}/{}", quantity(ext.target.value.as_ref()))
                }
            }),
            "Pods" => spec.pods.as_ref().map(|pods| {
                let current = status.and_then(|s| s.pods.as_ref()).map_or_else(
                    || "<unknown>".to_owned(),
                    |p| quantity(p.current.average_value.as_ref()),
                );
                format!("{current}/{}", quantity(pods.target.average_value.as_ref()))
            }),
            "Object" => spec.object.as_ref().map(|o| {
                let cur = status.and_then(|s| s.object.as_ref()).map(|s| &s.current);
                if o.target.average_value.is_some() {
                    let current = cur
                        .and_then(|c| c.average_value.as_ref())
                        .map_or_else(|| "<unknown>".to_owned(), |q| q.0.clone());
                    format!(
                        "{current}/{} (avg)",
                        quantity(o.target.average_value.as_ref())
                    )
                } else {
                    let current =
                        cur.map_or_else(|| "<unknown>".to_owned(), |c| quantity(c.value.as_ref()));
                    format!("{current}/{}", quantity(o.target.value.as_ref()))
                }
            }),
            "Resource" => spec.resource.as_ref().map(|r| {
                let cur = status.and_then(|s| s.resource.as_ref()).map(|s| &s.current);
                resource_target(&r.name, &r.target, cur)
            }),
            "ContainerResource" => spec.container_resource.as_ref().map(|r| {
                let cur = status
                    .and_then(|s| s.container_resource.as_ref())
                    .map(|s| &s.current);
                resource_target(&r.name, &r.target, cur)
            }),
            _ => None,
        };
        list.push(item.unwrap_or_else(|| "<unknown type>".to_owned()));
    }
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        format!("{} + {} more...", list.join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

fn resource_target(
    name: &str,
    target: &autoscaling_v2::MetricTarget,
    current: Option<&autoscaling_v2::MetricValueStatus>,
) -> String {
    if target.average_value.is_some() {
        let cur = current.map_or_else(
            || "<unknown>".to_owned(),
            |c| quantity(c.average_value.as_ref()),
        );
        format!("{name}: {cur}/{}", quantity(target.average_value.as_ref()))
    } else {
        let cur = current
            .and_then(|c| c.average_utilization)
            .map_or_else(|| "<unknown>".to_owned(), |u| format!("{u}%"));
        let want = target
            .average_utilization
            .map_or_else(|| "<auto>".to_owned(), |u| format!("{u}%"));
        format!("{name}: {cur}/{want}")
    }
}

fn hpa_v2_row(hpa: &autoscaling_v2::HorizontalPodAutoscaler, t: Clock) -> Vec<Value> {
    let spec = hpa.spec.clone().unwrap_or_default();
    let status = hpa.status.clone().unwrap_or_default();
    let metrics = hpa_metrics(
        spec.metrics.as_deref().unwrap_or(&[]),
        status.current_metrics.as_deref().unwrap_or(&[]),
    );
    vec![
        name(&hpa.metadata),
        json!(format!(
            "{}/{}",
            spec.scale_target_ref.kind, spec.scale_target_ref.name
        )),
        json!(metrics),
        json!(
            spec.min_replicas
                .map_or_else(|| "<unset>".to_owned(), |m| m.to_string())
        ),
        json!(spec.max_replicas),
        json!(status.current_replicas.unwrap_or(0)),
        t.age(&hpa.metadata),
    ]
}

/// An autoscaling/v1 HPA prints as its v2 form: a CPU utilization target, if any.
fn hpa_v1_row(hpa: &autoscaling_v1::HorizontalPodAutoscaler, t: Clock) -> Vec<Value> {
    let spec = hpa.spec.clone().unwrap_or_default();
    let status = hpa.status.clone().unwrap_or_default();
    let metrics = spec.target_cpu_utilization_percentage.map_or_else(
        || "<none>".to_owned(),
        |target| {
            let current = status
                .current_cpu_utilization_percentage
                .map_or_else(|| "<unknown>".to_owned(), |u| format!("{u}%"));
            format!("cpu: {current}/{target}%")
        },
    );
    vec![
        name(&hpa.metadata),
        json!(format!(
            "{}/{}",
            spec.scale_target_ref.kind, spec.scale_target_ref.name
        )),
        json!(metrics),
        json!(
            spec.min_replicas
                .map_or_else(|| "<unset>".to_owned(), |m| m.to_string())
        ),
        json!(spec.max_replicas),
        json!(status.current_replicas),
        t.age(&hpa.metadata),
    ]
}

fn ingress_row(ing: &Ingress, t: Clock) -> Vec<Value> {
    const MAX: usize = 3;
    let spec = ing.spec.clone().unwrap_or_default();
    let rules = spec.rules.unwrap_or_default();
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in &rules {
        if hosts.len() == MAX {
            more = true;
        }
        if !more && let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            hosts.push(h.to_owned());
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_owned()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let mut address: Vec<String> = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i.ip.clone()
                .filter(|ip| !ip.is_empty())
                .or_else(|| i.hostname.clone().filter(|h| !h.is_empty()))
        })
        .collect();
    address.sort();
    address.dedup();
    let ports = if spec.tls.is_some_and(|tls| !tls.is_empty()) {
        "80, 443"
    } else {
        "80"
    };
    vec![
        name(&ing.metadata),
        json!(
            spec.ingress_class_name
                .unwrap_or_else(|| "<none>".to_owned())
        ),
        json!(hosts),
        json!(address.join(",")),
        json!(ports),
        t.age(&ing.metadata),
    ]
}

fn binding_row(
    meta: &ObjectMeta,
    role_kind: &str,
    role_name: &str,
    subjects: Option<&[Subject]>,
    t: Clock,
) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in subjects.unwrap_or(&[]) {
        match s.kind.as_str() {
            "User" => users.push(s.name.clone()),
            "Group" => groups.push(s.name.clone()),
            "ServiceAccount" => sas.push(format!(
                "{}/{}",
                s.namespace.as_deref().unwrap_or(""),
                s.name
            )),
            _ => {}
        }
    }
    vec![
        name(meta),
        json!(format!("{role_kind}/{role_name}")),
        t.age(meta),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}
