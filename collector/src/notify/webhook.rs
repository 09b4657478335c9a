//! Generic JSON webhooks: each notification (an alert firing or resolved, after its hold time)
//! is POSTed to every configured URL, signed with HMAC-SHA256 over the body
//! (`X-Vigie-Signature: sha256=<hex>`), with a stable `X-Vigie-Delivery` id for
//! de-duplication; retried with exponential backoff; queued in a bounded channel whose overflow
//! is counted and logged.

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

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The queue's sending end, for the state task (never blocks it).
#[derive(Debug, Clone)]
pub struct Queue {
    tx: mpsc::Sender<Delivery>,
}

impl Queue {
    pub fn offer(&self, d: Delivery) {
        if self.tx.try_send(d).is_err() {
            tracing::warn!("Webhook queue full: a notification was dropped");
        }
    }
}

/// Starts the sender task.
pub fn spawn(
    targets: Vec<Target>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Queue {
    let (tx, mut rx) = mpsc::channel::<Delivery>(1024);
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let d = tokio::select! {
                _ = &mut shutdown => return,
                d = rx.recv() => match d { Some(d) => d, None => return },
            };
            let body = d.body.to_string();
            for t in &targets {
                let sig = signature(&t.secret, body.as_bytes());
                let mut backoff = Duration::from_millis(500);
                for attempt in 1..=ATTEMPTS {
                    let sent = t
                        .client
                        .post(t.url.clone())
                        .header("Content-Type", "application/json")
                        .header("X-Vigie-Delivery", &d.id)
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
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    Queue { tx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
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
}
