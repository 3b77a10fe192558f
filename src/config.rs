//! Settings: the raw command line / environment (`Cli`, every flag also an environment variable)
//! and the validated [`Config`] built from it, with the defaults as named constants.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::environment::{
    DEFAULT_CONDA_IMAGE, DEFAULT_UV_IMAGE, DEFAULT_VENV_IMAGE, EnvSpec, EnvType, Environments,
};
use crate::error::ConfigError;
use crate::limits::{Images, InstallSource, Limits};

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
pub const DEFAULT_PREIMPORT: &str = "numpy,pandas";
pub const DEFAULT_INSTALL_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_INSTALL_MEMORY_LIMIT: &str = "2g";
pub const DEFAULT_INSTALL_TMPFS_SIZE: &str = "1g";
pub const DEFAULT_INSTALL_NETWORK: &str = "bridge";
/// Trusted for downloads when present and `CA_BUNDLE` is not set.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The uid:gid runs use when the server itself runs as root (runs are never root).
pub const FALLBACK_RUN_USER: (u32, u32) = (65534, 65534);

/// mcp-code-executor: an MCP server (stdio) that runs LLM-written Python in locked-down,
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

    /// Pre-started containers kept ready for the active environment (0 disables the pool)
    #[arg(long, env = "POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub pool_size: usize,

    /// Modules pre-started containers import while they wait (comma-separated; "" for none)
    #[arg(long, env = "PREIMPORT", default_value = DEFAULT_PREIMPORT)]
    pub preimport: String,

    /// Containers running at once; further calls wait their turn
    #[arg(long, env = "MAX_CONCURRENT_RUNS", default_value_t = DEFAULT_MAX_CONCURRENT_RUNS)]
    pub max_concurrent_runs: usize,

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

    /// uid:gid that code runs as [default: the server's own, or 65534:65534 if that is root]
    #[arg(long = "run-as", env = "RUN_AS_USER")]
    pub run_as: Option<String>,

    /// The host path of the storage directory, when the server itself runs in a container and
    /// sees it under another path [default: the storage directory itself]
    #[arg(long, env = "HOST_STORAGE_DIR")]
    pub host_storage_dir: Option<PathBuf>,

    /// Log filter for stderr (error, warn, info, debug, trace, or a tracing directive)
    #[arg(long, env = "LOG_LEVEL", default_value = "info,rmcp=warn")]
    pub log_level: String,

    /// Without a command: serve MCP on stdin/stdout.
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
    /// Pre-started containers.
    pub pool_size: usize,
    /// Images a run returns at most, and their largest size in bytes.
    pub max_images: usize,
    pub max_image_bytes: u64,
    /// Modules pre-started containers import.
    pub preimport: Vec<String>,
    /// uid and gid that code runs as.
    pub run_as: (u32, u32),
    pub log_level: String,
    pub command: Option<Command>,
}

