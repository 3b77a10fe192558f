//! Packages over MCP with the real binary and real containers: installs from PyPI (reached
//! through the machine's proxy; the CA bundle is the server's default,
//! /etc/ssl/certs/ca-certificates.crt) into venv, uv and the conda STAND-IN (see tests/common),
//! persistence across runs and restarts, checks by distribution and import name, refusals, and
//! runs that stay offline and cannot modify the environment. Every test works in an environment
//! of its own, removed at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use common::{Opts, Server, TestEnv, env_volumes, str_field};
use serde_json::{Value, json};

async fn configure(s: &Server, env: &TestEnv) -> anyhow::Result<()> {
    let (r, is_error) = s
        .call("configure_environment", env.configure_args())
        .await?;
    assert!(!is_error, "{r}");
    assert!(str_field(&r, "message").contains("created"), "{r}");
    Ok(())
}

fn package<'a>(r: &'a Value, requirement: &str) -> &'a Value {
    r["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["requirement"] == requirement))
        .unwrap_or_else(|| panic!("no outcome for {requirement} in {r}"))
}

/// Install, use in a later run, see it after a restart.
async fn install_persists(
    env_type: &'static str,
    requirement: &str,
    module: &str,
    via: &str,
) -> anyhow::Result<()> {
    let env = TestEnv::new(env_type);
    let s = Server::start().await?;
    configure(&s, &env).await?;

    let (r, _) = s
        .call("check_installed_packages", json!({ "packages": [module] }))
        .await?;
    assert_eq!(r["all_installed"], false, "{r}");

    let (r, is_error) = s
        .call("install_dependencies", json!({ "packages": [requirement] }))
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "success");
    assert_eq!(r["env_type"], env_type);
    let p = package(&r, requirement);
    assert_eq!(p["status"], "installed", "{r}");
    assert_eq!(p["via"], via, "{r}");
    assert!(p["version"].is_string());
    assert_eq!(r["installed_packages"], json!([requirement]));

    // Installing again: already present.
    let (r, is_error) = s
        .call("install_dependencies", json!({ "packages": [requirement] }))
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(package(&r, requirement)["status"], "already_present");

    let code = format!(
        "import {module}, sys\nprint({module}.__file__.startswith(sys.prefix), sys.prefix)"
    );
    let (r, is_error) = s.run(&code).await?;
    assert!(!is_error, "{r}");
    assert_eq!(
        str_field(&r, "stdout").trim(),
        format!("True {}", env.prefix())
    );
    s.stop().await?;

    // A new server selecting the same environment still has it.
    let s = Server::start_with(env.opts()).await?;
    let (r, is_error) = s.run(&code).await?;
    assert!(!is_error, "{r}");
    assert_eq!(
        str_field(&r, "stdout").trim(),
        format!("True {}", env.prefix())
    );
    assert!(s.containers().await.is_empty());
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn venv_install_persists() -> anyhow::Result<()> {
    install_persists("venv", "six==1.16.0", "six", "pip").await
}

#[tokio::test]
async fn uv_install_persists() -> anyhow::Result<()> {
    install_persists("venv-uv", "six==1.16.0", "six", "uv").await
}

#[tokio::test]
async fn conda_install_falls_back_to_pip_and_persists() -> anyhow::Result<()> {
    // The stand-in's conda cannot install anything (no channel): pip inside the env takes over.
    install_persists("conda", "six==1.16.0", "six", "pip").await
}

