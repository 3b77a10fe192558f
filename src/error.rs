//! Typed errors, one enum per subsystem, each message saying what was wrong and what to do.
//! `anyhow` is used only in `main` and in tests.

use std::path::PathBuf;

/// A setting or an environment name/path that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown environment type {0:?}: use one of venv, venv-uv, conda")]
    UnknownEnvType(String),
    #[error("invalid {what} {value:?}: {reason}; {hint}")]
    InvalidEnvName {
        what: &'static str,
        value: String,
        reason: String,
        hint: String,
    },
    #[error("invalid {setting} {value:?}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot use the storage directory {path}: {reason}")]
    StorageDir { path: PathBuf, reason: String },
}

/// A file operation in the storage directory that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "{given:?} is outside the storage directory {root}: give a bare file name or a path this \
         server returned"
    )]
    Outside { given: String, root: PathBuf },
    #[error("invalid file name {given:?}: {reason}")]
    InvalidName { given: String, reason: String },
    #[error(
        "no file {name:?} in the storage directory {root}: create it with initialize_code_file or \
         execute_code first"
    )]
    NotFound { name: String, root: PathBuf },
    #[error("{name:?} is a symbolic link; links are never followed, use the file it points to")]
    Symlink { name: String },
    #[error("{name:?} is not a regular file (directory, FIFO, socket or device); refused")]
    NotRegular { name: String },
    #[error("{name:?} is {size} bytes, over the {limit}-byte limit for {what}")]
    TooLarge {
        name: String,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A package list that cannot be given to an installer.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("no packages given: pass a list such as [\"pandas>=2\", \"requests\"]")]
    Empty,
    #[error("{count} packages given; at most {max} per call")]
    TooMany { count: usize, max: usize },
    #[error("refused {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
}

/// A PNG that cannot be inlined in a result (see [`crate::images::fit_png`]).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "not a PNG image: the data does not start with the PNG signature; only PNG figures are \
         inlined (save the figure as .png)"
    )]
    NotPng,
    #[error(
        "the PNG declares {width}x{height} = {pixels} pixels, over the {max_pixels}-pixel limit; \
         refused without decoding it (save a smaller figure)"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },
    #[error("the PNG cannot be decoded: {source}")]
    Invalid {
        #[source]
        source: image::ImageError,
    },
    #[error("the downscaled PNG cannot be encoded: {source}")]
    Encode {
        #[source]
        source: image::ImageError,
    },
    #[error(
        "the PNG does not fit under {max_encoded} bytes base64-encoded even at {width}x{height} \
         ({encoded} bytes), the smallest size tried (short side 16 px, or the original if \
         smaller); link the file instead"
    )]
    CannotFit {
        width: u32,
        height: u32,
        encoded: usize,
        max_encoded: usize,
    },
}

/// Any error from a container engine's client library, kept whole as a `#[source]`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an engine call failed with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The daemon could not be reached (not running, socket gone, connection cut, timed out).
    #[error(
        "cannot reach the Docker daemon ({source}): start Docker (or fix DOCKER_HOST) and try again"
    )]
    Unavailable {
        #[source]
        source: BoxError,
    },
    /// The daemon answered with an error.
    #[error(
        "Docker failed to {op}{}: {message} (HTTP {status})",
        on_container(container)
    )]
    Refused {
        op: &'static str,
        container: Option<String>,
        status: u16,
        message: String,
    },
    /// The engine cannot do what was asked without weakening it (e.g. Podman and a per-container
    /// OCI runtime): refused rather than silently downgraded.
    #[error("{engine} cannot {what}; {hint}")]
    Unsupported {
        engine: &'static str,
        what: String,
        hint: &'static str,
    },
    /// The daemon's answer could not be understood.
    #[error("Docker failed to {op}{}: {source}", on_container(container))]
    Malformed {
        op: &'static str,
        container: Option<String>,
        #[source]
        source: BoxError,
    },
}

fn on_container(container: &Option<String>) -> String {
    container
        .as_deref()
        .map(|c| format!(" (container {c})"))
        .unwrap_or_default()
}

