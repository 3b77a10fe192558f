//! Entry point: parse settings (an unusable one exits 2), log to stderr (stdout is the MCP
//! channel), serve (or run a maintenance command), print an error once.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mcp_code_executor::config::{Cli, Config};
use mcp_code_executor::server::logging::McpLogLayer;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(stderr)
        .with(McpLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG))
        .init();
    // An unusable setting exits 2, like a command-line usage error.
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mcp-code-executor: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-code-executor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // TLS to a remote Docker daemon (DOCKER_TLS_VERIFY) needs a process-wide crypto provider;
    // one installed already (none here) is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(mcp_code_executor::app::main(config));
    // The stdin reader blocks in a thread of its own; do not wait for it after a signal.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(result?)
}
