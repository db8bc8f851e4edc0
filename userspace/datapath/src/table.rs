//! `LbTable`: the one writer of the load-balancing maps. It owns backend ids, reverse-NAT
//! indexes and slot banks, and rebuilds all of them from the maps on open, so a restarted agent
//! (or the CLI) picks up exactly what the kernel is using.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
};

use skiff_ebpf_common::{
    ALG_MAGLEV, BACKEND_FLAG_LOCAL, Backend4, Lb4Key, Lb4Service, MAX_BACKENDS_PER_SERVICE,
    SLOT_BANK_BIT, SVC_FLAG_LOCAL_ONLY, SVC_FLAG_TWO_SCOPES,
};

use crate::{
    Algorithm, Backend, BackendState, Frontend, LbMaps, MapsError, Service, ServiceKind, maglev,
};

/// A backend is shared by every service that names the same address, port and protocol.
type BackendIdentity = (SocketAddrV4, u8);

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("service {frontend} has {count} backends; at most {max} fit in one service", max = MAX_BACKENDS_PER_SERVICE)]
    TooManyBackends { frontend: Frontend, count: usize },
    #[error("no free reverse-NAT index: {} frontends exist already", u16::MAX)]
    RevNatExhausted,
    #[error("no free backend id")]
    BackendIdsExhausted,
}

#[derive(Debug, Clone)]
struct ServiceState {
    record: Lb4Service,
    /// Backend ids of the live bank, active ones first (as in the slots).
    backend_ids: Vec<u32>,
    /// The live Maglev table (backend id per slot); empty unless the service uses Maglev.
    maglev: Vec<u32>,
}

#[derive(Debug, Clone)]
struct BackendEntry {
    id: u32,
    value: Backend4,
    /// Number of service slots naming this backend.
    refs: u32,
}

/// The writer of the service and backend maps.
#[derive(Debug)]
pub struct LbTable<M> {
    maps: M,
    services: BTreeMap<Lb4Key, ServiceState>,
    backends: HashMap<BackendIdentity, BackendEntry>,
    identity_by_id: HashMap<u32, BackendIdentity>,
    rev_nat_used: BTreeSet<u16>,
    next_backend_id: u32,
    next_rev_nat: u32,
    /// Backends whose reference count dropped to zero since the last release: looking only at
    /// these keeps an update O(its own backends), not O(all backends).
    maybe_unreferenced: Vec<BackendIdentity>,
}

impl<M: LbMaps> LbTable<M> {
    /// Adopts what the maps hold. Leftovers of an interrupted writer (slots of an idle bank,
    /// backends no slot names) are removed; live records and slots are never touched.
    pub fn open(maps: M) -> Result<Self, TableError> {
        Self::load(maps, true)
    }

    /// Reads what the maps hold without writing anything, for inspection beside a live writer
    /// (whose half-written idle bank [`LbTable::open`] would take for leftovers and remove).
    /// Only reading methods make sense on the result.
    pub fn inspect(maps: M) -> Result<Self, TableError> {
        Self::load(maps, false)
    }

    fn load(mut maps: M, repair: bool) -> Result<Self, TableError> {
        let dump = maps.dump_services()?;
        let all: HashMap<Lb4Key, Lb4Service> = dump.iter().copied().collect();
        let mut services = BTreeMap::new();
        let mut live_slots = BTreeSet::new();
        for (key, record) in dump.iter().filter(|(k, _)| k.slot == 0) {
            let mut backend_ids = Vec::new();
            for n in 1..=record.count + record.qcount {
                let slot_key = key.backend_slot(record.bank_bit(), n);
                if let Some(slot) = all.get(&slot_key) {
                    backend_ids.push(slot.backend_id);
                    live_slots.insert(slot_key);
                }
            }
            services.insert(
                *key,
                ServiceState {
                    record: *record,
                    backend_ids,
                    maglev: Vec::new(),
                },
            );
        }
        if repair {
            let leftovers: Vec<Lb4Key> = dump
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| k.slot != 0 && !live_slots.contains(k))
                .collect();
            maps.delete_services(&leftovers)?;
        }

