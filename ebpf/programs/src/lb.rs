//! Service lookup and backend selection over the slot-0 service map layout.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use skiff_ebpf_common::{Backend4, Lb4Key, Lb4Service, STAT_LB_SLOT_MISS};

use crate::{
    maps::{SKIFF_BE4_V1, SKIFF_SVC4_V1},
    stats::bump,
};

/// The service record of a frontend, copied out of the map.
#[inline(always)]
pub fn lookup_service(key: &Lb4Key) -> Option<Lb4Service> {
    // SAFETY: the value is copied out immediately; a concurrent update can at worst give a
    // stale but internally consistent copy, since userspace replaces records whole.
    unsafe { SKIFF_SVC4_V1.get(key).copied() }
}

/// Picks a backend for a new flow to the service `key` (a slot-0 key) whose record is `svc`.
/// Returns `None` when the service has no backend or its live bank is inconsistent.
#[inline(always)]
pub fn select_backend(key: &Lb4Key, svc: &Lb4Service) -> Option<Backend4> {
    let count = u32::from(svc.count);
    if count == 0 {
        return None;
    }
    // Slots hold only backends that may take new flows (terminating ones are kept in the
    // backend map for established flows but never get a slot), so any slot will do.
    let n = (random() % count) + 1;
    let slot_key = key.backend_slot(svc.bank_bit(), n as u16);
    // SAFETY: copied out at once, as above.
    let Some(slot) = (unsafe { SKIFF_SVC4_V1.get(&slot_key).copied() }) else {
        bump(STAT_LB_SLOT_MISS);
        return None;
    };
    // SAFETY: copied out at once, as above.
    let backend = unsafe { SKIFF_BE4_V1.get(&slot.backend_id).copied() };
    if backend.is_none() {
        bump(STAT_LB_SLOT_MISS);
    }
    backend
}

#[inline(always)]
fn random() -> u32 {
    // SAFETY: a helper without arguments or memory effects.
    unsafe { bpf_get_prandom_u32() }
}
