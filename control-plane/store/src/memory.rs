//! An in-memory store for tests (and `skiff server --datastore memory`): the full contract
//! (revisions, history, watch, compaction) with none of the durability.

use std::{collections::BTreeMap, sync::Mutex};

use tokio::sync::mpsc;

use crate::{Event, KeyValue, ListPage, Revision, Store, StoreError, WatchReceiver};

const WATCH_BUFFER: usize = 4096;

#[derive(Default)]
struct Inner {
    revision: Revision,
    compacted: Revision,
    /// Every event since the compacted revision, in order.
    log: Vec<Event>,
    current: BTreeMap<String, KeyValue>,
    watchers: Vec<(String, mpsc::Sender<Result<Event, StoreError>>)>,
}

/// A store that keeps everything in memory.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl MemStore {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn commit(&mut self, event: Event) {
        self.log.push(event.clone());
        self.watchers.retain(|(prefix, tx)| {
            if !event.key().starts_with(prefix.as_str()) {
                return !tx.is_closed();
            }
            match tx.try_send(Ok(event.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = tx.try_send(Err(StoreError::WatchLagged {
                        last_delivered: event.revision() - 1,
                        compacted: self.compacted,
                    }));
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn check_revision(&self, revision: Revision) -> Result<(), StoreError> {
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        Ok(())
    }

    /// The state as of `revision`: the current state with later events undone.
    fn state_at(&self, revision: Revision) -> BTreeMap<String, KeyValue> {
        let mut state = self.current.clone();
        for event in self
            .log
            .iter()
            .rev()
            .take_while(|e| e.revision() > revision)
        {
            match event {
                Event::Put { kv, prev } => match prev {
                    Some(p) => state.insert(kv.key.clone(), p.clone()),
                    None => state.remove(&kv.key),
                },
                Event::Delete { prev, .. } => state.insert(prev.key.clone(), prev.clone()),
            };
        }
        state
    }
}

impl Store for MemStore {
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        let inner = self.lock();
        match revision {
            None => Ok(inner.current.get(key).cloned()),
            Some(r) => {
                inner.check_revision(r)?;
                Ok(inner.state_at(r).get(key).cloned())
            }
        }
    }

    async fn list(
        &self,
        prefix: &str,
        revision: Option<Revision>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        let inner = self.lock();
        let at = revision.unwrap_or(inner.revision);
        inner.check_revision(at)?;
        let state = if at == inner.revision {
            inner.current.clone()
        } else {
            inner.state_at(at)
        };
        let matching: Vec<KeyValue> = state
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|s| k.as_str() > s))
            .map(|(_, v)| v.clone())
            .collect();
        let take = limit.unwrap_or(usize::MAX).min(matching.len());
        let remaining = (matching.len() - take) as u64;
        Ok(ListPage {
            items: matching.into_iter().take(take).collect(),
            revision: at,
            more: remaining > 0,
            remaining,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let mut inner = self.lock();
        if inner.current.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        inner.revision += 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: inner.revision,
            mod_revision: inner.revision,
        };
        inner.current.insert(key.to_owned(), kv.clone());
        inner.commit(Event::Put {
            kv: kv.clone(),
            prev: None,
        });
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let mut inner = self.lock();
        let Some(prev) = inner.current.get(key).cloned() else {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        };
        if prev.mod_revision != expected {
            return Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: prev.mod_revision,
            });
        }
        inner.revision += 1;
        let kv = KeyValue {
            value,
            mod_revision: inner.revision,
            ..prev.clone()
        };
        inner.current.insert(key.to_owned(), kv.clone());
        inner.commit(Event::Put {
            kv: kv.clone(),
            prev: Some(prev),
        });
        Ok(kv)
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let mut inner = self.lock();
        let Some(prev) = inner.current.get(key).cloned() else {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        };
        if let Some(expected) = expected
            && prev.mod_revision != expected
        {
            return Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: prev.mod_revision,
            });
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.current.remove(key);
        inner.commit(Event::Delete {
            prev: prev.clone(),
            revision,
        });
        Ok((prev, revision))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        let mut inner = self.lock();
        if after < inner.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: inner.compacted,
            });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let backlog: Vec<Event> = inner
            .log
            .iter()
            .filter(|e| e.revision() > after && e.key().starts_with(prefix))
            .cloned()
            .collect();
        for event in backlog {
            let revision = event.revision();
            if tx.try_send(Ok(event)).is_err() {
                let _ = tx.try_send(Err(StoreError::WatchLagged {
                    last_delivered: revision - 1,
                    compacted: inner.compacted,
                }));
                return Ok(rx);
            }
        }
        inner.watchers.push((prefix.to_owned(), tx));
        Ok(rx)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().compacted)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.check_revision(revision)?;
        inner.log.retain(|e| e.revision() > revision);
        inner.compacted = inner.compacted.max(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revisions_history_watch_and_compaction() {
        let s = MemStore::new();
        let a = s.create("/a", b"1".to_vec()).await.unwrap();
        assert!(matches!(
            s.create("/a", vec![]).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let a2 = s.update("/a", b"2".to_vec(), a.mod_revision).await.unwrap();
        assert!(matches!(
            s.update("/a", b"3".to_vec(), a.mod_revision).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            s.get("/a", Some(a.mod_revision))
                .await
                .unwrap()
                .unwrap()
                .value,
            b"1"
        );
        let mut w = s.watch("/", 0).await.unwrap();
        s.delete("/a", Some(a2.mod_revision)).await.unwrap();
        let revs: Vec<Revision> = [w.recv().await, w.recv().await, w.recv().await]
            .into_iter()
            .map(|e| e.unwrap().unwrap().revision())
            .collect();
        assert_eq!(revs, [1, 2, 3]);
        s.compact(2).await.unwrap();
        assert!(matches!(
            s.watch("/", 1).await,
            Err(StoreError::Compacted { .. })
        ));
        assert!(
            s.list("/", None, None, None)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
}
