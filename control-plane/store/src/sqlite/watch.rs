//! Watch: history from the log, then live events from the writer's broadcast.
//!
//! Each watcher has one task that subscribes to the broadcast *before* it reads the log, then
//! delivers the log's events up to the snapshot revision it read, then live events above
//! the last revision it delivered. Anything committed before the subscription is in the log
//! snapshot; anything after is in the broadcast; the overlap is skipped by revision. So there
//! are no gaps and no duplicates.
//!
//! The broadcast is a fixed ring: the writer never waits for a watcher. A watcher whose task
//! falls behind the ring (its consumer reads slowly, or history is long) is told "lagged" and
//! reads the missed revisions back from the log, which is the source of truth anyway. Only
//! when compaction has removed revisions it still needed does its consumer get
//! `WatchLagged` and the channel closes.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::read::{ReadPool, events};
use crate::{Event, Revision, StoreError, WatchReceiver};

/// Events read from the log per read transaction.
const HISTORY_PAGE: usize = 512;

pub(super) fn spawn(
    pool: Arc<ReadPool>,
    live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    after: Revision,
    buffer: usize,
) -> WatchReceiver {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tokio::spawn(forward(pool, live, prefix, after, tx));
    rx
}

type Sink = mpsc::Sender<Result<Event, StoreError>>;

async fn forward(
    pool: Arc<ReadPool>,
    mut live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    after: Revision,
    tx: Sink,
) {
    // Every event with a revision at or below `last` has been delivered (or is not ours).
    let mut last = after;
    if !catch_up(&pool, &prefix, &mut last, &tx).await {
        return;
    }
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            // The consumer hung up while the store was idle.
            () = tx.closed() => return,
        };
        match received {
            Ok(event) => {
                if event.revision() <= last {
                    continue;
                }
                last = event.revision();
                if event.key().starts_with(prefix.as_str())
                    && tx.send(Ok(Event::clone(&event))).await.is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(&pool, &prefix, &mut last, &tx).await {
                    return;
                }
            }
            // The store was dropped.
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Delivers every logged event above `last`; false when the watch is over.
async fn catch_up(pool: &Arc<ReadPool>, prefix: &str, last: &mut Revision, tx: &Sink) -> bool {
    loop {
        let after = *last;
        let owned = prefix.to_owned();
        let page = pool
            .run(move |conn| events(conn, &owned, after, HISTORY_PAGE))
            .await;
        match page {
            Ok(page) => {
                let short = page.events.len() < HISTORY_PAGE;
                for event in page.events {
                    *last = event.revision();
                    if tx.send(Ok(event)).await.is_err() {
                        return false;
                    }
                }
                if short {
                    *last = (*last).max(page.upto);
                    return true;
                }
            }
            Err(StoreError::Compacted { compacted, .. }) => {
                let _ = tx
                    .send(Err(StoreError::WatchLagged {
                        last_delivered: after,
                        compacted,
                    }))
                    .await;
                return false;
            }
            Err(other) => {
                let _ = tx.send(Err(other)).await;
                return false;
            }
        }
    }
}
