//! Stage one: the raw settings as given. [`Cli`] is every flag (each also an environment
//! variable) with its default, unvalidated; [`Command`] the maintenance subcommands. Turning
//! these into a [`super::Config`] is stage two, in `config.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::service::{DEFAULT_LISTEN, DEFAULT_MAX_HTTP_CLIENTS, DEFAULT_SHUTDOWN_GRACE_SECS};
use super::{
    DEFAULT_CPU_LIMIT, DEFAULT_INSTALL_MEMORY_LIMIT, DEFAULT_INSTALL_NETWORK,
    DEFAULT_INSTALL_TIMEOUT_SECS, DEFAULT_INSTALL_TMPFS_SIZE, DEFAULT_MAX_CODE_SIZE,
    DEFAULT_MAX_CONCURRENT_RUNS, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_IMAGE_SIZE, DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_SESSIONS, DEFAULT_MEMORY_LIMIT, DEFAULT_OUTPUT_LIMIT, DEFAULT_PIDS_LIMIT,
    DEFAULT_POOL_SIZE, DEFAULT_PREIMPORT, DEFAULT_SESSION_IDLE_TIMEOUT_SECS,
    DEFAULT_SESSION_MAX_LIFETIME_SECS, DEFAULT_TIMEOUT_SECS, DEFAULT_TMPFS_SIZE,
};
use crate::environment::{DEFAULT_CONDA_IMAGE, DEFAULT_UV_IMAGE, DEFAULT_VENV_IMAGE};

