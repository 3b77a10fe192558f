//! Tests of sandbox::pool against the fake engine, through the `Sandbox`: filling with idle
//! pre-started runners, runs taking them (and only runs), refills, flushes (after installs, on
//! another environment, when the engine went away), containers made for an old generation,
//! containers that died while waiting, shutdown (closing, sweeping containers being made).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runner::{IMAGE, limits};
use super::volumes::{RUN_AS, ids_of, purpose, sandbox, settings, venv, volume_of};
use crate::environment::{EnvSpec, EnvType};
use crate::sandbox::Sandbox;
use crate::sandbox::engine::{ContainerEngine, ContainerSpec};
use crate::sandbox::fake::{Behaviour, FakeEngine};
use crate::sandbox::labels::{self, LABEL_DEADLINE, LABEL_ENV};
use crate::sandbox::lifecycle::unix_now;
use crate::sandbox::policy::{DEADLINE_GRACE_SECS, Purpose};
use crate::sandbox::pool::{IDLE_SECS, WARM_PREFIX};
use crate::sandbox::runner::{Job, RunOutcome};

/// Ids of every pool container ever made (idle ones, and taken ones by their new name).
fn warm_ids(fake: &FakeEngine) -> Vec<String> {
    let warm = |id: &String| {
        fake.container(id)
            .is_some_and(|(n, _, _)| n.starts_with(WARM_PREFIX) || n == labels::used_name(id))
    };
    fake.created().into_iter().filter(warm).collect()
}

/// Pool containers print `warm`, cold run containers `cold`; anything else exits quietly.
fn warm_or_cold(name: &str, spec: &ContainerSpec) -> Option<Behaviour> {
    if name.starts_with(WARM_PREFIX) {
        Some(Behaviour::ok("warm\n"))
    } else {
        (purpose(spec) == "run").then(|| Behaviour::ok("cold\n"))
    }
}

/// Waits until the pool holds `n` ready containers and makes no more.
async fn settled(fake: &FakeEngine, sb: &Sandbox, n: usize) -> bool {
    fake.until(|_| sb.pool.ready() == n && sb.pool.filling() == 0)
        .await
}

async fn run(sb: &Sandbox, env: &EnvSpec, code: &str) -> RunOutcome {
    let (l, cancel) = (limits(2), CancellationToken::new());
    let job = Job::run(env, "/data/code/p.py", code, &l);
    sb.execute(job, &cancel).await.unwrap()
}

/// The one pool container that received a program.
fn used_one(fake: &FakeEngine, among: &[String]) -> String {
    let used: Vec<&String> = among
        .iter()
        .filter(|id| fake.received(id).is_some())
        .collect();
    assert_eq!(used.len(), 1, "{used:?}");
    used[0].clone()
}

fn absent(fake: &FakeEngine, ids: &[String]) -> bool {
    let present = fake.containers();
    ids.iter().all(|id| !present.contains(id))
}

/// A pool of 2 filling while another server seeds the volume: its makers wait for the marker.
async fn filling_behind_a_foreign_seed(fake: &FakeEngine, sb: &Sandbox) -> (String, String) {
    let vol = volume_of(IMAGE, &venv(), RUN_AS);
    let theirs = fake.add_container(&labels::seed_lock_name(&vol), HashMap::new(), false, 0);
    sb.warm_up(&venv());
    assert_eq!(sb.pool.filling(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.count_created("run"), 0);
    (theirs, labels::ready_marker_name(&vol))
}

async fn seeded_elsewhere(fake: &FakeEngine, marker: &str) {
    fake.ensure_volume(marker, HashMap::new()).await.unwrap();
}

#[tokio::test]
async fn warm_up_fills_the_pool_with_idle_pre_started_runners() {
    let (fake, sb) = sandbox(settings(2));
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let warm = warm_ids(&fake);
    assert_eq!(warm.len(), 2);
    assert_eq!(fake.count_created("run"), 2);
    assert_eq!(
        fake.count_created("prepare"),
        1,
        "the volume was seeded first"
    );
    let lifetime = IDLE_SECS + 2 + DEADLINE_GRACE_SECS;
    let vol = volume_of(IMAGE, &env, RUN_AS);
    for id in &warm {
        let (name, spec, running) = fake.container(id).unwrap();
        assert!(name.len() > WARM_PREFIX.len(), "{name}");
        assert!(running, "its runner waits for a program");
        assert!(fake.received(id).is_none());
        assert_eq!(fake.ops_on(id), ["attach", "start"]);
        assert_eq!(purpose(&spec), "run");
        assert_eq!(spec.entrypoint[3], lifetime.to_string());
        assert_eq!(spec.entrypoint.last().unwrap(), "numpy,pandas");
        let deadline: u64 = spec.labels[LABEL_DEADLINE].parse().unwrap();
        assert!(deadline + 5 >= unix_now() + lifetime, "{deadline}");
        assert_eq!(spec.network, "none");
        assert_eq!(
            (spec.mounts[0].source.as_str(), spec.mounts[0].read_only),
            (vol.as_str(), true)
        );
    }
    let names: Vec<String> = warm
        .iter()
        .map(|id| fake.container(id).unwrap().0)
        .collect();
    assert_ne!(names[0], names[1]);
    // Full: warming up the same environment again makes nothing.
    sb.warm_up(&env);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.count_created("run"), 2);
    assert_eq!(fake.containers().len(), 2);
}

