//! Tests of sandbox::lifecycle against the fake engine: the leftover sweep (who is dead, who
//! is spared), this instance's shutdown sweep, closing, removals retried once the engine is
//! back, slots, guards and the sentinel.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runner::{IMAGE, limits, setup, spec};
use crate::environment::{EnvSpec, EnvType};
use crate::error::SandboxError;
use crate::sandbox::engine::Created;
use crate::sandbox::fake::{Behaviour, FakeEngine, Step};
use crate::sandbox::labels::{self, ORPHAN_GRACE_SECS, SENTINEL};
use crate::sandbox::lifecycle::{Lifecycle, unix_now};
use crate::sandbox::policy;
use crate::sandbox::runner::{self, Job};

fn now() -> i64 {
    unix_now() as i64
}

/// Labels of a container of `instance` with `purpose`, expiring `deadline_in` seconds from now.
fn labelled(instance: &str, purpose: &str, deadline_in: i64) -> HashMap<String, String> {
    labels::base_labels(instance, (now() + deadline_in).max(0) as u64, purpose)
}

/// `add_container` for a container created `age` seconds ago.
fn add(
    fake: &FakeEngine,
    name: &str,
    l: HashMap<String, String>,
    running: bool,
    age: i64,
) -> String {
    fake.add_container(name, l, running, now() - age)
}

#[tokio::test]
async fn leftovers_of_dead_instances_and_past_deadline_go() {
    let (fake, life) = setup(1);
    let old = ORPHAN_GRACE_SECS + 60;
    // "live" has a running sentinel; "gone" has a stopped one; "dead" has none.
    add(&fake, "s-live", labelled("live", SENTINEL, 3600), true, old);
    let expired = add(&fake, "live-expired", labelled("live", "run", -1), true, 5);
    let gone_sentinel = add(
        &fake,
        "s-gone",
        labelled("gone", SENTINEL, 3600),
        false,
        old,
    );
    let gone_run = add(&fake, "gone-run", labelled("gone", "run", 3600), true, old);
    let dead_run = add(
        &fake,
        "dead-run",
        labelled("dead", "install", 3600),
        true,
        old,
    );
    let removed = life.remove_leftovers().await.unwrap();
    assert_eq!(removed, 4);
    let left = fake.containers();
    for id in [&expired, &gone_sentinel, &gone_run, &dead_run] {
        assert!(!left.contains(id), "{id} should be gone: {left:?}");
    }
    assert_eq!(left.len(), 1, "only the live sentinel stays");
    assert!(fake.calls()[0].starts_with(&format!("list {}=true", labels::LABEL_MANAGED)));
}

#[tokio::test]
async fn leftovers_spare_live_own_and_young_containers() {
    let (fake, life) = setup(1);
    let old = ORPHAN_GRACE_SECS + 60;
    add(&fake, "s-live", labelled("live", SENTINEL, 3600), true, old);
    add(&fake, "live-run", labelled("live", "run", 3600), true, old);
    // This instance has no sentinel yet, and one container is even past its deadline.
    add(
        &fake,
        "own-run",
        labelled(life.instance(), "run", 3600),
        true,
        old,
    );
    add(
        &fake,
        "own-expired",
        labelled(life.instance(), "run", -5),
        true,
        old,
    );
    // A dead instance's container younger than the grace: its server may be starting up.
    add(&fake, "young", labelled("starting", "run", 3600), true, 1);
    assert_eq!(life.remove_leftovers().await.unwrap(), 0);
    assert_eq!(fake.containers().len(), 5);
    assert!(!fake.calls().iter().any(|c| c.starts_with("remove")));
}

#[tokio::test]
async fn the_grace_period_ends() {
    let (fake, life) = setup(1);
    let just_in = add(
        &fake,
        "a",
        labelled("x", "run", 3600),
        true,
        ORPHAN_GRACE_SECS - 2,
    );
    let past = add(
        &fake,
        "b",
        labelled("x", "run", 3600),
        true,
        ORPHAN_GRACE_SECS + 2,
    );
    assert_eq!(life.remove_leftovers().await.unwrap(), 1);
    assert_eq!(fake.containers(), [just_in]);
    assert!(fake.calls().contains(&format!("remove {past}")));
}