/// mcp-code-executor: an MCP server (stdio or streamable HTTP) that runs LLM-written Python in locked-down,
/// short-lived Docker containers.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Host folder where code files are stored and runs write their files
    /// [default: ~/.local/share/mcp-code-executor/code, created if missing]
    #[arg(long, env = "CODE_STORAGE_DIR")]
    pub storage_dir: Option<PathBuf>,

    /// Environment type: venv, venv-uv or conda [default: venv, or conda when only
    /// CONDA_ENV_NAME is set]
    #[arg(long, env = "ENV_TYPE")]
    pub env_type: Option<String>,

    /// Conda environment (inside the conda image) [default: base]
    #[arg(long, env = "CONDA_ENV_NAME")]
    pub conda_env_name: Option<String>,

    /// Virtualenv path inside the venv image, below /opt [default: /opt/venv]
    #[arg(long, env = "VENV_PATH")]
    pub venv_path: Option<String>,

    /// uv virtualenv path inside the uv image, below /opt [default: /opt/uv-venv]
    #[arg(long, env = "UV_VENV_PATH")]
    pub uv_venv_path: Option<String>,

    /// Image for the venv environment
    #[arg(long, env = "VENV_IMAGE", default_value = DEFAULT_VENV_IMAGE)]
    pub venv_image: String,

    /// Image for the venv-uv environment
    #[arg(long, env = "UV_IMAGE", default_value = DEFAULT_UV_IMAGE)]
    pub uv_image: String,

    /// Image for the conda environment
    #[arg(long, env = "CONDA_IMAGE", default_value = DEFAULT_CONDA_IMAGE)]
    pub conda_image: String,

    /// Wall-clock limit of one run, in seconds
    #[arg(long = "timeout", env = "EXECUTION_TIMEOUT", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout_secs: u64,

    /// Memory limit of a run container (memory + swap), e.g. 512m, 2g
    #[arg(long = "memory", env = "MEMORY_LIMIT", default_value = DEFAULT_MEMORY_LIMIT)]
    pub memory_limit: String,

    /// CPU limit of a run container, in CPUs (e.g. 0.5, 2)
    #[arg(long = "cpus", env = "CPU_LIMIT", default_value_t = DEFAULT_CPU_LIMIT)]
    pub cpu_limit: f64,

    /// Maximum number of processes/threads in a run container
    #[arg(long = "pids", env = "PIDS_LIMIT", default_value_t = DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Bytes of stdout and of stderr kept per run (each stream); the rest is cut
    #[arg(long = "output-limit", env = "OUTPUT_LIMIT", default_value_t = DEFAULT_OUTPUT_LIMIT)]
    pub output_limit: usize,

    /// Size of the writable /tmp inside a run container, e.g. 64m
    #[arg(long = "tmp-size", env = "TMPFS_SIZE", default_value = DEFAULT_TMPFS_SIZE)]
    pub tmpfs_size: String,

    /// Largest code or file content accepted by a tool, in bytes
    #[arg(long, env = "MAX_CODE_SIZE", default_value_t = DEFAULT_MAX_CODE_SIZE)]
    pub max_code_size: usize,

    /// Largest file a program may write (each file; writes beyond fail with "File too large")
    #[arg(long, env = "MAX_FILE_SIZE", default_value = DEFAULT_MAX_FILE_SIZE)]
    pub max_file_size: String,

    /// PNG images a run returns at most (figures shown or saved in the storage directory)
    #[arg(long, env = "MAX_IMAGES", default_value_t = DEFAULT_MAX_IMAGES)]
    pub max_images: usize,

    /// Largest PNG returned as an image
    #[arg(long, env = "MAX_IMAGE_SIZE", default_value = DEFAULT_MAX_IMAGE_SIZE)]
    pub max_image_size: String,

    /// Largest figure inlined in a result, base64-encoded; a larger PNG is downscaled until it
    /// fits (the full-size file is kept and linked)
    #[arg(long, env = "MAX_INLINE_IMAGE", default_value = super::DEFAULT_MAX_INLINE_IMAGE)]
    pub max_inline_image: String,

    /// Largest file resources/read and read_file return at once
    #[arg(long, env = "MAX_RESOURCE_READ", default_value = super::DEFAULT_MAX_RESOURCE_READ)]
    pub max_resource_read: String,

    /// Pre-started containers kept ready for the active environment (0 disables the pool)
    #[arg(long, env = "POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub pool_size: usize,

    /// How runs see the storage folder: `bind` (mounted from this host) or `copy` (its files go
    /// into each run and the files a run writes come back, as tar streams through the engine:
    /// for a Docker daemon on another host). Default: copy when DOCKER_HOST is tcp://,
    /// https:// or ssh://, else bind
    #[arg(long, env = "STORAGE_MODE")]
    pub storage_mode: Option<String>,

    /// STORAGE_MODE=copy: most bytes of files copied into one run, and back out of it
    #[arg(long, env = "MAX_COPY_SIZE", default_value = "1g")]
    pub max_copy_size: String,

    /// Modules pre-started containers import while they wait (comma-separated; "" for none)
    #[arg(long, env = "PREIMPORT", default_value = DEFAULT_PREIMPORT)]
    pub preimport: String,

    /// Containers running at once; further calls wait their turn
    #[arg(long, env = "MAX_CONCURRENT_RUNS", default_value_t = DEFAULT_MAX_CONCURRENT_RUNS)]
    pub max_concurrent_runs: usize,

    /// Longest `timeout` a call may ask for, in seconds (runs and installs)
    #[arg(long, env = "MAX_TIMEOUT", default_value_t = super::DEFAULT_MAX_TIMEOUT_SECS)]
    pub max_timeout: u64,

    /// Seconds a call waits for its run; a run still going then is answered with status
    /// "running" and a run_id, and goes on in the background (poll it with get_run)
    #[arg(long, env = "RESULT_WAIT", default_value_t = super::DEFAULT_RESULT_WAIT_SECS)]
    pub result_wait: u64,

    /// Seconds the results of finished runs are kept for get_run (in the storage folder)
    #[arg(long, env = "RUN_RETENTION", default_value_t = super::DEFAULT_RUN_RETENTION_SECS)]
    pub run_retention: u64,

    /// Runs going on at once, in the background or whose call still waits (per principal over
    /// HTTP); beyond, a call that would start another is refused
    #[arg(long, env = "MAX_BACKGROUND_RUNS", default_value_t = super::DEFAULT_MAX_BACKGROUND_RUNS)]
    pub max_background_runs: usize,

    /// Over HTTP, containers one principal runs at once (its fair share; further calls of that
    /// principal wait) [default: half of MAX_CONCURRENT_RUNS, at least 1]
    #[arg(long, env = "MAX_RUNS_PER_PRINCIPAL")]
    pub max_runs_per_principal: Option<usize>,

    /// Sessions (live interpreters, see create_session) open at once, 1 to 64
    #[arg(long, env = "MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,

    /// Seconds a session may stay unused before it ends
    #[arg(long, env = "SESSION_IDLE_TIMEOUT", default_value_t = DEFAULT_SESSION_IDLE_TIMEOUT_SECS)]
    pub session_idle_timeout: u64,

    /// Seconds a session may live in all, used or not (at least SESSION_IDLE_TIMEOUT)
    #[arg(long, env = "SESSION_MAX_LIFETIME", default_value_t = DEFAULT_SESSION_MAX_LIFETIME_SECS)]
    pub session_max_lifetime: u64,

    /// Wall-clock limit of one install_dependencies call, in seconds
    #[arg(long, env = "INSTALL_TIMEOUT", default_value_t = DEFAULT_INSTALL_TIMEOUT_SECS)]
    pub install_timeout: u64,

    /// Memory limit of an install container
    #[arg(long, env = "INSTALL_MEMORY_LIMIT", default_value = DEFAULT_INSTALL_MEMORY_LIMIT)]
    pub install_memory: String,

    /// Size of /tmp in an install container (downloads and builds go there)
    #[arg(long, env = "INSTALL_TMPFS_SIZE", default_value = DEFAULT_INSTALL_TMPFS_SIZE)]
    pub install_tmp_size: String,

    /// Docker network of install containers (the only containers with network access)
    #[arg(long, env = "INSTALL_NETWORK", default_value = DEFAULT_INSTALL_NETWORK)]
    pub install_network: String,

    /// CA bundle installs trust (a PEM file; for TLS-intercepting proxies and private mirrors);
    /// "none" to use the installers' own [default: /etc/ssl/certs/ca-certificates.crt if present]
    #[arg(long, env = "CA_BUNDLE")]
    pub ca_bundle: Option<String>,

    /// Package index installs use instead of PyPI
    #[arg(long, env = "PACKAGE_INDEX_URL")]
    pub index_url: Option<String>,

    /// Additional package index for installs
    #[arg(long, env = "EXTRA_INDEX_URL")]
    pub extra_index_url: Option<String>,

    /// OCI runtime of every container, as the Docker daemon names it (e.g. runsc for gVisor;
    /// set it up with scripts/setup-gvisor.sh). Installs use its network-enabled registration
    /// <RUNTIME>-net [default: the daemon's default runtime]
    #[arg(long, env = "RUNTIME")]
    pub runtime: Option<String>,

    /// uid:gid that code runs as [default: the server's own, or 65534:65534 if that is root]
    #[arg(long = "run-as", env = "RUN_AS_USER")]
    pub run_as: Option<String>,

    /// The host path of the storage directory, when the server itself runs in a container and
    /// sees it under another path [default: the storage directory itself]
    #[arg(long, env = "HOST_STORAGE_DIR")]
    pub host_storage_dir: Option<PathBuf>,

    /// How clients reach the server: stdio (one client on stdin/stdout) or http (streamable
    /// HTTP on LISTEN, endpoint /mcp)
    #[arg(long, env = "MCP_TRANSPORT", default_value = "stdio")]
    pub transport: String,

    /// With --transport http: the address and port to listen on (port 0 picks a free port)
    #[arg(long, env = "LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// With --transport http: the one bearer token clients must send (principal "default")
    #[arg(long, env = "AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// With --transport http: a file of "principal token" lines, one principal each; a token may
    /// be written sha256:<64 hex digits> (the SHA-256 of the token) so the file holds no secret
    #[arg(long, env = "AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// With --transport http: browser origins allowed besides loopback ones (comma-separated,
    /// e.g. https://app.example.com); a request from any other Origin is refused (403)
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    /// With --transport http: serve a non-loopback LISTEN address without tokens (anyone who
    /// reaches the port can run code)
    #[arg(long, env = "ALLOW_UNAUTHENTICATED", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unauthenticated: bool,

    /// With --transport http: seconds calls in flight may take to finish on SIGTERM/SIGINT
    /// before they are cancelled
    #[arg(long, env = "SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace: u64,

    /// With --transport http: MCP sessions open at once; a client beyond gets 503
    #[arg(long, env = "MAX_HTTP_CLIENTS", default_value_t = DEFAULT_MAX_HTTP_CLIENTS)]
    pub max_http_clients: usize,

    /// Log filter for stderr (error, warn, info, debug, trace, or a tracing directive)
    #[arg(long, env = "LOG_LEVEL", default_value = "info,rmcp=warn")]
    pub log_level: String,

    /// Without a command: serve MCP (on stdin/stdout, or over HTTP with --transport http).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Maintenance commands (the server itself runs without one).
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// List the environment volumes (installed packages and created environments live there).
    ListEnvs,
    /// Reset environments to their image state: removes their volumes, so installed packages
    /// and environments created later are gone. Stop servers using them first.
    ResetEnv {
        /// venv, venv-uv or conda
        #[arg(value_name = "TYPE", required_unless_present = "all")]
        env_type: Option<String>,
        /// The venv path or conda name (default: every environment of TYPE)
        #[arg(value_name = "NAME_OR_PATH")]
        location: Option<String>,
        /// Reset every environment
        #[arg(long, conflicts_with = "env_type")]
        all: bool,
    },
}
