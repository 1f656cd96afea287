//! The `spool` binary: parse the command line and hand it to the CLI.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = spool::cli::Cli::parse();
    match spool::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
