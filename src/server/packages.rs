//! The package tools (`install_dependencies`, `check_installed_packages`): validate the list, let
//! the sandbox install or look up, and classify what came back (installed or failed, warnings,
//! the failure message; which names are missing). Also converts the sandbox's package reports
//! into the contract's.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::State;
use super::background;
use super::contract::{
    CheckResult, InstallArgs, InstallResult, PackageInfo, PackageOutcome, PackageStatus,
    PackagesArgs, Status,
};
use super::reply::{Fallible, fail, respond};
use super::runs;
use crate::error::Error;
use crate::packages::{install_plan, validate_lookup_names, validate_requirements};
use crate::sandbox::RunOutcome;
use crate::sandbox::helpers::{self, InstallOutcome};

/// `install_dependencies`: installs requirements into the active environment, as a run (it
/// goes on in the background when it outlasts RESULT_WAIT).
pub async fn install(
    state: Arc<State>,
    args: InstallArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let env = state.envs().active_spec().clone();
    let result = InstallResult {
        env_type: Some(env.env_type),
        environment: Some(env.to_string()),
        ..Default::default()
    };
    let max = state.config.runs.max_timeout_secs;
    let limits = match background::call_limits(&state.config.install_limits, args.timeout, max) {
        Ok(limits) => limits,
        Err(e) => return fail(result, e),
    };
    let reqs = match validate_requirements(&args.packages) {
        Ok(reqs) => reqs,
        Err(e) => return fail(result, e),
    };
    let world = Arc::clone(&state);
    let started = state
        .runs
        .start("install_dependencies", None, move |rc| async move {
            let mut result = result;
            result.background.run_id = Some(rc.id.clone());
            let plan = install_plan(&env, &reqs);
            let outcome = (world.sandbox)
                .install(&env, &reqs, &plan, &limits, &rc.cancel, &rc.live)
                .await;
            // Runs from now on start on interpreters that never saw the old environment.
            world.sandbox.flush_pool();
            let answer = match outcome {
                Ok(outcome) => {
                    record_install(&mut result, outcome, limits.timeout_secs);
                    respond(&result, result.status == Status::Error)
                }
                // Stopped while the environment was being prepared: say so, not how it broke.
                Err(_) if rc.cancel.is_cancelled() => {
                    result.cancelled = Some(true);
                    result.set_error(CANCELLED.to_string());
                    respond(&result, true)
                }
                Err(e) => fail(result, e),
            };
            answer.unwrap_or_else(|e| CallToolResult::error(vec![ContentBlock::text(e.message)]))
        });
    match started {
        Ok(handle) => runs::answer_first(&state, &handle, ctx).await,
        Err(e) => fail(InstallResult::default(), e),
    }
}

/// What a cancelled install's `error` says.
const CANCELLED: &str =
    "the install was cancelled (cancel_run, or the call was cancelled before it answered)";

/// Fills `result` from an install: which requirements are installed and which failed, the
/// installers' output and warnings; failed (with why) when any requirement failed.
fn record_install(result: &mut InstallResult, outcome: InstallOutcome, timeout_secs: u64) {
    let (ok, failed): (Vec<_>, Vec<_>) = outcome
        .packages
        .iter()
        .partition(|p| p.status != helpers::PackageStatus::Failed);
    let run = &outcome.run;
    let failed: Vec<&str> = failed.iter().map(|p| p.requirement.as_str()).collect();
    result.warnings = Some(warnings(&run.stderr));
    result.installed_packages = Some(ok.iter().map(|p| p.requirement.clone()).collect());
    result.failed_packages = Some(failed.iter().map(|r| r.to_string()).collect());
    result.output = Some(run.stderr.clone());
    result.duration_ms = Some(run.duration.as_millis() as u64);
    result.timed_out = Some(run.timed_out);
    result.cancelled = Some(run.cancelled);
    if !failed.is_empty() {
        result.set_error(install_failure(run, &failed, timeout_secs));
    }
    result.packages = Some(outcome.packages.into_iter().map(Into::into).collect());
}

/// The installers' lines that mention a warning (in any case).
fn warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("warning"))
        .map(str::to_string)
        .collect()
}

