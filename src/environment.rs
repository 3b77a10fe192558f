//! Environments: the three kinds (`venv`, `venv-uv`, `conda`), how each is named, which image
//! holds it and where its interpreter lives inside that image. Pure data and validation: nothing
//! here touches Docker or the host.
//!
//! Names and paths name an environment *inside the image* (DESIGN §2). They are validated so that
//! they can never point at a host path or carry anything a shell or Docker would interpret.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Where the default venv lives in `mcp-code-executor/venv`.
pub const DEFAULT_VENV_PATH: &str = "/opt/venv";
/// Where the default uv venv lives in `mcp-code-executor/uv`.
pub const DEFAULT_UV_VENV_PATH: &str = "/opt/uv-venv";
/// The conda environment used when none is named.
pub const DEFAULT_CONDA_ENV: &str = "base";
/// Root of the conda installation in `mcp-code-executor/conda`.
pub const CONDA_ROOT: &str = "/opt/conda";
/// Virtualenv paths must lie below this directory of the image.
pub const VENV_ROOT: &str = "/opt";
/// A simple name given for a venv path is placed here (`/opt/envs/<name>`).
pub const NAMED_VENV_DIR: &str = "/opt/envs";

pub const DEFAULT_VENV_IMAGE: &str = "mcp-code-executor/venv";
pub const DEFAULT_UV_IMAGE: &str = "mcp-code-executor/uv";
pub const DEFAULT_CONDA_IMAGE: &str = "mcp-code-executor/conda";

const MAX_NAME_LEN: usize = 64;
const MAX_PATH_LEN: usize = 200;

/// The kind of Python environment code runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EnvType {
    /// A virtualenv managed with pip.
    #[serde(rename = "venv")]
    Venv,
    /// A virtualenv managed with uv.
    #[serde(rename = "venv-uv")]
    VenvUv,
    /// A conda environment.
    #[serde(rename = "conda")]
    Conda,
}

impl EnvType {
    pub const ALL: [EnvType; 3] = [EnvType::Venv, EnvType::VenvUv, EnvType::Conda];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvType::Venv => "venv",
            EnvType::VenvUv => "venv-uv",
            EnvType::Conda => "conda",
        }
    }

    /// Parses the value of `ENV_TYPE` / the `type` argument.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "venv" => Ok(EnvType::Venv),
            "venv-uv" | "uv" => Ok(EnvType::VenvUv),
            "conda" => Ok(EnvType::Conda),
            other => Err(ConfigError::UnknownEnvType(other.to_string())),
        }
    }
}

impl fmt::Display for EnvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One environment: its kind and the validated name/path inside the image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvSpec {
    pub env_type: EnvType,
    /// For `venv`/`venv-uv`: an absolute path below [`VENV_ROOT`]. For `conda`: an env name.
    location: String,
}

impl EnvSpec {
    pub fn default_for(env_type: EnvType) -> Self {
        let location = match env_type {
            EnvType::Venv => DEFAULT_VENV_PATH,
            EnvType::VenvUv => DEFAULT_UV_VENV_PATH,
            EnvType::Conda => DEFAULT_CONDA_ENV,
        };
        EnvSpec {
            env_type,
            location: location.to_string(),
        }
    }

    /// Builds a spec from a user-given name or path (`None`: the default of that kind).
    pub fn new(env_type: EnvType, location: Option<&str>) -> Result<Self, ConfigError> {
        let Some(raw) = location.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::default_for(env_type));
        };
        let location = match env_type {
            EnvType::Venv | EnvType::VenvUv => validate_venv_path(env_type, raw)?,
            EnvType::Conda => validate_conda_name(raw)?,
        };
        Ok(EnvSpec { env_type, location })
    }

    /// The venv path or conda env name, as validated.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The environment's prefix directory inside the image.
    pub fn prefix(&self) -> String {
        match self.env_type {
            EnvType::Venv | EnvType::VenvUv => self.location.clone(),
            EnvType::Conda if self.location == DEFAULT_CONDA_ENV => CONDA_ROOT.to_string(),
            EnvType::Conda => format!("{CONDA_ROOT}/envs/{}", self.location),
        }
    }

    /// The interpreter that runs code in this environment.
    pub fn interpreter(&self) -> String {
        format!("{}/bin/python", self.prefix())
    }

    /// The variables that activate the environment for the program and its subprocesses.
    pub fn activation_env(&self) -> Vec<(String, String)> {
        let prefix = self.prefix();
        let path =
            format!("{prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let mut vars = vec![("PATH".to_string(), path)];
        match self.env_type {
            EnvType::Venv | EnvType::VenvUv => vars.push(("VIRTUAL_ENV".to_string(), prefix)),
            EnvType::Conda => {
                vars.push(("CONDA_PREFIX".to_string(), prefix));
                vars.push(("CONDA_DEFAULT_ENV".to_string(), self.location.clone()));
            }
        }
        vars
    }
}

impl fmt::Display for EnvSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.env_type, self.location)
    }
}

