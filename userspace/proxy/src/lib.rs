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
//! No API client and no runtime here: the caller hands objects in (from its watches) and decides
//! when to [`Proxy::sync`]. Failures never abort a sync; they land in [`ServiceStatus`] and are
//! retried by the next one.

#![forbid(unsafe_code)]

mod desired;
mod input;
mod proxy;
#[cfg(test)]
mod testutil;

pub use input::{
    ALGORITHM_ANNOTATION, DEFAULT_AFFINITY_TIMEOUT, InputError, NodeIdentity, ObjectKey,
    SERVICE_NAME_LABEL,
};
pub use proxy::{Failure, Proxy, ReconcileError, ServiceStatus, SyncReport};
