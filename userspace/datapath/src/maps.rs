//! The kernel maps behind a trait: `PinnedLbMaps` (real, in pinned.rs) and `FakeLbMaps` (here).

use std::collections::BTreeMap;

use skiff_ebpf_common::{ALG_MAGLEV, Backend4, Lb4Key, Lb4Service, Maglev4Key};

/// A failed map operation.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(
        "opening pinned map {path}: {source} (is the datapath attached? try `skiff datapath attach`)"
    )]
    Open {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "map {map} is full ({op} refused); attach the datapath with a larger {flag} (see `skiff datapath attach --help`)"
    )]
    Full {
        op: &'static str,
        map: &'static str,
        flag: &'static str,
    },
    #[error("{op} on map {map} failed: {source}")]
    Op {
        op: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("injected fault in {op} (FakeLbMaps::fail_after)")]
    Injected { op: &'static str },
}

/// Raw access to the load-balancing maps, one operation per kernel map update. Everything
/// above this trait (ids, banks, refcounts) lives in [`crate::LbTable`], so it is tested once
/// against [`FakeLbMaps`] and runs unchanged on the real maps.
pub trait LbMaps {
    fn update_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapsError>;
    fn delete_service(&mut self, key: &Lb4Key) -> Result<(), MapsError>;
    fn update_backend(&mut self, id: u32, value: &Backend4) -> Result<(), MapsError>;
    fn delete_backend(&mut self, id: u32) -> Result<(), MapsError>;
    fn dump_services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, MapsError>;
    fn dump_backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError>;
    fn update_maglev(&mut self, key: &Maglev4Key, backend_id: u32) -> Result<(), MapsError>;
    fn delete_maglev(&mut self, key: &Maglev4Key) -> Result<(), MapsError>;
    fn dump_maglev(&self) -> Result<Vec<(Maglev4Key, u32)>, MapsError>;

    // Many elements at once: the real maps use the kernel's batch commands (one bpf() call).
    // Elements are applied in order and a failure stops at the failing one, so callers order
    // writes exactly as they would single updates.

    /// Creates or replaces every service map entry (slots, records), in order.
    fn update_services(&mut self, entries: &[(Lb4Key, Lb4Service)]) -> Result<(), MapsError> {
        entries
            .iter()
            .try_for_each(|(key, value)| self.update_service(key, value))
    }

    /// Deletes service map entries; missing ones are no error.
    fn delete_services(&mut self, keys: &[Lb4Key]) -> Result<(), MapsError> {
        keys.iter().try_for_each(|key| self.delete_service(key))
    }

    /// Creates or replaces Maglev slots, in order.
    fn update_maglev_slots(&mut self, entries: &[(Maglev4Key, u32)]) -> Result<(), MapsError> {
        entries
            .iter()
            .try_for_each(|(key, id)| self.update_maglev(key, *id))
    }

    /// Deletes Maglev slots; missing ones are no error.
    fn delete_maglev_slots(&mut self, keys: &[Maglev4Key]) -> Result<(), MapsError> {
        keys.iter().try_for_each(|key| self.delete_maglev(key))
    }
}

/// In-memory maps for tests. After every write it checks what the kernel programs rely on:
/// every live slot of the service written to (of every service, when a backend goes) exists and
/// names an existing backend. A writer that ever leaves a half-written backend set visible
/// fails the test at that write.
#[derive(Debug, Default, Clone)]
pub struct FakeLbMaps {
    pub services: BTreeMap<Lb4Key, Lb4Service>,
    pub backends: BTreeMap<u32, Backend4>,
    pub maglev: BTreeMap<Maglev4Key, u32>,
    /// Number of writes performed so far.
    pub writes: usize,
    fail_after: Option<usize>,
    fail_only: Option<usize>,
}

impl FakeLbMaps {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every write after the first `n` fail, like a full map or a failing syscall would.
    pub fn fail_after(&mut self, n: Option<usize>) {
        self.fail_after = n;
    }