#[tokio::test]
async fn a_run_takes_a_warm_container_which_is_renamed_and_removed_and_the_pool_refills() {
    let (fake, sb) = sandbox(settings(2));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let warm = warm_ids(&fake);
    let before = fake.calls().len();
    let out = run(&sb, &env, "print('hi')").await;
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), "warm\n"));
    let during = fake.calls()[before..].to_vec();
    let creates = during.iter().filter(|c| c.starts_with("create "));
    let refill = format!("create {WARM_PREFIX}");
    assert!(
        creates.clone().all(|c| c.starts_with(&refill)),
        "{during:?}"
    );
    assert!(creates.count() <= 1, "{during:?}");
    let used = used_one(&fake, &warm);
    assert_eq!(fake.received(&used).unwrap().1, "print('hi')");
    let renamed = labels::used_name(&used);
    assert!(fake.calls().contains(&format!("rename {used} {renamed}")));
    assert_eq!(fake.container(&used).unwrap().0, renamed);
    assert!(fake.until(|f| absent(f, std::slice::from_ref(&used))).await);
    assert!(settled(&fake, &sb, 2).await);
    assert_eq!(fake.count_created("run"), 3, "one refill");
    assert_eq!(fake.count_created("prepare"), 1);
    // The refill serves the next run: both remaining containers are fresh.
    let out = run(&sb, &env, "print('again')").await;
    assert_eq!(out.stdout, "warm\n");
    assert!(settled(&fake, &sb, 2).await);
    assert_eq!(fake.count_created("run"), 4);
    assert_eq!(warm_ids(&fake).len(), 4, "no cold container");
}

#[tokio::test]
async fn other_jobs_never_take_warm_containers() {
    let (fake, sb) = sandbox(settings(2));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let warm = warm_ids(&fake);
    let (l, cancel) = (limits(2), CancellationToken::new());
    for p in [Purpose::Inspect, Purpose::Install, Purpose::Create] {
        let job = Job::helper(p, &env, "/tmp/helper.py", "", &[], &l);
        let out = sb.execute(job, &cancel).await.unwrap();
        assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), ""), "{p:?}");
        assert_eq!(fake.count_created(p.as_str()), 1, "{p:?}");
    }
    assert!(warm.iter().all(|id| fake.received(id).is_none()));
    assert_eq!(sb.pool.ready(), 2);
    assert_eq!(fake.count_created("run"), 2);
    assert_eq!(warm_ids(&fake), warm);
}

#[tokio::test]
async fn a_run_longer_than_the_pools_timeout_goes_cold() {
    // Pool containers kill themselves EXECUTION_TIMEOUT (here 2 s) after their idle wait; a call
    // that asked for more (up to MAX_TIMEOUT) must not be handed one.
    let (fake, sb) = sandbox(settings(2));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let warm = warm_ids(&fake);
    let cancel = CancellationToken::new();
    let long = limits(3);
    let out = sb
        .execute(Job::run(&env, "/data/code/p.py", "", &long), &cancel)
        .await
        .unwrap();
    assert_eq!(out.stdout, "cold\n");
    assert!(warm.iter().all(|id| fake.received(id).is_none()));
    let short = limits(1);
    let out = sb
        .execute(Job::run(&env, "/data/code/p.py", "", &short), &cancel)
        .await
        .unwrap();
    assert_eq!(
        out.stdout, "warm\n",
        "a shorter timeout fits a warm container"
    );
}

#[tokio::test]
async fn flush_replaces_every_ready_container() {
    let (fake, sb) = sandbox(settings(2));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let old = warm_ids(&fake);
    sb.flush_pool();
    assert!(fake.until(|f| f.count_created("run") == 4).await);
    assert!(settled(&fake, &sb, 2).await);
    assert!(
        fake.until(|f| absent(f, &old)).await,
        "{:?}",
        fake.containers()
    );
    let new: Vec<String> = warm_ids(&fake)
        .into_iter()
        .filter(|id| !old.contains(id))
        .collect();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|id| fake.container(id).unwrap().2));
    let out = run(&sb, &env, "").await;
    assert_eq!(out.stdout, "warm\n");
    assert!(new.contains(&used_one(&fake, &new)));
    assert!(old.iter().all(|id| fake.received(id).is_none()));
}