#[tokio::test]
async fn remove_own_removes_exactly_this_instances_containers() {
    let (fake, life) = setup(2);
    let mut own = Vec::new();
    for purpose in ["run", "install"] {
        match life.create(&spec(&life, purpose), None).await.unwrap() {
            Created::Id(id) => own.push(id),
            other => panic!("{other:?}"),
        }
    }
    own.push(add(
        &fake,
        "own-sentinel",
        labelled(life.instance(), SENTINEL, 60),
        true,
        0,
    ));
    let other = add(
        &fake,
        "other",
        labelled("someone-else", "run", 3600),
        true,
        0,
    );
    let unmanaged = fake.add_container("unrelated", HashMap::new(), true, now());
    assert_eq!(life.remove_own(|| false).await.unwrap(), 3);
    let mut left = fake.containers();
    left.sort();
    assert_eq!(left, [other, unmanaged]);
    for id in &own {
        assert!(fake.calls().contains(&format!("remove {id}")));
    }
}

#[tokio::test]
async fn remove_own_sweeps_again_while_the_pool_is_busy() {
    let (fake, life) = setup(1);
    let busy = std::sync::atomic::AtomicUsize::new(2);
    let removed = life
        .remove_own(|| {
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            busy.load(std::sync::atomic::Ordering::SeqCst) > 0
        })
        .await
        .unwrap();
    assert_eq!(removed, 0);
    let lists = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("list"))
        .count();
    assert_eq!(lists, 2, "swept until the pool was no longer busy");
}

#[tokio::test]
async fn close_makes_create_fail_with_shutting_down() {
    let (fake, life) = setup(1);
    assert!(matches!(
        life.create(&spec(&life, "run"), None).await,
        Ok(Created::Id(_))
    ));
    life.close();
    assert!(life.is_closed());
    let err = life.create(&spec(&life, "run"), None).await.unwrap_err();
    assert!(matches!(err, SandboxError::ShuttingDown), "{err}");
    assert_eq!(
        fake.created().len(),
        1,
        "nothing reached the engine after close"
    );
}

#[tokio::test]
async fn removals_failed_while_down_are_retried_after_a_successful_create() {
    let (fake, life) = setup(1);
    let Created::Id(id) = life.create(&spec(&life, "run"), None).await.unwrap() else {
        panic!("not created");
    };
    fake.set_down(true);
    life.remove_later(id.clone());
    assert!(
        fake.until(|f| f.calls().contains(&format!("remove {id}")))
            .await
    );
    fake.set_down(false);
    // An answer that creates nothing does not trigger the retry...
    let missing = crate::sandbox::engine::ContainerSpec {
        image: "absent".into(),
        ..spec(&life, "run")
    };
    assert_eq!(
        life.create(&missing, None).await.unwrap(),
        Created::ImageMissing
    );
    assert_eq!(fake.containers(), std::slice::from_ref(&id));
    // ...a successful create does.
    let Created::Id(next) = life.create(&spec(&life, "run"), None).await.unwrap() else {
        panic!("not created");
    };
    assert_eq!(fake.containers(), [next]);
    let removes = fake.ops_on(&id).iter().filter(|o| *o == "remove").count();
    assert_eq!(removes, 2);
}

#[tokio::test]
async fn the_engine_going_away_after_some_calls_fails_the_sweep() {
    let (fake, life) = setup(1);
    add(&fake, "a", labelled("dead", "run", 3600), true, 600);
    add(&fake, "b", labelled("dead", "run", 3600), true, 600);
    fake.down_after(2); // list, first remove
    let err = life.remove_leftovers().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(fake.containers().len(), 1, "the first removal went through");
    fake.set_down(false);
    assert_eq!(life.remove_leftovers().await.unwrap(), 1);
    assert!(fake.containers().is_empty());
}

#[tokio::test]
async fn one_slot_makes_a_second_run_wait_for_the_first() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Hangs);
    fake.push(Behaviour::ok("second\n"));
    let (env, l) = (EnvSpec::default_for(EnvType::Venv), limits(5));
    let job = Job::run(&env, "/work/p.py", "", &l);
    let (first_cancel, cancel) = (CancellationToken::new(), CancellationToken::new());
    let s = spec(&life, "run");
    let first = runner::run_cold(&life, &s, &job, None, &first_cancel);
    let second = runner::run_cold(&life, &s, &job, None, &cancel);
    let referee = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let while_first_runs = fake.created().len();
        first_cancel.cancel();
        while_first_runs
    };
    let (a, b, created_meanwhile) = tokio::join!(first, second, referee);
    assert_eq!(created_meanwhile, 1, "the second run waited for the slot");
    assert!(a.unwrap().unwrap().cancelled);
    let b = b.unwrap().unwrap();
    assert_eq!(b.stdout, "second\n");
    // The second container was created only after the first was killed.
    let calls = fake.calls();
    let kill = calls.iter().position(|c| c.starts_with("kill")).unwrap();
    let creates: Vec<_> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("create"))
        .collect();
    assert_eq!(creates.len(), 2);
    assert!(creates[1].0 > kill, "{calls:?}");
}

