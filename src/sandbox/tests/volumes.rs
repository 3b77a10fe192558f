//! Tests of sandbox::volumes against the fake engine: seeding an environment volume once,
//! daemon-wide, under a lock container (the Prepare job, the ready marker), waiting for another
//! server's seeding, failed and half-done seeds, volume names following the image and the run
//! user, and the image ids behind them (missing images, the cache); the OCI runtime check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::runner::{IMAGE, limits};
use crate::environment::{EnvSpec, EnvType};
use crate::error::SandboxError;
use crate::limits::{Images, InstallSource};
use crate::sandbox::engine::{ContainerEngine, ContainerSpec, MountKind, MountSpec};
use crate::sandbox::fake::{Behaviour, FakeEngine};
use crate::sandbox::labels::{self, LABEL_ENV_READY, LABEL_ENV_VOLUME, LABEL_PURPOSE};
use crate::sandbox::policy::Purpose;
use crate::sandbox::runner::Job;
use crate::sandbox::volumes::PREPARE;
use crate::sandbox::{Sandbox, SandboxSettings};

/// The image of conda environments (venv and venv-uv use [`IMAGE`]).
pub(super) const CONDA_IMAGE: &str = "mce-test-conda";
pub(super) const RUN_AS: (u32, u32) = (1000, 1000);

/// Settings with small limits (2 s), a pool of `pool_size`, an install network and a CA bundle.
pub(super) fn settings(pool_size: usize) -> SandboxSettings {
    SandboxSettings {
        images: Images {
            venv: IMAGE.to_string(),
            uv: IMAGE.to_string(),
            conda: CONDA_IMAGE.to_string(),
        },
        run_as: RUN_AS,
        host_workdir: "/host/code".to_string(),
        workdir: "/data/code".to_string(),
        install: InstallSource {
            network: "mce-install-net".to_string(),
            ca_bundle: Some("/etc/test-ca.pem".to_string()),
            index_url: None,
            extra_index_url: None,
        },
        env_limits: limits(2),
        max_concurrent: 4,
        run_limits: limits(2),
        pool_size,
        preimport: vec!["numpy".to_string(), "pandas".to_string()],
        sessions: crate::sandbox::sessions::SessionSettings {
            max_sessions: 2,
            idle_timeout_secs: 60,
            max_lifetime_secs: 600,
            state_dir: std::env::temp_dir().join("mce-unit-sessions-unused"),
        },
        principal: None,
        max_runs: 0,
        copy: None,
        runtime: None,
    }
}

/// A fake engine holding both test images, and a sandbox over it.
pub(super) fn sandbox(settings: SandboxSettings) -> (Arc<FakeEngine>, Arc<Sandbox>) {
    let fake = FakeEngine::new();
    fake.add_image(IMAGE);
    fake.add_image(CONDA_IMAGE);
    let sb = Sandbox::new(settings, fake.clone());
    (fake, sb)
}

pub(super) fn venv() -> EnvSpec {
    EnvSpec::default_for(EnvType::Venv)
}

/// The volume name `env` gets with the fake's current id of `image` and `run_as`.
pub(super) fn volume_of(image: &str, env: &EnvSpec, run_as: (u32, u32)) -> String {
    labels::env_volume_name(env, &format!("sha256:image-{image}"), run_as, None)
}

/// The purpose label of a container spec.
pub(super) fn purpose(spec: &ContainerSpec) -> &str {
    spec.labels.get(LABEL_PURPOSE).map_or("", String::as_str)
}

/// Ids of the containers ever created with this purpose, in order.
pub(super) fn ids_of(fake: &FakeEngine, wanted: &str) -> Vec<String> {
    let of = |id: &String| {
        fake.container(id)
            .is_some_and(|(_, s, _)| purpose(&s) == wanted)
    };
    fake.created().into_iter().filter(of).collect()
}

/// Position of the first call equal to `call`.
pub(super) fn at(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("no call {call:?} in {calls:?}"))
}

async fn listed_with(fake: &FakeEngine, label: &str, value: &str, name: &str) -> bool {
    let listed = fake.list_volumes(label, value).await.unwrap();
    listed.iter().any(|v| v.name == name)
}

