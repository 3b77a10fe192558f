//! The HTTP service (issue 14) with the real binary on loopback and real containers: every tool
//! with the rmcp streamable-HTTP client and with the official Python SDK client (in a venv the
//! test makes, cached under the target dir), bearer tokens (401 and RFC 9728 metadata), foreign
//! `Origin` (403), oversized bodies (413), health and metrics, one world per principal (files,
//! installs, sessions, active environment), 8 concurrent clients, clients that vanish mid-run,
//! SIGTERM, the MAX_HTTP_CLIENTS cap and the refusal to listen on every interface without tokens.
//!
//! Every server listens on 127.0.0.1 with an ephemeral port; every principal name is unique to
//! its test, so its environment volumes are its own and are removed at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;
#[path = "common/http.rs"]
mod http_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::str_field;
use http_common::{
    Auth, HttpClient, HttpOpts, HttpServer, RawSession, Spans, connect, http, max_overlap,
    new_token, python_sdk_venv, run_bounded, spawn, tool_call_body, unique_principal,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tools.json");
const SDK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_client.py");
/// The official MCP Python SDK release the test installs (has `streamable_http_client`).
const PYTHON_SDK_VERSION: &str = "2.3.0";

/// The tool names of the golden file, sorted.
fn golden_tool_names() -> Vec<String> {
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let mut names: Vec<String> = golden
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A server whose tokens file names each principal of `principals` (the second one, if any,
/// written hashed); their environment volumes go with the server.
async fn server_for(principals: &[&str], opts: HttpOpts) -> anyhow::Result<HttpServer> {
    let pairs = principals
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), new_token(), i == 1))
        .collect();
    HttpServer::start_with(opts.auth(Auth::File(pairs))).await
}

/// A tool call that must succeed; returns its structured result.
async fn ok(c: &HttpClient, tool: &str, args: Value) -> anyhow::Result<Value> {
    let (r, is_error) = c.call(tool, args).await?;
    assert!(!is_error, "{tool}: {r}");
    assert_eq!(str_field(&r, "status"), "success", "{tool}: {r}");
    Ok(r)
}

/// A tool call that must fail as a tool result; returns its error message.
async fn refused(c: &HttpClient, tool: &str, args: Value) -> anyhow::Result<String> {
    let (r, is_error) = c.call(tool, args).await?;
    assert!(is_error, "{tool} should have failed: {r}");
    assert_eq!(str_field(&r, "status"), "error", "{tool}: {r}");
    assert_eq!(r.get("stdout"), None, "{tool}: the code ran: {r}");
    Ok(str_field(&r, "error").to_string())
}

/// The session ids list_sessions shows to `c`.
async fn session_ids(c: &HttpClient) -> anyhow::Result<Vec<String>> {
    let r = ok(c, "list_sessions", json!({})).await?;
    Ok(r["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions array: {r}"))
        .iter()
        .filter_map(|e| e["session_id"].as_str().map(str::to_string))
        .collect())
}