        let mut refs: HashMap<u32, u32> = HashMap::new();
        for id in services.values().flat_map(|s| &s.backend_ids) {
            *refs.entry(*id).or_default() += 1;
        }
        let mut backends = HashMap::new();
        let mut identity_by_id = HashMap::new();
        let mut max_id = 0;
        for (id, value) in maps.dump_backends()? {
            let Some(&count) = refs.get(&id) else {
                if repair {
                    maps.delete_backend(id)?;
                }
                continue;
            };
            let identity = identity_of(&value);
            max_id = max_id.max(id);
            identity_by_id.insert(id, identity);
            backends.insert(
                identity,
                BackendEntry {
                    id,
                    value,
                    refs: count,
                },
            );
        }
        // Maglev slots outside the live table of a Maglev service are leftovers too.
        let mut by_rev_nat: HashMap<u16, &mut ServiceState> = services
            .values_mut()
            .filter(|s| s.record.algorithm == ALG_MAGLEV && s.record.count > 0)
            .map(|s| {
                s.maglev = vec![0; s.record.maglev_size as usize];
                (s.record.rev_nat_id, s)
            })
            .collect();
        let mut leftovers = Vec::new();
        for (key, id) in maps.dump_maglev()? {
            match by_rev_nat.get_mut(&key.rev_nat_id) {
                Some(s) if s.record.bank == key.bank && key.index < s.record.maglev_size => {
                    s.maglev[key.index as usize] = id;
                }
                _ if repair => leftovers.push(key),
                _ => {}
            }
        }
        maps.delete_maglev_slots(&leftovers)?;
        let rev_nat_used: BTreeSet<u16> = services.values().map(|s| s.record.rev_nat_id).collect();
        let next_rev_nat = rev_nat_used.last().map_or(1, |last| u32::from(*last) + 1);
        Ok(Self {
            maps,
            services,
            backends,
            identity_by_id,
            rev_nat_used,
            next_backend_id: max_id.wrapping_add(1).max(1),
            next_rev_nat,
            maybe_unreferenced: Vec::new(),
        })
    }

    /// Installs or replaces a service. The new backend set is written into the idle slot bank
    /// and published by a single update of the service record, so the datapath sees either the
    /// old set or the new one, never a mix. Unchanged services cost no map write; returns
    /// whether anything was written.
    pub fn upsert(&mut self, service: &Service) -> Result<bool, TableError> {
        let key = service.frontend.key();
        let proto = service.frontend.protocol.number();
        let mut seen = BTreeSet::new();
        let wanted: Vec<&Backend> = service
            .backends
            .iter()
            .filter(|b| seen.insert(b.address))
            .collect();
        if wanted.len() > usize::from(MAX_BACKENDS_PER_SERVICE) {
            return Err(TableError::TooManyBackends {
                frontend: service.frontend,
                count: wanted.len(),
            });
        }
        let (active, inactive): (Vec<&Backend>, Vec<&Backend>) = wanted
            .into_iter()
            .partition(|b| b.state == BackendState::Active);

        let prev = self.services.get(&key).cloned();
        let rev_nat_id = match &prev {
            Some(p) => p.record.rev_nat_id,
            None => self.free_rev_nat()?,
        };

        let mut ids = Vec::with_capacity(active.len() + inactive.len());
        let result = (|| {
            for backend in active.iter().chain(&inactive) {
                ids.push(self.ensure_backend(backend, proto)?);
            }
            Ok::<_, TableError>(())
        })();
        if let Err(err) = result {
            self.release_unpublished(&ids)?;
            return Err(err);
        }

        let mut record = Lb4Service {
            backend_id: 0,
            count: active.len() as u16,
            qcount: inactive.len() as u16,
            rev_nat_id,
            flags: service.flags(),
            affinity_timeout: service.affinity_timeout,
            algorithm: service.algorithm.number(),
            bank: 0,
            _pad: [0; 2],
            maglev_size: match service.algorithm {
                Algorithm::Maglev => maglev::table_size(active.len()),
                Algorithm::Random => 0,
            },
        };
        if let Some(p) = &prev {
            record.bank = p.record.bank;
            if p.record == record && p.backend_ids == ids {
                return Ok(false);
            }
            record.bank = 1 - p.record.bank;
            // A table big enough for the new set keeps its size, so flows keep their slots.
            if record.algorithm == ALG_MAGLEV
                && u64::from(p.record.maglev_size) >= 100 * active.len() as u64
                && p.record.maglev_size >= record.maglev_size
            {
                record.maglev_size = p.record.maglev_size;
            }
        }

        let mut table = Vec::new();
        if record.algorithm == ALG_MAGLEV && record.count > 0 {
            let names: Vec<String> = active.iter().map(|b| b.address.to_string()).collect();
            let active_ids = &ids[..active.len()];
            // Slots whose backend stays keep it: only the flows of a removed backend move.
            let kept: Vec<Option<usize>> = match &prev {
                Some(p) if p.maglev.len() == record.maglev_size as usize => p
                    .maglev
                    .iter()
                    .map(|id| active_ids.iter().position(|a| a == id))
                    .collect(),
                _ => vec![None; record.maglev_size as usize],
            };
            table = maglev::rebalance(&kept, &names, record.maglev_size)
                .into_iter()
                .map(|owner| active_ids[owner as usize])
                .collect();
        }
        if let Err(err) = self.write_bank(&key, &record, &ids, &table) {
            // Nothing of the idle bank is live yet: take back what was written (best effort;
            // a reopen removes anything left) so no slot or backend leaks.
            let _ = self.clear_bank(&key, &record, ids.len(), table.len());
            let _ = self.release_unpublished(&ids);
            return Err(err);
        }
        self.rev_nat_used.insert(rev_nat_id);
        for id in &ids {
            self.add_ref(*id, 1);
        }
        let state = ServiceState {
            record,
            backend_ids: ids,
            maglev: table,
        };
        if let Some(prev) = self.services.insert(key, state) {
            self.retire(&key, &prev)?;
        }
        Ok(true)
    }

    /// Removes a service; `false` when there was none.
    pub fn delete(&mut self, frontend: &Frontend) -> Result<bool, TableError> {
        let key = frontend.key();
        let Some(prev) = self.services.get(&key).cloned() else {
            return Ok(false);
        };
        self.maps.delete_service(&key)?;
        self.services.remove(&key);
        self.rev_nat_used.remove(&prev.record.rev_nat_id);
        self.retire(&key, &prev)?;
        Ok(true)
    }

    /// Every service, sorted by frontend.
    #[must_use]
    pub fn list(&self) -> Vec<Service> {
        let mut out: Vec<Service> = self
            .services
            .iter()
            .filter_map(|(key, state)| self.describe(key, state))
            .collect();
        out.sort_by_key(|s| s.frontend);
        out
    }

    /// One service, as the maps hold it.
    #[must_use]
    pub fn get(&self, frontend: &Frontend) -> Option<Service> {
        let key = frontend.key();
        self.describe(&key, self.services.get(&key)?)
    }

    /// The reverse-NAT index of a frontend.
    #[must_use]
    pub fn rev_nat_id(&self, frontend: &Frontend) -> Option<u16> {
        Some(self.services.get(&frontend.key())?.record.rev_nat_id)
    }

    /// The maps underneath (for tests and inspection).
    pub const fn maps(&self) -> &M {
        &self.maps
    }

    /// The maps underneath, e.g. to make a [`crate::FakeLbMaps`] fail mid-test.
    pub const fn maps_mut(&mut self) -> &mut M {
        &mut self.maps
    }

    /// Every frontend, sorted, without building its backend list.
    #[must_use]
    pub fn frontends(&self) -> Vec<Frontend> {
        let mut out: Vec<Frontend> = self
            .services
            .keys()
            .filter_map(Frontend::from_key)
            .collect();
        out.sort();
        out
    }

    fn describe(&self, key: &Lb4Key, state: &ServiceState) -> Option<Service> {
        let frontend = Frontend::from_key(key)?;
        let backends = state
            .backend_ids
            .iter()
            .filter_map(|id| {
                let identity = self.identity_by_id.get(id)?;
                let entry = self.backends.get(identity)?;
                Some(Backend {
                    address: identity.0,
                    state: BackendState::from_number(entry.value.state),
                    local: entry.value.flags & BACKEND_FLAG_LOCAL != 0,
                })
            })
            .collect();
        Some(Service {
            frontend,
            kind: ServiceKind::from_flags(state.record.flags),
            algorithm: Algorithm::from_number(state.record.algorithm),
            affinity_timeout: state.record.affinity_timeout,
            local_only: state.record.flags & SVC_FLAG_LOCAL_ONLY != 0,
            two_scopes: state.record.flags & SVC_FLAG_TWO_SCOPES != 0,
            backends,
        })
    }

    /// Writes the slots and Maglev table of `record`'s bank, then publishes `record`.
    fn write_bank(
        &mut self,
        key: &Lb4Key,
        record: &Lb4Service,
        ids: &[u32],
        table: &[u32],
    ) -> Result<(), TableError> {
        let bank_bit = record.bank_bit();
        let slots: Vec<(Lb4Key, Lb4Service)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let slot = Lb4Service {
                    backend_id: *id,
                    ..Lb4Service::default()
                };
                // n < MAX_BACKENDS_PER_SERVICE, checked by upsert.
                (key.backend_slot(bank_bit, n as u16 + 1), slot)
            })
            .collect();
        self.maps.update_services(&slots)?;
        let table: Vec<_> = table
            .iter()
            .enumerate()
            .map(|(index, id)| (record.maglev_key(index as u32), *id))
            .collect();
        self.maps.update_maglev_slots(&table)?;
        self.maps.update_service(key, record)?;
        Ok(())
    }

    /// Deletes `slots` slots and `maglev` Maglev entries of `record`'s bank.
    fn clear_bank(
        &mut self,
        key: &Lb4Key,
        record: &Lb4Service,
        slots: usize,
        maglev: usize,
    ) -> Result<(), TableError> {
        let bank_bit = record.bank_bit();
        let slots: Vec<Lb4Key> = (1..=slots)
            .map(|n| key.backend_slot(bank_bit, n as u16))
            .collect();
        self.maps.delete_services(&slots)?;
        let table: Vec<_> = (0..maglev)
            .map(|index| record.maglev_key(index as u32))
            .collect();
        self.maps.delete_maglev_slots(&table)?;
        Ok(())
    }

    /// Deletes the slots (and Maglev table) of a replaced record's bank and drops its backend
    /// references.
    fn retire(&mut self, key: &Lb4Key, prev: &ServiceState) -> Result<(), TableError> {
        self.clear_bank(key, &prev.record, prev.backend_ids.len(), prev.maglev.len())?;
        for id in &prev.backend_ids {
            self.add_ref(*id, -1);
        }
        self.release_unreferenced()
    }

    fn add_ref(&mut self, id: u32, delta: i32) {
        if let Some(identity) = self.identity_by_id.get(&id)
            && let Some(entry) = self.backends.get_mut(identity)
        {
            entry.refs = entry.refs.saturating_add_signed(delta);
            if entry.refs == 0 {
                self.maybe_unreferenced.push(*identity);
            }
        }
    }

    /// Releases the backends among `ids` that only a failed, unpublished update named.
    fn release_unpublished(&mut self, ids: &[u32]) -> Result<(), TableError> {
        for id in ids {
            if let Some(identity) = self.identity_by_id.get(id)
                && self.backends.get(identity).is_some_and(|e| e.refs == 0)
            {
                self.maybe_unreferenced.push(*identity);
            }
        }
        self.release_unreferenced()
    }

    fn release_unreferenced(&mut self) -> Result<(), TableError> {
        while let Some(identity) = self.maybe_unreferenced.pop() {
            let Some(entry) = self.backends.get(&identity) else {
                continue;
            };
            if entry.refs != 0 {
                continue;
            }
            let id = entry.id;
            if let Err(err) = self.maps.delete_backend(id) {
                // Keep it a candidate: the next release retries.
                self.maybe_unreferenced.push(identity);
                return Err(err.into());
            }
            self.backends.remove(&identity);
            self.identity_by_id.remove(&id);
        }
        Ok(())
    }

    /// The id of a backend, creating or updating its map entry as needed.
    fn ensure_backend(&mut self, backend: &Backend, proto: u8) -> Result<u32, TableError> {
        let value = Backend4 {
            address: u32::from_ne_bytes(backend.address.ip().octets()),
            port: backend.address.port().to_be(),
            proto,
            state: backend.state.number(),
            zone: 0,
            flags: if backend.local { BACKEND_FLAG_LOCAL } else { 0 },
            _pad: [0; 2],
        };
        let identity = (backend.address, proto);
        if let Some(entry) = self.backends.get_mut(&identity) {
            if entry.value != value {
                self.maps.update_backend(entry.id, &value)?;
                entry.value = value;
            }
            return Ok(entry.id);
        }
        let id = self.free_backend_id()?;
        self.maps.update_backend(id, &value)?;
        self.backends
            .insert(identity, BackendEntry { id, value, refs: 0 });
        self.identity_by_id.insert(id, identity);
        Ok(id)
    }

    fn free_backend_id(&mut self) -> Result<u32, TableError> {
        let used = &self.identity_by_id;
        round_robin(&mut self.next_backend_id, u32::MAX, used.len(), |id| {
            used.contains_key(&id)
        })
        .ok_or(TableError::BackendIdsExhausted)
    }

    fn free_rev_nat(&mut self) -> Result<u16, TableError> {
        let used = &self.rev_nat_used;
        round_robin(
            &mut self.next_rev_nat,
            u32::from(u16::MAX),
            used.len(),
            |id| u16::try_from(id).is_ok_and(|id| used.contains(&id)),
        )
        .and_then(|id| u16::try_from(id).ok())
        .ok_or(TableError::RevNatExhausted)
    }
}