#[tokio::test]
async fn two_slots_let_two_runs_overlap() {
    let (fake, life) = setup(2);
    let pause = || {
        Behaviour::Steps(vec![
            Step::Pause(Duration::from_millis(300)),
            Step::Out("\n{marker}:0\n".into()),
            Step::Err("\n{marker}:0\n".into()),
        ])
    };
    fake.push(pause());
    fake.push(pause());
    let (env, l) = (EnvSpec::default_for(EnvType::Venv), limits(5));
    let job = Job::run(&env, "/work/p.py", "", &l);
    let (c1, c2) = (CancellationToken::new(), CancellationToken::new());
    let s = spec(&life, "run");
    let t = std::time::Instant::now();
    let (a, b) = tokio::join!(
        runner::run_cold(&life, &s, &job, None, &c1),
        runner::run_cold(&life, &s, &job, None, &c2)
    );
    assert_eq!(a.unwrap().unwrap().exit_code, Some(0));
    assert_eq!(b.unwrap().unwrap().exit_code, Some(0));
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn guards_remove_unless_disarmed() {
    let (fake, life) = setup(1);
    let mut ids = Vec::new();
    for _ in 0..2 {
        if let Created::Id(id) = life.create(&spec(&life, "run"), None).await.unwrap() {
            ids.push(id);
        }
    }
    drop(life.guard(&ids[0]));
    let mut kept = life.guard(&ids[1]);
    kept.disarm();
    drop(kept);
    assert!(fake.until(|f| f.containers() == [ids[1].clone()]).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.containers(), [ids[1].clone()]);
}

#[tokio::test]
async fn the_sentinel_is_named_for_the_instance_and_stays_attached() {
    let (fake, life) = setup(1);
    let spec = policy::sentinel_container(IMAGE, life.instance(), (1000, 1000), unix_now());
    assert!(life.start_sentinel(&spec).await.unwrap());
    let id = fake.created()[0].clone();
    let (name, got, _) = fake.container(&id).unwrap();
    assert_eq!(name, labels::sentinel_name(life.instance()));
    assert_eq!(got.labels[labels::LABEL_PURPOSE], SENTINEL);
    assert_eq!(fake.ops_on(&id), ["attach", "start"]);
    // Its stdin is held open: it keeps running.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(fake.container(&id).unwrap().2, "the sentinel stopped");
    // Another server sees this one as alive and spares its older containers.
    add(
        &fake,
        "ours-old",
        labelled(life.instance(), "run", 3600),
        true,
        600,
    );
    let other = Lifecycle::new(fake.clone(), 1);
    assert_eq!(other.remove_leftovers().await.unwrap(), 0);
    // When this server goes (its attach dropped), the sentinel ends.
    drop(life);
    assert!(fake.until(|f| !f.container(&id).unwrap().2).await);
}

#[tokio::test]
async fn sentinel_with_a_missing_image_or_taken_name() {
    let fake = FakeEngine::new();
    let life = Lifecycle::new(fake.clone(), 1);
    let spec = policy::sentinel_container(IMAGE, life.instance(), (1000, 1000), unix_now());
    assert!(!life.start_sentinel(&spec).await.unwrap(), "image missing");
    assert!(fake.created().is_empty());
    fake.add_image(IMAGE);
    fake.add_container(
        &labels::sentinel_name(life.instance()),
        HashMap::new(),
        true,
        now(),
    );
    assert!(
        life.start_sentinel(&spec).await.unwrap(),
        "name taken: one is running"
    );
    assert_eq!(fake.created().len(), 1);
    assert!(!fake.calls().iter().any(|c| c.starts_with("attach")));
}

#[tokio::test]
async fn no_sentinel_after_close() {
    let (fake, life) = setup(1);
    life.close();
    let spec = policy::sentinel_container(IMAGE, life.instance(), (1000, 1000), unix_now());
    assert!(life.start_sentinel(&spec).await.unwrap());
    assert!(fake.calls().is_empty());
}