#[tokio::test]
async fn the_first_use_seeds_the_volume_under_a_lock() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let vol = volume_of(IMAGE, &env, RUN_AS);
    let (marker, lock_name) = (
        labels::ready_marker_name(&vol),
        labels::seed_lock_name(&vol),
    );
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), vol);

    let (lock_id, prep_id) = (fake.created()[0].clone(), fake.created()[1].clone());
    let calls: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| *c != format!("remove {prep_id}"))
        .collect();
    let expected = [
        format!("image_id {IMAGE}"),
        format!("volume_exists {marker}"),
        format!("create {lock_name}"),
        format!("remove_volume {vol}"),
        format!("ensure_volume {vol}"),
    ];
    assert_eq!(calls[..5], expected, "{calls:?}");
    assert!(calls[5].starts_with("create mce-"), "{calls:?}");
    assert_eq!(
        calls[6..],
        [
            format!("attach {prep_id}"),
            format!("start {prep_id}"),
            format!("ensure_volume {marker}"),
            format!("remove {lock_id}"),
        ]
    );
    // The lock: named for the volume, inert, never started, carrying a deadline.
    let (name, lock_spec, _) = fake.container(&lock_id).unwrap();
    assert_eq!(name, lock_name);
    assert_eq!(purpose(&lock_spec), labels::LOCK);
    assert_eq!(lock_spec.entrypoint, ["true"]);
    assert!(lock_spec.mounts.is_empty());
    assert_eq!(fake.ops_on(&lock_id), ["remove"]);
    // The Prepare job: root with CHOWN only, offline, the volume writable at the prefix.
    let (_, prep, _) = fake.container(&prep_id).unwrap();
    assert_eq!(purpose(&prep), "prepare");
    assert_eq!(prep.user.as_deref(), Some("0:0"));
    assert_eq!(
        (prep.cap_add, prep.cap_drop),
        (vec!["CHOWN".into()], vec!["ALL".into()])
    );
    assert_eq!(prep.network, "none");
    let mount = MountSpec {
        kind: MountKind::Volume,
        source: vol.clone(),
        target: "/opt/venv".to_string(),
        read_only: false,
    };
    assert_eq!(prep.mounts, [mount]);
    let (header, source) = fake.received(&prep_id).unwrap();
    assert_eq!(source, PREPARE);
    assert_eq!(header["path"], "/tmp/prepare.py");
    let argv = ["/opt/venv", "1000", "1000", "/opt/venv/bin/python"];
    assert_eq!(header["argv"], serde_json::json!(argv));
    // The volume carries its labels, the marker names it; nothing is left running.
    assert!(listed_with(&fake, LABEL_ENV_VOLUME, "true", &vol).await);
    assert!(listed_with(&fake, LABEL_ENV_READY, &vol, &marker).await);
    assert!(fake.until(|f| f.containers().is_empty()).await);
}

#[tokio::test]
async fn a_second_use_is_answered_from_memory() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let first = sb.volumes.env_volume(&env).await.unwrap();
    let calls = fake.calls().len();
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), first);
    assert_eq!(fake.calls().len(), calls, "{:?}", &fake.calls()[calls..]);
    assert_eq!(fake.count_created("prepare"), 1);
}

#[tokio::test]
async fn concurrent_first_uses_seed_once() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let (a, b, c) = tokio::join!(
        sb.volumes.env_volume(&env),
        sb.volumes.env_volume(&env),
        sb.volumes.env_volume(&env)
    );
    let vol = volume_of(IMAGE, &env, RUN_AS);
    assert_eq!(
        [a.unwrap(), b.unwrap(), c.unwrap()],
        [&vol; 3].map(String::clone)
    );
    assert_eq!(fake.count_created("prepare"), 1);
    assert_eq!(fake.count_created(labels::LOCK), 1);
}

#[tokio::test]
async fn another_servers_seed_is_waited_for() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let vol = volume_of(IMAGE, &env, RUN_AS);
    let marker = labels::ready_marker_name(&vol);
    let theirs = fake.add_container(&labels::seed_lock_name(&vol), HashMap::new(), false, 0);
    let other = fake.clone();
    let ready = marker.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let labels = HashMap::from([(LABEL_ENV_READY.to_string(), "x".to_string())]);
        other.ensure_volume(&ready, labels).await.unwrap();
    });
    let t = Instant::now();
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), vol);
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let calls = fake.calls();
    let tries = calls.iter().filter(|c| c.starts_with("create ")).count();
    assert!(
        tries >= 2,
        "the lock was tried again while waiting: {calls:?}"
    );
    // This server neither seeded nor touched the volume, nor the other server's lock.
    assert_eq!(fake.count_created("prepare"), 0);
    for call in [
        format!("remove_volume {vol}"),
        format!("ensure_volume {vol}"),
    ] {
        assert!(!calls.contains(&call), "{calls:?}");
    }
    assert_eq!(fake.containers(), [theirs]);
    // Known from now on.
    let n = calls.len();
    sb.volumes.env_volume(&env).await.unwrap();
    assert_eq!(fake.calls().len(), n);
}

