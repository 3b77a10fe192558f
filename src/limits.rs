//! Value types shared by every layer: the resource limits of a container, the image of each
//! environment type, and where installs download from. Plain data with no behaviour beyond
//! small derivations; it sits at the bottom of the house so that settings (`config`) and the
//! container policy (`sandbox::policy`) can both use it without depending on each other.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::environment::EnvType;

/// Open files per process inside a container.
pub const OPEN_FILES_LIMIT: i64 = 1024;

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

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// These limits with a per-call timeout, which may lower the timeout but never raise it.
    pub fn with_call_timeout(&self, secs: Option<u64>) -> Limits {
        Limits {
            timeout_secs: secs.map_or(self.timeout_secs, |s| s.clamp(1, self.timeout_secs)),
            ..self.clone()
        }
    }
}

/// The images, one per environment type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Images {
    pub venv: String,
    #[serde(rename = "venv-uv")]
    pub uv: String,
    pub conda: String,
}

impl Images {
    pub fn for_type(&self, env_type: EnvType) -> &str {
        match env_type {
            EnvType::Venv => &self.venv,
            EnvType::VenvUv => &self.uv,
            EnvType::Conda => &self.conda,
        }
    }

    /// The setting that overrides the image of `env_type`.
    pub fn setting_name(env_type: EnvType) -> &'static str {
        match env_type {
            EnvType::Venv => "VENV_IMAGE",
            EnvType::VenvUv => "UV_IMAGE",
            EnvType::Conda => "CONDA_IMAGE",
        }
    }
}

/// Where installs download from and what they trust (server configuration, never arguments).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstallSource {
    /// Docker network of install containers.
    pub network: String,
    /// CA bundle to trust, as a path the Docker daemon can bind-mount.
    pub ca_bundle: Option<String>,
    pub index_url: Option<String>,
    pub extra_index_url: Option<String>,
}
