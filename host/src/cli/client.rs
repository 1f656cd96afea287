//! The HTTP client behind every CLI command that talks to a server.
//!
//! Every failure becomes a [`ClientError`] whose text tells the user what to do next: start the
//! server, pass a token, use a token with another role, or fix what the server's error names.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::ClientOpts;

/// How long one request may take. Generous: a batch of 1,000 messages or a 60 MiB plugin upload
/// on a busy server can take a while, and a CLI that gives up early leaves the user guessing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {0:?} must start with http:// or https://, e.g. http://127.0.0.1:7700")]
    BadServer(String),
    #[error(
        "the token cannot be sent in an HTTP header: it may only hold visible ASCII characters \
         (check --token or SPOOL_TOKEN for stray spaces or line breaks)"
    )]
    BadToken,
    #[error(
        "server not reachable at {server}: is `spool serve` running? (set --server or SPOOL_SERVER)"
    )]
    Unreachable { server: String },
    #[error("{method} {url} timed out after {}s; the server may be overloaded", REQUEST_TIMEOUT.as_secs())]
    Timeout { method: Method, url: String },
    #[error("{method} {url} failed: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the server at {server} requires a token: pass --token TOKEN or set SPOOL_TOKEN \
         (an admin creates tokens with `spool token new`)\n  \
         the server said: {message} (unauthorized, HTTP 401)"
    )]
    TokenRequired { server: String, message: String },
    #[error(
        "the server at {server} did not accept the token from --token/SPOOL_TOKEN: check that it \
         was copied whole and that its sha256 (`spool token hash`) is listed under \
         [[auth.tokens]] in the server's spool.toml\n  \
         the server said: {message} (unauthorized, HTTP 401)"
    )]
    TokenRejected { server: String, message: String },
    #[error(
        "your token's role may not do this: {message} (forbidden, HTTP 403)\n  \
         roles are admin (everything), producer (enqueue, read its own messages) and reader \
         (read only): use a token whose role allows this request"
    )]
    Forbidden { message: String },
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server answered HTTP {status}: {body}")]
    Unexpected { status: u16, body: String },
    /// A successful answer this CLI cannot parse (data stored by an older server, say): shown
    /// raw rather than hidden, and the command fails.
    #[error(
        "the server's answer to {method} {url} is not JSON this CLI can read ({reason}); \
         its raw text follows:\n{body}"
    )]
    Unreadable {
        method: Method,
        url: String,
        reason: String,
        body: String,
    },
}