#[tokio::test]
async fn a_seed_that_never_finishes_elsewhere_is_given_up_with_a_clear_error() {
    // The wait is the seeding timeout (0 here) plus a fixed 10 s.
    let mut s = settings(0);
    s.env_limits.timeout_secs = 0;
    let (fake, sb) = sandbox(s);
    let env = venv();
    let vol = volume_of(IMAGE, &env, RUN_AS);
    fake.add_container(&labels::seed_lock_name(&vol), HashMap::new(), false, 0);
    let t = Instant::now();
    let err = sb.volumes.env_volume(&env).await.unwrap_err();
    assert!(t.elapsed() >= Duration::from_secs(10), "{:?}", t.elapsed());
    match &err {
        SandboxError::Helper { what, detail } => {
            assert_eq!(*what, "prepare the environment volume");
            assert!(
                detail.contains("another server") && detail.contains(&vol),
                "{detail}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(fake.count_created("prepare"), 0);
    assert!(!fake.volumes().contains(&vol));
}

#[tokio::test]
async fn a_failed_prepare_reports_its_stderr_and_leaves_no_marker() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let vol = volume_of(IMAGE, &env, RUN_AS);
    fake.behave(|_, spec| {
        (purpose(spec) == "prepare").then(|| Behaviour::Exits {
            stdout: String::new(),
            stderr: "PermissionError: lchown /opt/venv/bin: not permitted\n".into(),
            status: 1,
        })
    });
    let err = sb.volumes.env_volume(&env).await.unwrap_err();
    match &err {
        SandboxError::Helper { what, detail } => {
            assert_eq!(*what, "prepare the environment volume");
            assert!(detail.starts_with("exit code 1"), "{detail}");
            assert!(
                detail.contains("lchown /opt/venv/bin: not permitted"),
                "{detail}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(!fake.volumes().contains(&labels::ready_marker_name(&vol)));
    let lock_id = ids_of(&fake, labels::LOCK)[0].clone();
    assert!(fake.calls().contains(&format!("remove {lock_id}")));
    assert!(fake.until(|f| f.containers().is_empty()).await);
    // Not remembered as complete: the next use seeds again, and succeeds.
    fake.behave(|_, _| None);
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), vol);
    assert_eq!(fake.count_created("prepare"), 2);
    assert!(fake.volumes().contains(&labels::ready_marker_name(&vol)));
}

#[tokio::test]
async fn a_volume_without_its_marker_is_seeded_again_from_empty() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let vol = volume_of(IMAGE, &env, RUN_AS);
    // The leftover of a seed that died half-way: the volume, no marker (and no labels).
    fake.ensure_volume(&vol, HashMap::new()).await.unwrap();
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), vol);
    let calls = &fake.calls()[1..];
    let removed = at(calls, &format!("remove_volume {vol}"));
    let made = at(calls, &format!("ensure_volume {vol}"));
    let prepared = calls.iter().position(|c| c.starts_with("start ")).unwrap();
    assert!(removed < made && made < prepared, "{calls:?}");
    // Made anew: it carries the labels the leftover lacked.
    assert!(listed_with(&fake, LABEL_ENV_VOLUME, "true", &vol).await);
    assert_eq!(fake.count_created("prepare"), 1);
}

#[tokio::test]
async fn a_rebuilt_image_gets_a_new_volume_once_check_image_forgets_the_old_id() {
    let (fake, sb) = sandbox(settings(0));
    let env = venv();
    let old = sb.volumes.env_volume(&env).await.unwrap();
    let image_ids = |f: &FakeEngine| {
        f.calls()
            .iter()
            .filter(|c| c.starts_with("image_id"))
            .count()
    };
    fake.set_image(IMAGE, Some("sha256:rebuilt"));
    // Cached: the rebuild is not noticed yet.
    assert_eq!(sb.volumes.env_volume(&env).await.unwrap(), old);
    assert_eq!(image_ids(&fake), 1);
    sb.check_image(&env).await.unwrap();
    assert_eq!(image_ids(&fake), 2);
    let new = sb.volumes.env_volume(&env).await.unwrap();
    assert_eq!(
        new,
        labels::env_volume_name(&env, "sha256:rebuilt", RUN_AS, None)
    );
    assert_ne!(new, old);
    assert_eq!(image_ids(&fake), 2, "check_image cached the new id");
    assert_eq!(fake.count_created("prepare"), 2, "the new volume is seeded");
    assert!(fake.volumes().contains(&labels::ready_marker_name(&new)));
}

#[tokio::test]
async fn another_run_user_gets_another_volume() {
    let (fake, sb) = sandbox(settings(0));
    let other = Sandbox::new(
        SandboxSettings {
            run_as: (1001, 1002),
            ..settings(0)
        },
        fake.clone(),
    );
    let env = venv();
    let mine = sb.volumes.env_volume(&env).await.unwrap();
    let theirs = other.volumes.env_volume(&env).await.unwrap();
    assert_eq!(mine, volume_of(IMAGE, &env, RUN_AS));
    assert_eq!(theirs, volume_of(IMAGE, &env, (1001, 1002)));
    assert_ne!(mine, theirs);
    let preps = ids_of(&fake, "prepare");
    assert_eq!(preps.len(), 2, "each volume is seeded");
    let (header, _) = fake.received(&preps[1]).unwrap();
    assert_eq!(header["argv"][1], "1001");
    assert_eq!(header["argv"][2], "1002");
}