#[tokio::test]
async fn warm_up_with_another_environment_serves_that_one() {
    let (fake, sb) = sandbox(settings(2));
    fake.behave(warm_or_cold);
    let (env, other) = (
        venv(),
        EnvSpec::new(EnvType::Venv, Some("/opt/other")).unwrap(),
    );
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let old = warm_ids(&fake);
    sb.warm_up(&other);
    assert!(fake.until(|f| f.count_created("run") == 4).await);
    assert!(settled(&fake, &sb, 2).await);
    assert!(fake.until(|f| absent(f, &old)).await);
    assert_eq!(
        fake.count_created("prepare"),
        2,
        "the new environment's volume was seeded"
    );
    let new: Vec<String> = warm_ids(&fake)
        .into_iter()
        .filter(|id| !old.contains(id))
        .collect();
    let other_vol = volume_of(IMAGE, &other, RUN_AS);
    for id in &new {
        let (_, spec, _) = fake.container(id).unwrap();
        assert_eq!(spec.labels[LABEL_ENV], other.to_string());
        assert_eq!(spec.mounts[0].source, other_vol);
        assert_eq!(spec.mounts[0].target, "/opt/other");
    }
    let out = run(&sb, &other, "").await;
    assert_eq!(out.stdout, "warm\n");
    assert!(new.contains(&used_one(&fake, &new)));
}

#[tokio::test]
async fn pool_size_zero_makes_nothing_and_runs_go_cold() {
    let (fake, sb) = sandbox(settings(0));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    let out = run(&sb, &env, "").await;
    assert_eq!(out.stdout, "cold\n");
    let runs = ids_of(&fake, "run");
    assert_eq!(runs.len(), 1);
    let name = fake.container(&runs[0]).unwrap().0;
    assert!(
        name.starts_with("mce-") && !name.starts_with(WARM_PREFIX),
        "{name}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.count_created("run"), 1, "no refill");
    assert_eq!(sb.pool.ready(), 0);
}

#[tokio::test]
async fn containers_made_for_an_old_generation_are_removed_and_replaced() {
    let (fake, sb) = sandbox(settings(2));
    let (theirs, marker) = filling_behind_a_foreign_seed(&fake, &sb).await;
    // An install finishes while the pool's containers are still being made.
    sb.flush_pool();
    seeded_elsewhere(&fake, &marker).await;
    assert!(
        fake.until(|f| f.count_created("run") == 4).await,
        "{}",
        fake.count_created("run")
    );
    assert!(settled(&fake, &sb, 2).await, "ready {}", sb.pool.ready());
    let warm = warm_ids(&fake);
    let (stale, fresh) = warm.split_at(2);
    assert!(
        fake.until(|f| absent(f, stale)).await,
        "{:?}",
        fake.containers()
    );
    let mut left = fake.containers();
    left.sort();
    assert_eq!(left, [theirs, fresh[0].clone(), fresh[1].clone()]);
}

#[tokio::test]
async fn a_warm_container_whose_stream_broke_is_discarded_and_the_run_goes_cold() {
    let (fake, sb) = sandbox(settings(1));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 1).await);
    let w = warm_ids(&fake)[0].clone();
    // The daemon restarted: the idle runner's attach broke while it waited.
    fake.cut_streams();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = run(&sb, &env, "print(1)").await;
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), "cold\n"));
    assert!(fake.received(&w).is_none());
    assert!(fake.until(|f| absent(f, std::slice::from_ref(&w))).await);
    assert!(fake.calls().contains(&format!("remove {w}")));
    // Replaced by a fresh one.
    assert!(settled(&fake, &sb, 1).await);
    assert_eq!(warm_ids(&fake).len(), 2);
}

#[tokio::test]
async fn a_warm_container_that_died_is_discarded_and_the_run_goes_cold() {
    let (fake, sb) = sandbox(settings(1));
    fake.behave(warm_or_cold);
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 1).await);
    let w = warm_ids(&fake)[0].clone();
    // Its in-container deadline killed it: its stream ended.
    fake.kill(&w).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = run(&sb, &env, "print(1)").await;
    assert_eq!(out.stdout, "cold\n");
    assert!(fake.received(&w).is_none());
    assert!(fake.until(|f| absent(f, std::slice::from_ref(&w))).await);
    let cold = ids_of(&fake, "run")
        .into_iter()
        .find(|id| fake.received(id).is_some())
        .unwrap();
    assert!(!warm_ids(&fake).contains(&cold));
}

