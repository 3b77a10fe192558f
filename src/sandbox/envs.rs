//! Environments as named Docker volumes: one volume per (environment, image, run user), seeded
//! from the image on first mount, mounted read-only for runs and read-write only for the
//! containers that prepare, create or install into it. Installed packages therefore survive from
//! one short-lived container to the next and across server restarts.
//!
//! Helper programs (scripts/*.py) run through the same runner as user code; their input is
//! passed as `sys.argv` data, never spliced into code.

use std::collections::BTreeMap;
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::docker::Created;
use super::policy::{self, LABEL_ENV_VOLUME, Purpose};
use super::{Job, RunOutcome, Sandbox, lock};
use crate::limits::Limits;
use crate::environment::{CONDA_ROOT, EnvSpec, EnvType};
use crate::error::SandboxError;
use crate::packages::{InstallPlan, ValidRequirement};

const PREPARE: &str = include_str!("scripts/prepare.py");
const CREATE: &str = include_str!("scripts/create.py");
const INSTALL: &str = include_str!("scripts/install.py");
const CHECK: &str = include_str!("scripts/check.py");

/// How long past the seeding deadline to wait for another server's seeding.
const SEED_WAIT_EXTRA: std::time::Duration = std::time::Duration::from_secs(10);
const SEED_POLL: std::time::Duration = std::time::Duration::from_millis(300);

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

/// An install: per-package outcomes and the installer container's run.
#[derive(Debug, Clone)]
pub struct InstallOutcome {
    pub packages: Vec<PackageOutcome>,
    pub run: RunOutcome,
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
        detail: helper_detail(run),
    })
}

fn helper_detail(run: &RunOutcome) -> String {
    let tail: String = run
        .stderr
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "exit code {}{}{}: {}",
        run.exit_code.map_or("none".to_string(), |c| c.to_string()),
        if run.timed_out { ", timed out" } else { "" },
        if run.oom_killed {
            ", out of memory"
        } else {
            ""
        },
        tail.trim()
    )
}

impl Sandbox {
    /// The volume of `env`, complete: seeded with what the image has at the environment's
    /// prefix and handed to the run user. Seeding happens once per volume, daemon-wide: the
    /// server that creates the lock container seeds, others wait for the ready marker.
    pub(super) async fn env_volume(&self, env: &EnvSpec) -> Result<String, SandboxError> {
        let image_id = self.image_id(env).await?;
        let name = policy::env_volume_name(env, &image_id, self.settings.run_as);
        if lock(&self.known_volumes).contains(&name) {
            return Ok(name);
        }
        let _guard = self.seed_lock.lock().await;
        let ready = policy::ready_marker_name(&name);
        let limits = &self.settings.env_limits;
        let wait_until = std::time::Instant::now() + limits.timeout() + SEED_WAIT_EXTRA;
        loop {
            if self.docker.volume_exists(&ready).await? {
                lock(&self.known_volumes).insert(name.clone());
                return Ok(name);
            }
            let image = self.settings.images.for_type(env.env_type);
            let lock_body = policy::lock_container(
                image,
                &self.instance,
                super::unix_now(),
                limits.timeout_secs + policy::DEADLINE_GRACE_SECS,
            );
            match self
                .docker
                .create(lock_body, Some(&policy::seed_lock_name(&name)))
                .await?
            {
                Created::Id(lock_id) => {
                    let seeded = self.seed(env, &name, &ready).await;
                    if let Err(e) = self.docker.remove(&lock_id).await {
                        tracing::warn!(error = %e, "could not remove a seed lock container");
                    }
                    seeded?;
                    lock(&self.known_volumes).insert(name.clone());
                    return Ok(name);
                }
                Created::ImageMissing => return Err(self.image_missing(env)),
                Created::NameTaken if std::time::Instant::now() < wait_until => {
                    tokio::time::sleep(SEED_POLL).await;
                }
                Created::NameTaken => {
                    return Err(SandboxError::Helper {
                        what: "prepare the environment volume",
                        detail: format!(
                            "another server has been preparing {name} for too long; try again"
                        ),
                    });
                }
            }
        }
    }

    /// Arguments of scripts/prepare.py for `env`.
    fn prepare_argv(&self, env: &EnvSpec) -> [String; 4] {
        let (uid, gid) = self.settings.run_as;
        [
            env.prefix(),
            uid.to_string(),
            gid.to_string(),
            env.interpreter(),
        ]
    }

