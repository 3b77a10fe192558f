//! The tool contract as Rust types: arguments (input schemas) and results (output schemas), with
//! the original server's names and fields plus the ones it lacked (DESIGN §1). Schemas are
//! generated from these types; a golden test pins them.
//!
//! The contract owns every type it puts on the wire: the limits and the package reports are
//! copies of the internal types (same names, fields and docs, hence the same schemas), so that
//! internal types can change without changing what clients see. The rooms that report them
//! convert (`From`): `environment` the limits, `packages` the package reports. Only `EnvType`,
//! a plain value, is shared. The session tools' types are in `contract/sessions.rs`, the long
//! runs' in `contract/runs.rs`.
//!
//! A little over 400 lines: the arguments and results of the original tools stay together, so
//! that the contract of those tools reads as one page.

mod files;
mod runs;
mod sessions;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::environment::EnvType;
pub use files::{
    DataFileResult, Encoding, FileEntry, ListFilesArgs, ListFilesResult, ReadFileArgs,
    WriteFileArgs,
};
pub use runs::{
    Background, CancelRunArgs, GetRunArgs, ListRunsResult, RunEntry, RunLimits, RunLookup, RunState,
};
pub use sessions::{
    CloseSessionArgs, CloseSessionResult, CreateSessionArgs, CreateSessionResult,
    ListSessionsResult, SessionEntry, SessionLimits, SessionState,
};

// ---------------------------------------------------------------- arguments

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteCodeArgs {
    /// Python source code to store as a new .py file and run.
    pub code: String,
    /// Name for the stored file (sanitized; a random suffix and .py are added).
    #[serde(default)]
    pub filename: Option<String>,
    /// Seconds this run may take: 1 to the server's MAX_TIMEOUT (default: EXECUTION_TIMEOUT). A
    /// run still going after RESULT_WAIT is answered with status "running" and a run_id, and
    /// goes on to its own deadline: poll it with get_run.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
    /// Run in this session's live interpreter (state kept between calls); see create_session.
    #[serde(default)]
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteCodeFileArgs {
    /// The file: its bare name or the path this server returned.
    pub file_path: String,
    /// Seconds this run may take: 1 to the server's MAX_TIMEOUT (default: EXECUTION_TIMEOUT). A
    /// run still going after RESULT_WAIT is answered with status "running" and a run_id, and
    /// goes on to its own deadline: poll it with get_run.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
    /// Run in this session's live interpreter (state kept between calls); see create_session.
    #[serde(default)]
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InitializeCodeFileArgs {
    /// Initial content of the file.
    pub content: String,
    /// Name for the file (sanitized; a random suffix and .py are added).
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AppendToCodeFileArgs {
    /// The file: its bare name or the path this server returned.
    pub file_path: String,
    /// Text to append.
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FilePathArgs {
    /// The file: its bare name or the path this server returned.
    pub file_path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InstallArgs {
    /// Requirements such as "pandas>=2" or "requests[socks]".
    pub packages: Vec<String>,
    /// Seconds the install may take: 1 to the server's MAX_TIMEOUT (default: INSTALL_TIMEOUT).
    /// An install still going after RESULT_WAIT is answered with status "running" and a
    /// run_id, and goes on: poll it with get_run.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PackagesArgs {
    /// Packages: for install_dependencies, requirements such as "pandas>=2" or
    /// "requests[socks]"; for check_installed_packages, distribution or import names.
    pub packages: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConfigureEnvironmentArgs {
    /// Environment type to switch to.
    #[serde(rename = "type")]
    pub env_type: EnvType,
    /// Conda environment name (for type conda).
    #[serde(default)]
    pub conda_name: Option<String>,
    /// Virtualenv path inside the image, below /opt, or a simple name (for type venv).
    #[serde(default)]
    pub venv_path: Option<String>,
    /// uv virtualenv path inside the image, below /opt, or a simple name (for type venv-uv).
    #[serde(default)]
    pub uv_venv_path: Option<String>,
}

impl ConfigureEnvironmentArgs {
    /// The name/path given for the selected type (others are ignored).
    pub fn location(&self) -> Option<&str> {
        match self.env_type {
            EnvType::Venv => self.venv_path.as_deref(),
            EnvType::VenvUv => self.uv_venv_path.as_deref(),
            EnvType::Conda => self.conda_name.as_deref(),
        }
    }
}

// ---------------------------------------------------------------- results

/// `success` or `error`, as in the original; `running` and `lost` for long runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Success,
    Error,
    /// Still running after RESULT_WAIT: poll with get_run (`run_id`).
    Running,
    /// Its server stopped before it finished; no result can be had.
    Lost,
}

/// Result of `execute_code` and `execute_code_file`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunResult {
    pub status: Status,
    /// What went wrong and what to do (only on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// stdout, then stderr (as the original's single output field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Absolute path of the stored file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// Name of the stored file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The program's exit code (absent when it was killed before exiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Killed at the time limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// Killed by the kernel for exceeding the memory limit (from Docker's state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// Output was cut to the output limit (beginning and end kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Stopped because the client cancelled the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// The environment it ran in, e.g. "venv /opt/venv".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The time limit this run had, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Files the run created or changed in the storage directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileInfo>>,
    /// PNG files returned as image content, in order (figures shown or saved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Those among `images` inlined downscaled to fit MAX_INLINE_IMAGE (the files on disk and
    /// their links keep the full size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_downscaled: Option<Vec<String>>,
    /// The session it ran in (with session_id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The session after the call: alive (its state is kept) or ended (its state is lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_state: Option<SessionState>,
    /// The run's id, and while it runs on after RESULT_WAIT, how it is doing.
    #[serde(flatten)]
    pub background: Background,
}

/// A file a run created or changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FileInfo {
    /// Bare name in the storage directory.
    pub name: String,
    /// Absolute path.
    pub path: String,
    pub size: u64,
    /// New (true) or changed (false).
    pub created: bool,
    /// Its resource URI (resources/read; also a resource_link item in the result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Result of `initialize_code_file`, `append_to_code_file` and `read_code_file`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct FileResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Absolute path of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// Name of the file (initialize_code_file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The file's content (read_code_file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Size in bytes after the operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Result of `install_dependencies`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct InstallResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// venv, venv-uv or conda.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_type: Option<EnvType>,
    /// The environment installed into, e.g. "venv /opt/venv".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Requirements that are installed now (newly, already, or upgraded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_packages: Option<Vec<String>>,
    /// Requirements that could not be installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_packages: Option<Vec<String>>,
    /// Per package: installed / already_present / upgraded / failed, with versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<PackageOutcome>>,
    /// The installers' output (capped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Warning lines from the installers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// Stopped by cancel_run (or by cancelling the call before it answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// The install's id, and while it runs on after RESULT_WAIT, how it is doing.
    #[serde(flatten)]
    pub background: Background,
}

/// Result of `check_installed_packages`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_type: Option<EnvType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Whether every name was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_installed: Option<bool>,
    /// The names not found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_installed: Option<Vec<String>>,
    /// Per name: installed, how it was found, the distribution and its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_details: Option<Vec<PackageInfo>>,
}

/// One environment as reported to clients.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvReport {
    /// venv, venv-uv or conda.
    #[serde(rename = "type")]
    pub env_type: EnvType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conda_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub venv_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uv_venv_path: Option<String>,
    /// The image the environment lives in.
    pub image: String,
    /// Interpreter inside the image.
    pub interpreter: String,
}

/// Result of `configure_environment`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ConfigureResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<EnvReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<EnvReport>,
}

