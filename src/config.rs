//! Settings, in two stages: the raw command line / environment ([`Cli`], every flag also an
//! environment variable; in `config/cli.rs`) and the validated [`Config`] built from it here,
//! with the defaults as named constants. Checks of single values are in `config/values.rs`;
//! the service settings (transport, listen address, tokens, origins) in `config/service.rs`.

mod cli;
mod service;
mod values;

use std::path::{Path, PathBuf};

pub use cli::{Cli, Command};
pub use service::{
    ServiceSettings, TokenEntry, Tokens, Transport, normalize_origin, parse_tokens_file,
    token_digest,
};
pub use values::{parse_size, parse_user};

use crate::environment::{EnvSpec, EnvType, Environments};
use crate::error::ConfigError;
use crate::limits::{Images, InstallSource, Limits};
use crate::sandbox::sessions::SessionSettings;
use values::{
    ca_bundle, cpu_limit, image_ref, index_url, invalid, max_sessions, module_list, network_name,
    pids_limit, pool_size, positive, runtime_name, session_lifetime, storage_mode,
};

pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_MEMORY_LIMIT: &str = "512m";
pub const DEFAULT_CPU_LIMIT: f64 = 1.0;
pub const DEFAULT_PIDS_LIMIT: i64 = 128;
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;
pub const DEFAULT_TMPFS_SIZE: &str = "64m";
pub const DEFAULT_MAX_CODE_SIZE: usize = 2 * 1024 * 1024;
pub const DEFAULT_MAX_FILE_SIZE: &str = "256m";
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 4;
pub const DEFAULT_POOL_SIZE: usize = 2;
pub const DEFAULT_MAX_IMAGES: usize = 4;
pub const DEFAULT_MAX_IMAGE_SIZE: &str = "2m";
pub const DEFAULT_MAX_INLINE_IMAGE: &str = "256k";
pub const DEFAULT_MAX_RESOURCE_READ: &str = "8m";
pub const DEFAULT_PREIMPORT: &str = "numpy,pandas";
pub const DEFAULT_INSTALL_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_INSTALL_MEMORY_LIMIT: &str = "2g";
pub const DEFAULT_INSTALL_TMPFS_SIZE: &str = "1g";
pub const DEFAULT_INSTALL_NETWORK: &str = "bridge";
pub const DEFAULT_MAX_SESSIONS: usize = 4;
/// Most sessions open at once that `MAX_SESSIONS` may allow.
pub const MAX_MAX_SESSIONS: usize = 64;
pub const DEFAULT_SESSION_IDLE_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_SESSION_MAX_LIFETIME_SECS: u64 = 4 * 3600;
/// Where session records live, inside the storage directory (hidden: not a file runs see
/// listed as created or changed).
pub const SESSIONS_STATE_DIR: &str = ".mce-sessions";
pub const DEFAULT_MAX_TIMEOUT_SECS: u64 = 3600;
pub const DEFAULT_RESULT_WAIT_SECS: u64 = 45;
pub const DEFAULT_RUN_RETENTION_SECS: u64 = 3600;
pub const DEFAULT_MAX_BACKGROUND_RUNS: usize = 8;
/// Where the records and results of runs live, inside the storage directory (hidden).
pub const RUNS_STATE_DIR: &str = ".mce-runs";
/// Trusted for downloads when present and `CA_BUNDLE` is not set.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The uid:gid runs use when the server itself runs as root (runs are never root).
pub const FALLBACK_RUN_USER: (u32, u32) = (65534, 65534);

