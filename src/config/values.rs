//! Checks of single setting values, each returning the value to keep or a
//! [`ConfigError::InvalidSetting`] naming the setting, value and reason: positive numbers, CPU,
//! process, pool and session bounds, sizes, `uid:gid`, module lists, network names, the CA bundle, index
//! URLs, image references, OCI runtime names. `ca_bundle` looks at the file system; the rest are
//! pure.

use std::path::Path;

use super::{DEFAULT_CA_BUNDLE, MAX_MAX_SESSIONS, StorageMode};
use crate::error::ConfigError;

pub(super) fn invalid(
    setting: &'static str,
    value: impl std::fmt::Display,
    reason: &str,
) -> ConfigError {
    ConfigError::InvalidSetting {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn positive<T: PartialOrd + Default + std::fmt::Display>(
    setting: &'static str,
    v: T,
) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(invalid(setting, v, "must be greater than 0"))
    }
}

/// Run containers get at least a hundredth of a CPU.
pub(super) fn cpu_limit(cpus: f64) -> Result<f64, ConfigError> {
    if cpus.is_finite() && cpus >= 0.01 {
        Ok(cpus)
    } else {
        Err(invalid("CPU_LIMIT", cpus, "must be a number ≥ 0.01"))
    }
}

/// Run containers may start at least 8 processes/threads.
pub(super) fn pids_limit(pids: i64) -> Result<i64, ConfigError> {
    if pids >= 8 {
        Ok(pids)
    } else {
        Err(invalid("PIDS_LIMIT", pids, "must be at least 8"))
    }
}

/// At most 16 pre-started containers (0 disables the pool).
pub(super) fn pool_size(n: usize) -> Result<usize, ConfigError> {
    if n <= 16 {
        Ok(n)
    } else {
        Err(invalid("POOL_SIZE", n, "at most 16"))
    }
}

/// STORAGE_MODE: `asked`, else copy for a daemon reached over the network (`docker_host`
/// tcp://, https:// or ssh://), else bind.
pub(super) fn storage_mode(
    asked: Option<&str>,
    docker_host: Option<&str>,
) -> Result<StorageMode, ConfigError> {
    match asked.map(str::trim) {
        Some("bind") => Ok(StorageMode::Bind),
        Some("copy") => Ok(StorageMode::Copy),
        Some(other) => Err(invalid("STORAGE_MODE", other, "must be bind or copy")),
        None => {
            let remote = ["tcp://", "https://", "ssh://"];
            let host = docker_host.unwrap_or_default();
            Ok(if remote.iter().any(|p| host.starts_with(p)) {
                StorageMode::Copy
            } else {
                StorageMode::Bind
            })
        }
    }
}

/// Sessions open at once: at least 1, at most [`MAX_MAX_SESSIONS`].
pub(super) fn max_sessions(n: usize) -> Result<usize, ConfigError> {
    if (1..=MAX_MAX_SESSIONS).contains(&n) {
        Ok(n)
    } else {
        Err(invalid(
            "MAX_SESSIONS",
            n,
            &format!("must be between 1 and {MAX_MAX_SESSIONS}"),
        ))
    }
}

/// A session's lifetime, which cannot be shorter than its idle timeout.
pub(super) fn session_lifetime(idle_secs: u64, lifetime_secs: u64) -> Result<u64, ConfigError> {
    if lifetime_secs >= idle_secs {
        Ok(lifetime_secs)
    } else {
        Err(invalid(
            "SESSION_MAX_LIFETIME",
            lifetime_secs,
            &format!(
                "must be at least SESSION_IDLE_TIMEOUT ({idle_secs} s): a session cannot end \
                 by age before it could end by idling"
            ),
        ))
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
pub(super) fn module_list(s: &str) -> Result<Vec<String>, ConfigError> {
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

/// A Docker network name for install containers; never the host's or another container's.
pub(super) fn network_name(s: &str) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(invalid("INSTALL_NETWORK", s, "not a Docker network name"));
    }
    if s == "host" || s.starts_with("container:") {
        return Err(invalid(
            "INSTALL_NETWORK",
            s,
            "would share a network namespace with the host or another container; use a bridge network",
        ));
    }
    Ok(s.to_string())
}

/// The CA bundle: an existing absolute file path, or none.
pub(super) fn ca_bundle(setting: Option<&str>) -> Result<Option<String>, ConfigError> {
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

/// A package index: an http(s) URL without spaces or control characters.
pub(super) fn index_url(setting: &'static str, url: &str) -> Result<String, ConfigError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 500
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url.to_string())
    } else {
        Err(invalid(
            setting,
            url,
            "must be an http(s) URL without spaces",
        ))
    }
}

/// An OCI runtime name as the daemon knows it (`RUNTIME`); empty means the daemon's default.
pub(super) fn runtime_name(setting: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(s) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ok = s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(Some(s.to_string()))
    } else {
        Err(invalid(
            "RUNTIME",
            s,
            "not an OCI runtime name (letters, digits, '.', '_', '-'), e.g. runsc",
        ))
    }
}