/// The `error` text of an install in which the requirements `failed` were not installed.
fn install_failure(run: &RunOutcome, failed: &[&str], timeout_secs: u64) -> String {
    if run.timed_out {
        format!(
            "the install did not finish within {timeout_secs} s (the call's `timeout`, \
             INSTALL_TIMEOUT when not given, at most MAX_TIMEOUT)"
        )
    } else if run.cancelled {
        CANCELLED.to_string()
    } else {
        format!("could not install {}; see output", failed.join(", "))
    }
}

/// `check_installed_packages`: looks names up in the active environment.
pub async fn check(
    state: &State,
    args: PackagesArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let env = state.envs().active_spec().clone();
    let mut result = CheckResult {
        env_type: Some(env.env_type),
        environment: Some(env.to_string()),
        ..Default::default()
    };
    let checked = match validate_lookup_names(&args.packages) {
        Ok(names) => state
            .sandbox
            .check(&env, &names, &state.config.limits, &ctx.ct)
            .await
            .map_err(Error::from),
        Err(e) => Err(e.into()),
    };
    match checked {
        Ok(details) => {
            record_check(&mut result, details);
            respond(&result, false)
        }
        Err(e) => fail(result, e),
    }
}

/// Fills `result` from a lookup: whether all names were found, the missing ones, the details.
fn record_check(result: &mut CheckResult, details: Vec<helpers::PackageInfo>) {
    let missing: Vec<String> = details
        .iter()
        .filter(|d| !d.installed)
        .map(|d| d.package.clone())
        .collect();
    result.all_installed = Some(missing.is_empty());
    result.not_installed = Some(missing);
    result.package_details = Some(details.into_iter().map(Into::into).collect());
}

impl From<helpers::PackageStatus> for PackageStatus {
    fn from(s: helpers::PackageStatus) -> Self {
        match s {
            helpers::PackageStatus::Installed => PackageStatus::Installed,
            helpers::PackageStatus::AlreadyPresent => PackageStatus::AlreadyPresent,
            helpers::PackageStatus::Upgraded => PackageStatus::Upgraded,
            helpers::PackageStatus::Failed => PackageStatus::Failed,
        }
    }
}

impl From<helpers::PackageOutcome> for PackageOutcome {
    fn from(p: helpers::PackageOutcome) -> Self {
        PackageOutcome {
            requirement: p.requirement,
            name: p.name,
            status: p.status.into(),
            version: p.version,
            previous_version: p.previous_version,
            via: p.via,
        }
    }
}

