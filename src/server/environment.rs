//! The environment tools (`configure_environment`, `get_environment_config`): switching the
//! active environment (check the image, create the environment if needed, select it, warm the
//! pool) and reporting the environments, storage directory, limits, isolation, OCI runtime and
//! session limits in force.

use std::sync::PoisonError;

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::State;
use super::contract::{
    ConfigReport, ConfigResult, ConfigureEnvironmentArgs, ConfigureResult, EnvReport, Limits,
    RunLimits,
};
use super::progress::Progress;
use super::reply::{fail, fail_in, respond};
use crate::environment::{EnvSpec, EnvType, Environments};
use crate::error::SandboxError;
use crate::limits::{self, Images};
use crate::sandbox::policy::Purpose;
use crate::sandbox::runtime;
use crate::sandbox::sessions::SessionSettings;

/// `configure_environment`: makes the requested environment active, creating it if needed.
pub async fn configure(
    state: &State,
    args: ConfigureEnvironmentArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let spec = match EnvSpec::new(args.env_type, args.location()) {
        Ok(spec) => spec,
        Err(e) => return fail(ConfigureResult::default(), e),
    };
    let created = match prepare(state, &spec, ctx).await {
        Ok(created) => created,
        Err(e) => return fail_in(ConfigureResult::default(), Some("not switched"), e),
    };
    let (previous, current) = select(state, &spec);
    state.sandbox.warm_up(&spec);
    respond(
        &ConfigureResult {
            message: Some(switched_message(&spec, created)),
            previous: Some(previous),
            current: Some(current),
            ..Default::default()
        },
        false,
    )
}

/// Checks the image of `spec` and creates the environment in it when missing; whether it was
/// created.
async fn prepare(
    state: &State,
    spec: &EnvSpec,
    ctx: &RequestContext<RoleServer>,
) -> Result<bool, SandboxError> {
    let sandbox = &state.sandbox;
    sandbox.check_image(spec).await?;
    let progress = Progress::start(ctx, format!("preparing {spec}"), None);
    let prepared = sandbox
        .prepare_env(spec, true, &state.config.install_limits, &ctx.ct)
        .await;
    progress.stop().await;
    prepared
}

/// Makes `spec` the active environment; the reports of the previous and the new one.
fn select(state: &State, spec: &EnvSpec) -> (EnvReport, EnvReport) {
    let images = &state.config.images;
    let mut envs = state.envs.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = env_report(envs.active_spec(), images);
    envs.select(spec.clone());
    (previous, env_report(spec, images))
}

/// The `message` of a switch.
fn switched_message(spec: &EnvSpec, created: bool) -> String {
    if created {
        format!("created the environment {spec}; it is now active")
    } else {
        format!("environment is now {spec}")
    }
}

/// `get_environment_config`: the configuration in force.
pub fn get_config(state: &State) -> Result<CallToolResult, ErrorData> {
    let c = &state.config;
    let envs = state.envs();
    let report = ConfigReport {
        runtime: c.runtime.clone(),
        install_runtime: runtime::for_purpose(c.runtime.as_deref(), Purpose::Install),
        storage_mode: c.storage_mode.as_str().to_string(),
        runs: RunLimits {
            max_timeout_secs: c.runs.max_timeout_secs,
            result_wait_secs: c.runs.result_wait_secs,
            run_retention_secs: c.runs.retention_secs,
            max_background_runs: c.runs.max_background,
        },
        ..config_report(
            &envs,
            &c.images,
            &c.storage_dir.to_string_lossy(),
            &c.limits,
            c.run_as,
            state.sandbox.isolation(envs.active_spec()),
            &c.sessions,
        )
    };
    respond(
        &ConfigResult {
            config: Some(report),
            ..Default::default()
        },
        false,
    )
}

/// One environment as reported to clients: its type, name/path, image and interpreter.
fn env_report(spec: &EnvSpec, images: &Images) -> EnvReport {
    let loc = Some(spec.location().to_string());
    EnvReport {
        env_type: spec.env_type,
        conda_name: (spec.env_type == EnvType::Conda)
            .then(|| loc.clone())
            .flatten(),
        venv_path: (spec.env_type == EnvType::Venv)
            .then(|| loc.clone())
            .flatten(),
        uv_venv_path: (spec.env_type == EnvType::VenvUv)
            .then(|| loc.clone())
            .flatten(),
        image: images.for_type(spec.env_type).to_string(),
        interpreter: spec.interpreter(),
    }
}

