//! Tests of sandbox::helpers against the fake engine: preparing and creating environments,
//! installs (one networked container, the report classified, timeouts), package checks, and
//! listing and removing environment volumes. The fake's containers print the helpers' JSON
//! reports as scripts/*.py would.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::runner::{IMAGE, limits};
use super::volumes::{CONDA_IMAGE, RUN_AS, ids_of, purpose, sandbox, settings, venv, volume_of};
use crate::environment::{EnvSpec, EnvType};
use crate::error::SandboxError;
use crate::sandbox::Sandbox;
use crate::sandbox::engine::{MountKind, MountSpec};
use crate::sandbox::fake::{Behaviour, FakeEngine};
use crate::sandbox::helpers::{PackageStatus, volume_matches};
use crate::sandbox::labels;
use crate::sandbox::policy::CA_PATH;
use crate::sandbox::runner::Job;
use crate::sandbox::volumes::PREPARE;

const INTERPRETER: &str = "{\"interpreter\": true}\n";
const NO_INTERPRETER: &str = "{\"interpreter\": false}\n";

fn fails(stderr: &str, status: i64) -> Behaviour {
    Behaviour::Exits {
        stdout: String::new(),
        stderr: stderr.into(),
        status,
    }
}

/// A sandbox whose environment volume for `env` is already seeded, so that the queue feeds
/// the helper containers that follow.
async fn seeded(env: &EnvSpec) -> (Arc<FakeEngine>, Arc<Sandbox>, String) {
    let (fake, sb) = sandbox(settings(0));
    let vol = sb.volumes.env_volume(env).await.unwrap();
    assert!(fake.until(|f| f.containers().is_empty()).await);
    (fake, sb, vol)
}

async fn prepare(sb: &Sandbox, env: &EnvSpec, create: bool) -> Result<bool, SandboxError> {
    let cancel = CancellationToken::new();
    sb.prepare_env(env, create, &limits(2), &cancel).await
}

#[tokio::test]
async fn prepare_env_reports_an_existing_interpreter_and_creates_nothing() {
    let env = venv();
    let (fake, sb, vol) = seeded(&env).await;
    fake.push(Behaviour::ok(INTERPRETER));
    assert!(!prepare(&sb, &env, true).await.unwrap(), "nothing created");
    let ran = ids_of(&fake, "create");
    assert_eq!(ran.len(), 1, "only the look, no creation");
    let (header, source) = fake.received(&ran[0]).unwrap();
    assert_eq!(source, PREPARE);
    assert_eq!(header["argv"][0], "/opt/venv");
    // As the run user this time, offline, still on the volume.
    let (_, spec, _) = fake.container(&ran[0]).unwrap();
    assert_eq!(spec.user.as_deref(), Some("1000:1000"));
    assert!(spec.cap_add.is_empty());
    assert_eq!(spec.network, "none");
    assert_eq!(spec.mounts[0].source, vol);
}

#[tokio::test]
async fn prepare_env_creates_a_missing_environment_when_asked() {
    let env = EnvSpec::new(EnvType::Venv, Some("/opt/envs/new")).unwrap();
    let (fake, sb, vol) = seeded(&env).await;
    fake.push(Behaviour::ok(NO_INTERPRETER));
    fake.push(Behaviour::ok("created\n"));
    assert!(prepare(&sb, &env, true).await.unwrap(), "created");
    let ran = ids_of(&fake, "create");
    assert_eq!(ran.len(), 2);
    let (header, _) = fake.received(&ran[1]).unwrap();
    assert_eq!(header["path"], "/tmp/create.py");
    let argv = ["venv", "/opt/envs/new", "/opt/conda"];
    assert_eq!(header["argv"], serde_json::json!(argv));
    let (_, spec, _) = fake.container(&ran[1]).unwrap();
    assert_eq!(spec.network, "none", "environments are created offline");
    assert_eq!(spec.user.as_deref(), Some("1000:1000"));
    let mount = MountSpec {
        kind: MountKind::Volume,
        source: vol.clone(),
        target: "/opt/envs/new".into(),
        read_only: false,
    };
    assert_eq!(spec.mounts, [mount]);
    assert!(fake.volumes().contains(&vol));
}