/// The next id in 1..=max from `next` on, wrapping, that is not `used` (of which there are
/// `used_count`). Ids are handed out round-robin so a freed one is not reused at once: a stale
/// conntrack entry cannot point at another backend or translate replies to another service's
/// address, and allocation stays O(1) while ids are plentiful.
fn round_robin(
    next: &mut u32,
    max: u32,
    used_count: usize,
    used: impl Fn(u32) -> bool,
) -> Option<u32> {
    if *next == 0 || *next > max {
        *next = 1;
    }
    // used_count + 1 consecutive ids hold a free one, if there is any.
    for _ in 0..=used_count {
        let id = *next;
        *next = if id == max { 1 } else { id + 1 };
        if !used(id) {
            return Some(id);
        }
    }
    None
}

fn identity_of(value: &Backend4) -> BackendIdentity {
    (
        SocketAddrV4::new(
            Ipv4Addr::from(value.address.to_ne_bytes()),
            u16::from_be(value.port),
        ),
        value.proto,
    )
}

/// The bank bit is part of the public ABI; keep the two banks disjoint from real slot numbers.
const _: () = assert!(MAX_BACKENDS_PER_SERVICE < SLOT_BANK_BIT);

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{FakeLbMaps, Protocol};

    fn fe(last: u8) -> Frontend {
        Frontend::new(Ipv4Addr::new(10, 96, 0, last), 80, Protocol::Tcp)
    }

    fn be(last: u8) -> Backend {
        Backend::active(SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080))
    }

    fn svc(last: u8, backends: &[u8]) -> Service {
        Service::new(fe(last), backends.iter().map(|b| be(*b)).collect())
    }

    #[test]
    fn upsert_then_list_round_trips() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1, 2, 3])).unwrap();
        assert_eq!(t.list(), vec![svc(1, &[1, 2, 3])]);
        // 3 backends + 3 slots + 1 record.
        assert_eq!(t.maps().backends.len(), 3);
        assert_eq!(t.maps().services.len(), 4);
    }

    #[test]
    fn round_robin_wraps_skips_used_ids_and_finds_the_last_free_one() {
        let used = [1, 2, 4];
        let mut next = 3;
        let taken = |id| used.contains(&id);
        assert_eq!(round_robin(&mut next, 4, 3, taken), Some(3));
        assert_eq!(next, 4);
        let used = [1, 2, 3, 4];
        assert_eq!(round_robin(&mut next, 4, 4, |id| used.contains(&id)), None);
        // Out of range (as after u16::MAX rev-NAT ids) starts over at 1.
        let mut next = 9;
        assert_eq!(round_robin(&mut next, 4, 3, |id| id != 4), Some(4));
    }

    #[test]
    fn reverse_nat_ids_are_not_reused_at_once_also_after_reopening() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1])).unwrap();
        t.upsert(&svc(2, &[1])).unwrap();
        assert_eq!(t.rev_nat_id(&fe(2)), Some(2));
        assert!(t.delete(&fe(1)).unwrap());
        t.upsert(&svc(3, &[1])).unwrap();
        assert_eq!(t.rev_nat_id(&fe(3)), Some(3), "1 was freed a moment ago");
        let mut t = LbTable::open(t.maps().clone()).unwrap();
        t.upsert(&svc(4, &[1])).unwrap();
        assert_eq!(t.rev_nat_id(&fe(4)), Some(4));
    }

    #[test]
    fn backends_left_by_one_update_are_freed_by_it_alone() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1, 2])).unwrap();
        t.upsert(&svc(2, &[3, 4])).unwrap();
        t.upsert(&svc(1, &[2, 5])).unwrap();
        let addrs: BTreeSet<u32> = t.maps().backends.values().map(|b| b.address).collect();
        assert_eq!(addrs.len(), 4, "backend 1 is freed; 2-5 stay: {addrs:?}");
        assert!(t.delete(&fe(2)).unwrap());
        assert_eq!(t.maps().backends.len(), 2);
        assert_eq!(t.list(), vec![svc(1, &[2, 5])]);
    }

    #[test]
    fn replacing_backends_switches_banks_and_cleans_the_old_one() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1, 2, 3])).unwrap();
        // FakeLbMaps asserts after every write that no half-written set is ever live.
        t.upsert(&svc(1, &[3, 4])).unwrap();
        let maps = t.maps();
        let record = maps.services[&fe(1).key()];
        assert_eq!((record.count, record.bank), (2, 1));
        assert_eq!(maps.services.len(), 3, "old bank slots must be gone");
        let addrs: BTreeSet<u32> = maps.backends.values().map(|b| b.address).collect();
        assert_eq!(addrs.len(), 2, "backends 1 and 2 are no longer referenced");
        assert_eq!(t.get(&fe(1)).unwrap().backends, vec![be(3), be(4)]);
    }

    #[test]
    fn unchanged_upsert_writes_nothing() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        assert!(
            t.upsert(&svc(1, &[1, 2])).unwrap(),
            "a new service is written"
        );
        let writes = t.maps().writes;
        assert!(
            !t.upsert(&svc(1, &[1, 2])).unwrap(),
            "reported as unchanged"
        );
        assert_eq!(t.maps().writes, writes);
    }

    #[test]
    fn backends_are_shared_between_services_and_freed_with_the_last() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1, 2])).unwrap();
        t.upsert(&svc(2, &[2, 3])).unwrap();
        assert_eq!(t.maps().backends.len(), 3);
        assert!(t.delete(&fe(1)).unwrap());
        assert_eq!(t.maps().backends.len(), 2);
        assert!(!t.delete(&fe(1)).unwrap());
        assert!(t.delete(&fe(2)).unwrap());
        assert!(t.maps().backends.is_empty());
        assert!(t.maps().services.is_empty());
    }

    #[test]
    fn terminating_backends_get_slots_after_the_active_ones() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        let mut s = svc(1, &[1, 2, 3]);
        s.backends[0].state = BackendState::Terminating;
        t.upsert(&s).unwrap();
        let record = t.maps().services[&fe(1).key()];
        assert_eq!((record.count, record.qcount), (2, 1));
        let last = t.maps().services[&fe(1).key().backend_slot(record.bank_bit(), 3)];
        assert_eq!(
            t.maps().backends[&last.backend_id].state,
            BackendState::Terminating.number()
        );
        // Order is active first, then inactive.
        let listed = t.get(&fe(1)).unwrap();
        assert_eq!(listed.backends[2].state, BackendState::Terminating);
    }

    #[test]
    fn zero_backends_is_a_service_with_count_zero() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[])).unwrap();
        assert_eq!(t.maps().services[&fe(1).key()].count, 0);
        assert_eq!(t.get(&fe(1)).unwrap().backends, vec![]);
    }

    #[test]
    fn reopening_adopts_state_and_removes_leftovers_of_a_crash() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1, 2])).unwrap();
        t.upsert(&svc(2, &[3])).unwrap();
        let rev = t.rev_nat_id(&fe(2)).unwrap();
        let mut maps = t.maps().clone();
        // A writer that died after writing the idle bank and a new backend.
        let stray = fe(1).key().backend_slot(SLOT_BANK_BIT, 1);
        maps.services.insert(
            stray,
            Lb4Service {
                backend_id: 99,
                ..Default::default()
            },
        );
        maps.backends.insert(99, Backend4::default());
        // An inspector beside a live writer sees the published sets and touches nothing: the
        // idle bank may be a writer's work in progress.
        let writes = maps.writes;
        let seen = LbTable::inspect(maps.clone()).unwrap();
        assert_eq!(seen.list(), vec![svc(1, &[1, 2]), svc(2, &[3])]);
        assert_eq!(seen.maps().writes, writes);
        assert!(seen.maps().services.contains_key(&stray));
        assert!(seen.maps().backends.contains_key(&99));
        let t = LbTable::open(maps).unwrap();
        assert!(!t.maps().services.contains_key(&stray));
        assert!(!t.maps().backends.contains_key(&99));
        assert_eq!(t.list(), vec![svc(1, &[1, 2]), svc(2, &[3])]);
        assert_eq!(t.rev_nat_id(&fe(2)), Some(rev));
    }

    #[test]
    fn a_failed_write_leaves_the_live_set_intact() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        t.upsert(&svc(1, &[1, 2])).unwrap();
        // 3 new backends + 3 slots, then the record (write 7), then the old bank goes.
        for budget in 0..10 {
            let mut copy = LbTable::open(t.maps().clone()).unwrap();
            let start = copy.maps.writes;
            copy.maps.fail_after(Some(start + budget));
            let result = copy.upsert(&svc(1, &[3, 4, 5]));
            copy.maps.fail_after(None);
            copy.maps.assert_consistent();
            let live = LbTable::open(copy.maps.clone()).unwrap().list();
            // Never a mix: the old set until the record switches, the new one after (a failure
            // while retiring the old bank is reported but the switch has happened).
            let (old, new) = (vec![svc(1, &[1, 2])], vec![svc(1, &[3, 4, 5])]);
            assert!(live == old || live == new, "budget {budget}: {live:?}");
            if result.is_ok() {
                assert_eq!(live, new, "budget {budget}");
            }
            if budget < 7 {
                assert_eq!(
                    live, old,
                    "budget {budget}: switched before all slots were written"
                );
            }
        }
    }

    #[test]
    fn maglev_tables_switch_with_the_record_and_leave_no_leftovers() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        let mut s = svc(1, &[1, 2, 3]);
        s.algorithm = Algorithm::Maglev;
        t.upsert(&s).unwrap();
        let m = skiff_ebpf_common::MAGLEV_DEFAULT_SIZE as usize;
        assert_eq!(t.maps().maglev.len(), m);
        let record = t.maps().services[&fe(1).key()];
        assert_eq!(record.maglev_size as usize, m);
        // Replacing the set writes the other bank's table first (FakeLbMaps checks the live
        // table after every record write), then removes the old one.
        s.backends.pop();
        t.upsert(&s).unwrap();
        assert_eq!(t.maps().maglev.len(), m);
        let live: BTreeSet<u32> = t.maps().maglev.values().copied().collect();
        assert_eq!(live.len(), 2, "only the two remaining backends own slots");
        // Back to random: the table goes away.
        s.algorithm = Algorithm::Random;
        t.upsert(&s).unwrap();
        assert!(t.maps().maglev.is_empty());
        s.algorithm = Algorithm::Maglev;
        t.upsert(&s).unwrap();
        assert!(t.delete(&fe(1)).unwrap());
        assert!(t.maps().maglev.is_empty());
    }

    #[test]
    fn maglev_removal_moves_only_the_removed_backends_slots() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        let mut s = svc(1, &[1, 2, 3, 4, 5]);
        s.algorithm = Algorithm::Maglev;
        t.upsert(&s).unwrap();
        let owner = |t: &LbTable<FakeLbMaps>| -> Vec<SocketAddrV4> {
            let record = t.maps().services[&fe(1).key()];
            (0..record.maglev_size)
                .map(|i| {
                    let id = t.maps().maglev[&record.maglev_key(i)];
                    t.identity_by_id[&id].0
                })
                .collect()
        };
        let before = owner(&t);
        let removed = be(3).address;
        s.backends.retain(|b| b.address != removed);
        t.upsert(&s).unwrap();
        let after = owner(&t);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(
            before
                .iter()
                .zip(&after)
                .all(|(a, b)| a == b || *a == removed)
        );
        let share = moved as f64 / before.len() as f64;
        assert!(
            (share - 0.2).abs() < 0.01,
            "moved {share} of the flows, ideal 1/5"
        );
    }

    #[test]
    fn a_transient_failure_before_the_switch_leaves_the_maps_as_they_were() {
        for algorithm in [Algorithm::Random, Algorithm::Maglev] {
            let mut before = svc(1, &[1, 2]);
            before.algorithm = algorithm;
            let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
            t.upsert(&before).unwrap();
            let snapshot = t.maps().clone();
            let mut after = svc(1, &[3, 4, 5]);
            after.algorithm = algorithm;
            // Writes before the record switch: 3 new backends, 3 slots, maybe a Maglev table.
            for n in 0..6 {
                let mut copy = LbTable::open(snapshot.clone()).unwrap();
                let start = copy.maps().writes;
                copy.maps_mut().fail_only(Some(start + n));
                assert!(copy.upsert(&after).is_err(), "write {n} failed");
                let m = copy.maps();
                assert_eq!(
                    (&m.services, &m.backends, &m.maglev),
                    (&snapshot.services, &snapshot.backends, &snapshot.maglev),
                    "{algorithm}: failure at write {n} left debris"
                );
                copy.maps_mut().fail_only(None);
                copy.upsert(&after).unwrap();
                assert_eq!(copy.list(), vec![after.clone()]);
            }
        }
    }

    #[test]
    fn too_many_backends_is_refused_before_any_write() {
        let mut t = LbTable::open(FakeLbMaps::new()).unwrap();
        let backends = (0..=u32::from(MAX_BACKENDS_PER_SERVICE))
            .map(|i| Backend::active(SocketAddrV4::new(Ipv4Addr::from(0x0af4_0000 + i), 80)))
            .collect();
        let err = t.upsert(&Service::new(fe(1), backends)).unwrap_err();
        assert!(matches!(err, TableError::TooManyBackends { .. }));
        assert_eq!(t.maps().writes, 0);
    }
}