/// How runs see the storage folder (STORAGE_MODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    /// Bind-mounted from the daemon's host (the server's own host, or HOST_STORAGE_DIR).
    Bind,
    /// Copied in and out of each run as tar streams (a daemon on another host).
    Copy,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Bind => "bind",
            StorageMode::Copy => "copy",
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The storage directory as this server sees it (absolute, canonical).
    pub storage_dir: PathBuf,
    /// The same directory as the Docker daemon sees it (for bind mounts).
    pub host_storage_dir: PathBuf,
    /// Whether `host_storage_dir` was given (otherwise it is discovered when the server runs in
    /// a container).
    pub host_storage_given: bool,
    /// Whether `storage_dir` was defaulted (logged on start).
    pub storage_defaulted: bool,
    /// How runs see the storage folder, and (copy) how much may cross per run.
    pub storage_mode: StorageMode,
    pub max_copy_bytes: u64,
    /// The environments at start, and which one is active.
    pub environments: Environments,
    pub images: Images,
    pub limits: Limits,
    /// Limits of install containers (and of preparing/creating environments).
    pub install_limits: Limits,
    /// Where installs download from.
    pub install_source: InstallSource,
    /// Containers running at once.
    pub max_concurrent_runs: usize,
    /// Containers one principal runs at once (HTTP).
    pub max_runs_per_principal: usize,
    /// Pre-started containers.
    pub pool_size: usize,
    /// Images a run returns at most, and their largest size in bytes.
    pub max_images: usize,
    pub max_image_bytes: u64,
    /// Largest figure inlined (base64 bytes); larger ones are downscaled to fit.
    pub max_inline_image: u64,
    /// Largest file read at once (resources/read, read_file).
    pub max_resource_read: u64,
    /// Modules pre-started containers import.
    pub preimport: Vec<String>,
    /// uid and gid that code runs as.
    pub run_as: (u32, u32),
    /// The OCI runtime of every container (`None`: the daemon's default); installs use
    /// `<runtime>-net`.
    pub runtime: Option<String>,
    /// Session limits and where session records live (`<storage_dir>/.mce-sessions`).
    pub sessions: SessionSettings,
    /// Long runs: the longest timeout, how long a call waits, how long results are kept.
    pub runs: RunSettings,
    /// The transport, and over HTTP: where to listen, tokens, origins, HTTP limits.
    pub service: ServiceSettings,
    pub command: Option<Command>,
}

impl Config {
    /// Validates the raw settings. Creates the storage directory if it is missing. Settings are
    /// checked in a fixed order and the first invalid one is reported.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let environments = environments(&cli)?;
        let storage = storage_from_cli(&cli)?;
        let limits = limits_from_cli(&cli)?;
        let install_limits = install_limits(&cli, &limits)?;
        let install_source = install_source_from_cli(&cli)?;
        let run_as = match cli.run_as.as_deref() {
            Some(s) => parse_user(s)?,
            None => default_run_as(&storage.dir),
        };
        let images = images_from_cli(&cli)?;
        let runtime = runtime_name(cli.runtime.as_deref())?;
        let sessions = sessions_from_cli(&cli, &storage.dir)?;
        let max_concurrent_runs = positive("MAX_CONCURRENT_RUNS", cli.max_concurrent_runs)?;
        let runs = runs_from_cli(&cli, &storage.dir, &limits, &install_limits)?;
        let service = service::service_from_cli(&cli)?;
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let storage_mode = storage_mode(cli.storage_mode.as_deref(), docker_host.as_deref())?;
        Ok(Config {
            storage_dir: storage.dir,
            host_storage_dir: storage.host_dir,
            host_storage_given: storage.host_given,
            storage_defaulted: storage.defaulted,
            environments,
            images,
            limits,
            install_limits,
            install_source,
            max_concurrent_runs,
            max_runs_per_principal: runs_per_principal(&cli, max_concurrent_runs)?,
            // Pre-started containers cannot receive the folder's copy.
            pool_size: match storage_mode {
                StorageMode::Bind => pool_size(cli.pool_size)?,
                StorageMode::Copy => 0,
            },
            storage_mode,
            max_copy_bytes: parse_size("MAX_COPY_SIZE", &cli.max_copy_size, 1024)? as u64,
            preimport: module_list(&cli.preimport)?,
            max_images: cli.max_images,
            max_image_bytes: parse_size("MAX_IMAGE_SIZE", &cli.max_image_size, 1024)? as u64,
            max_inline_image: parse_size("MAX_INLINE_IMAGE", &cli.max_inline_image, 1024)? as u64,
            max_resource_read: parse_size("MAX_RESOURCE_READ", &cli.max_resource_read, 1)? as u64,
            run_as,
            runtime,
            sessions,
            service,
            runs,
            command: cli.command,
        })
    }
}

/// Where files live: the storage directory as this server and as the Docker daemon see it.
#[derive(Debug)]
struct StorageSettings {
    dir: PathBuf,
    host_dir: PathBuf,
    host_given: bool,
    defaulted: bool,
}

