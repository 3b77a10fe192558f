//! Sessions over MCP with the real binary and real containers: state kept across calls in one
//! interpreter, isolation between sessions and from one-shot runs, interrupts that keep the
//! state and programs that end the session (SIGINT ignored, out of memory, os._exit), isolation
//! seen from inside, figures, packages installed into a live session, the idle timeout,
//! MAX_SESSIONS, survival across a server restart, close_session and unknown ids, output of
//! background threads between calls; and two races: sessions being created while other servers
//! sweep the daemon, and sessions being closed while the server looks for sessions to adopt.
//!
//! Session containers outlive their server by design, so every test removes the containers of
//! the sessions it created itself (a guard removes them, by session label and by the test's own
//! storage folder, if the test fails half-way) and checks that none is left.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use common::{Opts, Server, TestEnv, containers_mounting, expected_run_uid, str_field};
use rmcp::model::ContentBlock;
use serde_json::{Value, json};

/// The note put before output that background code printed between calls.
const BACKGROUND_NOTE: &str =
    "[mcp-code-executor: printed to stdout by background code after the previous call returned";

/// Runs a test body with a time bound: a hung call fails the test instead of blocking the
/// suite (the guards in the body still clean up when it is dropped).
async fn bounded(secs: u64, body: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .map_err(|_| anyhow!("the test took more than {secs} s"))?
}

/// Server settings for these tests: no warm pool (sessions do not use it).
fn opts() -> Opts {
    Opts::default().env("POOL_SIZE", "0")
}

/// Containers (any state) of session `id`, by name, found by its label.
fn session_containers(id: &str) -> Vec<String> {
    docker_ps(&["-a"], id)
}

/// Running containers of session `id`.
fn running_session_containers(id: &str) -> Vec<String> {
    docker_ps(&[], id)
}

