//! The reconciler: the objects it is handed, the entries every Service wants, and the one
//! writer that makes the datapath hold exactly the winning entries.
//!
//! Applying an object only parses it and marks the Services it feeds as dirty; `sync` then
//! recomputes those Services alone, and writes only the frontends whose wanted entry changed
//! (plus the ones whose last write failed). The first sync also compares every frontend the
//! maps held when the table was opened, removing the ones nobody wants and leaving identical
//! ones alone, so a restarted agent does not disturb traffic.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use skiff_datapath::{Frontend, LbMaps, LbTable, Service as LbService, TableError};
use tracing::{debug, warn};

use crate::{
    desired::{Desired, desired},
    input::{
        InputError, NodeIdentity, ObjectKey, ServiceInfo, SliceInfo, parse_service, parse_slice,
    },
};

/// A frontend the datapath could not be made to hold as wanted.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing frontend {frontend}: {source}")]
    Upsert {
        frontend: Frontend,
        #[source]
        source: TableError,
    },
    #[error("removing frontend {frontend}: {source}")]
    Delete {
        frontend: Frontend,
        #[source]
        source: TableError,
    },
}

/// What one [`Proxy::sync`] did, counted in frontends (but for `recomputed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Services whose wanted entries were computed again.
    pub recomputed: usize,
    /// Frontends written (created or changed).
    pub upserted: usize,
    /// Frontends removed from the maps.
    pub deleted: usize,
    /// Frontends compared and found to be as wanted already.
    pub unchanged: usize,
    /// Frontends whose write or removal failed; they are retried by the next sync.
    pub failed: usize,
}

/// The last failure of one frontend, kept until a sync gets it right.
#[derive(Clone, Debug)]
pub struct Failure {
    pub frontend: Frontend,
    /// The Service that wants (or last wanted) the frontend; `None` for a stale frontend found
    /// in the maps that no Service ever claimed.
    pub service: Option<ObjectKey>,
    pub error: Arc<ReconcileError>,
}

/// How a Service fared at the last sync.
#[derive(Clone, Debug, Default)]
pub struct ServiceStatus {
    /// The frontends it has in the datapath (or will have once its failures clear).
    pub frontends: Vec<Frontend>,
    /// Parts of the Service, of its EndpointSlices, or frontends it lost to another Service,
    /// that were left out or defaulted.
    pub problems: Vec<InputError>,
    /// Frontends whose write or removal failed; retried by the next sync.
    pub failures: Vec<Failure>,
}

impl ServiceStatus {
    /// Nothing skipped, nothing failed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.failures.is_empty()
    }
}

/// Keeps the datapath's frontends equal to what the Services and EndpointSlices it is handed
/// ask for, on one node. The caller feeds it objects (from watches) and calls [`Proxy::sync`]
/// when it wants the maps updated, typically after a short debounce and after the initial
/// lists: the first sync removes every frontend that no known Service wants.
#[derive(Debug)]
pub struct Proxy<M> {
    table: LbTable<M>,
    node: NodeIdentity,
    services: BTreeMap<ObjectKey, ServiceInfo>,
    slices: HashMap<ObjectKey, SliceInfo>,
    /// The slices of each Service (sorted, so merging them is deterministic).
    slices_of: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Services whose inputs changed since their entries were last computed.
    dirty: BTreeSet<ObjectKey>,
    /// Every entry wanted for a frontend, by the Service that wants it. The first Service in
    /// namespace/name order gets the frontend, so the outcome does not depend on the order
    /// objects arrived in (and is the same after a restart).
    claims: BTreeMap<Frontend, BTreeMap<ObjectKey, LbService>>,
    /// The frontends each Service claims.
    claimed: HashMap<ObjectKey, BTreeSet<Frontend>>,
    /// What was skipped when each Service's entries were last computed.
    problems: HashMap<ObjectKey, Vec<InputError>>,
    failures: BTreeMap<Frontend, Failure>,
    full_resync: bool,
}

impl<M: LbMaps> Proxy<M> {
    /// A proxy writing through `table`, which holds whatever the maps held when it was opened;
    /// the first [`Proxy::sync`] reconciles all of it.
    pub fn new(table: LbTable<M>, node: NodeIdentity) -> Self {
        Self {
            table,
            node,
            services: BTreeMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            dirty: BTreeSet::new(),
            claims: BTreeMap::new(),
            claimed: HashMap::new(),
            problems: HashMap::new(),
            failures: BTreeMap::new(),
            full_resync: true,
        }
    }

    /// Adds or replaces a Service. Fails only for a Service without a name; anything else
    /// wrong in it is skipped and shows in its [`ServiceStatus`] after the next sync.
    pub fn apply_service(&mut self, service: &Service) -> Result<(), InputError> {
        let (key, info) = parse_service(service)?;
        if self.services.get(&key) != Some(&info) {
            self.services.insert(key.clone(), info);
            self.dirty.insert(key);
        }
        Ok(())
    }