/// The storage directory (created, canonical) and its host path (absolute; itself by default).
fn storage_from_cli(cli: &Cli) -> Result<StorageSettings, ConfigError> {
    let (dir, defaulted) = match &cli.storage_dir {
        Some(dir) => (dir.clone(), false),
        None => (default_storage_dir(), true),
    };
    let dir = prepare_storage_dir(&dir)?;
    let host_dir = match &cli.host_storage_dir {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => {
            return Err(invalid(
                "HOST_STORAGE_DIR",
                p.display(),
                "must be an absolute path",
            ));
        }
        None => dir.clone(),
    };
    Ok(StorageSettings {
        dir,
        host_dir,
        host_given: cli.host_storage_dir.is_some(),
        defaulted,
    })
}

/// Limits of run containers.
fn limits_from_cli(cli: &Cli) -> Result<Limits, ConfigError> {
    Ok(Limits {
        timeout_secs: positive("EXECUTION_TIMEOUT", cli.timeout_secs)?,
        memory_bytes: parse_size("MEMORY_LIMIT", &cli.memory_limit, 6 * 1024 * 1024)?,
        cpus: cpu_limit(cli.cpu_limit)?,
        pids: pids_limit(cli.pids_limit)?,
        output_bytes: positive("OUTPUT_LIMIT", cli.output_limit)?,
        tmpfs_bytes: parse_size("TMPFS_SIZE", &cli.tmpfs_size, 1024 * 1024)?,
        max_code_bytes: positive("MAX_CODE_SIZE", cli.max_code_size)?,
        max_file_bytes: parse_size("MAX_FILE_SIZE", &cli.max_file_size, 1 << 20)?,
    })
}

/// Limits of install containers: their own timeout, memory and /tmp, at least 256 processes,
/// the rest as for runs.
fn install_limits(cli: &Cli, limits: &Limits) -> Result<Limits, ConfigError> {
    Ok(Limits {
        timeout_secs: positive("INSTALL_TIMEOUT", cli.install_timeout)?,
        memory_bytes: parse_size("INSTALL_MEMORY_LIMIT", &cli.install_memory, 64 << 20)?,
        tmpfs_bytes: parse_size("INSTALL_TMPFS_SIZE", &cli.install_tmp_size, 16 << 20)?,
        pids: limits.pids.max(256),
        ..limits.clone()
    })
}

/// Where installs download from: network, CA bundle, package indexes.
fn install_source_from_cli(cli: &Cli) -> Result<InstallSource, ConfigError> {
    Ok(InstallSource {
        network: network_name(&cli.install_network)?,
        ca_bundle: ca_bundle(cli.ca_bundle.as_deref())?,
        index_url: cli
            .index_url
            .as_deref()
            .map(|u| index_url("PACKAGE_INDEX_URL", u))
            .transpose()?,
        extra_index_url: cli
            .extra_index_url
            .as_deref()
            .map(|u| index_url("EXTRA_INDEX_URL", u))
            .transpose()?,
    })
}

/// A principal's share of the runs: `MAX_RUNS_PER_PRINCIPAL`, by default half of
/// `MAX_CONCURRENT_RUNS` (at least 1); never more than `MAX_CONCURRENT_RUNS`.
fn runs_per_principal(cli: &Cli, max_concurrent: usize) -> Result<usize, ConfigError> {
    match cli.max_runs_per_principal {
        None => Ok((max_concurrent / 2).max(1)),
        Some(n) if n > max_concurrent => Err(invalid(
            "MAX_RUNS_PER_PRINCIPAL",
            n,
            &format!("must be at most MAX_CONCURRENT_RUNS ({max_concurrent})"),
        )),
        Some(n) => positive("MAX_RUNS_PER_PRINCIPAL", n),
    }
}

/// Settings of long runs, in `Config`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Longest `timeout` a call may ask for.
    pub max_timeout_secs: u64,
    /// How long a call waits for its run before answering `running`.
    pub result_wait_secs: u64,
    /// How long finished results are kept.
    pub retention_secs: u64,
    /// Runs in the background at once (per world).
    pub max_background: usize,
    /// Where run records live: `<storage>/.mce-runs` (per world).
    pub state_dir: PathBuf,
}