/// Waits (up to 20 s) until one of the server's containers runs a program.
async fn wait_busy(s: &HttpServer) {
    let started = Instant::now();
    while s.busy_containers().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run container never appeared; log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `limit` for the server to have no busy container; returns how long it took.
async fn wait_no_busy(s: &HttpServer, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let busy = s.busy_containers();
        if busy.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "run container still there after {limit:?}: {busy:?}; log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LONG_RUN: &str = "import time\nprint('started', flush=True)\ntime.sleep(30)";

#[tokio::test]
async fn every_tool_over_http_with_the_rmcp_client() -> anyhow::Result<()> {
    let p = unique_principal("rmcp");
    let s = server_for(&[&p], HttpOpts::default()).await?;
    let c = s.client(&p).await?;
    let home = s.storage_of(&p);

    let mut names: Vec<String> = c
        .client
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, golden_tool_names());

    // execute_code: success, and a failure that is a tool result with isError.
    let r = ok(
        &c,
        "execute_code",
        json!({ "code": "print('hello over http')" }),
    )
    .await?;
    assert_eq!(str_field(&r, "stdout"), "hello over http\n", "{r}");
    assert_eq!(r["exit_code"], 0);
    let run_path = str_field(&r, "file_path").to_string();
    assert!(
        std::path::Path::new(&run_path).starts_with(&home),
        "{run_path} is not under {}",
        home.display()
    );
    let (r, is_error) = c.run("import sys\nsys.exit(3)").await?;
    assert!(is_error, "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");

    // The file tools.
    let r = ok(
        &c,
        "initialize_code_file",
        json!({ "content": "x = 20\n", "filename": "http_file" }),
    )
    .await?;
    let path = str_field(&r, "file_path").to_string();
    assert!(std::path::Path::new(&path).starts_with(&home), "{path}");
    ok(
        &c,
        "append_to_code_file",
        json!({ "file_path": path, "content": "print(x + 22)\n" }),
    )
    .await?;
    let r = ok(&c, "read_code_file", json!({ "file_path": path })).await?;
    assert_eq!(str_field(&r, "content"), "x = 20\nprint(x + 22)\n");
    let r = ok(&c, "execute_code_file", json!({ "file_path": path })).await?;
    assert_eq!(str_field(&r, "stdout"), "42\n", "{r}");

    // Environment and packages.
    let r = ok(&c, "get_environment_config", json!({})).await?;
    assert_eq!(r["config"]["type"], "venv", "{r}");
    let r = ok(&c, "configure_environment", json!({ "type": "venv-uv" })).await?;
    assert_eq!(r["current"]["type"], "venv-uv", "{r}");
    let r = ok(
        &c,
        "execute_code",
        json!({ "code": "import sys; print(sys.prefix)" }),
    )
    .await?;
    assert_eq!(str_field(&r, "stdout"), "/opt/uv-venv\n", "{r}");
    ok(&c, "configure_environment", json!({ "type": "venv" })).await?;
    let r = ok(
        &c,
        "check_installed_packages",
        json!({ "packages": ["numpy"] }),
    )
    .await?;
    assert_eq!(r["all_installed"], true, "{r}");
    // numpy is in the image: already there, nothing to fetch.
    let r = ok(&c, "install_dependencies", json!({ "packages": ["numpy"] })).await?;
    assert_eq!(r["env_type"], "venv", "{r}");

    // Sessions.
    let r = ok(&c, "create_session", json!({ "name": "over-http" })).await?;
    let sid = str_field(&r, "session_id").to_string();
    ok(
        &c,
        "execute_code",
        json!({ "code": "counter = 41", "session_id": sid }),
    )
    .await?;
    let r = ok(
        &c,
        "execute_code",
        json!({ "code": "print(counter + 1)", "session_id": sid }),
    )
    .await?;
    assert_eq!(str_field(&r, "stdout"), "42\n", "{r}");
    assert!(session_ids(&c).await?.contains(&sid));
    ok(&c, "close_session", json!({ "session_id": sid })).await?;
    assert!(!session_ids(&c).await?.contains(&sid));

    // Metrics: the token is required; runs are counted.
    let resp = http().get(s.url("/metrics")).send().await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http()
        .get(s.url("/metrics"))
        .bearer_auth(s.token(&p))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await?;
    assert!(text.contains("mce_runs_total"), "{text}");

    c.close().await?;
    s.stop().await
}

#[tokio::test]
async fn python_sdk_client_uses_every_tool() -> anyhow::Result<()> {
    let python = python_sdk_venv(PYTHON_SDK_VERSION).await?;
    let p = unique_principal("pysdk");
    let s = server_for(&[&p], HttpOpts::default()).await?;
    let home = s.storage_of(&p);

    let out = run_bounded(
        tokio::process::Command::new(&python)
            .arg(SDK_SCRIPT)
            .arg(s.mcp_url())
            .arg(s.token(&p))
            .env_remove("PYTHONPATH"),
        Duration::from_secs(180),
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK client failed ({}):\n{stderr}\nserver log:\n{}",
        out.status,
        s.log()
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{stdout}\n{stderr}"));
    let calls = &summary["calls"];
    let call = |key: &str| -> &Value {
        let c = &calls[key];
        assert!(c.is_object(), "no call {key} in {summary}");
        c
    };
    let succeeded = |key: &str| -> &Value {
        let c = call(key);
        assert_eq!(c["is_error"], false, "{key}: {c}");
        assert_eq!(c["structured"]["status"], "success", "{key}: {c}");
        // The text content carries the same object, for clients of the original.
        let text: Value = serde_json::from_str(c["text"].as_str().unwrap_or("")).unwrap();
        assert_eq!(text, c["structured"], "{key}");
        &c["structured"]
    };

    let tools: Vec<String> = summary["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {summary}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tools, golden_tool_names());

    assert_eq!(
        succeeded("execute_code")["stdout"],
        "hello from the python sdk\n"
    );
    let failed = call("execute_code_fails");
    assert_eq!(failed["is_error"], true, "{failed}");
    assert_eq!(failed["structured"]["exit_code"], 3, "{failed}");

    let path = succeeded("initialize_code_file")["file_path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(std::path::Path::new(&path).starts_with(&home), "{path}");
    succeeded("append_to_code_file");
    assert_eq!(
        succeeded("read_code_file")["content"],
        "x = 20\nprint(x + 22)\n"
    );
    assert_eq!(succeeded("execute_code_file")["stdout"], "42\n");
    assert_eq!(
        succeeded("get_environment_config")["config"]["type"],
        "venv"
    );
    succeeded("configure_environment");
    succeeded("check_installed_packages");
    // An option where a requirement belongs: refused before any network use.
    let install = call("install_dependencies");
    assert_eq!(install["is_error"], true, "{install}");
    assert!(install["structured"]["error"].is_string(), "{install}");

    let sid = succeeded("create_session")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    succeeded("execute_in_session_1");
    assert_eq!(succeeded("execute_in_session_2")["stdout"], "42\n");
    let listed = &succeeded("list_sessions")["sessions"];
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["session_id"] == sid.as_str())),
        "{listed}"
    );
    succeeded("close_session");

    s.stop().await
}

/// The status, `WWW-Authenticate` header and body of an `initialize` POST with `token`.
async fn initialize_with(
    s: &HttpServer,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Option<String>)> {
    let mut req = http()
        .post(s.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(http_common::initialize_body().to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status(), challenge))
}

#[tokio::test]
async fn missing_or_wrong_token_gets_401_with_resource_metadata() -> anyhow::Result<()> {
    let token = new_token();
    let s = HttpServer::start_with(HttpOpts::default().auth(Auth::Token(token.clone()))).await?;

    for bad in [None, Some("wrong-token"), Some(&token[..token.len() - 1])] {
        let (status, challenge) = initialize_with(&s, bad).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "token {bad:?}");
        let challenge = challenge.unwrap_or_else(|| panic!("no WWW-Authenticate ({bad:?})"));
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        // resource_metadata="<url>": the URL is on this server and answers with RFC 9728 JSON.
        let url = challenge
            .split("resource_metadata=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no resource_metadata in {challenge}"));
        assert!(url.starts_with(&s.base), "{url} is not on {}", s.base);
        let resp = http().get(url).send().await?;
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        let meta: Value = resp.json().await?;
        assert!(meta["resource"].is_string(), "{meta}");
    }
    let resp = http()
        .get(s.url("/.well-known/oauth-protected-resource"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let meta: Value = resp.json().await?;
    let resource = str_field(&meta, "resource");
    assert!(resource.starts_with(&s.base), "{meta}");

    // The rmcp client with a wrong token cannot connect; with the right one it can.
    assert!(connect(&s.mcp_url(), Some("wrong-token")).await.is_err());
    assert!(connect(&s.mcp_url(), None).await.is_err());
    let (status, _) = initialize_with(&s, Some(&token)).await?;
    assert_eq!(status, StatusCode::OK);
    let c = s.client("default").await?;
    let (r, is_error) = c.call("get_environment_config", json!({})).await?;
    assert!(!is_error, "{r}");
    c.close().await?;

    // /metrics needs the token too.
    for bad in [None, Some("wrong-token")] {
        let mut req = http().get(s.url("/metrics"));
        if let Some(t) = bad {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await?.status(), StatusCode::UNAUTHORIZED);
    }
    // Tokens are never logged.
    assert!(!s.log().contains(&token), "the token is in the log");
    s.stop().await
}

#[tokio::test]
async fn foreign_origin_gets_403() -> anyhow::Result<()> {
    let s = HttpServer::start().await?;
    let token = s.token("default").to_string();
    let post = |origin: Option<String>| {
        let mut req = http()
            .post(s.mcp_url())
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(http_common::initialize_body().to_string());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for foreign in ["http://evil.example", "https://evil.example:443", "null"] {
        let resp = post(Some(foreign.to_string())).await?;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "Origin: {foreign}");
    }
    // The server's own loopback origin, and no Origin at all (not a browser), are accepted.
    let resp = post(Some(s.base.clone())).await?;
    assert_eq!(resp.status(), StatusCode::OK, "Origin: {}", s.base);
    let resp = post(None).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    s.stop().await
}

#[tokio::test]
async fn oversized_body_gets_413_and_nothing_is_stored() -> anyhow::Result<()> {
    let s = HttpServer::start_with(HttpOpts::default().env("MAX_CODE_SIZE", "1000")).await?;
    let token = s.token("default").to_string();
    let (status, session, body) = RawSession::open(&s.mcp_url(), Some(&token)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = session.unwrap();

    let code = format!("print(len('{}'))", "x".repeat(1_000_000));
    let big = tool_call_body(2, "execute_code", json!({ "code": code })).to_string();
    let resp = session.post(big).send().await?;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing half-stored: no file of the principal holds any of it.
    let home = s.storage_of("default");
    let stored: Vec<_> = std::fs::read_dir(&home)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    for f in &stored {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(!text.contains("xxxxxxxxxx"), "{} was stored", f.display());
    }

    // The server keeps serving, and a small call on the same MCP session works.
    let small = tool_call_body(3, "execute_code", json!({ "code": "print(6 * 7)" })).to_string();
    let resp = session.post(small).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await?;
    assert!(text.contains("42"), "{text}");
    s.stop().await
}

#[tokio::test]
async fn healthz_is_200_with_docker_and_503_without() -> anyhow::Result<()> {
    let s = HttpServer::start().await?;
    let resp = http().get(s.url("/healthz")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    assert_eq!(body["status"], "ok", "{body}");
    s.stop().await?;

    let s =
        HttpServer::start_with(HttpOpts::default().env("DOCKER_HOST", "unix:///nonexistent.sock"))
            .await?;
    let resp = http().get(s.url("/healthz")).send().await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = resp.text().await?;
    assert!(!body.trim().is_empty(), "503 without a reason");
    assert!(!body.contains("\"ok\""), "{body}");
    s.stop().await
}

#[tokio::test]
async fn two_principals_cannot_see_each_others_files_sessions_or_environment() -> anyhow::Result<()>
{
    let alice = unique_principal("alice");
    let bob = unique_principal("bob"); // written hashed in the tokens file
    let s = server_for(&[&alice, &bob], HttpOpts::default()).await?;
    let a = s.client(&alice).await?;
    let b = s.client(&bob).await?;

    // Files: each principal's land in its own folder; the other cannot read or run them, by
    // absolute path or by bare name.
    let r = ok(
        &a,
        "execute_code",
        json!({ "code": "print('alice was here')" }),
    )
    .await?;
    let a_path = str_field(&r, "file_path").to_string();
    let a_name = str_field(&r, "generated_filename").to_string();
    assert!(std::path::Path::new(&a_path).starts_with(s.storage_of(&alice)));
    assert!(s.storage_of(&alice).join(&a_name).is_file());
    let r = ok(
        &b,
        "execute_code",
        json!({ "code": "print('bob was here')" }),
    )
    .await?;
    let b_path = str_field(&r, "file_path").to_string();
    assert!(std::path::Path::new(&b_path).starts_with(s.storage_of(&bob)));
    for target in [&a_path, &a_name] {
        refused(&b, "read_code_file", json!({ "file_path": target })).await?;
        refused(&b, "execute_code_file", json!({ "file_path": target })).await?;
        refused(
            &b,
            "append_to_code_file",
            json!({ "file_path": target, "content": "print('bob')\n" }),
        )
        .await?;
    }
    refused(&a, "read_code_file", json!({ "file_path": b_path })).await?;
    // A relative path climbing out of bob's folder into alice's.
    let climb = format!("../{alice}/{a_name}");
    refused(&b, "read_code_file", json!({ "file_path": climb })).await?;
    let r = ok(&a, "read_code_file", json!({ "file_path": a_path })).await?;
    assert_eq!(str_field(&r, "content"), "print('alice was here')");

    // Sessions: alice's id does not exist for bob.
    let r = ok(&a, "create_session", json!({})).await?;
    let sid = str_field(&r, "session_id").to_string();
    ok(
        &a,
        "execute_code",
        json!({ "code": "secret = 'alice'", "session_id": sid }),
    )
    .await?;
    let msg = refused(
        &b,
        "execute_code",
        json!({ "code": "print(secret)", "session_id": sid }),
    )
    .await?;
    assert!(msg.contains("does not exist"), "{msg}");
    let msg = refused(&b, "close_session", json!({ "session_id": sid })).await?;
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(!session_ids(&b).await?.contains(&sid));
    assert!(session_ids(&a).await?.contains(&sid));
    let r = ok(
        &a,
        "execute_code",
        json!({ "code": "print(secret)", "session_id": sid }),
    )
    .await?;
    assert_eq!(
        str_field(&r, "stdout"),
        "alice\n",
        "bob's attempts hurt it: {r}"
    );
    ok(&a, "close_session", json!({ "session_id": sid })).await?;

    // Active environment: alice's switch leaves bob's alone.
    let r = ok(&b, "get_environment_config", json!({})).await?;
    assert_eq!(r["config"]["type"], "venv", "{r}");
    ok(&a, "configure_environment", json!({ "type": "venv-uv" })).await?;
    let r = ok(&a, "get_environment_config", json!({})).await?;
    assert_eq!(r["config"]["type"], "venv-uv", "{r}");
    let r = ok(&b, "get_environment_config", json!({})).await?;
    assert_eq!(r["config"]["type"], "venv", "{r}");
    let prefix = "import sys; print(sys.prefix)";
    let r = ok(&a, "execute_code", json!({ "code": prefix })).await?;
    assert_eq!(str_field(&r, "stdout"), "/opt/uv-venv\n");
    let r = ok(&b, "execute_code", json!({ "code": prefix })).await?;
    assert_eq!(str_field(&r, "stdout"), "/opt/venv\n");

    // Nothing of alice's in anything bob saw, or in bob's folder.
    let r = ok(&b, "get_environment_config", json!({})).await?;
    assert!(!r.to_string().contains(&alice), "{r}");
    for f in std::fs::read_dir(s.storage_of(&bob))?.flatten() {
        assert!(!f.file_name().to_string_lossy().contains(&a_name));
    }

    a.close().await?;
    b.close().await?;
    s.stop().await
}

#[tokio::test]
async fn installs_of_one_principal_are_invisible_to_another() -> anyhow::Result<()> {
    // `six`: tiny, pure Python, and not in the images (checked first below).
    let alice = unique_principal("alice");
    let bob = unique_principal("bob");
    let s = server_for(&[&alice, &bob], HttpOpts::default()).await?;
    let a = s.client(&alice).await?;
    let b = s.client(&bob).await?;
    for c in [&a, &b] {
        let r = ok(
            c,
            "check_installed_packages",
            json!({ "packages": ["six"] }),
        )
        .await?;
        assert_eq!(r["all_installed"], false, "six is already there: {r}");
    }

    let r = ok(&a, "install_dependencies", json!({ "packages": ["six"] })).await?;
    assert_eq!(r["installed_packages"], json!(["six"]), "{r}");
    let r = ok(
        &a,
        "execute_code",
        json!({ "code": "import six; print(six.__name__)" }),
    )
    .await?;
    assert_eq!(str_field(&r, "stdout"), "six\n");

    let (r, is_error) = b.run("import six").await?;
    assert!(is_error, "bob imports alice's install: {r}");
    assert!(
        str_field(&r, "stderr").contains("ModuleNotFoundError"),
        "{r}"
    );
    let r = ok(
        &b,
        "check_installed_packages",
        json!({ "packages": ["six"] }),
    )
    .await?;
    assert_eq!(r["all_installed"], false, "{r}");

    a.close().await?;
    b.close().await?;
    s.stop().await
}

#[tokio::test]
async fn eight_concurrent_clients_all_succeed_and_overlap() -> anyhow::Result<()> {
    // 8 clients over 2 principals, 2 calls each; every run prints its start and end time.
    let p1 = unique_principal("burst1");
    let p2 = unique_principal("burst2");
    let s = server_for(&[&p1, &p2], HttpOpts::default()).await?;
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(Arc::new(
            s.client(if i % 2 == 0 { &p1 } else { &p2 }).await?,
        ));
    }
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let code = "import json, time\nt0 = time.time()\ntime.sleep(1.0)\nprint(json.dumps([t0, time.time()]))";
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = Arc::clone(c);
            let spans = Arc::clone(&spans);
            tokio::spawn(async move {
                for call in 0..2 {
                    let (r, is_error) = c.run(code).await.expect("call");
                    assert!(!is_error, "client {i} call {call}: {r}");
                    let t: Vec<f64> = serde_json::from_str(str_field(&r, "stdout").trim())
                        .unwrap_or_else(|e| panic!("client {i}: {e}: {r}"));
                    spans.lock().unwrap().push((t[0], t[1]));
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await??;
    }
    let elapsed = started.elapsed();
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 16);
    let overlap = max_overlap(&spans);
    assert!(overlap >= 2, "runs never overlapped: {spans:?}");
    eprintln!("16 runs of 1 s by 8 clients in {elapsed:?}; at most {overlap} at once");
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await?;
        }
    }
    s.stop().await
}

#[tokio::test]
async fn a_client_that_drops_mid_run_leaves_no_container() -> anyhow::Result<()> {
    let s = HttpServer::start().await?;

    // 1. The call is dropped (the rmcp client sends notifications/cancelled).
    let c = s.client("default").await?;
    let peer = c.client.peer().clone();
    let call = tokio::spawn(async move {
        let params = rmcp::model::CallToolRequestParams::new("execute_code")
            .with_arguments(json!({ "code": LONG_RUN }).as_object().cloned().unwrap());
        let _ = peer.call_tool(params).await;
    });
    wait_busy(&s).await;
    call.abort();
    let took = wait_no_busy(&s, Duration::from_secs(5)).await;
    eprintln!("dropped call: container gone after {took:?}");

    // 2. The whole client goes away (it ends its MCP session) mid-run.
    let peer = c.client.peer().clone();
    let call = tokio::spawn(async move {
        let params = rmcp::model::CallToolRequestParams::new("execute_code")
            .with_arguments(json!({ "code": LONG_RUN }).as_object().cloned().unwrap());
        let _ = peer.call_tool(params).await;
    });
    wait_busy(&s).await;
    c.close().await?;
    let took = wait_no_busy(&s, Duration::from_secs(10)).await;
    eprintln!("closed client: container gone after {took:?}");
    call.abort();

    // 3. The connection is cut mid-call, with no MCP goodbye at all (a killed client).
    let (status, session, body) = RawSession::open(&s.mcp_url(), Some(s.token("default"))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = session.unwrap();
    let req =
        session.post(tool_call_body(7, "execute_code", json!({ "code": LONG_RUN })).to_string());
    let call = tokio::spawn(async move {
        if let Ok(resp) = req.send().await {
            let _ = resp.text().await;
        }
    });
    wait_busy(&s).await;
    call.abort();
    let took = wait_no_busy(&s, Duration::from_secs(10)).await;
    eprintln!("cut connection: container gone after {took:?}");

    // The server keeps serving.
    let c = s.client("default").await?;
    let (r, is_error) = c.run("print('still serving')").await?;
    assert!(!is_error, "{r}");
    c.close().await?;
    s.stop().await
}

/// Starts a long run, sends SIGTERM (SHUTDOWN_GRACE=2) and checks the exit: code 0 within
/// bounds, no container of the server left, the port closed. Returns the call in flight and
/// the server's log.
async fn sigterm_during_a_long_run() -> anyhow::Result<(
    tokio::task::JoinHandle<Result<rmcp::model::CallToolResult, rmcp::ServiceError>>,
    HttpClient,
    String,
)> {
    let s = HttpServer::start_with(HttpOpts::default().env("SHUTDOWN_GRACE", "2")).await?;
    let c = s.client("default").await?;
    let peer = c.client.peer().clone();
    let call = tokio::spawn(async move {
        let params = rmcp::model::CallToolRequestParams::new("execute_code")
            .with_arguments(json!({ "code": LONG_RUN }).as_object().cloned().unwrap());
        peer.call_tool(params).await
    });
    wait_busy(&s).await;
    let addr = s.addr;
    let started = Instant::now();
    let (status, left, log) = s.terminate().await?;
    assert_eq!(status.code(), Some(0), "exit {status}; log:\n{log}");
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?} with SHUTDOWN_GRACE=2",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
    Ok((call, c, log))
}

#[tokio::test]
async fn sigterm_exits_0_and_leaves_nothing() -> anyhow::Result<()> {
    let (call, c, _) = sigterm_during_a_long_run().await?;
    call.abort();
    drop(c);
    Ok(())
}

#[tokio::test]
async fn sigterm_past_the_grace_cancels_calls_and_their_results_say_so() -> anyhow::Result<()> {
    let (call, c, log) = sigterm_during_a_long_run().await?;
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap_or_else(|_| panic!("the call in flight got no answer; log:\n{log}"))?
        .unwrap_or_else(|e| panic!("the call in flight got no result ({e}); log:\n{log}"));
    let (r, is_error) = http_common::structured("execute_code", &result)?;
    assert!(is_error, "{r}");
    let said = r.to_string().to_lowercase();
    assert!(
        said.contains("cancel") || said.contains("shut"),
        "the result does not say it was cancelled: {r}"
    );
    drop(c);
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_a_short_run_finish() -> anyhow::Result<()> {
    let s = HttpServer::start_with(HttpOpts::default().env("SHUTDOWN_GRACE", "10")).await?;
    let c = s.client("default").await?;
    let peer = c.client.peer().clone();
    let call = tokio::spawn(async move {
        let code = "import time\ntime.sleep(2)\nprint('finished')";
        let params = rmcp::model::CallToolRequestParams::new("execute_code")
            .with_arguments(json!({ "code": code }).as_object().cloned().unwrap());
        peer.call_tool(params).await
    });
    wait_busy(&s).await;
    let (status, left, log) = s.terminate().await?;
    assert_eq!(status.code(), Some(0), "exit {status}; log:\n{log}");
    assert!(left.is_empty(), "left behind: {left:?}");
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap_or_else(|_| panic!("the call in flight got no answer; log:\n{log}"))?
        .unwrap_or_else(|e| panic!("the call in flight got no result ({e}); log:\n{log}"));
    let (r, is_error) = http_common::structured("execute_code", &result)?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "stdout"), "finished\n");
    drop(c);
    Ok(())
}

