//! `GET /api/v1/events/stream`: the event log as Server-Sent Events. A client that says where it
//! stopped (`Last-Event-ID`, as a browser's `EventSource` does on reconnecting, or `?since=ID`)
//! first gets what it missed from the log, then live events, without a gap or a repeat. A client
//! too slow for the live feed gets an explicit `lagged` event and the stream ends, so that its
//! reconnection resumes from the log. At most [`MAX_CLIENTS`] streams at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::store::Reader;

/// Streams served at once; one more is refused with 503.
pub const MAX_CLIENTS: usize = 256;
/// Events replayed from the log on a resume, at most (the newest of them).
const MAX_REPLAY: usize = 10_000;
/// How long a resume waits for events already broadcast to be committed to the log.
const COMMIT_WAIT: Duration = Duration::from_secs(3);

/// The count of open streams, shared by the API's handlers.
#[derive(Debug, Default)]
pub struct Clients(AtomicUsize);

/// One open stream's place, given back when dropped.
#[derive(Debug)]
pub struct Place(Arc<Clients>);

impl Clients {
    /// A place, or `None` when [`MAX_CLIENTS`] streams are open.
    pub fn take(self: &Arc<Self>) -> Option<Place> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CLIENTS).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a stream is asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub cluster: Option<String>,
    /// Resume after this event id (none: live events only).
    pub after: Option<i64>,
}

/// What the feed sends, made an SSE event on the way out.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Vigie(Value),
    /// Live events were missed: `missed` of them after `last_id`.
    Lagged {
        missed: u64,
        last_id: i64,
    },
}

impl Item {
    fn sse(self) -> Event {
        match self {
            Item::Vigie(doc) => Event::default()
                .event("vigie")
                .id(doc["id"].as_i64().unwrap_or_default().to_string())
                .data(doc.to_string()),
            Item::Lagged { missed, last_id } => Event::default().event("lagged").data(
                json!({
                    "missed": missed,
                    "last_id": last_id,
                    "resume": "reconnect with Last-Event-ID (EventSource does) or ?since=last_id",
                })
                .to_string(),
            ),
        }
    }
}

/// The stream for `ask`, fed by a task that holds `place` until the client goes.
pub fn stream(
    live: broadcast::Receiver<Value>,
    log: Reader,
    ask: Ask,
    place: Place,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tokio_stream::StreamExt;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _place = place;
        feed(live, log, ask, tx).await;
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|item| Ok::<_, std::convert::Infallible>(item.sse()));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

type Out = mpsc::Sender<Item>;

async fn feed(mut live: broadcast::Receiver<Value>, log: Reader, ask: Ask, tx: Out) {
    let wanted = |doc: &Value| ask.cluster.as_deref().is_none_or(|c| doc["cluster"] == c);
    // Every id up to `last` has been sent or was not wanted.
    let mut last = match ask.after {
        Some(after) => match replay(&log, &ask, after, i64::MAX, &tx).await {
            Some(l) => l,
            None => return,
        },
        None => 0,
    };
    let mut caught_up = ask.after.is_none();
    loop {
        let doc = match live.recv().await {
            Ok(doc) => doc,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let _ = tx
                    .send(Item::Lagged {
                        missed,
                        last_id: last,
                    })
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let id = doc["id"].as_i64().unwrap_or_default();
        if id <= last {
            continue; // replayed from the log already
        }
        // Events recorded between the log's read and this subscription: from the log too.
        if !caught_up && id > last + 1 && replay(&log, &ask, last, id, &tx).await.is_none() {
            return;
        }
        caught_up = true;
        if wanted(&doc) && tx.send(Item::Vigie(doc)).await.is_err() {
            return;
        }
        last = id;
    }
}

/// Sends the logged events of `ask` with ids in (`after`, `before`), oldest first; returns the
/// last id covered, or `None` when the client is gone. When `before` is bounded, waits (at most
/// [`COMMIT_WAIT`]) for the events up to it to be committed.
async fn replay(log: &Reader, ask: &Ask, after: i64, before: i64, tx: &Out) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
    loop {
        // Unfiltered ids tell whether the log has caught up with `before`.
        let all = log.query(None, after, MAX_REPLAY).await.unwrap_or_default();
        let newest = all.last().and_then(|d| d["id"].as_i64()).unwrap_or(after);
        if before == i64::MAX || newest >= before - 1 || tokio::time::Instant::now() >= deadline {
            let mut last = after;
            for doc in all {
                let id = doc["id"].as_i64().unwrap_or_default();
                if id >= before {
                    break;
                }
                if ask.cluster.as_deref().is_none_or(|c| doc["cluster"] == c)
                    && tx.send(Item::Vigie(doc)).await.is_err()
                {
                    return None;
                }
                last = id;
            }
            return Some(if before == i64::MAX { last } else { before - 1 });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_too_slow_for_the_live_feed_is_told_and_the_stream_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = crate::store::open(&dir.path().join("events.db")).expect("store");
        let (live, rx) = broadcast::channel(4);
        // Ten events before the feed reads one: more than the channel keeps.
        for id in 1..=10 {
            let _ = live.send(json!({"id": id, "cluster": "demo"}));
        }
        let (tx, mut out) = mpsc::channel(64);
        let ask = Ask {
            cluster: None,
            after: None,
        };
        feed(rx, opened.reader, ask, tx).await;
        assert_eq!(
            out.recv().await,
            Some(Item::Lagged {
                missed: 6,
                last_id: 0
            })
        );
        assert_eq!(out.recv().await, None, "the stream ends after `lagged`");
    }

    #[test]
    fn streams_are_capped() {
        let clients = Arc::new(Clients::default());
        let places: Vec<Place> = (0..MAX_CLIENTS).filter_map(|_| clients.take()).collect();
        assert_eq!(places.len(), MAX_CLIENTS);
        assert!(clients.take().is_none());
        drop(places);
        assert_eq!(clients.open(), 0);
        assert!(clients.take().is_some());
    }
}
