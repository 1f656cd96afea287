//! `spool backup`: an online copy of the running server's database (`POST /v1/admin/backup`).

use clap::Args;
use serde_json::json;

use super::ClientOpts;
use super::commands::client;
use super::output::{cell, json as print_json};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file, on the server: relative to its backup directory ([admin] backup_dir,
    /// `spool serve --backup-dir`), or an absolute path inside it. It must not exist yet.
    #[arg(value_name = "FILE")]
    pub file: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let resp = client(&args.client)?
        .post("/v1/admin/backup", &json!({ "path": args.file }))
        .await?;
    if args.client.json {
        print_json(&resp);
    } else {
        outln!(
            "backup written to {} ({} bytes in {} ms); restore with `spool serve --db {}`",
            cell(&resp["path"]),
            cell(&resp["bytes"]),
            cell(&resp["duration_ms"]),
            cell(&resp["path"])
        );
    }
    Ok(())
}