#[tokio::test]
async fn the_engine_going_away_mid_run_flushes_the_pool() {
    let (fake, sb) = sandbox(settings(2));
    let cutting = Arc::new(AtomicBool::new(true));
    let c = Arc::clone(&cutting);
    fake.behave(move |name, _| {
        (name.starts_with(WARM_PREFIX) && c.load(Ordering::SeqCst)).then(|| Behaviour::Cut {
            stdout: "partial\n".into(),
            down: true,
        })
    });
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    cutting.store(false, Ordering::SeqCst);
    let warm = warm_ids(&fake);
    let (l, cancel) = (limits(2), CancellationToken::new());
    let err = sb
        .execute(Job::run(&env, "/data/code/p.py", "", &l), &cancel)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let used = used_one(&fake, &warm);
    let idle = warm.iter().find(|id| **id != used).unwrap().clone();
    // The idle one was dropped from the pool (its removal waits for the engine).
    assert!(settled(&fake, &sb, 0).await, "ready {}", sb.pool.ready());
    assert!(fake.calls().contains(&format!("remove {idle}")));
    assert!(fake.containers().contains(&idle));
    // Once the engine is back, runs work again and the leftovers go.
    fake.set_down(false);
    let out = run(&sb, &env, "").await;
    assert_eq!(out.exit_code, Some(0));
    assert!(
        fake.until(|f| absent(f, &[idle.clone(), used.clone()]))
            .await
    );
    assert!(settled(&fake, &sb, 2).await);
}

#[tokio::test]
async fn remove_own_waits_for_containers_being_made_and_removes_them() {
    let (fake, sb) = sandbox(settings(2));
    let (theirs, marker) = filling_behind_a_foreign_seed(&fake, &sb).await;
    let other = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        seeded_elsewhere(&other, &marker).await;
    });
    let removed = sb.remove_own().await.unwrap();
    assert_eq!(fake.count_created("run"), 2, "made while remove_own swept");
    assert_eq!(removed, 2);
    assert_eq!(fake.containers(), [theirs], "the other server's lock stays");
    assert_eq!(sb.pool.filling(), 0);
}

#[tokio::test]
async fn close_stops_refilling() {
    let (fake, sb) = sandbox(settings(2));
    let env = venv();
    sb.warm_up(&env);
    assert!(settled(&fake, &sb, 2).await);
    let warm = warm_ids(&fake);
    sb.close();
    sb.flush_pool();
    assert_eq!(sb.pool.filling(), 0, "no maker was started");
    assert!(fake.until(|f| absent(f, &warm)).await);
    assert!(sb.pool.take(&env).is_none());
    assert_eq!(sb.pool.filling(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.count_created("run"), 2, "nothing new after close");
    assert_eq!((sb.pool.ready(), sb.pool.filling()), (0, 0));
}

#[tokio::test]
async fn containers_being_made_when_closed_are_never_created() {
    let (fake, sb) = sandbox(settings(2));
    let (theirs, marker) = filling_behind_a_foreign_seed(&fake, &sb).await;
    sb.close();
    seeded_elsewhere(&fake, &marker).await;
    assert!(fake.until(|_| sb.pool.filling() == 0).await);
    assert_eq!(sb.remove_own().await.unwrap(), 0);
    assert_eq!(fake.count_created("run"), 0);
    assert_eq!(sb.pool.ready(), 0);
    assert_eq!(fake.containers(), [theirs]);
}

/// Worlds (HTTP principals) share one lifecycle; each runs at most its share at once, and a
/// world at its share does not hold up another.
#[tokio::test]
async fn a_world_runs_at_most_its_share_and_does_not_hold_up_another() {
    use crate::sandbox::SandboxSettings;
    use crate::sandbox::lifecycle::Lifecycle;
    let fake = FakeEngine::new();
    fake.add_image(IMAGE);
    fake.behave(|_, spec| (purpose(spec) == "run").then_some(Behaviour::Hangs));
    let life = Lifecycle::new(fake.clone(), 4);
    let world = |name: &str| {
        let settings = SandboxSettings {
            principal: Some(name.to_string()),
            max_runs: 1,
            ..settings(0)
        };
        Sandbox::in_world(settings, life.clone())
    };
    let (a, b) = (world("a"), world("b"));
    let env = venv();
    let mut runs = Vec::new();
    for sb in [&a, &a, &b] {
        let (sb, env) = (Arc::clone(sb), env.clone());
        runs.push(tokio::spawn(async move { run(&sb, &env, "").await }));
    }
    assert!(fake.until(|f| f.count_created("run") == 2).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.count_created("run"),
        2,
        "a's second run waits for its first"
    );
    let names: Vec<String> = ids_of(&fake, "env-volume-seed")
        .into_iter()
        .chain(fake.volumes())
        .collect();
    assert!(
        names.iter().any(|v| v.starts_with("mce-venv-a-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|v| v.starts_with("mce-venv-b-")),
        "{names:?}"
    );
    for r in runs {
        assert!(r.await.unwrap().timed_out);
    }
    assert_eq!(fake.count_created("run"), 3);
}