/// The configuration reported by `get_environment_config`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigReport {
    /// The active environment (with the original's fields: type, conda_name, venv_path,
    /// uv_venv_path).
    #[serde(flatten)]
    pub active: EnvReport,
    /// The environment configured for each type.
    pub environments: Vec<EnvReport>,
    /// Host folder where code is stored and runs write files.
    pub code_storage_dir: String,
    /// How runs see that folder: `bind` (mounted) or `copy` (its files copied into each run
    /// and the files a run writes copied back; STORAGE_MODE).
    pub storage_mode: String,
    /// Limits applied to every run.
    pub limits: Limits,
    /// uid:gid that code runs as.
    pub run_as: String,
    /// Container isolation applied to every run.
    pub isolation: Vec<String>,
    /// The OCI runtime of every container, e.g. "runsc" for gVisor (null: the Docker daemon's
    /// default).
    pub runtime: Option<String>,
    /// The OCI runtime of install containers: the network-enabled registration of `runtime`
    /// (null: the Docker daemon's default).
    pub install_runtime: Option<String>,
    /// Limits of sessions (create_session).
    pub sessions: SessionLimits,
    /// Limits of long runs (timeouts, the background, results kept).
    pub runs: RunLimits,
}

/// Result of `get_environment_config`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ConfigResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReport>,
}

/// Resource limits applied to every run container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Wall-clock limit of one run, seconds.
    pub timeout_secs: u64,
    /// Memory (and memory + swap) limit, bytes.
    pub memory_bytes: i64,
    /// CPU limit, in CPUs.
    pub cpus: f64,
    /// Maximum processes/threads.
    pub pids: i64,
    /// Bytes kept per output stream.
    pub output_bytes: usize,
    /// Size of the writable /tmp, bytes.
    pub tmpfs_bytes: i64,
    /// Largest code or file content accepted, bytes.
    pub max_code_bytes: usize,
    /// Largest file a program may write, bytes.
    pub max_file_bytes: i64,
}

/// What became of one requested package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackageStatus {
    /// Was absent, is installed now.
    Installed,
    /// Was there already with the same version.
    AlreadyPresent,
    /// Was there with another version, which was replaced.
    Upgraded,
    /// The installer could not install it.
    Failed,
}

/// One requested package after an install.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PackageOutcome {
    /// The requirement as given.
    pub requirement: String,
    /// The distribution name.
    pub name: String,
    pub status: PackageStatus,
    /// Installed version afterwards (absent when not installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Version before the install, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// The installer that installed it (pip, uv, conda).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One name looked up by `check_installed_packages`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PackageInfo {
    /// The name as given.
    pub package: String,
    pub installed: bool,
    /// How it was found: `distribution` (a distribution name), `import` (an import name of a
    /// distribution), `module` (a module with no distribution, such as the standard library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_as: Option<String>,
    /// The distribution that provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}
