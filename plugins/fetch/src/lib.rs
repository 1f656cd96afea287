//! A handler that makes one outbound HTTP GET through wasi-http, for the capability tests.
//!
//! Payload `{"url": "http://127.0.0.1:8080/path"}`: acks on a 2xx status, dead-letters with
//! the status otherwise, and with the error when the request fails (a host not in the plugin's
//! `allowed_outbound_hosts` fails with `HttpRequestDenied`). When the plugin's configuration
//! has `api_key` (e.g. a secret), it is sent as the `x-api-key` header — never logged.
//!
//! Importing wasi:http, it deploys only with `allowed_outbound_hosts` granted.
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p fetch
//! ```

use spool_guest::{Message, Outcome, log};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};

fn handle(msg: Message) -> Outcome {
    let url = match serde_json::from_slice::<serde_json::Value>(&msg.payload) {
        Ok(v) => match v["url"].as_str() {
            Some(u) => u.to_owned(),
            None => return Outcome::DeadLetter("payload needs a string field `url`".into()),
        },
        Err(e) => return Outcome::DeadLetter(format!("payload is not JSON: {e}")),
    };
    match get(&url) {
        Ok(status) if (200..300).contains(&status) => {
            log::info(&format!("GET {url}: {status}"));
            Outcome::Ack
        }
        Ok(status) => Outcome::DeadLetter(format!("GET {url}: status {status}")),
        Err(e) => Outcome::DeadLetter(format!("GET {url} failed: {e}")),
    }
}

fn get(url: &str) -> Result<u16, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} has no scheme"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Some(key) = spool_guest::config("api_key") {
        headers
            .append("x-api-key", key.as_bytes())
            .map_err(|e| format!("cannot set header: {e:?}"))?;
    }
    let request = OutgoingRequest::new(headers);
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let bad = |what: &str| format!("cannot set the request's {what}");
    request
        .set_method(&Method::Get)
        .map_err(|()| bad("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| bad("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| bad("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| bad("path"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response after waiting")?
        .map_err(|()| "response already taken".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.status())
}

spool_guest::handler!(handle);
