//! The maps shared by all skiff programs. Each is pinned by name under the loader's bpffs
//! directory, so the objects share them and a restarted agent adopts them untouched.
//! Sizes here are defaults; the loader overrides them from its configuration.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use skiff_ebpf_common::{
    Backend4, DEFAULT_BACKENDS_MAX, DEFAULT_SERVICES_MAX, Lb4Key, Lb4Service, STAT_MAX,
};

#[map]
pub static SKIFF_SVC4_V1: HashMap<Lb4Key, Lb4Service> = HashMap::pinned(DEFAULT_SERVICES_MAX, 0);

#[map]
pub static SKIFF_BE4_V1: HashMap<u32, Backend4> = HashMap::pinned(DEFAULT_BACKENDS_MAX, 0);

#[map]
pub static SKIFF_STATS_V1: PerCpuArray<u64> = PerCpuArray::pinned(STAT_MAX, 0);
