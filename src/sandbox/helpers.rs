//! Helper programs about environments, run through the same runner as user code, with their
//! input passed as `sys.argv` data (never spliced into code) and a JSON report on their last
//! stdout line: preparing or creating an environment (offline), installing packages (the only
//! containers with network access) and looking names up (offline, read-only). Also listing
//! and resetting environment volumes for the maintenance commands.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Sandbox;
use super::labels::{self, LABEL_ENV_VOLUME};
use super::output::Live;
use super::policy::Purpose;
use super::runner::{Job, RunOutcome};
use super::volumes::PREPARE;
use crate::environment::{CONDA_ROOT, EnvSpec, EnvType};
use crate::error::SandboxError;
use crate::limits::Limits;
use crate::packages::{InstallPlan, ValidRequirement};

const CREATE: &str = include_str!("scripts/create.py");
const INSTALL: &str = include_str!("scripts/install.py");
const CHECK: &str = include_str!("scripts/check.py");

/// What became of one requested package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// An install: per-package outcomes and the installer container's run.
#[derive(Debug, Clone)]
pub struct InstallOutcome {
    pub packages: Vec<PackageOutcome>,
    pub run: RunOutcome,
}

/// One name looked up by `check_installed_packages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Deserialize)]
struct PrepareReport {
    interpreter: bool,
}

#[derive(Deserialize)]
struct InstallReport {
    before: BTreeMap<String, Option<String>>,
    after: BTreeMap<String, Option<String>>,
    via: BTreeMap<String, String>,
}

/// An environment volume, as listed for `reset`.
#[derive(Debug, Clone)]
pub struct EnvVolume {
    pub name: String,
    pub env_type: String,
    pub location: String,
    pub image: String,
}

/// The last stdout line of a helper, parsed as JSON.
fn parse_report<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    run: &RunOutcome,
) -> Result<T, SandboxError> {
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).map_err(|_| SandboxError::Helper {
        what,
        detail: run.failure_detail(),
    })
}

/// A failed helper run as an error saying what was being done.
fn helper_failed(what: &'static str, run: &RunOutcome) -> SandboxError {
    SandboxError::Helper {
        what,
        detail: run.failure_detail(),
    }
}

/// Every requested package as failed (the installer was stopped before it could report).
fn all_failed(reqs: &[ValidRequirement]) -> Vec<PackageOutcome> {
    reqs.iter()
        .map(|r| PackageOutcome {
            requirement: r.text.clone(),
            name: r.name.clone(),
            status: PackageStatus::Failed,
            version: None,
            previous_version: None,
            via: None,
        })
        .collect()
}

/// Each requested package's fate, from the installer's before/after report.
fn classify(reqs: &[ValidRequirement], report: &InstallReport) -> Vec<PackageOutcome> {
    reqs.iter()
        .map(|r| {
            let before = report.before.get(&r.text).cloned().flatten();
            let after = report.after.get(&r.text).cloned().flatten();
            let via = report.via.get(&r.text).cloned();
            let status = match (&via, &before, &after) {
                (None, _, _) | (_, _, None) => PackageStatus::Failed,
                (Some(_), None, Some(_)) => PackageStatus::Installed,
                (Some(_), Some(b), Some(a)) if b == a => PackageStatus::AlreadyPresent,
                (Some(_), Some(_), Some(_)) => PackageStatus::Upgraded,
            };
            PackageOutcome {
                requirement: r.text.clone(),
                name: r.name.clone(),
                status,
                version: after,
                previous_version: before,
                via,
            }
        })
        .collect()
}

impl Sandbox {
    /// Makes `env` ready for installs: a complete volume whose interpreter exists; when it
    /// does not and `create` is set, the environment is created (offline, with the image's
    /// tools). Returns whether it was created.
    pub async fn prepare_env(
        &self,
        env: &EnvSpec,
        create: bool,
        limits: &Limits,
        cancel: &CancellationToken,
    ) -> Result<bool, SandboxError> {
        let volume = self.volumes.env_volume(env).await?;
        let _guard = self.env_lock.lock().await;
        let argv = self.volumes.prepare_argv(env);
        // As the run user, prepare.py only reports (the volume is already theirs).
        let job = Job::helper(
            Purpose::Create,
            env,
            "/tmp/prepare.py",
            PREPARE,
            &argv,
            limits,
        );
        let run = self.volumes.run_in(&volume, &job, cancel).await?;
        if !run.succeeded() {
            return Err(helper_failed("inspect the environment", &run));
        }
        let report: PrepareReport = parse_report("inspect the environment", &run)?;
        if report.interpreter {
            return Ok(false);
        }
        if !create {
            return Err(SandboxError::EnvMissing {
                env: env.to_string(),
            });
        }
        self.create_env(env, &volume, limits, cancel).await?;
        Ok(true)
    }