/// An image reference: what `docker` accepts, nothing a shell or the API would misread.
pub(super) fn image_ref(setting: &'static str, s: &str) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && !s.starts_with(['-', '.', ':', '/'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(setting, s, "not a valid image reference"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn users() {
        assert_eq!(parse_user("1000:1000").unwrap(), (1000, 1000));
        assert!(parse_user("0:0").is_err());
        assert!(parse_user("1000").is_err());
        assert!(parse_user("me:me").is_err());
    }

    #[test]
    fn image_refs() {
        assert_eq!(
            image_ref("I", "mcp-code-executor/venv").unwrap(),
            "mcp-code-executor/venv"
        );
        assert!(image_ref("I", "reg.example:5000/a/b:1.2@sha256:ab").is_ok());
        for bad in ["", "-x", "a b", "a;b", "$(x)"] {
            assert!(image_ref("I", bad).is_err(), "{bad:?}");
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
    fn runtime_names() {
        assert_eq!(runtime_name(None).unwrap(), None);
        assert_eq!(runtime_name(Some(" ")).unwrap(), None);
        assert_eq!(
            runtime_name(Some("runsc")).unwrap().as_deref(),
            Some("runsc")
        );
        assert_eq!(
            runtime_name(Some("io.containerd.runc.v2"))
                .unwrap()
                .as_deref(),
            Some("io.containerd.runc.v2")
        );
        for bad in ["-x", "run sc", "a;b", "$(x)", "/usr/bin/runsc"] {
            let err = runtime_name(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("invalid RUNTIME"), "{err}");
        }
    }

    #[test]
    fn install_values() {
        assert_eq!(network_name("bridge").unwrap(), "bridge");
        assert!(network_name("host").is_err());
        assert!(network_name("container:abc").is_err());
        assert!(network_name("a b").is_err());
        assert_eq!(ca_bundle(Some("none")).unwrap(), None);
        assert!(ca_bundle(Some("relative.pem")).is_err());
        assert!(ca_bundle(Some("/nonexistent/ca.pem")).is_err());
        assert_eq!(
            index_url("X", "https://pypi.example/simple").unwrap(),
            "https://pypi.example/simple"
        );
        assert!(index_url("X", "ftp://x").is_err());
        assert!(index_url("X", "https://x/ y").is_err());
    }

    #[test]
    fn run_container_bounds() {
        assert_eq!(cpu_limit(0.5).unwrap(), 0.5);
        assert_eq!(cpu_limit(0.01).unwrap(), 0.01);
        assert_eq!(
            cpu_limit(0.0).unwrap_err().to_string(),
            "invalid CPU_LIMIT \"0\": must be a number ≥ 0.01"
        );
        assert!(cpu_limit(f64::NAN).is_err());
        assert!(cpu_limit(f64::INFINITY).is_err());
        assert_eq!(pids_limit(8).unwrap(), 8);
        assert_eq!(
            pids_limit(7).unwrap_err().to_string(),
            "invalid PIDS_LIMIT \"7\": must be at least 8"
        );
        assert_eq!(pool_size(0).unwrap(), 0);
        let mode = |asked, host| storage_mode(asked, host).unwrap();
        assert_eq!(mode(None, None), StorageMode::Bind);
        assert_eq!(
            mode(None, Some("unix:///var/run/docker.sock")),
            StorageMode::Bind
        );
        assert_eq!(mode(None, Some("tcp://10.0.0.2:2376")), StorageMode::Copy);
        assert_eq!(mode(None, Some("ssh://me@build")), StorageMode::Copy);
        assert_eq!(mode(Some("bind"), Some("tcp://h:2376")), StorageMode::Bind);
        assert_eq!(mode(Some("copy"), None), StorageMode::Copy);
        let err = storage_mode(Some("rsync"), None).unwrap_err().to_string();
        assert!(
            err.contains("STORAGE_MODE") && err.contains("bind or copy"),
            "{err}"
        );
        assert_eq!(pool_size(16).unwrap(), 16);
        assert_eq!(
            pool_size(17).unwrap_err().to_string(),
            "invalid POOL_SIZE \"17\": at most 16"
        );
    }

    #[test]
    fn session_bounds() {
        assert_eq!(max_sessions(1).unwrap(), 1);
        assert_eq!(max_sessions(64).unwrap(), 64);
        assert_eq!(
            max_sessions(0).unwrap_err().to_string(),
            "invalid MAX_SESSIONS \"0\": must be between 1 and 64"
        );
        assert!(max_sessions(65).is_err());
        assert_eq!(session_lifetime(600, 600).unwrap(), 600);
        assert_eq!(session_lifetime(600, 14400).unwrap(), 14400);
        assert_eq!(
            session_lifetime(600, 599).unwrap_err().to_string(),
            "invalid SESSION_MAX_LIFETIME \"599\": must be at least SESSION_IDLE_TIMEOUT (600 s): \
             a session cannot end by age before it could end by idling"
        );
    }

    #[test]
    fn invalid_names_setting_value_and_reason() {
        let err = positive("POOL_SIZE", 0usize).unwrap_err().to_string();
        assert!(err.contains("POOL_SIZE"), "{err}");
        assert!(err.contains("must be greater than 0"), "{err}");
        assert_eq!(positive("X", 3u64).unwrap(), 3);
    }
}
