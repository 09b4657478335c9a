//! Generic JSON webhooks: each notification (an alert firing or resolved, after its hold time)
//! is POSTed to every configured URL, each URL served by its own task and bounded queue (a dead
//! receiver delays no other; a full queue drops and logs). Each attempt is signed with
//! HMAC-SHA256 over `<timestamp>.<body>` (`X-Vigie-Timestamp: <unix seconds>`,
//! `X-Vigie-Signature: sha256=<hex>`): a receiver that checks the timestamp is recent detects a
//! replay. A stable `X-Vigie-Delivery` id lets it de-duplicate; failures are retried with
//! exponential backoff.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::notify::Delivery;

/// Attempts per delivery and per URL before giving up.
const ATTEMPTS: u32 = 6;

/// One configured receiver (its `Debug` shows no secret).
#[derive(Clone)]
pub struct Target {
    pub url: reqwest::Url,
    pub secret: Vec<u8>,
    /// The client for this receiver (its own TLS files; 10 s timeout).
    pub client: reqwest::Client,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url.as_str())
            .field("secret", &crate::http::auth::REDACTED)
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `<timestamp>.<body>` under `secret`: what
/// `X-Vigie-Signature` carries, `timestamp` being `X-Vigie-Timestamp`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The queues' sending ends, one per receiver, for the state task (never blocks it).
#[derive(Debug, Clone)]
pub struct Queue {
    targets: Vec<(String, mpsc::Sender<Delivery>)>,
}

impl Queue {
    pub fn offer(&self, d: Delivery) {
        for (url, tx) in &self.targets {
            if tx.try_send(d.clone()).is_err() {
                tracing::warn!(%url, delivery = %d.id, "Webhook queue full: a notification was dropped");
            }
        }
    }
}

/// Starts one sender task per receiver.
pub fn spawn(
    targets: Vec<Target>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Queue {
    let stop = tokio::sync::watch::channel(false);
    let mut queues = Vec::with_capacity(targets.len());
    for t in targets {
        let (tx, rx) = mpsc::channel::<Delivery>(1024);
        queues.push((t.url.to_string(), tx));
        tokio::spawn(deliver(t, rx, stop.1.clone()));
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.0.send(true);
    });
    Queue { targets: queues }
}

/// Delivers one receiver's notifications in order until shutdown.
async fn deliver(
    t: Target,
    mut rx: mpsc::Receiver<Delivery>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = |stop: &mut tokio::sync::watch::Receiver<bool>| {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    loop {
        let d = tokio::select! {
            _ = stopped(&mut stop) => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        let body = d.body.to_string();
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let timestamp = (crate::state::now_ms() / 1000).to_string();
            let sig = signature(&t.secret, &timestamp, body.as_bytes());
            let sent = t
                .client
                .post(t.url.clone())
                .header("Content-Type", "application/json")
                .header("X-Vigie-Delivery", &d.id)
                .header("X-Vigie-Timestamp", &timestamp)
                .header("X-Vigie-Signature", &sig)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    tracing::warn!(url = %t.url, status = %r.status(), attempt, "Webhook refused")
                }
                Err(e) => {
                    tracing::warn!(url = %t.url, error = %e, attempt, "Webhook unreachable")
                }
            }
            if attempt == ATTEMPTS {
                tracing::error!(url = %t.url, delivery = %d.id, "Webhook delivery abandoned");
                break;
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_the_timestamp_and_the_body() {
        assert_eq!(
            signature(b"Jefe", "1796306000", br#"{"state":"firing"}"#),
            // Python: hmac.new(b'Jefe', b'1796306000.{"state":"firing"}', hashlib.sha256)
            "sha256=d1c7049cff22f8de7ce8481178be8cc9e95a80a0950553c26186caa2a2076d15"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        vigie_proto::tls::install_crypto_provider();
        let t = Target {
            url: "https://hooks.example/x".parse().expect("url"),
            secret: b"s3cret-webhook-key".to_vec(),
            client: reqwest::Client::new(),
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("hooks.example"), "{shown}");
    }
    #[tokio::test]
    async fn a_receiver_that_never_answers_delays_no_other() {
        vigie_proto::tls::install_crypto_provider();
        // Accepts connections and never answers.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead_url = format!("http://{}/hook", dead.local_addr().expect("addr"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = dead.accept().await {
                held.push(c);
            }
        });
        let (got_tx, mut got) = mpsc::channel::<String>(8);
        let alive = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let got_tx = got_tx.clone();
                async move {
                    let _ = got_tx.send(body).await;
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let alive_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, alive).await });
        let target = |url: &str| Target {
            url: url.parse().expect("url"),
            secret: b"k".to_vec(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        // The dead receiver first: with one sender for all, it would hold the other 30 s.
        let queue = spawn(
            vec![target(&dead_url), target(&alive_url)],
            std::future::pending(),
        );
        for n in 0..3 {
            queue.offer(Delivery {
                id: format!("d{n}"),
                body: serde_json::json!({"n": n}),
            });
        }
        for n in 0..3 {
            let body = tokio::time::timeout(Duration::from_secs(10), got.recv())
                .await
                .expect("the live receiver is not held up by the dead one")
                .expect("body");
            assert_eq!(body, format!("{{\"n\":{n}}}"));
        }
    }
}
