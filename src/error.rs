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

/// Starting, feeding or collecting a run container failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot reach the Docker daemon ({detail}): start Docker (or fix DOCKER_HOST) and try again"
    )]
    DockerUnavailable { detail: String },
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
    #[error("Docker failed to {op}{}: {detail}", container.as_deref().map(|c| format!(" (container {c})")).unwrap_or_default())]
    Docker {
        op: &'static str,
        container: Option<String>,
        detail: String,
    },
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
    #[error("the MCP connection failed: {0}")]
    Transport(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}
