//! mcp-code-executor: an MCP server that runs LLM-written Python in short-lived, locked-down
//! containers and keeps every file in a host folder.
//!
//! The house, top to bottom (one way down, no cycles):
//! - [`app`]: serve stdio or HTTP, or run a maintenance command; wires the Docker engine in.
//! - [`http`]: the HTTP service: `/mcp` (streamable HTTP), tokens, Origin, limits, `/healthz`,
//!   `/metrics`, graceful shutdown; generic over the MCP handler.
//! - [`server`]: the MCP tool handlers, the wire contract ([`server::contract`]), one error
//!   mapping.
//! - [`datafiles`]: data files of the storage folder: list, slices, atomic writes, media types.
//! - [`storage`]: the storage directory; confined, no-follow file operations.
//! - [`images`]: fitting a PNG under a size cap for inlining in a result: header checks against
//!   decompression bombs, downscaling, re-encoding (pure).
//! - [`packages`]: validation of requirements and package names, install plans (pure).
//! - [`sandbox`]: running programs in containers — pool, environment volumes, runner,
//!   lifecycle, container policy, OCI runtimes, copy mode's tar transfer — through the [`sandbox::engine::ContainerEngine`] seam, which
//!   [`sandbox::docker`] implements (the only code that talks to Docker, or to Podman through
//!   its Docker-compatible API).
//! - [`config`]: settings (CLI flags and environment variables) → validated [`config::Config`].
//! - [`environment`]: the environment kinds, their names/paths and interpreters (pure data).
//! - [`principal`]: who is calling over HTTP (a validated name; one world each).
//! - [`limits`]: value types (limits, images, install source) shared by every layer.
//! - [`metrics`]: what the server records for `/metrics` (a no-op until HTTP installs it).
//! - [`error`]: typed errors, one enum per subsystem.

pub mod app;
pub mod config;
pub mod datafiles;
pub mod environment;
pub mod error;
pub mod http;
pub mod images;
pub mod limits;
pub mod metrics;
pub mod packages;
pub mod principal;
pub mod sandbox;
pub mod server;
pub mod storage;
