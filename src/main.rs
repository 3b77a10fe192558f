//! Entry point: parse settings, log to stderr (stdout is the MCP channel), serve.

use std::time::Duration;

use clap::Parser;
use mcp_code_executor::config::{Cli, Config};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .init();
    let config = Config::from_cli(cli)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(mcp_code_executor::run(config));
    // The stdin reader blocks in a thread of its own; do not wait for it after a signal.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(result?)
}