/// `MAX_TIMEOUT` (at least `EXECUTION_TIMEOUT` and `INSTALL_TIMEOUT`), `RESULT_WAIT`,
/// `RUN_RETENTION`, `MAX_BACKGROUND_RUNS`.
fn runs_from_cli(
    cli: &Cli,
    storage_dir: &Path,
    limits: &Limits,
    install: &Limits,
) -> Result<RunSettings, ConfigError> {
    let max_timeout_secs = positive("MAX_TIMEOUT", cli.max_timeout)?;
    for (setting, secs) in [
        ("EXECUTION_TIMEOUT", limits.timeout_secs),
        ("INSTALL_TIMEOUT", install.timeout_secs),
    ] {
        if secs > max_timeout_secs {
            return Err(invalid(
                setting,
                secs,
                &format!("must be at most MAX_TIMEOUT ({max_timeout_secs} s)"),
            ));
        }
    }
    Ok(RunSettings {
        max_timeout_secs,
        result_wait_secs: positive("RESULT_WAIT", cli.result_wait)?,
        retention_secs: positive("RUN_RETENTION", cli.run_retention)?,
        max_background: positive("MAX_BACKGROUND_RUNS", cli.max_background_runs)?,
        state_dir: storage_dir.join(RUNS_STATE_DIR),
    })
}

/// Session limits: how many at once, idle timeout and lifetime (at least the idle timeout).
fn sessions_from_cli(cli: &Cli, storage_dir: &Path) -> Result<SessionSettings, ConfigError> {
    let idle_timeout_secs = positive("SESSION_IDLE_TIMEOUT", cli.session_idle_timeout)?;
    let max_lifetime_secs = positive("SESSION_MAX_LIFETIME", cli.session_max_lifetime)?;
    Ok(SessionSettings {
        max_sessions: max_sessions(cli.max_sessions)?,
        idle_timeout_secs,
        max_lifetime_secs: session_lifetime(idle_timeout_secs, max_lifetime_secs)?,
        state_dir: storage_dir.join(SESSIONS_STATE_DIR),
    })
}

fn images_from_cli(cli: &Cli) -> Result<Images, ConfigError> {
    Ok(Images {
        venv: image_ref("VENV_IMAGE", &cli.venv_image)?,
        uv: image_ref("UV_IMAGE", &cli.uv_image)?,
        conda: image_ref("CONDA_IMAGE", &cli.conda_image)?,
    })
}

/// The environment selected by `ENV_TYPE`, and every kind's name/path setting (all validated).
/// As in the original, a config that sets only `CONDA_ENV_NAME` selects conda.
fn environments(cli: &Cli) -> Result<Environments, ConfigError> {
    let env_type = match cli
        .env_type
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(t) => EnvType::parse(t)?,
        None if cli.conda_env_name.is_some()
            && cli.venv_path.is_none()
            && cli.uv_venv_path.is_none() =>
        {
            EnvType::Conda
        }
        None if cli.uv_venv_path.is_some() && cli.venv_path.is_none() => EnvType::VenvUv,
        None => EnvType::Venv,
    };
    Ok(Environments {
        active: env_type,
        venv: EnvSpec::new(EnvType::Venv, cli.venv_path.as_deref())?,
        uv: EnvSpec::new(EnvType::VenvUv, cli.uv_venv_path.as_deref())?,
        conda: EnvSpec::new(EnvType::Conda, cli.conda_env_name.as_deref())?,
    })
}

fn default_storage_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match base {
        Some(base) => base.join("mcp-code-executor").join("code"),
        // SAFETY: getuid cannot fail.
        None => {
            std::env::temp_dir().join(format!("mcp-code-executor-{}", unsafe { libc::getuid() }))
        }
    }
}