impl ClientError {
    /// True when the server answered and refused the request, so it changed nothing (every API
    /// request is atomic). Transport failures are unknown: the request may have been applied.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ClientError::TokenRequired { .. }
                | ClientError::TokenRejected { .. }
                | ClientError::Forbidden { .. }
                | ClientError::Api { .. }
                | ClientError::Unexpected { .. }
        )
    }

    /// The HTTP status when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::TokenRequired { .. } | ClientError::TokenRejected { .. } => Some(401),
            ClientError::Forbidden { .. } => Some(403),
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The server's error message, when it sent one.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ClientError::TokenRequired { message, .. }
            | ClientError::TokenRejected { message, .. }
            | ClientError::Forbidden { message }
            | ClientError::Api { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// Talks to one Spool server.
pub struct Client {
    base: String,
    http: reqwest::Client,
    has_token: bool,
}

impl Client {
    /// A client for the server and token in `opts`.
    pub fn from_opts(opts: &ClientOpts) -> Result<Client, ClientError> {
        Client::new(&opts.server, opts.token.as_deref())
    }

    pub fn new(server: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadServer(server.to_owned()));
        }
        // An empty SPOOL_TOKEN (e.g. `SPOOL_TOKEN= spool ...`) means "no token".
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let mut headers = HeaderMap::new();
        if let Some(t) = token {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| ClientError::BadToken)?;
            // Keeps the token out of reqwest's debug output.
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .map_err(|source| ClientError::Transport {
                method: Method::GET,
                url: base.clone(),
                source,
            })?;
        Ok(Client {
            base,
            http,
            has_token: token.is_some(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send_json(Method::GET, path, Body::None).await
    }

    /// GET for endpoints that answer plain text (`/metrics`): the body as is.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        self.send(Method::GET, path, Body::None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send_json(Method::POST, path, Body::Json(body)).await
    }

    /// POST of a body that is already JSON text (bulk enqueue builds it line by line, keeping
    /// each producer's payload exactly as written).
    pub async fn post_json_text(&self, path: &str, body: String) -> Result<Value, ClientError> {
        self.send_json(Method::POST, path, Body::JsonText(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send_json(Method::PUT, path, Body::Json(body)).await
    }

    /// PUT of raw bytes sent in chunks, advancing `bar` as each chunk goes out; once all are
    /// sent the bar says the server is working on them (compiling a large plugin takes a while).
    pub async fn put_bytes_with_progress(
        &self,
        path: &str,
        bytes: Vec<u8>,
        bar: &indicatif::ProgressBar,
    ) -> Result<Value, ClientError> {
        const CHUNK: usize = 256 * 1024;
        let bytes = bytes::Bytes::from(bytes);
        let len = bytes.len();
        let bar = bar.clone();
        // The stream is pulled as the connection takes data, so the bar follows the upload.
        let chunks = (0..len).step_by(CHUNK).map(move |start| {
            let end = (start + CHUNK).min(len);
            bar.inc((end - start) as u64);
            if end == len {
                bar.set_message("sent; the server is compiling and checking it");
            }
            Ok::<_, std::io::Error>(bytes.slice(start..end))
        });
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        self.send_json(Method::PUT, path, Body::Stream(body, len))
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send_json(Method::PATCH, path, Body::Json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send_json(Method::DELETE, path, Body::None).await
    }

    /// Sends one request whose successful answer is JSON (or empty: `null`).
    async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Value, ClientError> {
        let text = self.send(method.clone(), path, body).await?;
        parse_success(text).map_err(|(reason, body)| ClientError::Unreadable {
            method,
            url: format!("{}{}", self.base, path),
            reason,
            body,
        })
    }

    /// Sends one request; the successful answer's body as text.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<String, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(v).unwrap_or_default()),
            Body::JsonText(t) => req.header("content-type", "application/json").body(t),
            // The length is known: send it, so the server can refuse an oversized upload on the
            // header instead of reading it.
            Body::Stream(b, len) => req
                .header("content-type", "application/wasm")
                .header("content-length", len)
                .body(b),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport(method.clone(), &url, e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport(method, &url, e))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(api_error(status, &parse(text), &self.base, self.has_token))
        }
    }

    fn transport(&self, method: Method, url: &str, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Unreachable {
                server: self.base.clone(),
            }
        } else if e.is_timeout() {
            ClientError::Timeout {
                method,
                url: url.to_owned(),
            }
        } else {
            ClientError::Transport {
                method,
                url: url.to_owned(),
                source: e,
            }
        }
    }
}

enum Body<'a> {
    None,
    Json(&'a Value),
    JsonText(String),
    Stream(reqwest::Body, usize),
}

/// A successful answer's body as JSON (`null` when empty); otherwise why it is not, and the
/// text, so the caller shows it instead of rendering nothing.
fn parse_success(text: String) -> Result<Value, (String, String)> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| (e.to_string(), text))
}