/// The configuration as reported by `get_environment_config`.
fn config_report(
    envs: &Environments,
    images: &Images,
    storage: &str,
    limits: &limits::Limits,
    run_as: (u32, u32),
    isolation: Vec<String>,
    sessions: &SessionSettings,
) -> ConfigReport {
    ConfigReport {
        active: env_report(envs.active_spec(), images),
        environments: EnvType::ALL
            .iter()
            .map(|t| env_report(envs.spec(*t), images))
            .collect(),
        code_storage_dir: storage.to_string(),
        storage_mode: "bind".to_string(),
        limits: limits.into(),
        run_as: format!("{}:{}", run_as.0, run_as.1),
        isolation,
        runtime: None,
        install_runtime: None,
        sessions: sessions.into(),
        // Set by get_config from the settings, as storage_mode and the runtimes are.
        runs: RunLimits::default(),
    }
}

impl From<&limits::Limits> for Limits {
    fn from(l: &limits::Limits) -> Self {
        Limits {
            timeout_secs: l.timeout_secs,
            memory_bytes: l.memory_bytes,
            cpus: l.cpus,
            pids: l.pids,
            output_bytes: l.output_bytes,
            tmpfs_bytes: l.tmpfs_bytes,
            max_code_bytes: l.max_code_bytes,
            max_file_bytes: l.max_file_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn images() -> Images {
        Images {
            venv: "img/venv".into(),
            uv: "img/uv".into(),
            conda: "img/conda".into(),
        }
    }

    fn envs() -> Environments {
        Environments {
            active: EnvType::Conda,
            venv: EnvSpec::default_for(EnvType::Venv),
            uv: EnvSpec::default_for(EnvType::VenvUv),
            conda: EnvSpec::new(EnvType::Conda, Some("ml")).unwrap(),
        }
    }

    fn limits() -> limits::Limits {
        limits::Limits {
            timeout_secs: 30,
            memory_bytes: 512 << 20,
            cpus: 1.5,
            pids: 64,
            output_bytes: 1000,
            tmpfs_bytes: 2000,
            max_code_bytes: 3000,
            max_file_bytes: 4000,
        }
    }

    #[test]
    fn a_report_names_only_its_own_location() {
        let spec = EnvSpec::new(EnvType::Conda, Some("ml")).unwrap();
        let report = serde_json::to_value(env_report(&spec, &images())).unwrap();
        assert_eq!(
            report,
            json!({
                "type": "conda",
                "conda_name": "ml",
                "image": "img/conda",
                "interpreter": spec.interpreter()
            })
        );
        let venv = EnvSpec::default_for(EnvType::Venv);
        let report = env_report(&venv, &images());
        assert_eq!(report.venv_path.as_deref(), Some(venv.location()));
        assert_eq!((report.conda_name, report.uv_venv_path), (None, None));
        assert_eq!(report.image, "img/venv");
    }

    #[test]
    fn the_config_report_has_every_environment_and_the_limits() {
        let isolation = vec!["network none".to_string()];
        let report = config_report(
            &envs(),
            &images(),
            "/data",
            &limits(),
            (1000, 100),
            isolation.clone(),
            &SessionSettings {
                max_sessions: 8,
                idle_timeout_secs: 60,
                max_lifetime_secs: 3600,
                state_dir: "/data/.mce-sessions".into(),
            },
        );
        assert_eq!(report.active.env_type, EnvType::Conda);
        assert_eq!(report.active.conda_name.as_deref(), Some("ml"));
        let types: Vec<EnvType> = report.environments.iter().map(|e| e.env_type).collect();
        assert_eq!(types, EnvType::ALL.to_vec());
        assert_eq!(report.code_storage_dir, "/data");
        assert_eq!(report.run_as, "1000:100");
        assert_eq!(report.isolation, isolation);
        assert_eq!(
            serde_json::to_value(&report.limits).unwrap(),
            json!({
                "timeout_secs": 30, "memory_bytes": 536870912_i64, "cpus": 1.5, "pids": 64,
                "output_bytes": 1000, "tmpfs_bytes": 2000, "max_code_bytes": 3000,
                "max_file_bytes": 4000
            })
        );
        assert_eq!(
            serde_json::to_value(&report.sessions).unwrap(),
            json!({"max_sessions": 8, "idle_timeout_secs": 60, "max_lifetime_secs": 3600})
        );
    }

    #[test]
    fn the_switch_message_says_whether_it_was_created() {
        let spec = EnvSpec::new(EnvType::Conda, Some("ml")).unwrap();
        assert_eq!(
            switched_message(&spec, true),
            "created the environment conda ml; it is now active"
        );
        assert_eq!(
            switched_message(&spec, false),
            "environment is now conda ml"
        );
    }
}
