//! API tokens and what each role may do.
//!
//! `spool.toml` never holds a token, only the lowercase hex SHA-256 of it (`spool token new`
//! prints both). A presented token is hashed and compared with every configured digest in
//! constant time, so neither a wrong guess nor which entry matched shows in the response time.
//!
//! Roles: `admin` may do everything; `producer` may enqueue (and publish) and read back the
//! messages it enqueued; `reader` may only read (GET). Health probes and the API description
//! need no token.

use std::fmt;
use std::str::FromStr;

use axum::http::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Producer,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Reader => "reader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "producer" => Ok(Role::Producer),
            "reader" => Ok(Role::Reader),
            other => Err(format!(
                "unknown role {other:?}; use admin, producer or reader"
            )),
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name from `spool.toml`; `None` on a server without tokens.
    pub name: Option<String>,
    pub role: Role,
}

impl Principal {
    /// Everyone on a server without tokens (which only listens on loopback).
    pub fn local_admin() -> Principal {
        Principal {
            name: None,
            role: Role::Admin,
        }
    }
}

/// One configured token: its name, role and SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    // The digest stays out of logs and debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// `sha256_hex` is the 64-character hex digest `spool token new` prints.
    pub fn new(name: &str, role: Role, sha256_hex: &str) -> Result<TokenEntry, String> {
        let bytes = hex::decode(sha256_hex.trim()).map_err(|_| {
            "sha256 must be 64 hex characters (the digest `spool token new` or `spool token hash` prints), not the token itself".to_owned()
        })?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| {
            "sha256 must be 64 hex characters (the digest `spool token new` or `spool token hash` prints), not the token itself".to_owned()
        })?;
        Ok(TokenEntry {
            name: name.to_owned(),
            role,
            digest,
        })
    }
}

/// The lowercase hex SHA-256 of `token`: what `spool.toml` stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The configured tokens. Empty means the API is open (and the server listens on loopback only).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    pub fn new(entries: Vec<TokenEntry>) -> Tokens {
        Tokens { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal `token` stands for, if any. Compares with every entry, in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(Principal {
                    name: Some(entry.name.clone()),
                    role: entry.role,
                });
            }
        }
        found
    }
}

/// Whether `role` may call `method path`; `Err` says why not. Per-object rules (a producer
/// reading only its own messages) are checked by the handler.
pub fn authorize(role: Role, method: &Method, path: &str) -> Result<(), String> {
    let read = method == Method::GET || method == Method::HEAD;
    match role {
        Role::Admin => Ok(()),
        Role::Reader if read => Ok(()),
        Role::Reader => Err(format!(
            "a reader token may only read (GET); {method} {path} needs an admin token"
        )),
        Role::Producer => {
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            let allowed = match (method, segments.as_slice()) {
                (&Method::POST, ["v1", "queues", _, "messages"]) => true,
                (&Method::POST, ["v1", "topics", _, "messages"]) => true,
                (m, ["v1", "messages", _] | ["v1", "messages", _, "trace"] | ["v1", "whoami"]) => {
                    m == Method::GET || m == Method::HEAD
                }
                _ => false,
            };
            if allowed {
                Ok(())
            } else {
                Err(format!(
                    "a producer token may only enqueue, publish and read its own messages; \
                     {method} {path} needs an admin{} token",
                    if read { " or reader" } else { "" }
                ))
            }
        }
    }
}

/// Paths anyone may call: probes, the API description and the dashboard's assets (which hold
/// no data: the dashboard asks for a token and sends it with every API call).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/ui") || path.starts_with("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            TokenEntry::new("ops", Role::Admin, &hash_token("admin-secret")).unwrap(),
            TokenEntry::new("shop", Role::Producer, &hash_token("producer-secret")).unwrap(),
        ])
    }

    #[test]
    fn authenticates_by_digest() {
        let t = tokens();
        assert_eq!(
            t.authenticate("producer-secret"),
            Some(Principal {
                name: Some("shop".into()),
                role: Role::Producer
            })
        );
        assert_eq!(t.authenticate("admin-secret").unwrap().role, Role::Admin);
        assert_eq!(t.authenticate("admin-secret "), None);
        assert_eq!(t.authenticate(""), None);
        assert!(Tokens::default().authenticate("x").is_none());
    }

    #[test]
    fn digest_must_be_hex_sha256() {
        assert!(TokenEntry::new("a", Role::Admin, "abc").is_err());
        assert!(TokenEntry::new("a", Role::Admin, "the-token-itself").is_err());
        let upper = hash_token("x").to_uppercase();
        assert!(TokenEntry::new("a", Role::Admin, &upper).is_ok());
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn roles_allow_what_they_should() {
        let g = Method::GET;
        let p = Method::POST;
        let d = Method::DELETE;
        assert!(authorize(Role::Admin, &d, "/v1/dlq/3").is_ok());
        assert!(authorize(Role::Reader, &g, "/v1/queues").is_ok());
        assert!(authorize(Role::Reader, &p, "/v1/queues/q/messages").is_err());
        assert!(authorize(Role::Producer, &p, "/v1/queues/q/messages").is_ok());
        assert!(authorize(Role::Producer, &p, "/v1/topics/a.b/messages").is_ok());
        assert!(authorize(Role::Producer, &g, "/v1/messages/7").is_ok());
        assert!(authorize(Role::Producer, &d, "/v1/messages/7").is_err());
        assert!(authorize(Role::Producer, &g, "/v1/queues").is_err());
        assert!(authorize(Role::Producer, &g, "/v1/queues/q/messages").is_err());
        assert!(authorize(Role::Producer, &Method::PUT, "/v1/plugins/x").is_err());
        assert!(authorize(Role::Producer, &p, "/v1/dlq/replay").is_err());
    }

    #[test]
    fn roles_parse() {
        assert_eq!("reader".parse::<Role>().unwrap(), Role::Reader);
        assert!("root".parse::<Role>().unwrap_err().contains("admin"));
    }
}