#[tokio::test]
async fn refuses_to_listen_on_all_interfaces_without_tokens() -> anyhow::Result<()> {
    let mut p = spawn(&HttpOpts::default().auth(Auth::None).listen("0.0.0.0:0"))?;
    let status = p.wait_exit(Duration::from_secs(15)).await?;
    let log = p.log();
    assert_eq!(status.code(), Some(2), "exit {status}; log:\n{log}");
    assert!(!log.contains("listening on"), "{log}");
    assert!(
        log.contains("AUTH_TOKEN") && log.contains("--allow-unauthenticated"),
        "the error does not say what to do: {log}"
    );

    // Without tokens on loopback it starts, and MCP needs no token there.
    let s = HttpServer::start_with(HttpOpts::default().auth(Auth::None)).await?;
    let c = connect(&s.mcp_url(), None).await?;
    let (r, is_error) = c.call("get_environment_config", json!({})).await?;
    assert!(!is_error, "{r}");
    c.close().await?;
    s.stop().await
}

#[tokio::test]
async fn more_than_max_http_clients_get_503() -> anyhow::Result<()> {
    let s = HttpServer::start_with(HttpOpts::default().env("MAX_HTTP_CLIENTS", "2")).await?;
    let first = s.client("default").await?;
    let second = s.client("default").await?;
    let (status, _, body) = RawSession::open(&s.mcp_url(), Some(s.token("default"))).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.trim().is_empty(), "503 without a reason");
    // The two admitted clients still work.
    for c in [&first, &second] {
        let (r, is_error) = c.call("list_sessions", json!({})).await?;
        assert!(!is_error, "{r}");
    }
    // A client that leaves frees its place.
    first.close().await?;
    let started = Instant::now();
    loop {
        let (status, _, _) = RawSession::open(&s.mcp_url(), Some(s.token("default"))).await?;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no place after a client left: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.close().await?;
    s.stop().await
}
