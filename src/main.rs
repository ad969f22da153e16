//! The `order-engine` binary: one executable for serving and for operators.

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use order_engine::store::{redact_url, StoreConfig};

/// Where the embedded default keeps its log when DATABASE_URL is unset.
const EMBEDDED_DATABASE_URL: &str = "sqlite:data/order-engine.db";

#[derive(Debug, Parser)]
#[command(
    name = "order-engine",
    version,
    about = "An event-sourced order engine for trading platforms"
)]
struct Cli {
    /// postgres://… for PostgreSQL, sqlite:path for an embedded SQLite file.
    #[arg(long, env = "DATABASE_URL", default_value = EMBEDDED_DATABASE_URL, global = true)]
    database_url: String,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "LOG_FORMAT_JSON", default_value_t = false, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the event log (applying migrations) and run until Ctrl-C or SIGTERM.
    Serve,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    order_engine::telemetry::init(cli.log_json);
    match cli.command {
        Command::Serve => serve(&cli.database_url).await,
    }
}

async fn serve(database_url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = StoreConfig::from_url(database_url)?
        .open()
        .await
        .with_context(|| format!("opening the event log at {}", redact_url(database_url)))?;
    let head = store.head_position().await.context("reading the log head")?;
    tracing::info!(
        backend = store.backend(),
        database = %redact_url(database_url),
        head_position = head,
        ready_ms = started.elapsed().as_millis() as u64,
        "event log open and migrated; ready"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