    /// Makes only the write with index `n` (counting from 0 over the fake's life) fail, as a
    /// transient error would.
    pub fn fail_only(&mut self, n: Option<usize>) {
        self.fail_only = n;
    }

    fn write(&mut self, op: &'static str) -> Result<(), MapsError> {
        if self.fail_after.is_some_and(|n| self.writes >= n) {
            return Err(MapsError::Injected { op });
        }
        let this = self.writes;
        self.writes += 1;
        if self.fail_only == Some(this) {
            return Err(MapsError::Injected { op });
        }
        Ok(())
    }

    /// Panics with a description when a live slot or backend of any service is missing.
    pub fn assert_consistent(&self) {
        for key in self.services.keys().filter(|k| k.slot == 0) {
            self.assert_service_consistent(key);
        }
    }

    /// The same check for the service `key` (any of its keys) belongs to.
    fn assert_service_consistent(&self, key: &Lb4Key) {
        let key = &Lb4Key { slot: 0, ..*key };
        let Some(svc) = self.services.get(key) else {
            return;
        };
        let total = svc.count + svc.qcount;
        for n in 1..=total {
            let slot_key = key.backend_slot(svc.bank_bit(), n);
            let slot = self.services.get(&slot_key).unwrap_or_else(|| {
                panic!(
                    "service {key:?} bank {} is missing slot {n} of {total}",
                    svc.bank
                )
            });
            assert!(
                self.backends.contains_key(&slot.backend_id),
                "service {key:?} slot {n} names backend {} which does not exist",
                slot.backend_id
            );
        }
        if svc.algorithm == ALG_MAGLEV && svc.count > 0 {
            for index in 0..svc.maglev_size {
                let mkey = svc.maglev_key(index);
                let id = self.maglev.get(&mkey).unwrap_or_else(|| {
                    panic!(
                        "service {key:?} bank {} lacks Maglev slot {index}",
                        svc.bank
                    )
                });
                assert!(
                    self.backends.contains_key(id),
                    "Maglev slot {index} names a missing backend"
                );
            }
        }
    }
}

impl LbMaps for FakeLbMaps {
    fn update_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapsError> {
        self.write("update service")?;
        self.services.insert(*key, *value);
        self.assert_service_consistent(key);
        Ok(())
    }

    fn delete_service(&mut self, key: &Lb4Key) -> Result<(), MapsError> {
        self.write("delete service")?;
        self.services.remove(key);
        self.assert_service_consistent(key);
        Ok(())
    }

    fn update_backend(&mut self, id: u32, value: &Backend4) -> Result<(), MapsError> {
        // Adding or changing a backend cannot break a service; removing one can.
        self.write("update backend")?;
        self.backends.insert(id, *value);
        Ok(())
    }

    fn delete_backend(&mut self, id: u32) -> Result<(), MapsError> {
        self.write("delete backend")?;
        self.backends.remove(&id);
        self.assert_consistent();
        Ok(())
    }

    fn dump_services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, MapsError> {
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn dump_backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
        Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
    }

    // Maglev writes go to an idle bank; the check after the record switch covers them, and
    // checking whole tables after each of their thousands of slots would take minutes.
    fn update_maglev(&mut self, key: &Maglev4Key, backend_id: u32) -> Result<(), MapsError> {
        self.write("update maglev")?;
        self.maglev.insert(*key, backend_id);
        Ok(())
    }

    fn delete_maglev(&mut self, key: &Maglev4Key) -> Result<(), MapsError> {
        self.write("delete maglev")?;
        self.maglev.remove(key);
        Ok(())
    }

    fn dump_maglev(&self) -> Result<Vec<(Maglev4Key, u32)>, MapsError> {
        Ok(self.maglev.iter().map(|(k, v)| (*k, *v)).collect())
    }
}
