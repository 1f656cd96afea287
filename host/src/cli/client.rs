//! The HTTP client behind every CLI command that talks to a server.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Talks to one Spool server.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str) -> anyhow::Result<Client> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--server {server:?} must start with http:// or https://, e.g. http://127.0.0.1:7700"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client { base, http })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, Body::None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, Body::Json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::PUT, path, Body::Json(body)).await
    }

    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        self.send(Method::PUT, path, Body::Bytes(bytes)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::DELETE, path, Body::None).await
    }

    async fn send(&self, method: Method, path: &str, body: Body<'_>) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(v)?),
            Body::Bytes(b) => req.header("content-type", "application/wasm").body(b),
        };
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "server not reachable at {}: is `spool serve` running? (set --server or SPOOL_SERVER)",
                    self.base
                )
            } else if e.is_timeout() {
                anyhow!("{method} {url} timed out")
            } else {
                anyhow!("{method} {url} failed: {e}")
            }
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .context("cannot read the server's answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(api_error(status, &value))
    }
}

enum Body<'a> {
    None,
    Json(&'a Value),
    Bytes(Vec<u8>),
}

/// Turns the API's `{"error": {"code", "message"}}` into a readable error.
fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    match (code, message) {
        (Some(code), Some(message)) => anyhow!("{message} ({code}, HTTP {})", status.as_u16()),
        _ => anyhow!("the server answered HTTP {status}: {body}"),
    }
}

/// Percent-encodes a path segment (queue and plugin names are restricted, but ids and user
/// input are not checked here; the server gives the error).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("orders.eu-1"), "orders.eu-1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn api_errors_read_well() {
        let body = serde_json::json!({"error": {"code": "queue_not_found", "message": "queue \"x\" does not exist"}});
        let e = api_error(StatusCode::NOT_FOUND, &body).to_string();
        assert_eq!(e, "queue \"x\" does not exist (queue_not_found, HTTP 404)");
    }

    #[test]
    fn server_must_be_a_url() {
        assert!(Client::new("127.0.0.1:7700").is_err());
        assert!(Client::new("http://127.0.0.1:7700/").is_ok());
    }
}
