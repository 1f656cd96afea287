//! Capabilities a plugin may be granted, denied by default: which imports a component may have
//! at all, and where its outbound HTTP (wasi-http) may go.
//!
//! The runtime only enforces what its caller passes in ([`OutboundHosts`] in the
//! [`CallContext`](super::CallContext)); who is granted what is the plugin registry's question.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Longest wait for a connection or a response's first byte. The call's own wall-clock timeout
/// usually ends a slow request first: it drops the call's store, which aborts the request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body a plugin may read; past it the body stream fails inside the guest.
pub const MAX_RESPONSE_BODY: usize = 8 << 20;

/// What kind of thing a component imports, by its interface name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// `spool:plugin/*`: always available.
    Spool,
    /// WASI 0.2 interfaces linked with nothing granted (cli, io, clocks, random, filesystem
    /// without preopens, sockets with networking off).
    Wasi,
    /// `wasi:http/*`: needs `allowed_outbound_hosts`.
    OutboundHttp,
    /// Anything else: Spool does not provide it.
    Unknown,
}

/// Classifies an import such as `wasi:http/outgoing-handler@0.2.4`.
pub fn classify_import(name: &str) -> ImportKind {
    let package = name.split('/').next().unwrap_or(name);
    match package {
        "spool:plugin" => ImportKind::Spool,
        "wasi:http" => ImportKind::OutboundHttp,
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:filesystem"
        | "wasi:sockets" => ImportKind::Wasi,
        _ => ImportKind::Unknown,
    }
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]` where the host may be `*` or
/// start with `*.` (any subdomain) and the port may be `*`. Without a port, the scheme's
/// default (80, 443) is the only one allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    scheme: String,
    host: String,
    /// `None`: any port.
    port: Option<u16>,
}

impl HostPattern {
    fn parse(text: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| {
            format!(
                "allowed_outbound_hosts entry {text:?} {why}; write scheme://host[:port], e.g. \
                 \"https://api.example.com\", \"http://127.0.0.1:8080\", \"https://*.example.com\" \
                 or \"http://localhost:*\""
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("has a scheme other than http or https")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "has a path, query or user part (only scheme, host and port)",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal without a port ("[::1]") has colons inside brackets.
            Some((h, p)) if !p.contains(']') => {
                let port = if p == "*" {
                    None
                } else {
                    Some(p.parse::<u16>().map_err(|_| bad("has an invalid port"))?)
                };
                (h, port)
            }
            _ => (rest, Some(default_port)),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let wildcard_ok = host == "*" || !host[host.starts_with("*.") as usize * 2..].contains('*');
        if !wildcard_ok {
            return Err(bad("has a `*` other than a whole host or a leading `*.`"));
        }
        Ok(HostPattern {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.host == "*" {
            return true;
        }
        match self.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.host == host,
        }
    }
}

/// Where a plugin's outbound HTTP requests may go. Empty (the default): nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundHosts {
    patterns: Vec<HostPattern>,
}

impl OutboundHosts {
    /// Parses `allowed_outbound_hosts`; the error names the entry and the syntax.
    pub fn parse(entries: &[String]) -> Result<OutboundHosts, String> {
        let patterns = entries
            .iter()
            .map(|e| HostPattern::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(OutboundHosts { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a request to `scheme://host:port` is allowed (`port` resolved to the scheme's
    /// default when the URL has none).
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let (scheme, host) = (scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
        self.patterns.iter().any(|p| p.allows(&scheme, &host, port))
    }
}

/// The wasi-http hooks of one call: every request is checked against the plugin's allow-list.
pub(crate) struct OutboundHooks {
    pub(crate) plugin: String,
    pub(crate) hosts: Arc<OutboundHosts>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or("").to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.hosts.allows(&scheme, &host, port) {
            // The host and port only: a URL's path and query may carry tokens.
            tracing::warn!(target: "spool::plugin", plugin = %self.plugin, %scheme, %host, port,
                "outbound HTTP request denied: not in the plugin's allowed_outbound_hosts");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let options = RequestOptions {
            connect_timeout: Some(clip(options.and_then(|o| o.connect_timeout))),
            first_byte_timeout: Some(clip(options.and_then(|o| o.first_byte_timeout))),
            between_bytes_timeout: Some(clip(options.and_then(|o| o.between_bytes_timeout))),
        };
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let response = response.map(|body| {
                http_body_util::Limited::new(body, MAX_RESPONSE_BODY)
                    .map_err(|e| match e.downcast::<HttpError>() {
                        Ok(e) => *e,
                        Err(_) => HttpError::HttpResponseBodySize(Some(MAX_RESPONSE_BODY as u64)),
                    })
                    .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

fn clip(asked: Option<Duration>) -> Duration {
    asked.map_or(HTTP_TIMEOUT, |d| d.min(HTTP_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> OutboundHosts {
        OutboundHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn allow_list_matches_scheme_host_and_port() {
        let h = hosts(&[
            "http://127.0.0.1:8080",
            "https://api.example.com",
            "https://*.svc.local",
        ]);
        assert!(h.allows("http", "127.0.0.1", 8080));
        assert!(!h.allows("http", "127.0.0.1", 8081));
        assert!(!h.allows("https", "127.0.0.1", 8080));
        assert!(h.allows("https", "API.example.com", 443));
        assert!(!h.allows("https", "api.example.com", 8443));
        assert!(!h.allows("https", "evil-api.example.com", 443));
        assert!(h.allows("https", "a.svc.local", 443));
        assert!(!h.allows("https", "svc.local", 443));
        assert!(!h.allows("https", "a.svc.local.evil", 443));
        assert!(hosts(&["http://localhost:*"]).allows("http", "localhost", 1234));
        assert!(hosts(&["https://*"]).allows("https", "x.y", 443));
        assert!(!OutboundHosts::default().allows("http", "localhost", 80));
    }

    #[test]
    fn bad_entries_are_refused_with_the_syntax() {
        for bad in [
            "example.com",
            "ftp://x",
            "http://x/path",
            "http://",
            "http://x:99999",
            "http://a*b",
        ] {
            let err = OutboundHosts::parse(&[bad.to_owned()]).unwrap_err();
            assert!(
                err.contains(bad) && err.contains("scheme://host[:port]"),
                "{err}"
            );
        }
    }

    #[test]
    fn imports_are_classified() {
        assert_eq!(
            classify_import("spool:plugin/host@0.1.0"),
            ImportKind::Spool
        );
        assert_eq!(classify_import("wasi:cli/stdout@0.2.3"), ImportKind::Wasi);
        assert_eq!(
            classify_import("wasi:http/outgoing-handler@0.2.4"),
            ImportKind::OutboundHttp
        );
        assert_eq!(
            classify_import("wasi:http/types@0.2.0"),
            ImportKind::OutboundHttp
        );
        assert_eq!(
            classify_import("wasi:keyvalue/store@0.2.0"),
            ImportKind::Unknown
        );
        assert_eq!(classify_import("acme:thing/x"), ImportKind::Unknown);
    }
}