/// An error answer's body as JSON when it is JSON, else as a JSON string (shown as is).
fn parse(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Turns the API's `{"error": {"code", "message"}}` into an error that says what to do.
fn api_error(status: StatusCode, body: &Value, server: &str, has_token: bool) -> ClientError {
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    let text = || {
        message
            .map(str::to_owned)
            .unwrap_or_else(|| super::output::cell(body))
    };
    match status {
        StatusCode::UNAUTHORIZED if has_token => ClientError::TokenRejected {
            server: server.to_owned(),
            message: text(),
        },
        StatusCode::UNAUTHORIZED => ClientError::TokenRequired {
            server: server.to_owned(),
            message: text(),
        },
        StatusCode::FORBIDDEN => ClientError::Forbidden { message: text() },
        _ => match (code, message) {
            (Some(code), Some(message)) => ClientError::Api {
                status: status.as_u16(),
                code: code.to_owned(),
                message: message.to_owned(),
            },
            _ => ClientError::Unexpected {
                status: status.as_u16(),
                body: super::output::cell(body),
            },
        },
    }
}

/// Percent-encodes a path segment or query value (queue and plugin names are restricted, but
/// ids, cursors and user input are not checked here; the server gives the error).
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

/// `path?k=v&...` for the parameters that are set, each value encoded.
pub fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut out = path.to_owned();
    let mut sep = if path.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        if let Some(v) = v {
            out.push(sep);
            out.push_str(k);
            out.push('=');
            out.push_str(&seg(v));
            sep = '&';
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SERVER: &str = "http://127.0.0.1:7700";

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("orders.eu-1"), "orders.eu-1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn queries_skip_unset_parameters() {
        let p = with_query(
            "/v1/dlq",
            &[
                ("queue", Some("a b".into())),
                ("category", None),
                ("limit", Some("5".into())),
            ],
        );
        assert_eq!(p, "/v1/dlq?queue=a%20b&limit=5");
        assert_eq!(
            with_query("/x?a=1", &[("b", Some("2".into()))]),
            "/x?a=1&b=2"
        );
        assert_eq!(with_query("/x", &[("b", None)]), "/x");
    }

    #[test]
    fn api_errors_read_well() {
        let body =
            json!({"error": {"code": "queue_not_found", "message": "queue \"x\" does not exist"}});
        let e = api_error(StatusCode::NOT_FOUND, &body, SERVER, false);
        assert_eq!(
            e.to_string(),
            "queue \"x\" does not exist (queue_not_found, HTTP 404)"
        );
        assert!(e.is_rejection());
        assert_eq!(e.status(), Some(404));
        let e = api_error(StatusCode::BAD_GATEWAY, &json!("<html>"), SERVER, false);
        assert_eq!(e.to_string(), "the server answered HTTP 502: <html>");
    }

    #[test]
    fn a_missing_token_says_how_to_pass_one() {
        let body =
            json!({"error": {"code": "unauthorized", "message": "a bearer token is required"}});
        let e = api_error(StatusCode::UNAUTHORIZED, &body, SERVER, false).to_string();
        for part in [
            "--token",
            "SPOOL_TOKEN",
            SERVER,
            "a bearer token is required",
            "401",
        ] {
            assert!(e.contains(part), "{part:?} in {e}");
        }
        let e = api_error(StatusCode::UNAUTHORIZED, &body, SERVER, true).to_string();
        assert!(e.contains("did not accept the token"), "{e}");
    }

    #[test]
    fn a_forbidden_request_names_the_roles_and_the_reason() {
        let body = json!({"error": {"code": "forbidden", "message": "role reader may not PUT /v1/queues/q"}});
        let e = api_error(StatusCode::FORBIDDEN, &body, SERVER, true).to_string();
        for part in ["role reader may not", "admin", "producer", "reader", "403"] {
            assert!(e.contains(part), "{part:?} in {e}");
        }
    }

    #[test]
    fn unreadable_answers_are_errors_with_the_raw_text() {
        assert_eq!(parse_success(String::new()), Ok(Value::Null));
        assert_eq!(parse_success("{\"a\":1}".into()), Ok(json!({"a": 1})));
        // What an older server may send back: a payload no JSON parser accepts.
        let text = r#"{"id":"1","payload":"\ud800"}"#.to_owned();
        let (reason, body) = parse_success(text.clone()).unwrap_err();
        assert!(reason.contains("escape"), "{reason}");
        assert_eq!(body, text);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_success(deep).is_err());
    }

    #[test]
    fn server_must_be_a_url() {
        assert!(Client::new("127.0.0.1:7700", None).is_err());
        assert!(Client::new("http://127.0.0.1:7700/", None).is_ok());
        assert_eq!(
            Client::new("http://h:1///", None).unwrap().base(),
            "http://h:1"
        );
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        assert!(Client::new(SERVER, Some("spool_abc")).is_ok());
        assert!(matches!(
            Client::new(SERVER, Some("bad\ntoken")),
            Err(ClientError::BadToken)
        ));
        // A trailing newline from `$(cat token.txt)`-style input is forgiven.
        assert!(Client::new(SERVER, Some("spool_abc\n")).is_ok());
        assert!(!Client::new(SERVER, Some("  ")).unwrap().has_token);
    }
}