#[tokio::test]
async fn a_missing_image_names_the_image_and_the_setting() {
    let fake = FakeEngine::new();
    let sb = Sandbox::new(settings(0), fake.clone());
    let conda = EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap();
    for (env, image, setting) in [
        (venv(), IMAGE, "VENV_IMAGE"),
        (conda, CONDA_IMAGE, "CONDA_IMAGE"),
    ] {
        let err = sb.volumes.env_volume(&env).await.unwrap_err();
        let text = err.to_string();
        match err {
            SandboxError::ImageMissing {
                image: i,
                env: e,
                setting: s,
            } => assert_eq!((i.as_str(), e, s), (image, env.env_type.as_str(), setting)),
            other => panic!("unexpected {other}"),
        }
        assert!(text.contains(image) && text.contains(setting), "{text}");
        assert!(matches!(
            sb.check_image(&env).await,
            Err(SandboxError::ImageMissing { .. })
        ));
    }
    let calls = fake.calls();
    assert!(
        calls.iter().all(|c| c.starts_with("image_id ")),
        "{calls:?}"
    );
    // Once built, it is found.
    fake.add_image(IMAGE);
    sb.check_image(&venv()).await.unwrap();
}

#[tokio::test]
async fn an_image_removed_under_a_run_is_forgotten() {
    let (fake, sb) = sandbox(settings(0));
    let (env, l, cancel) = (venv(), limits(2), CancellationToken::new());
    sb.execute(Job::run(&env, "/data/code/a.py", "", &l), &cancel)
        .await
        .unwrap();
    assert!(fake.until(|f| f.containers().is_empty()).await);
    fake.set_image(IMAGE, None);
    let err = sb
        .execute(Job::run(&env, "/data/code/a.py", "", &l), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::ImageMissing { .. }), "{err}");
    // The cached id was dropped: the next run asks the engine again.
    let n = fake.calls().len();
    let err = sb
        .execute(Job::run(&env, "/data/code/a.py", "", &l), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::ImageMissing { .. }), "{err}");
    assert_eq!(fake.calls()[n..], [format!("image_id {IMAGE}")]);
}

#[tokio::test]
async fn a_runtime_the_daemon_lacks_is_refused_with_its_list_before_any_container() {
    // The fake lists runc and runsc, and no runsc-net.
    let (fake, sb) = sandbox(SandboxSettings {
        runtime: Some("kata".to_string()),
        ..settings(0)
    });
    let err = sb.volumes.env_volume(&venv()).await.unwrap_err();
    assert!(matches!(err, SandboxError::RuntimeUnknown { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"kata\"") && text.contains("runc, runsc"),
        "{text}"
    );
    assert!(sb.check_runtime().await.is_err());
    assert!(fake.created().is_empty());
    // Without RUNTIME the daemon is not even asked.
    let (fake, sb) = sandbox(settings(0));
    sb.check_runtime().await.unwrap();
    assert!(
        !fake.calls().iter().any(|c| c == "runtimes"),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn under_a_listed_runtime_runs_use_it_and_installs_need_its_network_registration() {
    let (fake, sb) = sandbox(SandboxSettings {
        runtime: Some("runsc".to_string()),
        ..settings(0)
    });
    let env = venv();
    let volume = sb.volumes.env_volume(&env).await.unwrap();
    let l = limits(2);
    let cancel = CancellationToken::new();
    let job = Job::run(&env, "/data/code/p.py", "print(1)", &l);
    sb.volumes.run_in(&volume, &job, &cancel).await.unwrap();
    for id in fake.created() {
        let (_, spec, _) = fake.container(&id).unwrap();
        if purpose(&spec) == "lock" {
            continue;
        }
        assert_eq!(spec.runtime.as_deref(), Some("runsc"), "{}", purpose(&spec));
        assert!(spec.ulimits.iter().any(|(n, _)| n == "nproc"));
    }
    // The daemon was asked once: a runtime found is remembered.
    let asked = fake.calls().iter().filter(|c| *c == "runtimes").count();
    assert_eq!(asked, 1);
    let before = fake.created().len();
    let install = Job::helper(Purpose::Install, &env, "/tmp/i.py", "", &[], &l);
    let err = sb
        .volumes
        .run_in(&volume, &install, &cancel)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SandboxError::InstallRuntimeMissing { .. }),
        "{text}"
    );
    assert!(
        text.contains("\"runsc-net\"") && text.contains("setup-gvisor.sh"),
        "{text}"
    );
    assert_eq!(
        fake.created().len(),
        before,
        "no install container was made"
    );
}