/// One configured environment per kind, and which one is active. Switching type keeps the
/// name/path last chosen for each kind, as the original's settings did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environments {
    pub active: EnvType,
    pub venv: EnvSpec,
    pub uv: EnvSpec,
    pub conda: EnvSpec,
}

impl Environments {
    pub fn spec(&self, env_type: EnvType) -> &EnvSpec {
        match env_type {
            EnvType::Venv => &self.venv,
            EnvType::VenvUv => &self.uv,
            EnvType::Conda => &self.conda,
        }
    }

    pub fn active_spec(&self) -> &EnvSpec {
        self.spec(self.active)
    }

    /// Makes `spec` the active environment.
    pub fn select(&mut self, spec: EnvSpec) {
        self.active = spec.env_type;
        match spec.env_type {
            EnvType::Venv => self.venv = spec,
            EnvType::VenvUv => self.uv = spec,
            EnvType::Conda => self.conda = spec,
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A simple name: letters, digits, `_`, `-`, `.`; starts with a letter or digit; ≤ 64 chars.
fn check_simple_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    let Some(first) = name.chars().next() else {
        return Err("empty".to_string());
    };
    if !first.is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".to_string());
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '_', '-' and '.' are allowed"
        ));
    }
    Ok(())
}

fn validate_conda_name(raw: &str) -> Result<String, ConfigError> {
    check_simple_name(raw).map_err(|reason| ConfigError::InvalidEnvName {
        what: "conda environment name",
        value: raw.to_string(),
        reason,
        hint: "use a simple name such as 'base' or 'analysis'".to_string(),
    })?;
    Ok(raw.to_string())
}

fn validate_venv_path(env_type: EnvType, raw: &str) -> Result<String, ConfigError> {
    let what = match env_type {
        EnvType::VenvUv => "uv venv path",
        _ => "venv path",
    };
    let invalid = |reason: String| ConfigError::InvalidEnvName {
        what,
        value: raw.to_string(),
        reason,
        hint: format!(
            "give a simple name (placed at {NAMED_VENV_DIR}/<name>) or an absolute path below \
             {VENV_ROOT}/ inside the image, such as {}; host paths are not used, the \
             environment lives in the image",
            EnvSpec::default_for(env_type).location
        ),
    };
    if !raw.starts_with('/') {
        check_simple_name(raw).map_err(invalid)?;
        return Ok(format!("{NAMED_VENV_DIR}/{raw}"));
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(invalid(format!("longer than {MAX_PATH_LEN} characters")));
    }
    let trimmed = raw.trim_end_matches('/');
    let Some(rest) = trimmed
        .strip_prefix(VENV_ROOT)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Err(invalid(format!("not below {VENV_ROOT}/")));
    };
    for component in rest.split('/') {
        check_simple_name(component)
            .map_err(|reason| invalid(format!("path component {component:?} {reason}")))?;
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_per_type() {
        assert_eq!(
            EnvSpec::default_for(EnvType::Venv).interpreter(),
            "/opt/venv/bin/python"
        );
        assert_eq!(
            EnvSpec::default_for(EnvType::VenvUv).interpreter(),
            "/opt/uv-venv/bin/python"
        );
        assert_eq!(
            EnvSpec::default_for(EnvType::Conda).interpreter(),
            "/opt/conda/bin/python"
        );
    }

    #[test]
    fn conda_names() {
        let spec = EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap();
        assert_eq!(spec.interpreter(), "/opt/conda/envs/analysis/bin/python");
        for bad in [
            "../x",
            "a/b",
            "-rf",
            ".hidden",
            "a b",
            "a;b",
            "$(id)",
            "a\nb",
            &"x".repeat(65),
        ] {
            assert!(
                EnvSpec::new(EnvType::Conda, Some(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn venv_paths() {
        let ok = |s| {
            EnvSpec::new(EnvType::Venv, Some(s))
                .unwrap()
                .location()
                .to_string()
        };
        assert_eq!(ok("/opt/venv"), "/opt/venv");
        assert_eq!(ok("/opt/venv/"), "/opt/venv");
        assert_eq!(ok("/opt/envs/data-2"), "/opt/envs/data-2");
        assert_eq!(ok("proj"), "/opt/envs/proj");
        for bad in [
            "/home/me/.venv",
            "/opt",
            "/opt/../etc",
            "/opt/./venv",
            "/opt//venv",
            "/optx/venv",
            "/opt/venv;rm -rf /",
            "/opt/$(id)",
            "/opt/a b",
            "../venv",
            "C:\\venv",
        ] {
            assert!(
                EnvSpec::new(EnvType::Venv, Some(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn empty_location_means_default() {
        assert_eq!(
            EnvSpec::new(EnvType::VenvUv, Some("  ")).unwrap(),
            EnvSpec::default_for(EnvType::VenvUv)
        );
    }

    #[test]
    fn env_type_names() {
        for t in EnvType::ALL {
            assert_eq!(EnvType::parse(t.as_str()).unwrap(), t);
        }
        assert!(EnvType::parse("pipenv").is_err());
    }
}