#[tokio::test]
async fn prepare_env_refuses_a_missing_environment_unless_asked() {
    let env = venv();
    let (fake, sb, _) = seeded(&env).await;
    fake.push(Behaviour::ok(NO_INTERPRETER));
    match prepare(&sb, &env, false).await {
        Err(SandboxError::EnvMissing { env: e }) => assert_eq!(e, "venv /opt/venv"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.count_created("create"), 1, "nothing was created");
    // A helper that fails or prints no report is an error too, saying what was being done.
    fake.push(fails("Traceback: boom\n", 1));
    fake.push(Behaviour::ok("not json\n"));
    for _ in 0..2 {
        match prepare(&sb, &env, false).await {
            Err(SandboxError::Helper { what, .. }) => assert_eq!(what, "inspect the environment"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_failed_creation_removes_the_volume() {
    let env = EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap();
    let (fake, sb, vol) = seeded(&env).await;
    let marker = labels::ready_marker_name(&vol);
    fake.push(Behaviour::ok(NO_INTERPRETER));
    fake.push(fails("CondaError: no space left on device\n", 1));
    match prepare(&sb, &env, true).await {
        Err(SandboxError::EnvCreateFailed { env: e, detail }) => {
            assert_eq!(e, "conda analysis");
            assert!(detail.contains("no space left on device"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let volumes = fake.volumes();
    assert!(!volumes.contains(&marker), "{volumes:?}");
    assert!(!volumes.contains(&vol), "{volumes:?}");
    // The next attempt starts from an empty, freshly seeded volume (prepare.py runs twice:
    // seeding as root, then looking as the run user).
    fake.push(Behaviour::ok(NO_INTERPRETER));
    fake.push(Behaviour::ok(INTERPRETER));
    assert!(!prepare(&sb, &env, true).await.unwrap());
    assert_eq!(fake.count_created("prepare"), 2);
    assert!(fake.volumes().contains(&marker));
}

/// Create containers find the interpreter; install containers do `install`.
fn installs(fake: &FakeEngine, install: Behaviour) {
    fake.behave(move |_, spec| match purpose(spec) {
        "create" => Some(Behaviour::ok(INTERPRETER)),
        "install" => Some(install.clone()),
        _ => None,
    });
}

fn requirements() -> Vec<crate::packages::ValidRequirement> {
    let entries = ["requests", "numpy==2.0", "pandas", "broken-pkg", "half"];
    let entries: Vec<String> = entries.map(String::from).to_vec();
    crate::packages::validate_requirements(&entries).unwrap()
}

const REPORT: &str = r#"{"before": {"requests": null, "numpy==2.0": "2.0", "pandas": "1.5.3", "broken-pkg": null, "half": null}, "after": {"requests": "2.31.0", "numpy==2.0": "2.0", "pandas": "2.2.1", "broken-pkg": null, "half": "0.1"}, "via": {"requests": "pip", "numpy==2.0": "pip", "pandas": "uv"}}"#;

#[tokio::test]
async fn install_runs_one_networked_container_and_classifies_the_report() {
    let (fake, sb) = sandbox(settings(0));
    installs(
        &fake,
        Behaviour::Exits {
            stdout: format!("{REPORT}\n"),
            stderr: "$ pip install requests numpy==2.0\n".into(),
            status: 0,
        },
    );
    let (env, reqs, cancel) = (venv(), requirements(), CancellationToken::new());
    let plan = crate::packages::install_plan(&env, &reqs);
    let last = crate::sandbox::output::Live::default();
    let out = sb
        .install(&env, &reqs, &plan, &limits(2), &cancel, &last)
        .await
        .unwrap();
    let got: Vec<_> = out
        .packages
        .iter()
        .map(|p| {
            (
                p.requirement.as_str(),
                p.status,
                p.version.as_deref(),
                p.via.as_deref(),
            )
        })
        .collect();
    use PackageStatus::*;
    assert_eq!(
        got,
        [
            ("requests", Installed, Some("2.31.0"), Some("pip")),
            ("numpy==2.0", AlreadyPresent, Some("2.0"), Some("pip")),
            ("pandas", Upgraded, Some("2.2.1"), Some("uv")),
            ("broken-pkg", Failed, None, None),
            ("half", Failed, Some("0.1"), None),
        ]
    );
    assert_eq!(out.packages[2].previous_version.as_deref(), Some("1.5.3"));
    assert_eq!(out.packages[1].name, "numpy");
    assert_eq!(last.last_line(), "$ pip install requests numpy==2.0");
    // One install container: the install network, the CA bundle, the volume writable.
    let ran = ids_of(&fake, "install");
    assert_eq!(ran.len(), 1);
    let (_, spec, _) = fake.container(&ran[0]).unwrap();
    assert_eq!(spec.network, "mce-install-net");
    let ca = spec.mounts.iter().find(|m| m.target == CA_PATH).unwrap();
    assert_eq!(
        (ca.source.as_str(), ca.read_only),
        ("/etc/test-ca.pem", true)
    );
    assert_eq!(spec.mounts[0].source, volume_of(IMAGE, &env, RUN_AS));
    assert!(!spec.mounts[0].read_only);
    assert!(spec.env.contains(&format!("PIP_CERT={CA_PATH}")));
    let (header, _) = fake.received(&ran[0]).unwrap();
    assert_eq!(header["path"], "/tmp/install.py");
    let sent: serde_json::Value =
        serde_json::from_str(header["argv"][0].as_str().unwrap()).unwrap();
    assert_eq!(sent, serde_json::to_value(&plan).unwrap());
    // Preparing looked first, and nothing else had the network.
    assert_eq!(fake.count_created("create"), 1);
    for id in fake.created().iter().filter(|id| **id != ran[0]) {
        assert_eq!(fake.container(id).unwrap().1.network, "none");
    }
}

#[tokio::test]
async fn an_install_that_times_out_fails_every_package() {
    let (fake, sb) = sandbox(settings(0));
    installs(&fake, Behaviour::Hangs);
    let (env, reqs, cancel) = (venv(), requirements(), CancellationToken::new());
    let plan = crate::packages::install_plan(&env, &reqs);
    let last = crate::sandbox::output::Live::default();
    let out = sb
        .install(&env, &reqs, &plan, &limits(1), &cancel, &last)
        .await
        .unwrap();
    assert!(out.run.timed_out);
    assert_eq!(out.packages.len(), reqs.len());
    for (p, r) in out.packages.iter().zip(&reqs) {
        assert_eq!(p.requirement, r.text);
        assert_eq!(p.status, PackageStatus::Failed);
        assert!(p.version.is_none() && p.via.is_none());
    }
    let id = ids_of(&fake, "install")[0].clone();
    assert!(fake.ops_on(&id).contains(&"kill".to_string()));
}

#[tokio::test]
async fn install_into_a_missing_environment_is_refused_before_any_install() {
    let (fake, sb) = sandbox(settings(0));
    fake.behave(|_, spec| (purpose(spec) == "create").then(|| Behaviour::ok(NO_INTERPRETER)));
    let (env, reqs, cancel) = (venv(), requirements(), CancellationToken::new());
    let plan = crate::packages::install_plan(&env, &reqs);
    let last = crate::sandbox::output::Live::default();
    let err = sb
        .install(&env, &reqs, &plan, &limits(2), &cancel, &last)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::EnvMissing { .. }), "{err}");
    assert_eq!(fake.count_created("install"), 0);
}

const CHECKED: &str = r#"[{"package": "numpy", "installed": true, "found_as": "distribution", "distribution": "numpy", "version": "2.0.1"}, {"package": "yaml", "installed": true, "found_as": "import", "distribution": "PyYAML", "version": "6.0"}, {"package": "nope", "installed": false}]"#;

async fn check(
    sb: &Sandbox,
    names: &[&str],
) -> Result<Vec<crate::sandbox::helpers::PackageInfo>, SandboxError> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sb.check(&venv(), &names, &limits(2), &CancellationToken::new())
        .await
}

#[tokio::test]
async fn check_parses_the_report_of_an_offline_read_only_container() {
    let (fake, sb) = sandbox(settings(0));
    fake.behave(|_, spec| {
        (purpose(spec) == "inspect").then(|| Behaviour::ok(&format!("some noise\n{CHECKED}\n")))
    });
    let infos = check(&sb, &["numpy", "yaml", "nope"]).await.unwrap();
    let got: Vec<_> = infos
        .iter()
        .map(|i| {
            (
                i.package.as_str(),
                i.installed,
                i.found_as.as_deref(),
                i.distribution.as_deref(),
                i.version.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "numpy",
                true,
                Some("distribution"),
                Some("numpy"),
                Some("2.0.1")
            ),
            ("yaml", true, Some("import"), Some("PyYAML"), Some("6.0")),
            ("nope", false, None, None, None),
        ]
    );
    let id = ids_of(&fake, "inspect")[0].clone();
    let (header, _) = fake.received(&id).unwrap();
    assert_eq!(header["path"], "/tmp/check.py");
    assert_eq!(header["argv"], serde_json::json!(["numpy", "yaml", "nope"]));
    let (_, spec, _) = fake.container(&id).unwrap();
    assert_eq!(
        (spec.network.as_str(), spec.mounts[0].read_only),
        ("none", true)
    );
}

#[tokio::test]
async fn check_maps_exit_127_to_a_missing_environment() {
    let (fake, sb) = sandbox(settings(0));
    fake.behave(|_, spec| {
        (purpose(spec) == "inspect").then(|| Behaviour::Dies {
            stdout: String::new(),
            stderr: "timeout: failed to run command '/opt/venv/bin/python'\n".into(),
            exit_code: Some(127),
            oom: false,
        })
    });
    match check(&sb, &["numpy"]).await {
        Err(SandboxError::EnvMissing { env }) => assert_eq!(env, "venv /opt/venv"),
        other => panic!("unexpected {other:?}"),
    }
    // Any other failure says what was being done, with the helper's stderr.
    fake.behave(|_, spec| (purpose(spec) == "inspect").then(|| fails("ImportError: x\n", 1)));
    match check(&sb, &["numpy"]).await {
        Err(SandboxError::Helper { what, detail }) => {
            assert_eq!(what, "check installed packages");
            assert!(detail.contains("ImportError: x"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn env_volumes_lists_the_labelled_volumes() {
    let (fake, sb) = sandbox(settings(0));
    let conda = EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap();
    sb.volumes.env_volume(&venv()).await.unwrap();
    sb.volumes.env_volume(&conda).await.unwrap();
    use crate::sandbox::engine::ContainerEngine;
    fake.ensure_volume("someone-elses", Default::default())
        .await
        .unwrap();
    let mut listed = sb.env_volumes().await.unwrap();
    listed.sort_by_key(|v| v.env_type.clone());
    let got: Vec<_> = listed
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.env_type.as_str(),
                v.location.as_str(),
                v.image.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                volume_of(CONDA_IMAGE, &conda, RUN_AS),
                "conda",
                "analysis",
                CONDA_IMAGE
            ),
            (
                volume_of(IMAGE, &venv(), RUN_AS),
                "venv",
                "/opt/venv",
                IMAGE
            ),
        ]
    );
    assert!(volume_matches(
        &listed[0],
        Some(EnvType::Conda),
        Some("analysis")
    ));
    assert!(!volume_matches(&listed[0], Some(EnvType::Venv), None));
    assert!(volume_matches(&listed[1], None, None));
}

#[tokio::test]
async fn remove_env_volume_removes_the_marker_first() {
    let env = venv();
    let (fake, sb, vol) = seeded(&env).await;
    let marker = labels::ready_marker_name(&vol);
    let n = fake.calls().len();
    sb.remove_env_volume(&vol).await.unwrap();
    assert_eq!(
        fake.calls()[n..],
        [
            format!("remove_volume {marker}"),
            format!("remove_volume {vol}")
        ]
    );
    assert!(fake.volumes().is_empty(), "{:?}", fake.volumes());
    // Forgotten: the next use seeds it again.
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), vol);
    assert_eq!(fake.count_created("prepare"), 2);
}

#[tokio::test]
async fn a_volume_in_use_is_kept_but_loses_its_marker() {
    let env = venv();
    let (fake, sb, vol) = seeded(&env).await;
    let marker = labels::ready_marker_name(&vol);
    fake.push(Behaviour::Hangs);
    let cancel = CancellationToken::new();
    let (runner, stop, e) = (Arc::clone(&sb), cancel.clone(), env.clone());
    let running = tokio::spawn(async move {
        let l = limits(2);
        let job = Job::run(&e, "/data/code/p.py", "", &l);
        runner.execute(job, &stop).await
    });
    assert!(fake.until(|f| f.count_created("run") == 1).await);
    let err = sb.remove_env_volume(&vol).await.unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(!fake.volumes().contains(&marker));
    assert!(fake.volumes().contains(&vol));
    cancel.cancel();
    assert!(running.await.unwrap().unwrap().cancelled);
    assert!(fake.until(|f| f.containers().is_empty()).await);
    // Without its marker it is never used as it is: the next use seeds it from empty.
    sb.volumes.env_volume(&env).await.unwrap();
    assert_eq!(fake.count_created("prepare"), 2);
}
