//! `spool token`: make API tokens and the digests `spool.toml` stores. Local: no server involved.

use std::io::{BufRead, IsTerminal, Read};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;

use crate::auth::hash_token;
use crate::model::validate_name;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Generate a random token; print it once, with the [[auth.tokens]] entry for spool.toml.
    New {
        /// Name shown in the server's logs (A-Z a-z 0-9 . _ -) [default: token-<hash prefix>].
        #[arg(long)]
        name: Option<String>,
        /// What the token may do: admin (everything), producer (enqueue, read its own
        /// messages) or reader (read only).
        #[arg(long, default_value = "reader", value_parser = ["admin", "producer", "reader"])]
        role: String,
        /// Print {"name", "role", "token", "sha256", "toml"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the sha256 (hex) of a token, as spool.toml stores it.
    Hash {
        /// The token; read from standard input when omitted or "-" (keeps it out of shell
        /// history).
        token: Option<String>,
    },
}

pub fn run(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::New { name, role, json } => {
            let token = new_token();
            let sha256 = hash_token(&token);
            let name = name.unwrap_or_else(|| format!("token-{}", &sha256[..8]));
            validate_name("--name", &name).map_err(anyhow::Error::msg)?;
            let toml = toml_entry(&name, &role, &sha256);
            if json {
                let v = json!({"name": name, "role": role, "token": token, "sha256": sha256, "toml": toml});
                super::output::json(&v);
            } else {
                outln!("token (shown only now: the server keeps just its sha256):\n");
                outln!("  {token}\n");
                outln!(
                    "add this to the server's spool.toml and restart it; then pass the token \
                     with --token or SPOOL_TOKEN:\n"
                );
                out!("{toml}");
            }
            Ok(())
        }
        TokenCmd::Hash { token } => {
            let token = match token.as_deref() {
                None | Some("-") => read_token()?,
                Some(t) => t.to_owned(),
            };
            // The client trims what it sends the same way, so the digest matches what a
            // pasted or `$(cat file)` token authenticates as.
            let token = token.trim();
            if token.is_empty() {
                bail!("the token is empty; pass it as an argument or on standard input");
            }
            outln!("{}", hash_token(token));
            Ok(())
        }
    }
}

/// "spool_" and 32 random bytes as hex: 256 bits from the OS-seeded CSPRNG, and a prefix that
/// makes a leaked token easy to recognize (and to scan for).
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("spool_{}", hex::encode(bytes))
}

fn toml_entry(name: &str, role: &str, sha256: &str) -> String {
    format!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n")
}

fn read_token() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut s = String::new();
    if stdin.is_terminal() {
        eprintln!("paste the token, then press Enter:");
        stdin
            .lock()
            .read_line(&mut s)
            .context("cannot read the token from the terminal")?;
    } else {
        stdin
            .lock()
            .read_to_string(&mut s)
            .context("cannot read the token from standard input")?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_recognizable() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("spool_"), "{a}");
        assert_eq!(a.len(), "spool_".len() + 64);
        assert!(a["spool_".len()..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_toml_entry_is_what_the_server_reads() {
        let sha = hash_token("abc");
        let entry = toml_entry("ci", "producer", &sha);
        assert_eq!(
            entry,
            "[[auth.tokens]]\nname = \"ci\"\nrole = \"producer\"\n\
             sha256 = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"\n"
        );
        let parsed: toml::Value = toml::from_str(&entry).unwrap();
        assert_eq!(
            parsed["auth"]["tokens"][0]["sha256"].as_str(),
            Some(sha.as_str())
        );
    }
}