impl From<helpers::PackageInfo> for PackageInfo {
    fn from(p: helpers::PackageInfo) -> Self {
        PackageInfo {
            package: p.package,
            installed: p.installed,
            found_as: p.found_as,
            distribution: p.distribution,
            version: p.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn run(stderr: &str) -> RunOutcome {
        RunOutcome {
            exit_code: Some(0),
            stdout: String::new(),
            stderr: stderr.into(),
            truncated: false,
            timed_out: false,
            oom_killed: false,
            cancelled: false,
            duration: Duration::from_millis(2500),
        }
    }

    fn package(req: &str, status: helpers::PackageStatus) -> helpers::PackageOutcome {
        let installed = status != helpers::PackageStatus::Failed;
        helpers::PackageOutcome {
            requirement: req.into(),
            name: req.split('>').next().unwrap_or(req).into(),
            status,
            version: installed.then(|| "2.0".into()),
            previous_version: (status == helpers::PackageStatus::Upgraded).then(|| "1.0".into()),
            via: installed.then(|| "pip".into()),
        }
    }

    #[test]
    fn warnings_are_the_lines_that_mention_one() {
        let stderr = "Collecting x\nWARNING: pip is old\nok\n  DeprecationWarning: y";
        assert_eq!(
            warnings(stderr),
            vec!["WARNING: pip is old", "  DeprecationWarning: y"]
        );
        assert!(warnings("all good\n").is_empty());
    }

    #[test]
    fn install_failure_says_why() {
        let failed = ["nope", "bad>=9"];
        assert_eq!(
            install_failure(&run(""), &failed, 300),
            "could not install nope, bad>=9; see output"
        );
        let late = RunOutcome {
            timed_out: true,
            ..run("")
        };
        assert_eq!(
            install_failure(&late, &failed, 300),
            "the install did not finish within 300 s (the call's `timeout`, INSTALL_TIMEOUT \
             when not given, at most MAX_TIMEOUT)"
        );
        let cancelled = RunOutcome {
            cancelled: true,
            ..run("")
        };
        assert_eq!(install_failure(&cancelled, &failed, 300), CANCELLED);
    }

    #[test]
    fn a_full_install_succeeds() {
        let mut result = InstallResult::default();
        let outcome = InstallOutcome {
            packages: vec![
                package("pandas>=2", helpers::PackageStatus::Installed),
                package("numpy", helpers::PackageStatus::AlreadyPresent),
            ],
            run: run("WARNING: cache\n"),
        };
        record_install(&mut result, outcome, 300);
        assert_eq!(result.status, Status::Success);
        assert_eq!(result.error, None);
        assert_eq!(
            result.installed_packages,
            Some(vec!["pandas>=2".to_string(), "numpy".to_string()])
        );
        assert_eq!(result.failed_packages, Some(vec![]));
        assert_eq!(result.warnings, Some(vec!["WARNING: cache".to_string()]));
        assert_eq!(result.output.as_deref(), Some("WARNING: cache\n"));
        assert_eq!(result.duration_ms, Some(2500));
        assert_eq!(result.timed_out, Some(false));
    }

    #[test]
    fn a_cancelled_install_says_so_in_a_field_list_runs_reads() {
        let mut result = InstallResult::default();
        let outcome = InstallOutcome {
            packages: vec![package("torch", helpers::PackageStatus::Failed)],
            run: RunOutcome {
                cancelled: true,
                ..run("")
            },
        };
        record_install(&mut result, outcome, 300);
        assert_eq!(result.cancelled, Some(true));
        assert_eq!(result.error.as_deref(), Some(CANCELLED));
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(value["cancelled"], true, "{value}");
    }

    #[test]
    fn a_failed_requirement_fails_the_install() {
        let mut result = InstallResult::default();
        let outcome = InstallOutcome {
            packages: vec![
                package("requests", helpers::PackageStatus::Upgraded),
                package("nope", helpers::PackageStatus::Failed),
            ],
            run: run("ERROR: no matching distribution\n"),
        };
        record_install(&mut result, outcome, 300);
        assert_eq!(result.status, Status::Error);
        assert_eq!(
            result.error.as_deref(),
            Some("could not install nope; see output")
        );
        assert_eq!(
            result.installed_packages,
            Some(vec!["requests".to_string()])
        );
        assert_eq!(result.failed_packages, Some(vec!["nope".to_string()]));
        let packages = serde_json::to_value(&result.packages).unwrap();
        assert_eq!(
            packages,
            json!([
                {"requirement": "requests", "name": "requests", "status": "upgraded",
                 "version": "2.0", "previous_version": "1.0", "via": "pip"},
                {"requirement": "nope", "name": "nope", "status": "failed"}
            ])
        );
    }

    #[test]
    fn package_statuses_keep_their_wire_names() {
        let wire = |status| {
            let outcome = PackageOutcome::from(package("x>=1", status));
            serde_json::to_value(outcome.status).unwrap()
        };
        assert_eq!(wire(helpers::PackageStatus::Installed), "installed");
        assert_eq!(
            wire(helpers::PackageStatus::AlreadyPresent),
            "already_present"
        );
        assert_eq!(wire(helpers::PackageStatus::Upgraded), "upgraded");
        assert_eq!(wire(helpers::PackageStatus::Failed), "failed");
    }

    #[test]
    fn a_check_lists_the_missing_names() {
        let info = |package: &str, installed: bool| helpers::PackageInfo {
            package: package.into(),
            installed,
            found_as: installed.then(|| "import".into()),
            distribution: installed.then(|| "python-dateutil".into()),
            version: installed.then(|| "2.9.0".into()),
        };
        let mut result = CheckResult::default();
        record_check(
            &mut result,
            vec![info("dateutil", true), info("nope", false)],
        );
        assert_eq!(result.all_installed, Some(false));
        assert_eq!(result.not_installed, Some(vec!["nope".to_string()]));
        assert_eq!(
            serde_json::to_value(&result.package_details).unwrap(),
            json!([
                {"package": "dateutil", "installed": true, "found_as": "import",
                 "distribution": "python-dateutil", "version": "2.9.0"},
                {"package": "nope", "installed": false}
            ])
        );

        let mut all = CheckResult::default();
        record_check(&mut all, vec![info("dateutil", true)]);
        assert_eq!(all.all_installed, Some(true));
        assert_eq!(all.not_installed, Some(vec![]));
    }
}