    /// Forgets a Service; its frontends go at the next sync.
    pub fn delete_service(&mut self, service: &Service) -> Result<(), InputError> {
        let key = ObjectKey::from_meta("Service", &service.metadata)?;
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
        Ok(())
    }

    /// Adds or replaces an EndpointSlice. Slices without the `kubernetes.io/service-name`
    /// label and non-IPv4 slices are not the proxy's business and are ignored (a slice that
    /// stops qualifying is removed).
    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) -> Result<(), InputError> {
        let (key, info) = parse_slice(slice)?;
        let Some(info) = info else {
            self.remove_slice(&key);
            return Ok(());
        };
        if self.slices.get(&key) == Some(&info) {
            return Ok(());
        }
        let service = info.service.clone();
        if let Some(old) = self.slices.insert(key.clone(), info)
            && old.service != service
        {
            self.detach(&key, &old.service);
        }
        self.slices_of
            .entry(service.clone())
            .or_default()
            .insert(key);
        self.dirty.insert(service);
        Ok(())
    }

    /// Forgets an EndpointSlice; its Service loses those backends at the next sync.
    pub fn delete_endpoint_slice(&mut self, slice: &EndpointSlice) -> Result<(), InputError> {
        let key = ObjectKey::from_meta("EndpointSlice", &slice.metadata)?;
        self.remove_slice(&key);
        Ok(())
    }

    /// Makes `services` the whole set of Services (a relist): those it lacks are forgotten, the
    /// others applied. Nothing reaches the maps before the next sync, so a relist is atomic
    /// as the datapath sees it. Returns the objects refused (no name).
    pub fn replace_services<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
    ) -> Vec<InputError> {
        let mut refused = Vec::new();
        let mut keep = BTreeSet::new();
        for service in services {
            match self.apply_service(service) {
                Ok(()) => {
                    // apply_service just parsed the name successfully.
                    if let Ok(key) = ObjectKey::from_meta("Service", &service.metadata) {
                        keep.insert(key);
                    }
                }
                Err(error) => refused.push(error),
            }
        }
        let gone: Vec<ObjectKey> = self
            .services
            .keys()
            .filter(|key| !keep.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            self.services.remove(&key);
            self.dirty.insert(key);
        }
        refused
    }

    /// Makes `slices` the whole set of EndpointSlices (a relist), like
    /// [`Proxy::replace_services`].
    pub fn replace_endpoint_slices<'a>(
        &mut self,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Vec<InputError> {
        let mut refused = Vec::new();
        let mut keep = HashSet::new();
        for slice in slices {
            match self.apply_endpoint_slice(slice) {
                Ok(()) => {
                    if let Ok(key) = ObjectKey::from_meta("EndpointSlice", &slice.metadata) {
                        keep.insert(key);
                    }
                }
                Err(error) => refused.push(error),
            }
        }
        let gone: Vec<ObjectKey> = self
            .slices
            .keys()
            .filter(|key| !keep.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            self.remove_slice(&key);
        }
        refused
    }

    /// How many Services and (relevant) EndpointSlices the proxy holds.
    #[must_use]
    pub fn object_counts(&self) -> (usize, usize) {
        (self.services.len(), self.slices.len())
    }

    /// Changes the node's name or addresses. Rare, and it changes which backends are local and
    /// where node ports listen, so every Service is recomputed at the next sync.
    pub fn set_node(&mut self, node: NodeIdentity) {
        if node != self.node {
            self.node = node;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    #[must_use]
    pub const fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// Whether a sync has anything to do: changed inputs, the first full resync, or failures
    /// to retry.
    #[must_use]
    pub fn needs_sync(&self) -> bool {
        self.full_resync || !self.dirty.is_empty() || !self.failures.is_empty()
    }

    /// Brings the datapath to the wanted state. Never stops at a failing frontend: each failure
    /// is recorded in the status of its Service and retried by the next sync.
    pub fn sync(&mut self) -> SyncReport {
        let mut report = SyncReport::default();
        let full = std::mem::take(&mut self.full_resync);
        let mut dirty = std::mem::take(&mut self.dirty);
        if full {
            dirty.extend(self.services.keys().cloned());
        }
        // The frontends to reconcile, each with the Service that last wanted it (to blame if
        // its removal fails).
        let mut touched: BTreeMap<Frontend, Option<ObjectKey>> = self
            .failures
            .values()
            .map(|f| (f.frontend, f.service.clone()))
            .collect();
        for key in &dirty {
            self.recompute(key, &mut touched);
        }
        report.recomputed = dirty.len();
        if full {
            for frontend in self.claims.keys() {
                touched.entry(*frontend).or_insert(None);
            }
            for held in self.table.frontends() {
                touched.entry(held).or_insert(None);
            }
        }
        for (frontend, last_owner) in touched {
            self.reconcile(frontend, last_owner, &mut report);
        }
        debug!(
            full,
            recomputed = report.recomputed,
            upserted = report.upserted,
            deleted = report.deleted,
            unchanged = report.unchanged,
            failed = report.failed,
            "proxy sync"
        );
        report
    }

    /// The status of a Service as of the last sync; `None` for a Service the proxy does not
    /// know and has no failure to report for.
    #[must_use]
    pub fn status(&self, service: &ObjectKey) -> Option<ServiceStatus> {
        let failures: Vec<Failure> = self
            .failures
            .values()
            .filter(|f| f.service.as_ref() == Some(service))
            .cloned()
            .collect();
        if !self.services.contains_key(service) && failures.is_empty() {
            return None;
        }
        let mut status = ServiceStatus {
            problems: self.problems.get(service).cloned().unwrap_or_default(),
            failures,
            ..ServiceStatus::default()
        };
        for frontend in self.claimed.get(service).into_iter().flatten() {
            match self.claims.get(frontend).and_then(|c| c.keys().next()) {
                Some(owner) if owner != service => {
                    status.problems.push(InputError::FrontendConflict {
                        object: service.clone(),
                        frontend: *frontend,
                        owner: owner.clone(),
                    });
                }
                _ => status.frontends.push(*frontend),
            }
        }
        Some(status)
    }

    /// Every frontend whose last write or removal failed.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.failures.values()
    }

    /// The writer underneath, to inspect what the datapath holds.
    #[must_use]
    pub const fn table(&self) -> &LbTable<M> {
        &self.table
    }

    #[cfg(test)]
    pub(crate) const fn table_mut(&mut self) -> &mut LbTable<M> {
        &mut self.table
    }

    fn remove_slice(&mut self, key: &ObjectKey) {
        if let Some(old) = self.slices.remove(key) {
            self.detach(key, &old.service);
        }
    }

    fn detach(&mut self, slice: &ObjectKey, service: &ObjectKey) {
        if let Some(slices) = self.slices_of.get_mut(service) {
            slices.remove(slice);
            if slices.is_empty() {
                self.slices_of.remove(service);
            }
        }
        self.dirty.insert(service.clone());
    }

    /// Computes a Service's entries again and updates its claims; every frontend whose wanted
    /// entry changed is added to `touched`.
    fn recompute(&mut self, key: &ObjectKey, touched: &mut BTreeMap<Frontend, Option<ObjectKey>>) {
        let wanted = match self.services.get(key) {
            Some(info) => {
                let slices: Vec<&SliceInfo> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|slice| self.slices.get(slice))
                    .collect();
                desired(key, info, &slices, &self.node)
            }
            None => Desired::default(),
        };
        let old = self.claimed.remove(key).unwrap_or_default();
        for frontend in old.iter().filter(|f| !wanted.entries.contains_key(f)) {
            if let Some(claims) = self.claims.get_mut(frontend) {
                claims.remove(key);
                if claims.is_empty() {
                    self.claims.remove(frontend);
                }
            }
            touched
                .entry(*frontend)
                .or_insert_with(|| Some(key.clone()));
        }
        let mut frontends = BTreeSet::new();
        for (frontend, entry) in wanted.entries {
            frontends.insert(frontend);
            let claims = self.claims.entry(frontend).or_default();
            if claims.get(key) != Some(&entry) {
                claims.insert(key.clone(), entry);
                touched.entry(frontend).or_insert(None);
            }
        }
        if !frontends.is_empty() {
            self.claimed.insert(key.clone(), frontends);
        }
        if wanted.problems.is_empty() {
            self.problems.remove(key);
        } else {
            self.problems.insert(key.clone(), wanted.problems);
        }
    }

    /// Makes the maps hold the winning entry of one frontend, or nothing when none is wanted.
    fn reconcile(
        &mut self,
        frontend: Frontend,
        last_owner: Option<ObjectKey>,
        report: &mut SyncReport,
    ) {
        let winner = self.claims.get(&frontend).and_then(|c| c.iter().next());
        let (service, result) = match winner {
            Some((owner, wanted)) => {
                let result = match self.table.upsert(wanted) {
                    Ok(true) => {
                        report.upserted += 1;
                        Ok(())
                    }
                    Ok(false) => {
                        report.unchanged += 1;
                        Ok(())
                    }
                    Err(source) => Err(ReconcileError::Upsert { frontend, source }),
                };
                (Some(owner.clone()), result)
            }
            None => {
                let result = match self.table.delete(&frontend) {
                    Ok(deleted) => {
                        report.deleted += usize::from(deleted);
                        Ok(())
                    }
                    Err(source) => Err(ReconcileError::Delete { frontend, source }),
                };
                (last_owner, result)
            }
        };
        match result {
            Ok(()) => {
                self.failures.remove(&frontend);
            }
            Err(error) => {
                report.failed += 1;
                warn!(
                    %frontend,
                    service = service.as_ref().map(tracing::field::display),
                    %error,
                    "frontend not reconciled; retrying at the next sync"
                );
                self.failures.insert(
                    frontend,
                    Failure {
                        frontend,
                        service,
                        error: Arc::new(error),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
