//! The etcd v3 backend: revisions are etcd's, CAS is a transaction comparing mod_revision,
//! watches are etcd watches with `prev_kv` from `after + 1`, compaction is etcd's.
//!
//! Every key is stored under `key_prefix`, so several clusters (or tests) can share one etcd.
//! Compaction, like etcd's revisions, is cluster-wide, not per prefix.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    Event, KeyValue, ListPage, Revision, Store, StoreError, WatchReceiver,
    keys::{check_key, list_start, prefix_end},
};

/// Events buffered per watcher between its task and its consumer.
const WATCH_BUFFER: usize = 1024;
/// How long a broken watch stream is retried (on any member) before the watcher gets the error.
const WATCH_RETRY_FOR: Duration = Duration::from_secs(30);

/// A store over an etcd v3 cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    /// Boxed: the client holds one gRPC stub per etcd service, about 3.5 KiB.
    client: Arc<Client>,
    key_prefix: String,
    /// The highest compacted revision seen: a floor for the search in `compacted_revision`.
    compacted_floor: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Maps an etcd client error, recognising etcd's revision errors by their (stable) messages.
fn etcd_err(context: &str, error: etcd_client::Error) -> StoreError {
    if let etcd_client::Error::GRpcStatus(status) = &error {
        use tonic::Code;
        // etcd's own answers carry no source; a status built from a transport failure (a
        // connection reset by a dying member, say) does, and means "try again elsewhere".
        let transport = std::error::Error::source(status).is_some();
        let unavailable = transport
            || matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted
            )
            || status.message().contains("no leader")
            || status.message().contains("leader changed");
        if unavailable {
            return StoreError::Unavailable {
                context: context.to_owned(),
                source: Box::new(error),
            };
        }
    }
    if matches!(
        error,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)
    ) {
        return StoreError::Unavailable {
            context: context.to_owned(),
            source: Box::new(error),
        };
    }
    StoreError::backend(context.to_owned(), error)
}

enum RevisionError {
    Compacted,
    Future,
}

fn revision_error(error: &etcd_client::Error) -> Option<RevisionError> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    let message = status.message();
    if message.contains("required revision has been compacted") {
        Some(RevisionError::Compacted)
    } else if message.contains("required revision is a future revision") {
        Some(RevisionError::Future)
    } else {
        None
    }
}

