//! Bearer tokens for the HTTP API: `read` tokens for every GET, `admin` tokens also for the
//! actions (POST). Tokens come from files and are compared in constant time. `/healthz` and
//! `/metrics` can be left open (for probes and Prometheus).

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::config::{ApiAuth, ApiConfig, TokenScope};

/// The API's access rules, resolved at start-up (its `Debug` shows no token).
#[derive(Clone)]
pub struct Access {
    enabled: bool,
    open_healthz: bool,
    open_metrics: bool,
    /// (token bytes, scope)
    tokens: std::sync::Arc<Vec<(Vec<u8>, TokenScope)>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("enabled", &self.enabled)
            .field("open_healthz", &self.open_healthz)
            .field("open_metrics", &self.open_metrics)
            .field(
                "tokens",
                &self
                    .tokens
                    .iter()
                    .map(|(_, scope)| (REDACTED, *scope))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What `Debug` prints for a secret.
pub const REDACTED: &str = "<redacted>";

/// The token of an `Authorization` header value: the `Bearer` scheme, in any case (RFC 9110
/// makes auth schemes case-insensitive), then the token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Access {
    /// Reads the token files (validated at configuration load).
    pub fn from_config(cfg: &ApiConfig) -> Result<Access, String> {
        let mut tokens = Vec::new();
        for t in &cfg.tokens {
            let text = std::fs::read_to_string(&t.file)
                .map_err(|e| format!("{}: {e}", t.file.display()))?;
            let token = text.lines().next().unwrap_or("").trim().as_bytes().to_vec();
            tokens.push((token, t.scope));
        }
        Ok(Access {
            enabled: cfg.auth == ApiAuth::Tokens,
            open_healthz: cfg.open_healthz,
            open_metrics: cfg.open_metrics,
            tokens: std::sync::Arc::new(tokens),
        })
    }

    /// The scope a presented token grants, if any (every token is compared, in constant time).
    fn scope_of(&self, presented: &[u8]) -> Option<TokenScope> {
        let mut granted = None;
        for (token, scope) in self.tokens.iter() {
            if bool::from(token.as_slice().ct_eq(presented)) {
                granted = Some(*scope);
            }
        }
        granted
    }

    /// What a request needs: `None` when it is open.
    fn needs(&self, method: &Method, path: &str) -> Option<TokenScope> {
        if !self.enabled
            || (path == "/healthz" && self.open_healthz)
            || (path == "/metrics" && self.open_metrics)
        {
            return None;
        }
        Some(if method == Method::GET || method == Method::HEAD {
            TokenScope::Read
        } else {
            TokenScope::Admin
        })
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": message, "status": status.as_u16()}).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::WWW_AUTHENTICATE, "Bearer")
        .body(body.into())
        .unwrap_or_default()
}

/// Axum middleware enforcing [`Access`].
pub async fn require(State(access): State<Access>, request: Request, next: Next) -> Response {
    let Some(needed) = access.needs(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(|t| t.as_bytes().to_vec());
    match presented.and_then(|t| access.scope_of(&t)) {
        None => refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
        Some(TokenScope::Read) if needed == TokenScope::Admin => refuse(
            StatusCode::FORBIDDEN,
            "this token is read-only; the action needs an admin token",
        ),
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            enabled: true,
            open_healthz: true,
            open_metrics: false,
            tokens: std::sync::Arc::new(vec![
                (b"read-token-0123456789".to_vec(), TokenScope::Read),
                (b"admin-token-0123456789".to_vec(), TokenScope::Admin),
            ]),
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_debug_shows_no_token() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
        let shown = format!("{:?}", access());
        assert!(!shown.contains("token-0123456789"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn scopes_and_open_paths() {
        let a = access();
        assert_eq!(a.scope_of(b"read-token-0123456789"), Some(TokenScope::Read));
        assert_eq!(
            a.scope_of(b"admin-token-0123456789"),
            Some(TokenScope::Admin)
        );
        assert_eq!(a.scope_of(b"read-token-012345678"), None);
        assert_eq!(a.needs(&Method::GET, "/healthz"), None);
        assert_eq!(a.needs(&Method::GET, "/metrics"), Some(TokenScope::Read));
        assert_eq!(
            a.needs(&Method::POST, "/api/v1/clusters/demo/probe"),
            Some(TokenScope::Admin)
        );
    }
}