#[tokio::test]
async fn check_by_distribution_and_import_name() -> anyhow::Result<()> {
    // The default image has pandas, which brings python-dateutil (import name dateutil), and
    // matplotlib, which brings pillow (import name PIL).
    let s = Server::start().await?;
    let names = [
        "python-dateutil",
        "dateutil",
        "PIL",
        "Pillow",
        "json",
        "sklearn",
        "scikit-learn",
    ];
    let (r, is_error) = s
        .call("check_installed_packages", json!({ "packages": names }))
        .await?;
    assert!(!is_error, "{r}");
    let details = r["package_details"].as_array().unwrap();
    let by = |name: &str| {
        details
            .iter()
            .find(|d| d["package"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("python-dateutil")["found_as"], "distribution");
    assert_eq!(by("dateutil")["found_as"], "import");
    assert_eq!(by("dateutil")["distribution"], "python-dateutil");
    assert_eq!(by("dateutil")["version"], by("python-dateutil")["version"]);
    assert_eq!(
        by("PIL")["distribution"].as_str().map(str::to_lowercase),
        Some("pillow".into())
    );
    assert_eq!(by("Pillow")["installed"], true);
    assert_eq!(by("json")["found_as"], "module");
    assert_eq!(r["all_installed"], false);
    assert_eq!(r["not_installed"], json!(["sklearn", "scikit-learn"]));

    // Names are data: one that looks like code is refused, not run.
    let (r, is_error) = s
        .call(
            "check_installed_packages",
            json!({ "packages": ["__import__('os').system('id')"] }),
        )
        .await?;
    assert!(is_error, "{r}");
    assert!(
        str_field(&r, "error").contains("not a package or module name"),
        "{r}"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn hostile_requirements_are_refused_before_docker_is_touched() -> anyhow::Result<()> {
    // The daemon address does not exist: a refusal that names the entry proves validation
    // came first (anything else would fail with "cannot reach the Docker daemon").
    let s =
        Server::start_with(Opts::default().env("DOCKER_HOST", "unix:///nonexistent.sock")).await?;
    let long = "a".repeat(300);
    let many: Vec<String> = (0..60).map(|i| format!("p{i}")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!(["-r", "requirements.txt"]),
            "options are not accepted",
        ),
        (
            json!(["--index-url=https://evil.example/simple"]),
            "options are not accepted",
        ),
        (json!(["https://evil.example/x.whl"]), "URLs"),
        (json!(["git+https://github.com/x/y"]), "URLs"),
        (json!(["pkg @ file:///etc/passwd"]), "URLs"),
        (json!(["./pkg"]), "local paths"),
        (json!(["/etc/passwd"]), "local paths"),
        (json!(["numpy; touch x"]), "PEP 508"),
        (json!(["numpy && curl evil"]), "'&'"),
        (json!(["$(reboot)"]), "'$'"),
        (json!(["numpy\nrequests"]), "newline"),
        (json!([""]), "empty"),
        (json!([long]), "longer than"),
        (json!(many), "at most 50"),
        (json!([]), "no packages given"),
    ];
    for (packages, expected) in cases {
        let (r, is_error) = s
            .call("install_dependencies", json!({ "packages": packages }))
            .await?;
        assert!(is_error, "{packages}: {r}");
        let msg = str_field(&r, "error");
        assert!(msg.contains(expected), "{packages}: {msg}");
        assert!(!msg.contains("Docker"), "{packages}: reached Docker: {msg}");
    }
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn runs_after_an_install_are_offline_and_cannot_modify_the_env() -> anyhow::Result<()> {
    let env = TestEnv::new("venv");
    let s = Server::start().await?;
    configure(&s, &env).await?;
    let (r, is_error) = s
        .call(
            "install_dependencies",
            json!({ "packages": ["six==1.16.0"] }),
        )
        .await?;
    assert!(!is_error, "{r}");
    let code = r#"
import os, json, subprocess, sys, sysconfig, six
site = sysconfig.get_paths()["purelib"]
def attempt(f):
    try:
        f(); return "allowed"
    except OSError as e:
        return e.strerror
pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--timeout", "3", "--retries", "0", "attrs"],
                     capture_output=True, text=True)
print(json.dumps({
    "net": sorted(os.listdir("/sys/class/net")),
    "routes": open("/proc/net/route").read().splitlines()[1:],
    "write_site": attempt(lambda: open(os.path.join(site, "evil.py"), "w").close()),
    "remove_six": attempt(lambda: os.remove(six.__file__)),
    "pip_rc": pip.returncode,
}))
"#;
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let facts: Value = serde_json::from_str(str_field(&r, "stdout"))?;
    assert_eq!(facts["net"], json!(["lo"]));
    assert_eq!(facts["routes"], json!([]));
    assert_eq!(facts["write_site"], "Read-only file system");
    assert_eq!(facts["remove_six"], "Read-only file system");
    assert_ne!(facts["pip_rc"], 0, "pip install worked inside a run");
    // six is still there, attrs never arrived.
    let (r, _) = s
        .call(
            "check_installed_packages",
            json!({ "packages": ["six", "attrs"] }),
        )
        .await?;
    assert_eq!(r["not_installed"], json!(["attrs"]), "{r}");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_package_is_named_and_the_others_still_install() -> anyhow::Result<()> {
    let env = TestEnv::new("venv-uv");
    let s = Server::start().await?;
    configure(&s, &env).await?;
    let missing = "mcp-code-executor-no-such-package-8f3a";
    let (r, is_error) = s
        .call(
            "install_dependencies",
            json!({ "packages": ["six==1.16.0", missing] }),
        )
        .await?;
    assert!(is_error, "{r}");
    assert!(str_field(&r, "error").contains(missing), "{r}");
    assert_eq!(package(&r, missing)["status"], "failed");
    assert_eq!(package(&r, "six==1.16.0")["status"], "installed");
    assert_eq!(r["failed_packages"], json!([missing]));
    assert!(str_field(&r, "output").contains(missing));
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn reset_returns_an_environment_to_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("venv");
    let s = Server::start().await?;
    configure(&s, &env).await?;
    s.call(
        "install_dependencies",
        json!({ "packages": ["six==1.16.0"] }),
    )
    .await?;
    s.stop().await?;
    assert_eq!(env_volumes(&env.prefix()).len(), 1);

    let out = std::process::Command::new(common::bin())
        .args(["reset-env", "venv", &env.name])
        .env("CONDA_IMAGE", common::CONDA_STANDIN_IMAGE)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&env.prefix()));
    assert!(env_volumes(&env.prefix()).is_empty());

    // Selecting it again creates it afresh, without six.
    let s = Server::start().await?;
    configure(&s, &env).await?;
    let (r, _) = s
        .call("check_installed_packages", json!({ "packages": ["six"] }))
        .await?;
    assert_eq!(r["all_installed"], false, "{r}");
    s.stop().await?;
    Ok(())
}