impl EtcdStore {
    /// Connects to the cluster (`host:port` or `http://host:port` endpoints) and checks that
    /// it answers. Keys are stored under `key_prefix`.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        key_prefix: &str,
    ) -> Result<EtcdStore, StoreError> {
        let endpoints: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            // A dead member is noticed within seconds and requests move to the others.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            // A member cut off from the others refuses instead of serving a watch that never
            // gets events.
            .with_require_leader(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| etcd_err("connecting to etcd", e))?;
        let store = EtcdStore {
            client: Arc::new(client),
            key_prefix: key_prefix.to_owned(),
            compacted_floor: Arc::new(AtomicI64::new(0)),
        };
        // The client connects lazily: fail now, not on the first request, if nobody answers.
        store.current_revision().await?;
        Ok(store)
    }

    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        retry_unsent(|| {
            let mut kv = self.client.kv_client();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        retry_unsent(|| {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.key_prefix.len() + key.len());
        full.extend_from_slice(self.key_prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn decode(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let key = kv
            .key()
            .strip_prefix(self.key_prefix.as_bytes())
            .ok_or_else(|| StoreError::backend("decoding a key", "key outside the key prefix"))?;
        let key = std::str::from_utf8(key)
            .map_err(|e| StoreError::backend("decoding a key", e))?
            .to_owned();
        Ok(KeyValue {
            key,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Turns etcd's revision errors on a read at `requested` into Compacted/FutureRevision.
    async fn read_err(
        &self,
        context: &str,
        requested: Revision,
        error: etcd_client::Error,
    ) -> StoreError {
        match revision_error(&error) {
            Some(RevisionError::Compacted) => match self.compacted_revision().await {
                Ok(compacted) => StoreError::Compacted {
                    requested,
                    compacted,
                },
                Err(other) => other,
            },
            Some(RevisionError::Future) => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(other) => other,
            },
            None => etcd_err(context, error),
        }
    }

    /// Whether a range read at `revision` is allowed (it is iff revision >= compacted).
    async fn readable_at(&self, revision: Revision) -> Result<bool, StoreError> {
        let options = GetOptions::new()
            .with_revision(revision)
            .with_count_only()
            .with_limit(1);
        match self.range(self.full_key("\u{0}"), options).await {
            Ok(_) => Ok(true),
            Err(error) => match revision_error(&error) {
                Some(RevisionError::Compacted) => Ok(false),
                _ => Err(etcd_err("probing the compacted revision", error)),
            },
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| StoreError::backend("reading a response", "etcd sent no header"))
}

impl Store for EtcdStore {
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let mut options = GetOptions::new();
        if let Some(revision) = revision {
            if revision <= 0 {
                // etcd reads revision 0 as "latest"; ours means "before the first write".
                return self.revision_floor_read(revision).await.map(|()| None);
            }
            options = options.with_revision(revision);
        }
        let response = match self.range(self.full_key(key), options).await {
            Ok(response) => response,
            Err(error) => {
                return Err(self
                    .read_err("reading a key", revision.unwrap_or(0), error)
                    .await);
            }
        };
        response.kvs().first().map(|kv| self.decode(kv)).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        revision: Option<Revision>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        if let Some(revision) = revision
            && revision <= 0
        {
            self.revision_floor_read(revision).await?;
            return Ok(ListPage {
                items: Vec::new(),
                revision,
                more: false,
                remaining: 0,
            });
        }
        let full_prefix = self.full_key(prefix);
        let start = range_start(list_start(
            &full_prefix,
            start_after.map(|a| self.full_key(a)).as_deref(),
        ));
        let end = prefix_end(&full_prefix);
        let mut options = GetOptions::new().with_range(end);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        if let Some(limit) = limit.filter(|&n| n > 0) {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let response = match self.range(start, options).await {
            Ok(response) => response,
            Err(error) => {
                return Err(self
                    .read_err("listing keys", revision.unwrap_or(0), error)
                    .await);
            }
        };
        let items = response
            .kvs()
            .iter()
            .map(|kv| self.decode(kv))
            .collect::<Result<Vec<_>, _>>()?;
        // `count` is every key in the range at that revision, not just this page.
        let remaining = u64::try_from(response.count())
            .unwrap_or(0)
            .saturating_sub(items.len() as u64);
        Ok(ListPage {
            revision: revision.unwrap_or(header_revision(response.header())?),
            more: response.more(),
            remaining,
            items,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        check_key(key)?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.clone(), None)]);
        let response = self
            .txn(txn)
            .await
            .map_err(|e| etcd_err("creating a key", e))?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        // The transaction did exactly one write, so the store revision after it is the put's.
        let revision = header_revision(response.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        check_key(key)?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([
                // A missing key has mod_revision 0: without this, expected = 0 would create it.
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                full.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self
            .txn(txn)
            .await
            .map_err(|e| etcd_err("updating a key", e))?;
        let revision = header_revision(response.header())?;
        let ops = response.op_responses();
        if !response.succeeded() {
            return Err(precondition_failed(key, expected, &ops));
        }
        let create_revision = match ops.first() {
            Some(TxnOpResponse::Put(put)) => {
                put.prev_key().map(etcd_client::KeyValue::create_revision)
            }
            _ => None,
        }
        .ok_or_else(|| StoreError::backend("updating a key", "etcd returned no previous value"))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        check_key(key)?;
        let full = self.full_key(key);
        let mut compares = vec![Compare::create_revision(
            full.clone(),
            CompareOp::Greater,
            0,
        )];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self
            .txn(txn)
            .await
            .map_err(|e| etcd_err("deleting a key", e))?;
        let revision = header_revision(response.header())?;
        let ops = response.op_responses();
        if !response.succeeded() {
            return Err(precondition_failed(key, expected.unwrap_or(0), &ops));
        }
        let prev = match ops.first() {
            Some(TxnOpResponse::Delete(deleted)) => {
                deleted.prev_kvs().first().map(|kv| self.decode(kv))
            }
            _ => None,
        }
        .ok_or_else(|| StoreError::backend("deleting a key", "etcd returned no deleted value"))??;
        Ok((prev, revision))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        // etcd reports a compacted start revision only asynchronously (on its next sync of
        // unsynced watchers), so check with a read at `after` first: it fails exactly when
        // `after` < the compacted revision.
        let current = self.current_revision().await?;
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        if after <= 0 {
            self.revision_floor_read(after).await?;
        } else if !self.readable_at(after).await? {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.compacted_revision().await?,
            });
        }
        let full_prefix = self.full_key(prefix);
        let mut stream = open_watch(&self.client, &full_prefix, after)
            .await
            .map_err(|e| etcd_err("starting a watch", e))?;
        // Wait for the "created" response so the watch is registered before we return.
        let first = first_response(&mut stream).await?;
        if let Some(compacted) = compacted_cancel(&first) {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let watcher = Watcher {
            store: self.clone(),
            full_prefix,
            last: after,
            tx,
        };
        tokio::spawn(watcher.run(stream, first));
        Ok(rx)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let options = GetOptions::new().with_count_only().with_limit(1);
        let response = self
            .range(self.full_key("\u{0}"), options)
            .await
            .map_err(|e| etcd_err("reading the current revision", e))?;
        header_revision(response.header())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        // etcd has no API for it, but a read at r fails exactly when r < compacted: binary
        // search for the lowest readable revision (about log2(current) cheap requests).
        let current = self.current_revision().await?;
        let mut low = self.compacted_floor.load(Ordering::Acquire).max(1);
        let mut high = current.max(1);
        if self.readable_at(low).await? {
            // Never compacted past our floor; revision 1 being readable means never compacted.
            let compacted = if low == 1 { 0 } else { low };
            return Ok(compacted);
        }
        // Invariant: low is not readable, high is.
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.readable_at(mid).await? {
                high = mid;
            } else {
                low = mid;
            }
        }
        self.compacted_floor.fetch_max(high, Ordering::AcqRel);
        Ok(high)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let options = CompactionOptions::new().with_physical();
        match retry_unsent(|| {
            let mut kv = self.client.kv_client();
            let options = options.clone();
            async move { kv.compact(revision, Some(options)).await }
        })
        .await
        {
            Ok(_) => {
                self.compacted_floor.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(error) => Err(self.read_err("compacting", revision, error).await),
        }
    }
}

impl EtcdStore {
    /// A read at revision <= 0: valid (and empty) only before anything was compacted.
    async fn revision_floor_read(&self, revision: Revision) -> Result<(), StoreError> {
        let compacted = self.compacted_revision().await?;
        if revision < compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted,
            });
        }
        Ok(())
    }
}

/// Why a CAS transaction's comparison failed, from its `or_else` get.
fn precondition_failed(key: &str, expected: Revision, ops: &[TxnOpResponse]) -> StoreError {
    let actual = match ops.first() {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(etcd_client::KeyValue::mod_revision),
        _ => None,
    };
    match actual {
        Some(actual) => StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual,
        },
        None => StoreError::NotFound {
            key: key.to_owned(),
        },
    }
}

async fn open_watch(
    client: &Client,
    full_prefix: &[u8],
    after: Revision,
) -> Result<etcd_client::WatchStream, etcd_client::Error> {
    let options = WatchOptions::new()
        .with_range(prefix_end(full_prefix))
        .with_start_revision(after + 1)
        .with_prev_key();
    retry_unsent(|| {
        let mut watch = client.watch_client();
        let (key, options) = (range_start(full_prefix.to_vec()), options.clone());
        async move { watch.watch(key, Some(options)).await }
    })
    .await
}

/// etcd rejects an empty key even as the start of a range ("key is not provided"); the range
/// from NUL covers every non-empty key.
fn range_start(start: Vec<u8>) -> Vec<u8> {
    if start.is_empty() { vec![0] } else { start }
}

/// Attempts before giving up on members that refuse connections.
const CONNECT_ATTEMPTS: u32 = 8;

/// Retries `call` while it fails because the member the client's balancer picked refused the
/// connection. Such a request never reached etcd, so retrying is safe even for a write, and
/// the balancer keeps offering a dead member (it has no health checks): without this, about
/// one request in N fails for as long as one of N members is down.
async fn retry_unsent<T, F, Fut>(mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(error) if attempt + 1 < CONNECT_ATTEMPTS && never_sent(&error) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt.min(5))).await;
            }
            result => return result,
        }
    }
}

