//! `spool serve`: logging, config, the host, and the signals that stop it.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use super::{LogFormat, ServeArgs};
use crate::config::{Config, Overrides};
use crate::host::Host;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let overrides = Overrides {
        listen: args.listen,
        db: args.db,
        database_url: args.database_url,
        cache_dir: args.cache_dir,
        drain_timeout: args.drain_timeout,
        maintenance_interval: args.maintenance_interval,
        accept_wal_loss: args.accept_wal_loss,
        backup_dir: args.backup_dir,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    // Config::load refused a non-loopback address without tokens already.
    if config.tokens.is_empty() {
        tracing::warn!(
            listen = %config.listen,
            "no API tokens configured: the API is open to every local user and listens on \
             loopback only; add [[auth.tokens]] to spool.toml to require tokens"
        );
    } else {
        tracing::info!(tokens = config.tokens.len(), "API tokens required");
    }
    let store = match &config.database_url {
        Some(url) => url.to_string(),
        None => config.db.display().to_string(),
    };
    let host = Host::start(config)
        .await
        .context("cannot start the server")?;
    // Scripts and tests wait for this exact line on stdout.
    println!("spool listening on http://{}", host.addr());
    tracing::info!(addr = %host.addr(), store, "ready");
    host.run(shutdown_signal()).await?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SPOOL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests calling serve twice in one process) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