    /// Seeds `volume` (holding the seed lock): starts from an empty volume, lets Docker copy the
    /// image's files in as the only container mounting it, hands it to the run user, then
    /// creates the ready marker.
    async fn seed(&self, env: &EnvSpec, volume: &str, ready: &str) -> Result<(), SandboxError> {
        // A volume without its marker is the leftover of a seed that died half-way.
        self.docker.remove_volume(volume).await?;
        let image = self.settings.images.for_type(env.env_type);
        self.docker
            .ensure_volume(volume, policy::env_volume_labels(env, image))
            .await?;
        let argv = self.prepare_argv(env);
        let job = Job::helper(
            Purpose::Prepare,
            env,
            "/tmp/prepare.py",
            PREPARE,
            &argv,
            &self.settings.env_limits,
        );
        // Not cancellable by a client: a half-seeded volume would have to be seeded again.
        let run = self
            .execute_in(volume, job, &CancellationToken::new())
            .await?;
        if !run.succeeded() {
            return Err(SandboxError::Helper {
                what: "prepare the environment volume",
                detail: helper_detail(&run),
            });
        }
        let marker = std::collections::HashMap::from([(
            policy::LABEL_ENV_READY.to_string(),
            volume.to_string(),
        )]);
        self.docker.ensure_volume(ready, marker).await?;
        tracing::info!(volume = %volume, environment = %env, "prepared an environment volume");
        Ok(())
    }

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
        let volume = self.env_volume(env).await?;
        let _guard = self.env_lock.lock().await;
        let argv = self.prepare_argv(env);
        // As the run user, prepare.py only reports (the volume is already theirs).
        let job = Job::helper(
            Purpose::Create,
            env,
            "/tmp/prepare.py",
            PREPARE,
            &argv,
            limits,
        );
        let run = self.execute_in(&volume, job, cancel).await?;
        if !run.succeeded() {
            return Err(SandboxError::Helper {
                what: "inspect the environment",
                detail: helper_detail(&run),
            });
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
        let run = self.execute_in(&volume, job, cancel).await?;
        if !run.succeeded() {
            // Leave nothing half-made behind: the next attempt starts from an empty volume.
            if let Err(e) = self.remove_env_volume(&volume).await {
                tracing::warn!(volume = %volume, error = %e, "could not remove a failed environment");
            }
            return Err(SandboxError::EnvCreateFailed {
                env: env.to_string(),
                detail: helper_detail(&run),
            });
        }
        tracing::info!(environment = %env, "created an environment");
        Ok(true)
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
        last_line: &Mutex<String>,
    ) -> Result<InstallOutcome, SandboxError> {
        self.prepare_env(env, false, limits, cancel).await?;
        let volume = self.env_volume(env).await?;
        let plan_json = serde_json::to_string(plan).map_err(|e| SandboxError::Helper {
            what: "encode the install plan",
            detail: e.to_string(),
        })?;
        let argv = [plan_json];
        let job = Job {
            last_line: Some(last_line),
            ..Job::helper(
                Purpose::Install,
                env,
                "/tmp/install.py",
                INSTALL,
                &argv,
                limits,
            )
        };
        let run = self.execute_in(&volume, job, cancel).await?;
        if run.timed_out || run.cancelled || run.oom_killed {
            let packages = reqs
                .iter()
                .map(|r| PackageOutcome {
                    requirement: r.text.clone(),
                    name: r.name.clone(),
                    status: PackageStatus::Failed,
                    version: None,
                    previous_version: None,
                    via: None,
                })
                .collect();
            return Ok(InstallOutcome { packages, run });
        }
        let report: InstallReport = parse_report("install packages", &run)?;
        let packages = reqs
            .iter()
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
            .collect();
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
            return Err(SandboxError::Helper {
                what: "check installed packages",
                detail: helper_detail(&run),
            });
        }
        parse_report("check installed packages", &run)
    }

    /// Environment volumes on the daemon.
    pub async fn env_volumes(&self) -> Result<Vec<EnvVolume>, SandboxError> {
        let listed = self.docker.list_volumes(LABEL_ENV_VOLUME, "true").await?;
        Ok(listed
            .into_iter()
            .map(|(name, labels)| EnvVolume {
                name,
                env_type: labels
                    .get(policy::LABEL_ENV_TYPE)
                    .cloned()
                    .unwrap_or_default(),
                location: labels
                    .get(policy::LABEL_ENV_LOCATION)
                    .cloned()
                    .unwrap_or_default(),
                image: labels.get(policy::LABEL_IMAGE).cloned().unwrap_or_default(),
            })
            .collect())
    }

    /// Removes an environment volume: the environment returns to its image state (or is gone,
    /// for one created later). Fails while a container uses it.
    pub async fn remove_env_volume(&self, name: &str) -> Result<(), SandboxError> {
        lock(&self.known_volumes).remove(name);
        // The marker goes first: a volume without it is never used.
        self.docker
            .remove_volume(&policy::ready_marker_name(name))
            .await?;
        self.docker.remove_volume(name).await
    }
}

/// Whether `v` holds the environment `env_type`/`location` (for `reset`).
pub fn volume_matches(v: &EnvVolume, env_type: Option<EnvType>, location: Option<&str>) -> bool {
    env_type.is_none_or(|t| v.env_type == t.as_str()) && location.is_none_or(|l| v.location == l)
}