    /// Creates the environment `env` in its (empty) volume; removes the volume if that fails.
    async fn create_env(
        &self,
        env: &EnvSpec,
        volume: &str,
        limits: &Limits,
        cancel: &CancellationToken,
    ) -> Result<(), SandboxError> {
        let argv = [
            env.env_type.as_str().to_string(),
            env.prefix(),
            CONDA_ROOT.to_string(),
        ];
        let job = Job::helper(
            Purpose::Create,
            env,
            "/tmp/create.py",
            CREATE,
            &argv,
            limits,
        );
        let run = self.volumes.run_in(volume, &job, cancel).await?;
        if !run.succeeded() {
            // Leave nothing half-made behind: the next attempt starts from an empty volume.
            self.remove_failed_env(volume).await;
            return Err(SandboxError::EnvCreateFailed {
                env: env.to_string(),
                detail: run.failure_detail(),
            });
        }
        tracing::info!(environment = %env, "created an environment");
        Ok(())
    }

    /// Removes the volume of a failed creation. The creating container is still being removed
    /// in the background, and the engine refuses to remove a volume in use: retry a while.
    async fn remove_failed_env(&self, volume: &str) {
        const ATTEMPTS: u32 = 30;
        for attempt in 1..=ATTEMPTS {
            match self.volumes.remove(volume).await {
                Ok(()) => return,
                Err(e) if attempt == ATTEMPTS || e.is_unavailable() => {
                    tracing::warn!(volume = %volume, error = %e, "could not remove a failed environment");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Installs validated requirements into `env` following `plan`, in an install container
    /// (the only kind with network access). Runs never see the network or write the env.
    pub async fn install(
        &self,
        env: &EnvSpec,
        reqs: &[ValidRequirement],
        plan: &InstallPlan,
        limits: &Limits,
        cancel: &CancellationToken,
        live: &Live,
    ) -> Result<InstallOutcome, SandboxError> {
        self.prepare_env(env, false, limits, cancel).await?;
        let volume = self.volumes.env_volume(env).await?;
        let plan_json = serde_json::to_string(plan).map_err(|e| SandboxError::Helper {
            what: "encode the install plan",
            detail: e.to_string(),
        })?;
        let argv = [plan_json];
        let job = Job {
            live: Some(live),
            ..Job::helper(
                Purpose::Install,
                env,
                "/tmp/install.py",
                INSTALL,
                &argv,
                limits,
            )
        };
        let run = self.volumes.run_in(&volume, &job, cancel).await?;
        if run.timed_out || run.cancelled || run.oom_killed {
            let packages = all_failed(reqs);
            return Ok(InstallOutcome { packages, run });
        }
        let report: InstallReport = parse_report("install packages", &run)?;
        let packages = classify(reqs, &report);
        Ok(InstallOutcome { packages, run })
    }

    /// Looks names up in `env` (offline, read-only).
    pub async fn check(
        &self,
        env: &EnvSpec,
        names: &[String],
        limits: &Limits,
        cancel: &CancellationToken,
    ) -> Result<Vec<PackageInfo>, SandboxError> {
        let job = Job::helper(Purpose::Inspect, env, "/tmp/check.py", CHECK, names, limits);
        let run = self.execute(job, cancel).await?;
        if !run.succeeded() {
            if run.exit_code == Some(127) {
                return Err(SandboxError::EnvMissing {
                    env: env.to_string(),
                });
            }
            return Err(helper_failed("check installed packages", &run));
        }
        parse_report("check installed packages", &run)
    }

    /// Environment volumes on the daemon.
    pub async fn env_volumes(&self) -> Result<Vec<EnvVolume>, SandboxError> {
        let engine = self.life.engine();
        let listed = engine.list_volumes(LABEL_ENV_VOLUME, "true").await?;
        let label = |l: &std::collections::HashMap<String, String>, k: &str| {
            l.get(k).cloned().unwrap_or_default()
        };
        Ok(listed
            .into_iter()
            .map(|v| EnvVolume {
                env_type: label(&v.labels, labels::LABEL_ENV_TYPE),
                location: label(&v.labels, labels::LABEL_ENV_LOCATION),
                image: label(&v.labels, labels::LABEL_IMAGE),
                name: v.name,
            })
            .collect())
    }

    /// Removes an environment volume (see [`super::volumes::Volumes::remove`]).
    pub async fn remove_env_volume(&self, name: &str) -> Result<(), SandboxError> {
        self.volumes.remove(name).await
    }
}

/// Whether `v` holds the environment `env_type`/`location` (for `reset`).
pub fn volume_matches(v: &EnvVolume, env_type: Option<EnvType>, location: Option<&str>) -> bool {
    env_type.is_none_or(|t| v.env_type == t.as_str()) && location.is_none_or(|l| v.location == l)
}
