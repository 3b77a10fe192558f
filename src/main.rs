//! Entry point: parse settings, log to stderr (stdout is the MCP channel), serve.

use clap::Parser;
use mcp_code_executor::config::{Cli, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .init();
    let config = Config::from_cli(cli)?;
    mcp_code_executor::run(config).await?;
    Ok(())
}