fn docker_ps(extra: &[&str], id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .arg("ps")
        .args(extra)
        .args(["--format", "{{.Names}}"])
        .args(["--filter", &format!("label=mcp-code-executor.session={id}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Containers (any state) of sessions of the storage folder `storage`.
fn sessions_of_storage(storage: &Path) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .args(["--filter", "label=mcp-code-executor.purpose=session"])
        .args([
            "--filter",
            &format!("label=mcp-code-executor.storage={}", storage.display()),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The sessions a test created, and the storage folders it made them in: their containers
/// are removed when the test ends, passed or failed (session containers outlive servers).
#[derive(Default)]
struct Created {
    ids: Vec<String>,
    storage: Vec<PathBuf>,
}

impl Created {
    fn add(&mut self, id: &str) {
        self.ids.push(id.to_string());
    }

    /// Also removes every session container of `storage` (a folder of this test's own).
    fn watch(&mut self, storage: &Path) {
        if !self.storage.iter().any(|p| p == storage) {
            self.storage.push(storage.to_path_buf());
        }
    }

    fn left(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .ids
            .iter()
            .flat_map(|id| session_containers(id))
            .collect();
        left.extend(self.storage.iter().flat_map(|p| sessions_of_storage(p)));
        left.sort();
        left.dedup();
        left
    }

    /// Asserts that no container of these sessions is left.
    fn assert_none_left(&self) {
        let left = self.left();
        assert!(left.is_empty(), "session containers left: {left:?}");
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        let left = self.left();
        if !left.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&left)
                .output();
        }
    }
}

fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// create_session with `args`; checks the result and returns it.
async fn create_with(s: &Server, created: &mut Created, args: Value) -> anyhow::Result<Value> {
    created.watch(&s.storage);
    let (r, is_error) = s.call("create_session", args).await?;
    if let Some(id) = r.get("session_id").and_then(Value::as_str) {
        created.add(id);
    }
    assert!(!is_error, "{r}\n{}", s.log());
    assert_eq!(str_field(&r, "status"), "success", "{r}");
    let id = str_field(&r, "session_id");
    assert!(is_session_id(id), "{id}");
    Ok(r)
}

/// create_session in the active environment; returns the session id.
async fn create(s: &Server, created: &mut Created) -> anyhow::Result<String> {
    let r = create_with(s, created, json!({})).await?;
    Ok(str_field(&r, "session_id").to_string())
}

/// execute_code in session `id`.
async fn run_in(s: &Server, id: &str, code: &str) -> anyhow::Result<(Value, bool)> {
    s.call("execute_code", json!({ "code": code, "session_id": id }))
        .await
}

/// execute_code in session `id` that must succeed with the session alive; returns stdout.
async fn run_ok(s: &Server, id: &str, code: &str) -> anyhow::Result<String> {
    let (r, is_error) = run_in(s, id, code).await?;
    assert!(!is_error, "{r}\n{}", s.log());
    assert_eq!(str_field(&r, "status"), "success", "{r}");
    assert_eq!(str_field(&r, "session_id"), id, "{r}");
    assert_eq!(str_field(&r, "session_state"), "alive", "{r}");
    Ok(str_field(&r, "stdout").to_string())
}

/// close_session, which must succeed and leave no container of the session behind at once.
async fn close(s: &Server, id: &str) -> anyhow::Result<()> {
    let (r, is_error) = s.call("close_session", json!({ "session_id": id })).await?;
    assert!(!is_error, "{r}\n{}", s.log());
    assert_eq!(r, json!({ "status": "success", "session_id": id }));
    let left = session_containers(id);
    assert!(
        left.is_empty(),
        "container still there after close: {left:?}"
    );
    Ok(())
}

/// Asserts that a call to session `id` is refused because the session has ended.
async fn assert_ended(s: &Server, id: &str) -> anyhow::Result<String> {
    let (r, is_error) = run_in(s, id, "print('still there?')").await?;
    assert!(is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "error");
    let msg = str_field(&r, "error");
    assert!(msg.contains(id), "{msg}");
    assert!(msg.contains("has ended"), "{msg}");
    assert!(msg.contains("create_session"), "{msg}");
    assert_eq!(str_field(&r, "session_state"), "ended", "{r}");
    assert_eq!(r.get("stdout"), None, "the code ran: {r}");
    Ok(msg.to_string())
}

/// The entry of session `id` in list_sessions, if listed.
async fn listed(s: &Server, id: &str) -> anyhow::Result<Option<Value>> {
    let (r, is_error) = s.call("list_sessions", json!({})).await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "success");
    Ok(r["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions array: {r}"))
        .iter()
        .find(|e| e["session_id"] == id)
        .cloned())
}

async fn session_limits(s: &Server) -> anyhow::Result<Value> {
    let (r, is_error) = s.call("get_environment_config", json!({})).await?;
    assert!(!is_error, "{r}");
    Ok(r["config"]["sessions"].clone())
}

#[tokio::test]
async fn state_persists_across_calls() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        assert_eq!(
            session_limits(&s).await?,
            json!({ "max_sessions": 4, "idle_timeout_secs": 600, "max_lifetime_secs": 14400 })
        );
        let r = create_with(&s, &mut created, json!({ "name": "analysis" })).await?;
        let id = str_field(&r, "session_id").to_string();
        assert_eq!(str_field(&r, "name"), "analysis");
        assert!(str_field(&r, "environment").starts_with("venv "), "{r}");
        assert_eq!(r["idle_timeout_secs"], 600);
        assert_eq!(r["max_lifetime_secs"], 14400);
        let created_at = r["created"].as_u64().expect("created");
        let environment = str_field(&r, "environment").to_string();
        assert_eq!(running_session_containers(&id).len(), 1);

        // A variable, an import, a function and a DataFrame, set in one call...
        let code = "import pandas as pd\nx = 41\ndef double(v):\n    return 2 * v\n\
                    df = pd.DataFrame({'a': [1, 2, 3]})\nprint('set')\n";
        let (r, is_error) = s
            .call(
                "execute_code",
                json!({ "code": code, "session_id": id, "filename": "step one" }),
            )
            .await?;
        assert!(!is_error, "{r}\n{}", s.log());
        assert_eq!(str_field(&r, "stdout"), "set\n");
        assert_eq!(str_field(&r, "session_id"), id);
        assert_eq!(str_field(&r, "session_state"), "alive");
        assert_eq!(r["exit_code"], 0);
        assert_eq!(str_field(&r, "environment"), environment);
        // ...stored in the storage folder like any run.
        let name = str_field(&r, "generated_filename");
        assert!(
            name.starts_with("step_one_") && name.ends_with(".py"),
            "{name}"
        );
        let path = PathBuf::from(str_field(&r, "file_path"));
        assert_eq!(path, s.storage.join(name));
        assert_eq!(std::fs::read_to_string(&path)?, code);

        // ...are all there in the next call.
        let code = "import sys, os\nprint(x + 1, double(x), df['a'].sum(), pd.__name__)\n\
                    print(__name__, sys.argv[0] == __file__, os.getcwd())\n";
        let (r, is_error) = run_in(&s, &id, code).await?;
        assert!(!is_error, "{r}");
        let storage = s.storage.display();
        assert_eq!(
            str_field(&r, "stdout"),
            format!("42 82 6 pandas\n__main__ True {storage}\n")
        );
        let second = str_field(&r, "file_path").to_string();
        assert_ne!(second, path.display().to_string());
        assert_eq!(std::fs::read_to_string(&second)?, code);

        // A stored file runs in the session too, and an exception leaves the session alive.
        let (r, is_error) = s
            .call(
                "execute_code_file",
                json!({ "file_path": second, "session_id": id }),
            )
            .await?;
        assert!(!is_error, "{r}");
        assert!(
            str_field(&r, "stdout").starts_with("42 82 6 pandas\n"),
            "{r}"
        );
        assert_eq!(str_field(&r, "session_state"), "alive");
        let (r, is_error) = run_in(&s, &id, "x = 100\nraise ValueError('boom')").await?;
        assert!(is_error, "{r}");
        assert_eq!(str_field(&r, "session_state"), "alive");
        assert!(str_field(&r, "stderr").contains("ValueError: boom"), "{r}");
        assert!(str_field(&r, "error").contains("still alive"), "{r}");
        assert_eq!(run_ok(&s, &id, "print(x)").await?, "100\n");

        let entry = listed(&s, &id).await?.expect("session listed");
        assert_eq!(entry["name"], "analysis");
        assert_eq!(entry["state"], "alive");
        assert_eq!(entry["runs"], 5, "{entry}");
        assert_eq!(entry["created"], created_at);
        assert!(
            entry["last_used"].as_u64().unwrap() >= created_at,
            "{entry}"
        );
        assert_eq!(entry["environment"], environment.as_str());

        close(&s, &id).await?;
        assert_eq!(listed(&s, &id).await?, None);
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn two_sessions_are_isolated() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let a = create(&s, &mut created).await?;
        let b = create(&s, &mut created).await?;
        assert_ne!(a, b);
        run_ok(
            &s,
            &a,
            "secret = 'a'\nopen('/tmp/a_only', 'w').write('a')\nimport json",
        )
        .await?;

        let (r, is_error) = run_in(&s, &b, "print(secret)").await?;
        assert!(is_error, "{r}");
        assert!(
            str_field(&r, "stderr").contains("NameError: name 'secret' is not defined"),
            "{r}"
        );
        assert_eq!(str_field(&r, "session_state"), "alive");
        assert_eq!(
            run_ok(
                &s,
                &b,
                "import os, sys\nprint(os.path.exists('/tmp/a_only'), 'json' in dir())"
            )
            .await?,
            "False False\n"
        );
        assert_eq!(
            run_ok(
                &s,
                &a,
                "import os\nprint(secret, open('/tmp/a_only').read(), 'json' in dir())"
            )
            .await?,
            "a a True\n"
        );
        close(&s, &a).await?;
        close(&s, &b).await?;
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_one_shot_run_does_not_see_session_state() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let id = create(&s, &mut created).await?;
        run_ok(
            &s,
            &id,
            "only_in_session = 5\nopen('/tmp/session_file', 'w').write('x')",
        )
        .await?;

        let (r, is_error) = s.run("print(only_in_session)").await?;
        assert!(is_error, "{r}");
        assert!(str_field(&r, "stderr").contains("NameError"), "{r}");
        assert_eq!(r.get("session_id"), None, "{r}");
        assert_eq!(r.get("session_state"), None, "{r}");
        let (r, is_error) = s
            .run("import os\nprint(os.path.exists('/tmp/session_file'))")
            .await?;
        assert!(!is_error, "{r}");
        assert_eq!(str_field(&r, "stdout"), "False\n");

        // A one-shot run does not disturb the session either.
        assert_eq!(run_ok(&s, &id, "print(only_in_session)").await?, "5\n");
        close(&s, &id).await?;
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_interrupt_at_the_deadline_keeps_the_state() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let id = create(&s, &mut created).await?;
        run_ok(&s, &id, "kept = 'yes'\ncounter = 0").await?;

        let started = Instant::now();
        let code = "print('looping', flush=True)\nwhile True:\n    counter += 1\n";
        let (r, is_error) = s
            .call(
                "execute_code",
                json!({ "code": code, "session_id": id, "timeout": 2 }),
            )
            .await?;
        let took = started.elapsed();
        assert!(is_error, "{r}");
        assert_eq!(r["timed_out"], true, "{r}");
        assert_eq!(r["oom_killed"], false, "{r}");
        assert_eq!(r["timeout_secs"], 2, "{r}");
        assert_eq!(str_field(&r, "session_state"), "alive", "{r}\n{}", s.log());
        assert_eq!(str_field(&r, "stdout"), "looping\n");
        assert!(str_field(&r, "stderr").contains("KeyboardInterrupt"), "{r}");
        let msg = str_field(&r, "error");
        assert!(
            msg.contains("still alive") && msg.contains("KeyboardInterrupt"),
            "{msg}"
        );
        assert!(took < Duration::from_secs(10), "took {took:?}");

        // The earlier variables and what the loop did before the interrupt are kept.
        assert_eq!(
            run_ok(&s, &id, "print(kept, counter > 0)").await?,
            "yes True\n"
        );
        // A sleep is interrupted as well.
        let (r, _) = s
            .call(
                "execute_code",
                json!({ "code": "import time\ntime.sleep(60)", "session_id": id, "timeout": 1 }),
            )
            .await?;
        assert_eq!(r["timed_out"], true, "{r}");
        assert_eq!(str_field(&r, "session_state"), "alive", "{r}");
        assert_eq!(run_ok(&s, &id, "print(kept)").await?, "yes\n");
        close(&s, &id).await?;
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_program_ignoring_sigint_ends_the_session() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let id = create(&s, &mut created).await?;
        run_ok(&s, &id, "x = 1").await?;

        let code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n\
                    print('ignoring', flush=True)\nwhile True:\n    pass\n";
        let started = Instant::now();
        let (r, is_error) = s
            .call(
                "execute_code",
                json!({ "code": code, "session_id": id, "timeout": 2 }),
            )
            .await?;
        let took = started.elapsed();
        assert!(is_error, "{r}");
        assert_eq!(str_field(&r, "session_state"), "ended", "{r}\n{}", s.log());
        assert_eq!(r["timed_out"], true, "{r}");
        assert_eq!(str_field(&r, "stdout"), "ignoring\n");
        let msg = str_field(&r, "error");
        assert!(msg.contains("state is lost"), "{msg}");
        assert!(msg.contains("ignores SIGINT"), "{msg}");
        assert!(msg.contains("create_session"), "{msg}");
        // The deadline, then about 5 s of grace.
        assert!(took >= Duration::from_secs(6), "took {took:?}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
        // The container is gone when the call answers.
        let left = session_containers(&id);
        assert!(left.is_empty(), "{left:?}");

        let msg = assert_ended(&s, &id).await?;
        assert!(msg.contains("SIGINT"), "{msg}");
        assert_eq!(listed(&s, &id).await?, None);
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn out_of_memory_and_os_exit_end_the_session_with_their_cause() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts().env("MEMORY_LIMIT", "64m")).await?;

        let oom = create(&s, &mut created).await?;
        run_ok(&s, &oom, "x = 1").await?;
        let code = "print('allocating', flush=True)\nblocks = []\nwhile True:\n    \
                    blocks.append(bytearray(16 * 1024 * 1024))\n";
        let (r, is_error) = run_in(&s, &oom, code).await?;
        assert!(is_error, "{r}");
        assert_eq!(str_field(&r, "session_state"), "ended", "{r}\n{}", s.log());
        assert_eq!(r["oom_killed"], true, "{r}");
        assert_eq!(r["timed_out"], false, "{r}");
        let msg = str_field(&r, "error");
        assert!(
            msg.contains("out of memory") && msg.contains("MEMORY_LIMIT"),
            "{msg}"
        );
        assert!(msg.contains("state is lost"), "{msg}");
        let left = session_containers(&oom);
        assert!(left.is_empty(), "{left:?}");
        let msg = assert_ended(&s, &oom).await?;
        assert!(msg.contains("out of memory"), "{msg}");

        let exits = create(&s, &mut created).await?;
        let (r, is_error) = run_in(
            &s,
            &exits,
            "import os\nprint('bye', flush=True)\nos._exit(3)",
        )
        .await?;
        assert!(is_error, "{r}");
        assert_eq!(str_field(&r, "session_state"), "ended", "{r}\n{}", s.log());
        assert_eq!(r["exit_code"], 3, "{r}");
        assert_eq!(r["oom_killed"], false, "{r}");
        assert_eq!(str_field(&r, "stdout"), "bye\n", "{r}");
        let msg = str_field(&r, "error");
        assert!(msg.contains("exited with code 3"), "{msg}");
        assert!(msg.contains("state is lost"), "{msg}");
        let left = session_containers(&exits);
        assert!(left.is_empty(), "{left:?}");
        assert_ended(&s, &exits).await?;

        // sys.exit is an ordinary status: the session lives on.
        let alive = create(&s, &mut created).await?;
        run_ok(&s, &alive, "y = 2").await?;
        let (r, is_error) = run_in(&s, &alive, "import sys\nsys.exit(4)").await?;
        assert!(is_error, "{r}");
        assert_eq!(r["exit_code"], 4, "{r}");
        assert_eq!(str_field(&r, "session_state"), "alive", "{r}");
        assert_eq!(run_ok(&s, &alive, "print(y)").await?, "2\n");
        close(&s, &alive).await?;

        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn isolation_seen_from_inside_a_session() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts().env("SERVER_SECRET_TOKEN", "do-not-leak")).await?;
        let id = create(&s, &mut created).await?;
        let code = r#"
import ctypes, os, json
status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
PR_GET_NO_NEW_PRIVS = 39  # gVisor's /proc/self/status has no NoNewPrivs line; prctl is exact
def writable(p):
    try:
        open(p, 'w').close(); return True
    except OSError:
        return False
print(json.dumps({
    "uid": os.getuid(),
    "net": sorted(os.listdir('/sys/class/net')),
    "routes": open('/proc/net/route').read().splitlines()[1:],
    "cap_eff": status['CapEff'].strip(),
    "no_new_privs": ctypes.CDLL(None).prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
    "root_writable": writable('/usr/evil'),
    "tmp_writable": writable('/tmp/ok'),
    "docker_sock": os.path.exists('/var/run/docker.sock'),
    "env": sorted(os.environ),
}))
"#;
        let facts: Value = serde_json::from_str(&run_ok(&s, &id, code).await?)?;
        assert_ne!(facts["uid"], 0, "code runs as root");
        assert_eq!(facts["uid"], expected_run_uid());
        assert_eq!(facts["net"], json!(["lo"]), "network interfaces besides lo");
        assert_eq!(facts["routes"], json!([]), "routes exist");
        assert_eq!(facts["cap_eff"], "0000000000000000");
        assert_eq!(facts["no_new_privs"], 1);
        assert_eq!(facts["root_writable"], false);
        assert_eq!(facts["tmp_writable"], true);
        assert_eq!(facts["docker_sock"], false);
        let env: Vec<String> = serde_json::from_value(facts["env"].clone())?;
        assert!(!env.iter().any(|k| k == "SERVER_SECRET_TOKEN"), "{env:?}");

        // The network stays unreachable, also by address.
        let code = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    \
                    print('connected')\nexcept OSError as e:\n    print('refused', type(e).__name__)\n";
        let out = run_ok(&s, &id, code).await?;
        assert!(out.starts_with("refused"), "{out}");
        close(&s, &id).await?;
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn figures_come_back_from_a_session_call() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let id = create(&s, &mut created).await?;
        run_ok(&s, &id, "import matplotlib.pyplot as plt\ndata = [1, 4, 9]").await?;
        for round in 0..2 {
            let code = "plt.plot(data)\nplt.title('in a session')\nplt.show()\nprint('plotted')";
            let result = s
                .call_raw("execute_code", json!({ "code": code, "session_id": id }))
                .await?;
            let body = result.structured_content.clone().unwrap();
            assert_eq!(result.is_error, Some(false), "{body}\n{}", s.log());
            assert_eq!(str_field(&body, "stdout"), "plotted\n");
            assert_eq!(str_field(&body, "session_state"), "alive");
            let stem = str_field(&body, "generated_filename").trim_end_matches(".py");
            let images = body["images"].as_array().unwrap();
            assert_eq!(images.len(), 1, "round {round}: {body}");
            let image = images[0].as_str().unwrap();
            assert!(
                image.starts_with(&format!("{stem}_figure")) && image.ends_with(".png"),
                "{image}"
            );
            let pngs: Vec<&ContentBlock> = result
                .content
                .iter()
                .filter(|c| matches!(c, ContentBlock::Image(_)))
                .collect();
            assert_eq!(pngs.len(), 1, "round {round}");
            if let ContentBlock::Image(img) = pngs[0] {
                assert_eq!(img.mime_type, "image/png");
                assert!(img.data.len() > 1000);
            }
        }
        close(&s, &id).await?;
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_install_becomes_importable_in_a_live_session() -> anyhow::Result<()> {
    bounded(150, async {
        // Declared first, dropped last: the session's container goes before the environment.
        let env = TestEnv::new("venv");
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let (r, is_error) = s
            .call("configure_environment", env.configure_args())
            .await?;
        assert!(!is_error, "{r}");
        let r = create_with(&s, &mut created, json!({ "env_type": "venv" })).await?;
        let id = str_field(&r, "session_id").to_string();
        assert!(
            str_field(&r, "environment").contains(&env.name),
            "{r} (expected {})",
            env.name
        );
        let (r, is_error) = run_in(&s, &id, "kept = 1\nimport six").await?;
        assert!(is_error, "six is there before the install: {r}");
        assert!(str_field(&r, "stderr").contains("ModuleNotFoundError"), "{r}");
        assert_eq!(str_field(&r, "session_state"), "alive");

        let (r, is_error) = s
            .call("install_dependencies", json!({ "packages": ["six==1.16.0"] }))
            .await?;
        assert!(!is_error, "{r}\n{}", s.log());
        assert_eq!(r["installed_packages"], json!(["six==1.16.0"]), "{r}");

        let out = run_ok(
            &s,
            &id,
            "import six, sys\nprint(kept, six.__version__, six.__file__.startswith(sys.prefix), sys.prefix)",
        )
        .await?;
        assert_eq!(out.trim(), format!("1 1.16.0 True {}", env.prefix()));
        close(&s, &id).await?;
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_idle_session_is_removed_after_the_idle_timeout() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(
            opts()
                .env("SESSION_IDLE_TIMEOUT", "3")
                .env("SESSION_MAX_LIFETIME", "60"),
        )
        .await?;
        assert_eq!(
            session_limits(&s).await?,
            json!({ "max_sessions": 4, "idle_timeout_secs": 3, "max_lifetime_secs": 60 })
        );
        let r = create_with(&s, &mut created, json!({})).await?;
        assert_eq!(r["idle_timeout_secs"], 3);
        assert_eq!(r["max_lifetime_secs"], 60);
        let id = str_field(&r, "session_id").to_string();
        assert!(!session_containers(&id).is_empty());

        let started = Instant::now();
        while !session_containers(&id).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the idle session's container is still there\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Wait for the server's sweep to have ended it too (the runner may have exited first).
        let started = Instant::now();
        while listed(&s, &id).await?.is_some() {
            assert!(started.elapsed() < Duration::from_secs(10), "still listed");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let msg = assert_ended(&s, &id).await?;
        assert!(msg.contains("SESSION_IDLE_TIMEOUT"), "{msg}");
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_call_longer_than_the_idle_timeout_keeps_its_session() -> anyhow::Result<()> {
    // A call may last up to MAX_TIMEOUT; the idle timeout counts from the end of the last call,
    // never from its start, so the sweeps (every 5 s) that run during it leave it alone.
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts().env("SESSION_IDLE_TIMEOUT", "2")).await?;
        let id = create(&s, &mut created).await?;
        let (r, is_error) = s
            .call(
                "execute_code",
                json!({
                    "code": "import time\nx = 41\ntime.sleep(12)\nprint(x + 1)",
                    "session_id": id,
                    "timeout": 30,
                }),
            )
            .await?;
        assert!(!is_error, "{r}\n{}", s.log());
        assert_eq!(str_field(&r, "stdout"), "42\n", "{r}");
        assert_eq!(str_field(&r, "session_state"), "alive", "{r}");
        assert_eq!(
            run_ok(&s, &id, "print(x)").await?,
            "41\n",
            "the state survived"
        );
        close(&s, &id).await?;
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn max_sessions_is_enforced_with_a_clear_error() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts().env("MAX_SESSIONS", "1")).await?;
        assert_eq!(session_limits(&s).await?["max_sessions"], 1);
        let first = create(&s, &mut created).await?;
        let (r, is_error) = s.call("create_session", json!({})).await?;
        if let Some(id) = r.get("session_id").and_then(Value::as_str) {
            created.add(id);
        }
        assert!(is_error, "{r}");
        assert_eq!(str_field(&r, "status"), "error");
        let msg = str_field(&r, "error");
        assert!(msg.contains("MAX_SESSIONS"), "{msg}");
        assert!(msg.contains("close_session"), "{msg}");
        // Closing one makes room.
        close(&s, &first).await?;
        let second = create(&s, &mut created).await?;
        close(&s, &second).await?;
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

/// A storage folder of the test's own, shared by several servers.
fn shared_storage() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let storage = dir.path().join("code");
    std::fs::create_dir_all(&storage)?;
    let storage = storage.canonicalize()?;
    Ok((dir, storage))
}

fn on(storage: &Path) -> Opts {
    opts().env("CODE_STORAGE_DIR", &storage.display().to_string())
}

#[tokio::test]
async fn a_session_survives_a_server_restart() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let (_dir, storage) = shared_storage()?;
        created.watch(&storage);
        // The first server has a warm pool: its exit removes it but not the session.
        let s = Server::start_with(on(&storage).env("POOL_SIZE", "1")).await?;
        let r = create_with(&s, &mut created, json!({ "name": "keeper" })).await?;
        let id = str_field(&r, "session_id").to_string();
        let environment = str_field(&r, "environment").to_string();
        let out = run_ok(&s, &id, "x = 41\nimport json\nprint('set')").await?;
        assert_eq!(out, "set\n");
        let log = s.log();
        s.stop().await.map_err(|e| anyhow!("{e}\n{log}"))?;
        let mut left = containers_mounting(&storage);
        left.sort();
        assert_eq!(
            left,
            running_session_containers(&id),
            "only the session's container should survive the server"
        );
        assert_eq!(left.len(), 1);

        let s = Server::start_with(on(&storage)).await?;
        let entry = listed(&s, &id)
            .await?
            .unwrap_or_else(|| panic!("the session is not listed\n{}", s.log()));
        assert_eq!(entry["name"], "keeper");
        assert_eq!(entry["environment"], environment);
        assert_eq!(entry["state"], "alive");
        assert_eq!(entry["runs"], 1, "{entry}");
        let out = run_ok(&s, &id, "print(x + 1, json.dumps([x]))").await?;
        assert_eq!(out, "42 [41]\n");
        assert_eq!(listed(&s, &id).await?.unwrap()["runs"], 2);
        close(&s, &id).await?;
        s.stop().await?;
        created.assert_none_left();
        let left = containers_mounting(&storage);
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn close_session_exit_and_unknown_ids() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let (_dir, storage) = shared_storage()?;
        created.watch(&storage);
        let s = Server::start_with(on(&storage)).await?;
        let closed = create(&s, &mut created).await?;
        let kept = create(&s, &mut created).await?;
        run_ok(&s, &kept, "kept = 'across servers'").await?;

        // close_session: the container is gone when it answers; the session has ended.
        close(&s, &closed).await?;
        assert_eq!(running_session_containers(&kept).len(), 1);
        let msg = assert_ended(&s, &closed).await?;
        assert!(msg.contains("close_session"), "{msg}");
        let (r, is_error) = s
            .call("close_session", json!({ "session_id": closed }))
            .await?;
        assert!(is_error, "closing twice: {r}");
        assert!(str_field(&r, "error").contains("create_session"), "{r}");
        assert_eq!(str_field(&r, "session_id"), closed);

        // Unknown and malformed ids.
        let unknown = "0123456789abcdef0123456789abcdef";
        let malformed = "../../etc/passwd";
        for id in [unknown, malformed, ""] {
            let (r, is_error) = s.call("close_session", json!({ "session_id": id })).await?;
            assert!(is_error, "close {id:?}: {r}");
            let msg = str_field(&r, "error");
            assert!(msg.contains("create_session"), "{msg}");
            assert!(msg.contains("does not exist"), "{msg}");
            let (r, is_error) = run_in(&s, id, "print('ran')").await?;
            assert!(is_error, "run {id:?}: {r}");
            let msg = str_field(&r, "error");
            assert!(msg.contains("create_session"), "{msg}");
            assert!(msg.contains("does not exist"), "{msg}");
            assert_eq!(r.get("stdout"), None, "the code ran: {r}");
        }

        // The server's exit leaves the live session's container...
        s.stop().await?;
        assert_eq!(running_session_containers(&kept).len(), 1);
        assert_eq!(containers_mounting(&storage).len(), 1);
        // ...which a second server on the same storage folder closes.
        let s = Server::start_with(on(&storage)).await?;
        assert_eq!(run_ok(&s, &kept, "print(kept)").await?, "across servers\n");
        let msg = assert_ended(&s, &closed).await?;
        assert!(msg.contains("close_session"), "{msg}");
        close(&s, &kept).await?;
        s.stop().await?;
        created.assert_none_left();
        let left = containers_mounting(&storage);
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn background_output_between_calls_comes_with_the_next_call() -> anyhow::Result<()> {
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let id = create(&s, &mut created).await?;
        let code = "import threading, time\ndef later():\n    time.sleep(1)\n    \
                    print('from the background', flush=True)\n\
                    threading.Thread(target=later, daemon=True).start()\nprint('call returns')\n";
        assert_eq!(run_ok(&s, &id, code).await?, "call returns\n");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let out = run_ok(&s, &id, "print('second call')").await?;
        assert!(out.starts_with(BACKGROUND_NOTE), "{out}");
        assert_eq!(
            out,
            format!("{BACKGROUND_NOTE}]\nfrom the background\nsecond call\n")
        );
        // Held once: the call after has only its own output.
        assert_eq!(
            run_ok(&s, &id, "print('third call')").await?,
            "third call\n"
        );
        close(&s, &id).await?;
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sessions_created_while_other_servers_sweep_survive() -> anyhow::Result<()> {
    // Servers sharing the daemon sweep for leftovers (at start, then every 5 s); a session
    // container being created (not yet started) must not be taken for a stopped one.
    bounded(120, async {
        let mut created = Created::default();
        let s = Server::start_with(opts().env("MAX_SESSIONS", "16")).await?;
        created.watch(&s.storage);
        let until = Instant::now() + Duration::from_secs(8);
        // No assertion inside: every id must reach the guard first.
        let creating = async {
            let mut results = Vec::new();
            while Instant::now() < until && results.len() < 12 {
                results.push(s.call("create_session", json!({})).await);
            }
            results
        };
        let sweeping = async {
            let mut starts = 0;
            while Instant::now() < until {
                let other = Server::start_with(opts()).await?;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                other.stop().await?;
                starts += 1;
            }
            anyhow::Ok(starts)
        };
        let (results, starts) = tokio::join!(creating, sweeping);
        let mut ids = Vec::new();
        let mut refused = Vec::new();
        for result in results {
            let (r, is_error) = result?;
            if let Some(id) = r.get("session_id").and_then(Value::as_str) {
                created.add(id);
                ids.push(id.to_string());
            }
            if is_error {
                refused.push(r["error"].to_string());
            }
        }
        assert!(starts? > 0);
        assert!(
            refused.is_empty(),
            "create_session failed:\n{}",
            refused.join("\n")
        );
        let mut killed = Vec::new();
        for id in &ids {
            let (r, is_error) = run_in(&s, id, "print('alive')").await?;
            if is_error || r["session_state"] != "alive" {
                killed.push(format!("{id}: {}", r["error"]));
            }
        }
        assert!(
            killed.is_empty(),
            "{} of {} sessions were killed:\n{}\n{}",
            killed.len(),
            ids.len(),
            killed.join("\n"),
            s.log()
        );
        for id in &ids {
            close(&s, id).await?;
        }
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_closed_session_stays_closed_while_sessions_are_listed() -> anyhow::Result<()> {
    // list_sessions (and create_session) look for sessions of the storage folder that the
    // server does not know; one being closed at that moment must not come back.
    bounded(90, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        for _ in 0..4 {
            let id = create(&s, &mut created).await?;
            let listing =
                futures_util::future::join_all((0..8).map(|_| s.call("list_sessions", json!({}))));
            let (closed, lists) = tokio::join!(
                s.call("close_session", json!({ "session_id": id })),
                listing
            );
            let (r, is_error) = closed?;
            assert!(!is_error, "{r}");
            for l in lists {
                l?;
            }
            assert!(session_containers(&id).is_empty());
            let entry = listed(&s, &id).await?;
            assert_eq!(entry, None, "the closed session is listed again");
            assert_ended(&s, &id).await?;
        }
        created.assert_none_left();
        assert!(s.containers().await.is_empty());
        s.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_session_whose_container_stopped_before_its_first_call_ends_at_once() -> anyhow::Result<()>
{
    // The runner can be gone before the server first attaches (its idle timeout, a kill from
    // outside): the call must say the session ended, not wait for its deadline and blame the
    // program for ignoring SIGINT.
    bounded(60, async {
        let mut created = Created::default();
        let s = Server::start_with(opts()).await?;
        let id = create(&s, &mut created).await?;
        let killed = std::process::Command::new("docker")
            .arg("kill")
            .args(session_containers(&id))
            .output()?;
        assert!(killed.status.success(), "{killed:?}");
        let started = Instant::now();
        let (r, is_error) = s
            .call(
                "execute_code",
                json!({ "code": "print('ran')", "session_id": id, "timeout": 5 }),
            )
            .await?;
        let took = started.elapsed();
        assert!(is_error, "{r}");
        assert_eq!(str_field(&r, "session_state"), "ended", "{r}");
        let msg = str_field(&r, "error");
        assert!(!msg.contains("ignores SIGINT"), "{msg}");
        assert!(took < Duration::from_secs(5), "took {took:?}: {r}");
        assert_ended(&s, &id).await?;
        created.assert_none_left();
        s.stop().await?;
        Ok(())
    })
    .await
}