impl Config {
    /// Validates the raw settings. Creates the storage directory if it is missing.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let environments = environments(&cli)?;
        let (storage_dir, storage_defaulted) = match cli.storage_dir {
            Some(dir) => (dir, false),
            None => (default_storage_dir(), true),
        };
        let storage_dir = prepare_storage_dir(&storage_dir)?;
        let host_storage_given = cli.host_storage_dir.is_some();
        let host_storage_dir = match cli.host_storage_dir {
            Some(p) if p.is_absolute() => p,
            Some(p) => {
                return Err(invalid(
                    "HOST_STORAGE_DIR",
                    p.display(),
                    "must be an absolute path",
                ));
            }
            None => storage_dir.clone(),
        };
        let limits = Limits {
            timeout_secs: positive("EXECUTION_TIMEOUT", cli.timeout_secs)?,
            memory_bytes: parse_size("MEMORY_LIMIT", &cli.memory_limit, 6 * 1024 * 1024)?,
            cpus: if cli.cpu_limit.is_finite() && cli.cpu_limit >= 0.01 {
                cli.cpu_limit
            } else {
                return Err(invalid(
                    "CPU_LIMIT",
                    cli.cpu_limit,
                    "must be a number ≥ 0.01",
                ));
            },
            pids: if cli.pids_limit >= 8 {
                cli.pids_limit
            } else {
                return Err(invalid("PIDS_LIMIT", cli.pids_limit, "must be at least 8"));
            },
            output_bytes: positive("OUTPUT_LIMIT", cli.output_limit)?,
            tmpfs_bytes: parse_size("TMPFS_SIZE", &cli.tmpfs_size, 1024 * 1024)?,
            max_code_bytes: positive("MAX_CODE_SIZE", cli.max_code_size)?,
            max_file_bytes: parse_size("MAX_FILE_SIZE", &cli.max_file_size, 1 << 20)?,
        };
        let install_limits = Limits {
            timeout_secs: positive("INSTALL_TIMEOUT", cli.install_timeout)?,
            memory_bytes: parse_size("INSTALL_MEMORY_LIMIT", &cli.install_memory, 64 << 20)?,
            tmpfs_bytes: parse_size("INSTALL_TMPFS_SIZE", &cli.install_tmp_size, 16 << 20)?,
            pids: limits.pids.max(256),
            ..limits.clone()
        };
        let install_source = InstallSource {
            network: network_name(cli.install_network)?,
            ca_bundle: ca_bundle(cli.ca_bundle.as_deref())?,
            index_url: cli
                .index_url
                .map(|u| index_url("PACKAGE_INDEX_URL", u))
                .transpose()?,
            extra_index_url: cli
                .extra_index_url
                .map(|u| index_url("EXTRA_INDEX_URL", u))
                .transpose()?,
        };
        let run_as = match cli.run_as {
            Some(s) => parse_user(&s)?,
            None => default_run_as(&storage_dir),
        };
        let images = Images {
            venv: image_ref("VENV_IMAGE", cli.venv_image)?,
            uv: image_ref("UV_IMAGE", cli.uv_image)?,
            conda: image_ref("CONDA_IMAGE", cli.conda_image)?,
        };
        Ok(Config {
            storage_dir,
            host_storage_dir,
            host_storage_given,
            storage_defaulted,
            environments,
            images,
            limits,
            install_limits,
            install_source,
            max_concurrent_runs: positive("MAX_CONCURRENT_RUNS", cli.max_concurrent_runs)?,
            pool_size: if cli.pool_size <= 16 {
                cli.pool_size
            } else {
                return Err(invalid("POOL_SIZE", cli.pool_size, "at most 16"));
            },
            preimport: module_list(&cli.preimport)?,
            max_images: cli.max_images,
            max_image_bytes: parse_size("MAX_IMAGE_SIZE", &cli.max_image_size, 1024)? as u64,
            run_as,
            log_level: cli.log_level,
            command: cli.command,
        })
    }
}

fn invalid(setting: &'static str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
    ConfigError::InvalidSetting {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(
    setting: &'static str,
    v: T,
) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(invalid(setting, v, "must be greater than 0"))
    }
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

/// Parses `uid:gid` (numbers only; root is refused).
pub fn parse_user(s: &str) -> Result<(u32, u32), ConfigError> {
    let bad = |reason| invalid("RUN_AS_USER", s, reason);
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| bad("expected uid:gid, e.g. 1000:1000"))?;
    let uid: u32 = u.trim().parse().map_err(|_| bad("uid must be a number"))?;
    let gid: u32 = g.trim().parse().map_err(|_| bad("gid must be a number"))?;
    if uid == 0 {
        return Err(bad(
            "code never runs as root (uid 0); pick an unprivileged uid",
        ));
    }
    Ok((uid, gid))
}

/// Parses a size such as `512m`, `2g`, `1048576`, `64MiB` into bytes; at least `min`.
pub fn parse_size(setting: &'static str, s: &str, min: i64) -> Result<i64, ConfigError> {
    let bad = |reason: &str| invalid(setting, s, reason);
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1i64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| bad("expected a size such as 512m, 2g or a number of bytes"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes > (1i64 << 50) as f64 {
        return Err(bad("too large"));
    }
    let bytes = bytes as i64;
    if bytes < min {
        return Err(bad(&format!("must be at least {min} bytes")));
    }
    Ok(bytes)
}

/// Comma-separated dotted module names.
fn module_list(s: &str) -> Result<Vec<String>, ConfigError> {
    let names: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let valid = |n: &str| {
        n.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    if names.len() > 20 {
        return Err(invalid("PREIMPORT", s, "at most 20 modules"));
    }
    match names.iter().find(|n| !valid(n)) {
        Some(bad) => Err(invalid(
            "PREIMPORT",
            s,
            &format!("{bad:?} is not a module name"),
        )),
        None => Ok(names),
    }
}

fn network_name(s: String) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(invalid("INSTALL_NETWORK", &s, "not a Docker network name"));
    }
    if s == "host" || s.starts_with("container:") {
        return Err(invalid(
            "INSTALL_NETWORK",
            &s,
            "would share a network namespace with the host or another container; use a bridge network",
        ));
    }
    Ok(s)
}