/// Whether the request certainly never left this process: opening the connection failed
/// (refused, or reset while connecting). hyper's connector reports that as "tcp connect
/// error"; a failure on an established connection is ambiguous and is not retried here.
fn never_sent(error: &etcd_client::Error) -> bool {
    const CONNECT_FAILED: &str = "tcp connect error";
    let start: &(dyn std::error::Error + 'static) = match error {
        etcd_client::Error::GRpcStatus(status) => {
            if status.message() == CONNECT_FAILED {
                return true;
            }
            status
        }
        etcd_client::Error::TransportError(error) => error,
        _ => return false,
    };
    let mut next = Some(start);
    while let Some(error) = next {
        let refused = error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused || error.to_string().starts_with(CONNECT_FAILED) {
            return true;
        }
        next = error.source();
    }
    false
}

async fn first_response(
    stream: &mut etcd_client::WatchStream,
) -> Result<WatchResponse, StoreError> {
    match stream.message().await {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(StoreError::Unavailable {
            context: "starting a watch".into(),
            source: "etcd closed the watch stream".into(),
        }),
        Err(error) => Err(etcd_err("starting a watch", error)),
    }
}

/// The compacted revision, if this response cancels the watch because of compaction.
fn compacted_cancel(response: &WatchResponse) -> Option<Revision> {
    (response.canceled() && response.compact_revision() > 0).then(|| response.compact_revision())
}

