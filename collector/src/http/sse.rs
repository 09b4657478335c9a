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

use crate::store::{Reader, StoreHealth};

/// Streams served at once; one more is refused with 503.
pub const MAX_CLIENTS: usize = 256;
/// Events replayed from the log on a resume, at most: beyond, `lagged`.
const MAX_REPLAY: usize = 10_000;
/// Events read from the log at a time.
const PAGE: usize = 500;
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
    /// The id of the last event broadcast before the stream subscribed to the live feed: a
    /// resume reads up to it from the log, and everything after it comes live.
    pub sent_before: i64,
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
    log: Log,
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

/// The event log as a stream reads it: its read-only connection, and how far its writer got.
#[derive(Debug, Clone)]
pub struct Log {
    pub reader: Reader,
    pub writer: Arc<StoreHealth>,
}

async fn feed(mut live: broadcast::Receiver<Value>, log: Log, ask: Ask, tx: Out) {
    let wanted = |doc: &Value| ask.cluster.as_deref().is_none_or(|c| doc["cluster"] == c);
    // Every id up to `last` has been sent or was not wanted.
    let mut last = 0;
    if let Some(after) = ask.after {
        // Up to the last event broadcast before the subscription, from the log (waiting for its
        // commit); an id ahead of it (a log recreated since) resumes from there.
        let upto = ask.sent_before;
        match replay(&log, &ask, after.min(upto), upto, &tx).await {
            Ok(l) => last = l,
            Err(Ended::Gone) => return,
            Err(Ended::Lagged(last_id)) => return lagged(&tx, 0, last_id).await,
        }
    }
    loop {
        let doc = tokio::select! {
            // The client gone: its place is given back even if no event ever comes.
            _ = tx.closed() => return,
            doc = live.recv() => match doc {
                Ok(doc) => doc,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return lagged(&tx, missed, last).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let id = doc["id"].as_i64().unwrap_or_default();
        if id <= last {
            continue; // replayed from the log already
        }
        if wanted(&doc) && tx.send(Item::Vigie(doc)).await.is_err() {
            return;
        }
        last = id;
    }
}

async fn lagged(tx: &Out, missed: u64, last_id: i64) {
    let _ = tx.send(Item::Lagged { missed, last_id }).await;
}

/// Why a replay stopped short.
enum Ended {
    /// The client went away.
    Gone,
    /// The log did not have what was asked for in time: everything up to this id was sent.
    Lagged(i64),
}

/// Sends the logged events of `ask` with ids in (`after`, `upto`], oldest first, page by page,
/// once the log holds every event up to `upto` (waiting at most [`COMMIT_WAIT`] for its commit:
/// short of that, `Lagged`, never a silent gap); returns `upto`.
async fn replay(log: &Log, ask: &Ask, after: i64, upto: i64, tx: &Out) -> Result<i64, Ended> {
    let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
    while log.writer.settled_id.load(Ordering::Acquire) < upto {
        if tokio::time::Instant::now() >= deadline {
            return Err(Ended::Lagged(after));
        }
        tokio::select! {
            _ = tx.closed() => return Err(Ended::Gone),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let mut last = after;
    let mut sent = 0;
    loop {
        let page = log
            .reader
            .range(ask.cluster.clone(), last, upto.saturating_add(1), PAGE)
            .await
            .map_err(|_| Ended::Lagged(last))?;
        let full = page.len() == PAGE;
        for doc in page {
            let id = doc["id"].as_i64().unwrap_or_default();
            if tx.send(Item::Vigie(doc)).await.is_err() {
                return Err(Ended::Gone);
            }
            last = id;
            sent += 1;
        }
        if !full {
            break;
        }
        if sent >= MAX_REPLAY {
            // More than a resume should carry: the client reads the rest from `/api/v1/events`.
            return Err(Ended::Lagged(last));
        }
    }
    // Covered whole: another cluster's events in the range are not wanted.
    Ok(upto)
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
            sent_before: 0,
        };
        feed(rx, test_log(opened.reader), ask, tx).await;
        assert_eq!(
            out.recv().await,
            Some(Item::Lagged {
                missed: 6,
                last_id: 0
            })
        );
        assert_eq!(out.recv().await, None, "the stream ends after `lagged`");
    }

    #[tokio::test]
    async fn a_client_gone_gives_its_place_back_though_no_event_comes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = crate::store::open(&dir.path().join("events.db")).expect("store");
        let (_live, rx) = broadcast::channel::<Value>(4);
        let (tx, out) = mpsc::channel(64);
        let ask = Ask {
            cluster: Some("quiet".into()),
            after: None,
            sent_before: 0,
        };
        let fed = tokio::spawn(feed(rx, test_log(opened.reader), ask, tx));
        drop(out);
        tokio::time::timeout(Duration::from_secs(5), fed)
            .await
            .expect("the feed ends with its client")
            .expect("joined");
    }

    /// A log whose writer has settled nothing yet (an empty store).
    fn test_log(reader: Reader) -> Log {
        Log {
            reader,
            writer: Arc::new(StoreHealth::default()),
        }
    }

    fn event(id: i64) -> crate::store::Op {
        crate::store::Op::Event {
            id,
            recorded_ms: id,
            at_ms: id,
            cluster: "demo".into(),
            kind: "verdict",
            doc: json!({"id": id, "cluster": "demo"}).to_string(),
        }
    }

    async fn next_id(out: &mut mpsc::Receiver<Item>) -> Option<i64> {
        match tokio::time::timeout(Duration::from_secs(5), out.recv()).await {
            Ok(Some(Item::Vigie(doc))) => doc["id"].as_i64(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Events broadcast before the stream subscribed but committed after it first read the log
    /// are sent at once, in order, not held until the next live event.
    #[tokio::test]
    async fn a_resume_gets_what_was_broadcast_before_it_subscribed_as_soon_as_it_is_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = crate::store::open(&dir.path().join("events.db")).expect("store");
        let (q, _writer) = crate::store::spawn_writer(opened.writer);
        q.send((1..=3).map(event).collect());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while q.health().settled_id.load(Ordering::Acquire) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Events 4 and 5 went out before the subscription; their commit is late.
        let (live, rx) = broadcast::channel(16);
        let (tx, mut out) = mpsc::channel(64);
        let ask = Ask {
            cluster: None,
            after: Some(2),
            sent_before: 5,
        };
        let log = Log {
            reader: opened.reader.clone(),
            writer: q.health().clone(),
        };
        let fed = tokio::spawn(feed(rx, log, ask, tx));
        q.send(vec![event(4), event(5)]);
        assert_eq!(next_id(&mut out).await, Some(3));
        assert_eq!(next_id(&mut out).await, Some(4));
        assert_eq!(next_id(&mut out).await, Some(5));
        // Then live, without a repeat.
        let _ = live.send(json!({"id": 5, "cluster": "demo"}));
        let _ = live.send(json!({"id": 6, "cluster": "demo"}));
        assert_eq!(next_id(&mut out).await, Some(6));
        drop(out);
        let _ = fed.await;
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