/// The CA bundle: an existing absolute file path, or none.
fn ca_bundle(setting: Option<&str>) -> Result<Option<String>, ConfigError> {
    match setting.map(str::trim) {
        Some("none") | Some("") => Ok(None),
        Some(path) => {
            if !Path::new(path).is_absolute() || !Path::new(path).is_file() {
                return Err(invalid(
                    "CA_BUNDLE",
                    path,
                    "must be the absolute path of a PEM file",
                ));
            }
            Ok(Some(path.to_string()))
        }
        None => Ok(Path::new(DEFAULT_CA_BUNDLE)
            .is_file()
            .then(|| DEFAULT_CA_BUNDLE.to_string())),
    }
}

fn index_url(setting: &'static str, url: String) -> Result<String, ConfigError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 500
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url)
    } else {
        Err(invalid(
            setting,
            &url,
            "must be an http(s) URL without spaces",
        ))
    }
}

/// An image reference: what `docker` accepts, nothing a shell or the API would misread.
fn image_ref(setting: &'static str, s: String) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && !s.starts_with(['-', '.', ':', '/'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(s)
    } else {
        Err(invalid(setting, &s, "not a valid image reference"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["mcp-code-executor"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("X", "512m", 0).unwrap(), 512 << 20);
        assert_eq!(parse_size("X", "2G", 0).unwrap(), 2 << 30);
        assert_eq!(parse_size("X", "64MiB", 0).unwrap(), 64 << 20);
        assert_eq!(parse_size("X", "1.5k", 0).unwrap(), 1536);
        assert_eq!(parse_size("X", "1000", 0).unwrap(), 1000);
        assert!(parse_size("X", "lots", 0).is_err());
        assert!(parse_size("X", "-1m", 0).is_err());
        assert!(parse_size("X", "1k", 4096).is_err());
        assert!(parse_size("X", "1e30g", 0).is_err());
    }

    #[test]
    fn call_timeouts_only_lower() {
        let c = Config::from_cli(cli(&[
            "--storage-dir",
            "/tmp/mce-config-test",
            "--timeout",
            "30",
        ]))
        .unwrap();
        assert_eq!(c.limits.with_call_timeout(None).timeout_secs, 30);
        assert_eq!(c.limits.with_call_timeout(Some(5)).timeout_secs, 5);
        assert_eq!(c.limits.with_call_timeout(Some(999)).timeout_secs, 30);
        assert_eq!(c.limits.with_call_timeout(Some(0)).timeout_secs, 1);
        assert_eq!(c.limits.max_file_bytes, 256 << 20);
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("1000:1000").unwrap(), (1000, 1000));
        assert!(parse_user("0:0").is_err());
        assert!(parse_user("1000").is_err());
        assert!(parse_user("me:me").is_err());
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
    fn image_refs() {
        assert!(image_ref("I", "mcp-code-executor/venv".into()).is_ok());
        assert!(image_ref("I", "reg.example:5000/a/b:1.2@sha256:ab".into()).is_ok());
        for bad in ["", "-x", "a b", "a;b", "$(x)"] {
            assert!(image_ref("I", bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn preimport_lists() {
        assert_eq!(
            module_list("numpy, pandas,matplotlib.pyplot").unwrap(),
            ["numpy", "pandas", "matplotlib.pyplot"]
        );
        assert!(module_list("").unwrap().is_empty());
        assert!(module_list("os;rm").is_err());
        assert!(module_list("1abc").is_err());
        assert!(module_list("a..b").is_err());
    }

    #[test]
    fn install_settings() {
        assert_eq!(network_name("bridge".into()).unwrap(), "bridge");
        assert!(network_name("host".into()).is_err());
        assert!(network_name("container:abc".into()).is_err());
        assert!(network_name("a b".into()).is_err());
        assert_eq!(ca_bundle(Some("none")).unwrap(), None);
        assert!(ca_bundle(Some("relative.pem")).is_err());
        assert!(ca_bundle(Some("/nonexistent/ca.pem")).is_err());
        assert!(index_url("X", "https://pypi.example/simple".into()).is_ok());
        assert!(index_url("X", "ftp://x".into()).is_err());
        assert!(index_url("X", "https://x/ y".into()).is_err());
        let c = Config::from_cli(cli(&[
            "--storage-dir",
            "/tmp/mce-config-test",
            "--install-timeout",
            "60",
        ]))
        .unwrap();
        assert_eq!(c.install_limits.timeout_secs, 60);
        assert_eq!(c.install_limits.memory_bytes, 2 << 30);
        assert_eq!(c.install_limits.cpus, c.limits.cpus);
        assert_eq!(c.install_source.network, "bridge");
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