impl EngineError {
    /// Whether the daemon itself is away (as opposed to refusing one request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EngineError::Unavailable { .. })
    }
}

/// Starting, feeding or collecting a run container failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "the image {image} for the {env} environment is missing: build it with \
         scripts/build-images.sh, or point {setting} at an image you have"
    )]
    ImageMissing {
        image: String,
        env: &'static str,
        setting: &'static str,
    },
    #[error("the server is shutting down; no new runs are started")]
    ShuttingDown,
    #[error(
        "the environment {env} does not exist in its image: select it with configure_environment \
         to create it"
    )]
    EnvMissing { env: String },
    #[error("could not create the environment {env}: {detail}")]
    EnvCreateFailed { env: String, detail: String },
    #[error("could not {what}: {detail}")]
    Helper { what: &'static str, detail: String },
    #[error("Docker failed to create a container: the generated name was taken")]
    NameTaken,
    #[error(
        "there is no session {id}: it does not exist (or was closed); call create_session to \
         start one"
    )]
    SessionNotFound { id: String },
    #[error(
        "the session {id} has ended ({reason}); its state is lost: call create_session to start \
         a new one"
    )]
    SessionEnded { id: String, reason: String },
    #[error(
        "{max} sessions are open (MAX_SESSIONS): close one with close_session, or raise \
         MAX_SESSIONS"
    )]
    TooManySessions { max: usize },
    #[error("invalid session name: {reason}")]
    BadSessionName { reason: String },
    #[error(
        "the storage folder holds more than {max} bytes of files to copy into the run \
         (MAX_COPY_SIZE, STORAGE_MODE=copy): remove files from it, or raise MAX_COPY_SIZE"
    )]
    CopyTooLarge { max: u64 },
    #[error("could not copy files between the storage folder and the run (STORAGE_MODE=copy): {0}")]
    Copy(String),
    #[error(
        "the Docker daemon has no OCI runtime {runtime:?} (RUNTIME); it lists: {listed}. \
         Register it (for gVisor: run scripts/setup-gvisor.sh as root) or unset RUNTIME"
    )]
    RuntimeUnknown { runtime: String, listed: String },
    #[error(
        "installs under RUNTIME={runtime} need a network-enabled registration of it named \
         {install:?}, which the Docker daemon does not list (it lists: {listed}); for gVisor, \
         run scripts/setup-gvisor.sh as root, which registers runsc and runsc-net"
    )]
    InstallRuntimeMissing {
        runtime: String,
        install: String,
        listed: String,
    },
}

impl SandboxError {
    /// Whether the container engine itself is away (not one request refused).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SandboxError::Engine(e) if e.is_unavailable())
    }
}

/// The HTTP service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}; pick another LISTEN address or port")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the metrics recorder: {0}")]
    Metrics(String),
}

/// A long run that cannot be started or found.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error(
        "{0:?} is not a run id: run ids look like run-<32 hex digits>, as execute_code, \
         execute_code_file, install_dependencies or list_runs gave them"
    )]
    BadId(String),
    #[error(
        "there is no run {0} here: it never existed, its result expired (RUN_RETENTION), or it \
         is another principal's; list_runs shows the runs kept"
    )]
    Unknown(String),
    #[error(
        "{0} runs are already going on (in the background or still answering; \
         MAX_BACKGROUND_RUNS); nothing was started: wait for one with get_run, or stop one with \
         cancel_run"
    )]
    TooMany(usize),
    #[error(
        "timeout {secs} is out of range: a call may take 1 to {max} seconds (MAX_TIMEOUT); \
         runs that outlast RESULT_WAIT go on in the background and are polled with get_run"
    )]
    BadTimeout { secs: u64, max: u64 },
}

/// Anything a tool call can fail with; the server turns it into an `isError` tool result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Runs(#[from] RunsError),
    #[error("the MCP connection failed: {0}")]
    Transport(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(
        "this request carries no principal: the HTTP layer did not authenticate it; \
         call /mcp with an Authorization: Bearer token"
    )]
    NoPrincipal,
}
