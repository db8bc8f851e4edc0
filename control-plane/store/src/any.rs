//! Choosing a backend from a `--datastore` spec.

use std::{path::Path, str::FromStr};

use crate::{
    EtcdStore, KeyValue, ListPage, Revision, SqliteConfig, SqliteStore, Store, StoreError,
    WatchReceiver,
};

/// The file under the data dir that holds the embedded store.
pub const SQLITE_FILE: &str = "state.db";

/// A parsed datastore spec:
///
/// - `""` or `"sqlite"`: the embedded store in `DATA_DIR/state.db`;
/// - `"etcd://host:port[,host:port...][/key/prefix]"`: an etcd v3 cluster over plaintext
///   HTTP/2, keys stored under the optional prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreSpec {
    Sqlite,
    Etcd {
        endpoints: Vec<String>,
        key_prefix: String,
    },
}

const ACCEPTED: &str =
    "expected \"sqlite\" (or empty) or \"etcd://host:port[,host:port...][/key/prefix]\"";

impl FromStr for DatastoreSpec {
    type Err = StoreError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| StoreError::InvalidSpec {
            spec: spec.to_owned(),
            reason,
        };
        let trimmed = spec.trim();
        if trimmed.is_empty() || trimmed == "sqlite" {
            return Ok(DatastoreSpec::Sqlite);
        }
        let Some(rest) = trimmed.strip_prefix("etcd://") else {
            return Err(invalid(ACCEPTED.to_owned()));
        };
        let (hosts, key_prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let mut endpoints = Vec::new();
        for endpoint in hosts.split(',') {
            let Some((host, port)) = endpoint.rsplit_once(':') else {
                return Err(invalid(format!(
                    "endpoint {endpoint:?} has no port; {ACCEPTED}"
                )));
            };
            if host.is_empty() {
                return Err(invalid(format!("endpoint {endpoint:?} has no host")));
            }
            match port.parse::<u16>() {
                Ok(port) if port > 0 => {}
                _ => {
                    return Err(invalid(format!(
                        "endpoint {endpoint:?} has an invalid port {port:?}"
                    )));
                }
            }
            endpoints.push(format!("http://{host}:{port}"));
        }
        Ok(DatastoreSpec::Etcd {
            endpoints,
            key_prefix: key_prefix.to_owned(),
        })
    }
}

/// Opens the datastore a spec names; SQLite lives in `data_dir`.
pub async fn open_datastore(spec: &str, data_dir: &Path) -> Result<AnyStore, StoreError> {
    match spec.parse::<DatastoreSpec>()? {
        DatastoreSpec::Sqlite => {
            let store =
                SqliteStore::open(data_dir.join(SQLITE_FILE), SqliteConfig::default()).await?;
            Ok(AnyStore::Sqlite(store))
        }
        DatastoreSpec::Etcd {
            endpoints,
            key_prefix,
        } => Ok(AnyStore::Etcd(
            EtcdStore::connect(&endpoints, &key_prefix).await?,
        )),
    }
}

/// Either backend, behind the one [`Store`] trait.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Etcd(EtcdStore),
}

impl From<SqliteStore> for AnyStore {
    fn from(store: SqliteStore) -> Self {
        AnyStore::Sqlite(store)
    }
}

impl From<EtcdStore> for AnyStore {
    fn from(store: EtcdStore) -> Self {
        AnyStore::Etcd(store)
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Etcd($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        dispatch!(self, s => s.get(key, revision))
    }

    async fn list(
        &self,
        prefix: &str,
        revision: Option<Revision>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        dispatch!(self, s => s.list(prefix, revision, start_after, limit))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        dispatch!(self, s => s.create(key, value))
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        dispatch!(self, s => s.update(key, value, expected))
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        dispatch!(self, s => s.delete(key, expected))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        dispatch!(self, s => s.watch(prefix, after))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        dispatch!(self, s => s.current_revision())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        dispatch!(self, s => s.compacted_revision())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        dispatch!(self, s => s.compact(revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("".parse::<DatastoreSpec>().unwrap(), DatastoreSpec::Sqlite);
        assert_eq!(
            "sqlite".parse::<DatastoreSpec>().unwrap(),
            DatastoreSpec::Sqlite
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,localhost:22379"
                .parse::<DatastoreSpec>()
                .unwrap(),
            DatastoreSpec::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://localhost:22379".into()
                ],
                key_prefix: String::new(),
            }
        );
        assert_eq!(
            "etcd://10.0.0.1:2379/skiff/a"
                .parse::<DatastoreSpec>()
                .unwrap(),
            DatastoreSpec::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into()],
                key_prefix: "/skiff/a".into(),
            }
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, why) in [
            ("mysql://x", "expected"),
            ("etcd://", "no port"),
            ("etcd://host", "no port"),
            ("etcd://:2379", "no host"),
            ("etcd://h:0", "invalid port"),
            ("etcd://h:99999", "invalid port"),
            ("etcd://h:1,,h:2", "no port"),
        ] {
            match spec.parse::<DatastoreSpec>() {
                Err(StoreError::InvalidSpec { reason, .. }) => {
                    assert!(reason.contains(why), "{spec}: {reason}");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }
}
