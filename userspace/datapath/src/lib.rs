//! skiff-datapath: loads, attaches and pins skiff's eBPF programs, and gives typed access to
//! their maps. It knows nothing of Kubernetes: callers speak in frontends and backends.
//!
//! ```text
//!  LbTable (one writer: ids, slot banks, refcounts)
//!     │ LbMaps trait
//!     ├── PinnedLbMaps ── bpf() on maps pinned under <bpffs>/maps (batch commands where the kernel has them)
//!     └── FakeLbMaps   ── in memory, for tests (checks the datapath's invariants on every write)
//!  Datapath ── loads the embedded objects, attaches programs, pins links under <bpffs>/links
//! ```

mod batch;
mod loader;
mod maglev;
mod maps;
mod model;
mod pinned;
mod pod;
mod table;
mod test_run;

pub use loader::{
    Attachment, Datapath, DatapathConfig, LoadError, attachments, cgroup2_mount, detach_all,
};
pub use maps::{FakeLbMaps, LbMaps, MapsError};
pub use model::{
    Algorithm, Backend, BackendState, Frontend, ParseError, Protocol, Scope, Service, ServiceKind,
};
pub use pinned::{
    CtFlow, MapUsage, PinnedLbMaps, Stats, gc_conntrack, map_usage, read_conntrack, read_stats,
};
pub use pod::{EndpointError, EndpointMap, PodDatapath, PodEndpoint};
pub use table::{LbTable, TableError};
pub use test_run::TestRun;
