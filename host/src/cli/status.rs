//! `spool status` (health and readiness probes) and `spool metrics` (Prometheus text).

use anyhow::bail;
use serde_json::{Value, json};

use super::ClientOpts;
use super::client::ClientError;
use super::commands::client;
use super::output::{cell, fields, json as print_json};

/// What `/readyz` said.
enum Readiness {
    Ready(Value),
    /// 503: the server runs but cannot serve requests (its store is not answering).
    NotReady {
        code: String,
        message: String,
    },
}

pub async fn status(opts: ClientOpts) -> anyhow::Result<()> {
    let c = client(&opts)?;
    // An unreachable server fails here with the "is `spool serve` running?" message.
    let health = c.get("/healthz").await?;
    let ready = match c.get("/readyz").await {
        Ok(v) => Readiness::Ready(v),
        Err(ClientError::Api {
            status: 503,
            code,
            message,
        }) => Readiness::NotReady { code, message },
        Err(e) => return Err(e.into()),
    };
    if opts.json {
        let readyz = match &ready {
            Readiness::Ready(v) => v.clone(),
            Readiness::NotReady { code, message } => {
                json!({"error": {"code": code, "message": message}})
            }
        };
        print_json(&json!({"server": c.base(), "healthz": health, "readyz": readyz}));
    } else {
        fields(&status_pairs(c.base(), &health, &ready));
    }
    if let Readiness::NotReady { .. } = ready {
        bail!("the server at {} is up but not ready", c.base());
    }
    Ok(())
}

fn status_pairs(server: &str, health: &Value, ready: &Readiness) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("server".to_owned(), server.to_owned()),
        ("health".to_owned(), probe_text(health)),
        (
            "ready".to_owned(),
            match ready {
                Readiness::Ready(v) => probe_text(v),
                Readiness::NotReady { code, message } => format!("no: {message} ({code})"),
            },
        ),
    ];
    // Anything else the server reports about itself (a version, an uptime) is shown too.
    if let Some(obj) = health.as_object() {
        for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "status") {
            pairs.push((k.clone(), cell(v)));
        }
    }
    pairs
}

fn probe_text(v: &Value) -> String {
    match v.get("status") {
        Some(s) => cell(s),
        None => cell(v),
    }
}

pub async fn metrics(opts: ClientOpts) -> anyhow::Result<()> {
    let c = client(&opts)?;
    let text = c.get_text("/metrics").await.map_err(|e| {
        if e.status() == Some(404) {
            anyhow::anyhow!("{e}; this server has no /metrics endpoint: upgrade it")
        } else {
            e.into()
        }
    })?;
    // Prometheus text is already for both people and scripts: printed as is, with or without
    // --json.
    out!("{text}");
    if !text.is_empty() && !text.ends_with('\n') {
        outln!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::render_fields;

    #[test]
    fn status_reads_at_a_glance() {
        let ok = json!({"status": "ok"});
        let text = render_fields(
            &status_pairs("http://h:1", &ok, &Readiness::Ready(ok.clone())),
            "",
        );
        assert_eq!(text, "server  http://h:1\nhealth  ok\nready   ok\n");
        let health = json!({"status": "ok", "version": "0.3.0"});
        let ready = Readiness::NotReady {
            code: "not_ready".into(),
            message: "the store is not answering".into(),
        };
        let text = render_fields(&status_pairs("http://h:1", &health, &ready), "");
        assert_eq!(
            text,
            "server   http://h:1\nhealth   ok\nready    no: the store is not answering (not_ready)\nversion  0.3.0\n"
        );
    }
}
