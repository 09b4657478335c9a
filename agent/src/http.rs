//! HTTP GET/POST for the probes: a bounded body, and every failure as one human sentence (a
//! refused port, a timeout, something that is not HTTP, a body that is not JSON).

use serde_json::Value;

use crate::probe::excerpt;

/// Answers larger than this are cut: a probe never buffers a flood.
const MAX_BODY: usize = 1024 * 1024;

/// A status code and a body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON, or a sentence saying why not.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| {
            format!(
                "answered something that is not JSON ({e}): \"{}\"",
                excerpt(&self.body, 60)
            )
        })
    }
}

pub async fn get(client: &reqwest::Client, url: &str) -> Result<Answer, String> {
    read(client.get(url).send().await, url).await
}

pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<Answer, String> {
    read(client.post(url).json(body).send().await, url).await
}

async fn read(sent: reqwest::Result<reqwest::Response>, url: &str) -> Result<Answer, String> {
    let mut resp = sent.map_err(|e| describe(&e, url))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, url))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Whether a failure sentence of this module is a timeout (no answer in time, as opposed to a
/// refusal or a bad answer).
pub fn is_timeout(failure: &str) -> bool {
    failure.contains(": timed out: ")
}

/// One sentence for a failed request, with the innermost cause (e.g. "Connection refused").
fn describe(e: &reqwest::Error, url: &str) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_decode() || e.is_body() {
        "bad answer"
    } else {
        "request failed"
    };
    format!("{url}: {kind}: {cause}")
}

/// `base` + `/path`, whether or not `base` ends with a slash.
pub fn endpoint(base: &reqwest::Url, path: &str) -> String {
    format!("{}/{}", base.as_str().trim_end_matches('/'), path)
}