/// Creates the directory if needed and returns its canonical absolute path.
fn prepare_storage_dir(dir: &Path) -> Result<PathBuf, ConfigError> {
    let err = |reason: String| ConfigError::StorageDir {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.is_absolute() {
        return Err(err("must be an absolute path".to_string()));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let canonical = dir
        .canonicalize()
        .map_err(|e| err(format!("cannot resolve it: {e}")))?;
    if !canonical.is_dir() {
        return Err(err("not a directory".to_string()));
    }
    if canonical.to_str().is_none() {
        return Err(err("the path is not valid UTF-8".to_string()));
    }
    Ok(canonical)
}

/// The server's own user; when that is root (CI, or the server in a container), the owner of the
/// storage directory if that is not root (files then land owned by the folder's owner), else
/// [`FALLBACK_RUN_USER`].
fn default_run_as(storage_dir: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        match std::fs::metadata(storage_dir) {
            Ok(meta) if meta.uid() != 0 => (meta.uid(), meta.gid()),
            _ => FALLBACK_RUN_USER,
        }
    } else {
        (uid, gid)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["mcp-code-executor"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    /// A config with its storage directory in a fresh temporary directory (kept alive by the
    /// returned guard), plus `args`.
    fn config(args: &[&str]) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap().to_string();
        let mut full = vec!["--storage-dir", dir.as_str()];
        full.extend_from_slice(args);
        let config = Config::from_cli(cli(&full));
        (tmp, config)
    }

    #[test]
    fn call_timeouts_only_lower() {
        let (_tmp, c) = config(&["--timeout", "30"]);
        let c = c.unwrap();
        assert_eq!(c.limits.with_call_timeout(None).timeout_secs, 30);
        assert_eq!(c.limits.with_call_timeout(Some(5)).timeout_secs, 5);
        assert_eq!(c.limits.with_call_timeout(Some(999)).timeout_secs, 30);
        assert_eq!(c.limits.with_call_timeout(Some(0)).timeout_secs, 1);
        assert_eq!(c.limits.max_file_bytes, 256 << 20);
    }

    #[test]
    fn only_conda_name_selects_conda() {
        let c = cli(&["--conda-env-name", "analysis"]);
        let env = environments(&c).unwrap().active_spec().clone();
        assert_eq!(env.env_type, EnvType::Conda);
        assert_eq!(env.location(), "analysis");
    }

    #[test]
    fn env_type_wins_and_default_is_venv() {
        let c = cli(&["--env-type", "venv-uv", "--conda-env-name", "x"]);
        let envs = environments(&c).unwrap();
        assert_eq!(envs.active_spec(), &EnvSpec::default_for(EnvType::VenvUv));
        assert_eq!(envs.conda.location(), "x");
        let default = environments(&cli(&[])).unwrap();
        assert_eq!(default.active_spec(), &EnvSpec::default_for(EnvType::Venv));
        assert!(environments(&cli(&["--env-type", "pyenv"])).is_err());
        assert!(environments(&cli(&["--venv-path", "/home/me/.venv"])).is_err());
    }

    #[test]
    fn install_settings() {
        let (_tmp, c) = config(&["--install-timeout", "60"]);
        let c = c.unwrap();
        assert_eq!(c.install_limits.timeout_secs, 60);
        assert_eq!(c.install_limits.memory_bytes, 2 << 30);
        assert_eq!(c.install_limits.tmpfs_bytes, 1 << 30);
        assert_eq!(c.install_limits.cpus, c.limits.cpus);
        assert_eq!(c.install_limits.pids, 256);
        assert_eq!(c.install_source.network, "bridge");
    }

    #[test]
    fn install_limits_keep_more_pids_and_run_limits() {
        let c = cli(&["--pids", "1000", "--cpus", "2", "--install-memory", "128m"]);
        let limits = limits_from_cli(&c).unwrap();
        let install = install_limits(&c, &limits).unwrap();
        assert_eq!(install.pids, 1000);
        assert_eq!(install.cpus, 2.0);
        assert_eq!(install.memory_bytes, 128 << 20);
        assert_eq!(install.output_bytes, limits.output_bytes);
        let err = install_limits(&cli(&["--install-timeout", "0"]), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid INSTALL_TIMEOUT \"0\": must be greater than 0"
        );
    }

    #[test]
    fn run_limits_and_their_defaults() {
        let limits = limits_from_cli(&cli(&[])).unwrap();
        assert_eq!(limits.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(limits.memory_bytes, 512 << 20);
        assert_eq!(limits.cpus, DEFAULT_CPU_LIMIT);
        assert_eq!(limits.pids, DEFAULT_PIDS_LIMIT);
        assert_eq!(limits.tmpfs_bytes, 64 << 20);
        let err = limits_from_cli(&cli(&["--memory", "1m"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid MEMORY_LIMIT \"1m\": must be at least 6291456 bytes"
        );
    }

    #[test]
    fn install_source_and_images() {
        let c = cli(&[
            "--index-url",
            "https://pypi.example/simple",
            "--ca-bundle",
            "none",
            "--uv-image",
            "reg.example/uv:1",
        ]);
        let source = install_source_from_cli(&c).unwrap();
        assert_eq!(
            source.index_url.as_deref(),
            Some("https://pypi.example/simple")
        );
        assert_eq!(source.extra_index_url, None);
        assert_eq!(source.ca_bundle, None);
        assert_eq!(images_from_cli(&c).unwrap().uv, "reg.example/uv:1");
        let err = install_source_from_cli(&cli(&["--extra-index-url", "ftp://x"])).unwrap_err();
        assert!(err.to_string().contains("EXTRA_INDEX_URL"), "{err}");
    }

    #[test]
    fn storage_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        let s = storage_from_cli(&cli(&["--storage-dir", dir])).unwrap();
        assert_eq!(s.dir, tmp.path().canonicalize().unwrap());
        assert_eq!(s.host_dir, s.dir);
        assert!(!s.host_given && !s.defaulted);
        let s = storage_from_cli(&cli(&[
            "--storage-dir",
            dir,
            "--host-storage-dir",
            "/srv/x",
        ]));
        let s = s.unwrap();
        assert_eq!(s.host_dir, Path::new("/srv/x"));
        assert!(s.host_given);
        let err = storage_from_cli(&cli(&["--storage-dir", dir, "--host-storage-dir", "rel"]));
        assert_eq!(
            err.unwrap_err().to_string(),
            "invalid HOST_STORAGE_DIR \"rel\": must be an absolute path"
        );
    }

    #[test]
    fn session_settings_and_their_defaults() {
        let dir = Path::new("/data");
        let s = sessions_from_cli(&cli(&[]), dir).unwrap();
        assert_eq!(
            s,
            SessionSettings {
                max_sessions: 4,
                idle_timeout_secs: 600,
                max_lifetime_secs: 14400,
                state_dir: PathBuf::from("/data/.mce-sessions"),
            }
        );
        let c = cli(&["--max-sessions", "64", "--session-idle-timeout", "60"]);
        let s = sessions_from_cli(&c, dir).unwrap();
        assert_eq!((s.max_sessions, s.idle_timeout_secs), (64, 60));
        let err = |args: &[&str]| sessions_from_cli(&cli(args), dir).unwrap_err().to_string();
        assert_eq!(
            err(&["--max-sessions", "0"]),
            "invalid MAX_SESSIONS \"0\": must be between 1 and 64"
        );
        assert_eq!(
            err(&["--session-idle-timeout", "0"]),
            "invalid SESSION_IDLE_TIMEOUT \"0\": must be greater than 0"
        );
        assert_eq!(
            err(&["--session-max-lifetime", "0"]),
            "invalid SESSION_MAX_LIFETIME \"0\": must be greater than 0"
        );
        let short = err(&["--session-max-lifetime", "300"]);
        assert!(
            short.starts_with("invalid SESSION_MAX_LIFETIME \"300\": must be at least SESSION_IDLE_TIMEOUT (600 s)"),
            "{short}"
        );
    }

    #[test]
    fn first_invalid_setting_is_reported_in_order() {
        let (_tmp, c) = config(&["--pool-size", "17", "--uv-image=-x"]);
        assert!(c.unwrap_err().to_string().contains("UV_IMAGE"));
        let (_tmp, c) = config(&["--pool-size", "17", "--cpus", "0"]);
        assert!(c.unwrap_err().to_string().contains("CPU_LIMIT"));
        let (_tmp, c) = config(&["--pool-size", "17"]);
        assert!(c.unwrap_err().to_string().contains("POOL_SIZE"));
        let (_tmp, c) = config(&["--max-image-size", "2m", "--preimport", "a;b"]);
        assert!(c.unwrap_err().to_string().contains("PREIMPORT"));
    }

    #[test]
    fn storage_dir_is_created_and_canonical() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/../b");
        let got = prepare_storage_dir(&dir).unwrap();
        assert_eq!(got, tmp.path().canonicalize().unwrap().join("b"));
        assert!(prepare_storage_dir(Path::new("relative/dir")).is_err());
    }
}
