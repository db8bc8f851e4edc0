//! skiff-proxy: skiff's kube-proxy replacement, from Services and EndpointSlices to the datapath's frontends.
//!
//! ```text
//!  Service ─┐  apply/delete       parse once,         sync(): recompute the dirty Services,
//!  Slice   ─┼────────────────▶   mark Services  ──▶  claim frontends (first namespace/name wins),
//!  Node    ─┘                     dirty               write only what changed
//!                                                           │ LbTable (one writer)
//!                                                           ▼
//!                                                  pinned maps │ FakeLbMaps
//! ```
//!
//! The core takes no API client and no runtime: the caller hands objects in and decides when to
//! [`Proxy::sync`]. [`run`] is that caller for a node agent: kube-runtime watches in, batched
//! syncs out, readiness and counters in a [`WatchHandle`]. Failures never abort a sync; they
//! land in [`ServiceStatus`] and are retried by the next one.

#![forbid(unsafe_code)]

mod desired;
mod input;
mod proxy;
#[cfg(test)]
mod testutil;
mod watch;

pub use input::{
    ALGORITHM_ANNOTATION, DEFAULT_AFFINITY_TIMEOUT, InputError, NodeIdentity, ObjectKey,
    SERVICE_NAME_LABEL,
};
pub use proxy::{Failure, Proxy, ReconcileError, ServiceStatus, SyncReport};
pub use watch::{WatchConfig, WatchError, WatchHandle, WatchMetrics, node_addresses, run};