/// Forwards one etcd watch to its consumer, re-opening the stream (on any member) from the last
/// delivered revision when it breaks, so a member failure costs no events.
struct Watcher {
    store: EtcdStore,
    full_prefix: Vec<u8>,
    last: Revision,
    tx: mpsc::Sender<Result<Event, StoreError>>,
}

enum Step {
    Continue,
    Stop,
}

impl Watcher {
    async fn run(mut self, mut stream: etcd_client::WatchStream, first: WatchResponse) {
        if let Step::Stop = self.deliver(first).await {
            return;
        }
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = self.tx.closed() => return,
            };
            let broken = match message {
                Ok(Some(response)) => {
                    if let Step::Stop = self.deliver(response).await {
                        return;
                    }
                    continue;
                }
                Ok(None) => "etcd closed the watch stream".to_owned(),
                Err(error) => error.to_string(),
            };
            debug!(reason = %broken, last = self.last, "watch stream broke; resuming");
            match self.resume().await {
                Some(resumed) => stream = resumed,
                None => return,
            }
        }
    }

    async fn deliver(&mut self, response: WatchResponse) -> Step {
        if let Some(compacted) = compacted_cancel(&response) {
            let _ = self
                .tx
                .send(Err(StoreError::WatchLagged {
                    last_delivered: self.last,
                    compacted,
                }))
                .await;
            return Step::Stop;
        }
        if response.canceled() {
            let _ = self
                .tx
                .send(Err(StoreError::backend(
                    "watching",
                    format!("etcd cancelled the watch: {}", response.cancel_reason()),
                )))
                .await;
            return Step::Stop;
        }
        for event in response.events() {
            let converted = match self.convert(event) {
                Ok(converted) => converted,
                Err(error) => {
                    let _ = self.tx.send(Err(error)).await;
                    return Step::Stop;
                }
            };
            let revision = converted.revision();
            // A resumed stream starts after `last`; this only guards against a replay.
            if revision <= self.last {
                continue;
            }
            self.last = revision;
            if self.tx.send(Ok(converted)).await.is_err() {
                return Step::Stop;
            }
        }
        Step::Continue
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<Event, StoreError> {
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::backend("watching", "etcd sent an event without a key"))?;
        let prev = event
            .prev_kv()
            .map(|kv| self.store.decode(kv))
            .transpose()?;
        match event.event_type() {
            EventType::Put => Ok(Event::Put {
                kv: self.store.decode(kv)?,
                prev,
            }),
            EventType::Delete => {
                let prev = prev.ok_or_else(|| {
                    StoreError::backend(
                        "watching",
                        "etcd sent a delete without the previous value (compacted?)",
                    )
                })?;
                Ok(Event::Delete {
                    prev,
                    revision: kv.mod_revision(),
                })
            }
        }
    }

    /// Re-opens the watch after `last`, retrying for a while; None when the consumer has been
    /// told why it ends.
    async fn resume(&mut self) -> Option<etcd_client::WatchStream> {
        let deadline = tokio::time::Instant::now() + WATCH_RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.tx.is_closed() {
                return None;
            }
            let error = match open_watch(&self.store.client, &self.full_prefix, self.last).await {
                Ok(mut stream) => match first_response(&mut stream).await {
                    Ok(first) => {
                        if let Step::Stop = self.deliver(first).await {
                            return None;
                        }
                        return Some(stream);
                    }
                    Err(error) => error,
                },
                Err(error) => etcd_err("resuming a watch", error),
            };
            if tokio::time::Instant::now() >= deadline {
                warn!(%error, "giving up on a broken watch");
                let _ = self.tx.send(Err(error)).await;
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
