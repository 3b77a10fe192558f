//! A Docker daemon on "another host" (issue 16): the local daemon reached over TCP with TLS,
//! through a TLS listener on loopback that this test runs in front of the daemon's socket,
//! with certificates it makes (a CA, a server certificate for 127.0.0.1, a client
//! certificate). The server gets DOCKER_HOST=tcp://127.0.0.1:<port>, DOCKER_TLS_VERIFY=1 and
//! DOCKER_CERT_PATH (the Docker CLI's conventions), so STORAGE_MODE defaults to `copy`: a run's
//! container mounts no folder of this host (inspected while it runs), gets the folder's files
//! in and gives the files it wrote back, with the same result as with `bind` on the local
//! socket. A session there keeps its state and its copy of the folder in step with the host's
//! at each call; a client whose CA the listener does not trust gets a clear error and the
//! server keeps answering.
//!
//! Nothing leaves this machine: the listener is on 127.0.0.1 and forwards to the local socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{Opts, Server, str_field};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UnixStream};

const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The certificates of one test: PEM files in the Docker CLI's layout, and the listener's.
struct Pki {
    dir: tempfile::TempDir,
    server: rustls::ServerConfig,
}

/// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it
/// (written as ca.pem, cert.pem, key.pem); the listener requires a client certificate of
/// that CA.
fn make_pki() -> Result<Pki> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (ca_params.distinguished_name).push(DnType::CommonName, "mce test CA");
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let server_params = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &ca, &ca_key)?;

    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    (client_params.distinguished_name).push(DnType::CommonName, "mce test client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client_params.signed_by(&client_key, &ca, &ca_key)?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
    std::fs::write(dir.path().join("cert.pem"), client_cert.pem())?;
    std::fs::write(dir.path().join("key.pem"), client_key.serialize_pem())?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    let server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Pki { dir, server })
}

/// A TLS listener on 127.0.0.1 forwarding each connection to the local Docker socket; its port.
async fn tls_proxy(config: rustls::ServerConfig) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut docker) = UnixStream::connect(DOCKER_SOCKET).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut docker).await;
            });
        }
    });
    Ok(port)
}

fn remote_opts(port: u16, certs: &Path) -> Opts {
    Opts::default()
        .env("DOCKER_HOST", &format!("tcp://127.0.0.1:{port}"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs.to_str().unwrap())
}

/// Running containers whose working directory is the copy mode's (only this test's: the test
/// binaries run one at a time and this file has one test that starts copy-mode runs).
fn copy_mode_containers() -> Vec<Value> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", "label=mcp-code-executor.managed"])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let out = std::process::Command::new("docker")
        .arg("inspect")
        .args(&ids)
        .output()
        .expect("docker inspect");
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.into_iter()
        .filter(|c| c["Config"]["WorkingDir"] == "/mce/code")
        .collect()
}

/// What a run did that must not depend on the storage mode (the stored code's random name
/// made alike).
fn essence(r: &Value) -> Value {
    let essence = json!({
        "status": r["status"],
        "exit_code": r["exit_code"],
        "stdout": r["stdout"],
        "stderr": r["stderr"],
        "images": r["images"],
        "files": r["files"].as_array().map(|fs| fs.iter()
            .map(|f| json!([f["name"], f["size"], f["created"]]))
            .collect::<Vec<_>>()),
    });
    let stem = str_field(r, "generated_filename").trim_end_matches(".py");
    let text = essence.to_string().replace(stem, "remote_*");
    serde_json::from_str(&text).unwrap()
}

/// Reads input.txt, rewrites changed.txt, leaves same.txt alone, deletes gone.txt, writes
/// out/result.txt and a figure, then sleeps so that its container can be inspected.
const PROGRAM: &str = r#"
import os, time
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
print(open("input.txt").read().strip())
open("changed.txt", "w").write("changed by the run")
os.remove("gone.txt")
os.makedirs("out", exist_ok=True)
open("out/result.txt", "w").write("written by the run")
plt.plot([1, 2, 3]); plt.savefig("fig.png")
time.sleep(3)
print("done")
"#;

/// The files the program finds, written with write_file (owned as the server hands files to
/// the run user).
async fn seed(s: &Server) -> Result<()> {
    let files = [
        ("input.txt", "input from the host\n"),
        ("changed.txt", "before"),
        ("same.txt", "untouched"),
        ("gone.txt", "deleted by the run"),
    ];
    for (path, content) in files {
        let (r, is_error) = s
            .call("write_file", json!({ "path": path, "content": content }))
            .await?;
        anyhow::ensure!(!is_error, "write_file {path}: {r}");
    }
    Ok(())
}

/// A session on the remote daemon keeps its state, and its copy of the folder stays in step
/// with the server's at each call: what it writes or deletes shows on the host after the call,
/// a file written on the host between calls is there at the next.
async fn session_in_copy_mode(s: &Server, other: &Server) -> Result<()> {
    let (r, is_error) = s.call("create_session", json!({})).await?;
    anyhow::ensure!(!is_error, "create_session: {r}");
    let id = str_field(&r, "session_id").to_string();
    let call = |code: &str| {
        s.call(
            "execute_code",
            json!({ "code": code, "session_id": id.as_str() }),
        )
    };
    let (r, is_error) = call(
        "import os\nx = 41\nprint(open('input.txt').read().strip())\n\
         open('from_session.txt', 'w').write('written in a session')\nos.remove('same.txt')",
    )
    .await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "stdout"), "input from the host\n", "{r}");
    assert_eq!(
        std::fs::read_to_string(s.storage.join("from_session.txt"))?,
        "written in a session"
    );
    assert!(
        !s.storage.join("same.txt").exists(),
        "deleted in the session"
    );

    let (r, is_error) = s
        .call(
            "write_file",
            json!({ "path": "between.txt", "content": "from the host" }),
        )
        .await?;
    assert!(!is_error, "{r}");
    let (r, is_error) = call("print(x + 1, open('between.txt').read())").await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "stdout"), "42 from the host\n", "{r}");
    assert_eq!(r["session_state"], "alive", "{r}");

    let (r, _) = other.call("list_sessions", json!({})).await?;
    assert_eq!(
        r["sessions"],
        json!([]),
        "another folder's server lists it: {r}"
    );
    let (r, is_error) = other
        .call(
            "execute_code",
            json!({ "code": "print(x)", "session_id": id.as_str() }),
        )
        .await?;
    assert!(is_error, "another folder's server reached the session: {r}");

    let (r, is_error) = s.call("close_session", json!({ "session_id": id })).await?;
    assert!(!is_error, "{r}");
    Ok(())
}

#[tokio::test]
async fn a_daemon_over_tcp_with_tls_runs_code_with_copied_files_like_a_local_one() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = make_pki()?;
    let port = tls_proxy(pki.server.clone()).await?;
    let remote = Server::start_with(remote_opts(port, pki.dir.path())).await?;
    let result = async {
        let (config, _) = remote.call("get_environment_config", json!({})).await?;
        assert_eq!(config["config"]["storage_mode"], "copy", "{config}");

        seed(&remote).await?;
        let call = remote.call(
            "execute_code",
            json!({ "code": PROGRAM, "filename": "remote" }),
        );
        let watch = async {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let found = copy_mode_containers();
                if !found.is_empty() || Instant::now() > until {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let ((r, is_error), running) = tokio::join!(async { call.await.unwrap() }, watch);
        assert!(!is_error, "{r}");
        assert_eq!(running.len(), 1, "the copy-mode run container was not seen");
        let mounts = running[0]["Mounts"].as_array().context("no mounts")?;
        assert!(
            mounts.iter().all(|m| m["Type"] == "volume"),
            "a run in copy mode mounts no folder of the host: {mounts:?}"
        );
        let storage = remote.storage.to_string_lossy().into_owned();
        assert!(
            !running[0].to_string().contains(&storage),
            "the container mentions the host's storage folder"
        );
        assert_eq!(r["stdout"], "input from the host\ndone\n", "{r}");
        let on_host = |p: &str| std::fs::read_to_string(remote.storage.join(p)).unwrap_or_default();
        assert_eq!(on_host("changed.txt"), "changed by the run");
        assert_eq!(on_host("out/result.txt"), "written by the run");
        assert_eq!(on_host("same.txt"), "untouched");
        assert!(remote.storage.join("fig.png").is_file());
        assert!(
            !remote.storage.join("gone.txt").exists(),
            "a file the run deleted is deleted on the host too"
        );
        let name = str_field(&r, "generated_filename");
        assert_eq!(
            str_field(&r, "file_path"),
            remote.storage.join(name).to_string_lossy(),
            "paths returned are the host's"
        );

        // The same program on the local socket with STORAGE_MODE=bind: the same result.
        let local = Server::start_with(Opts::default().env("STORAGE_MODE", "bind")).await?;
        seed(&local).await?;
        let (l, l_error) = local
            .call(
                "execute_code",
                json!({ "code": PROGRAM, "filename": "remote" }),
            )
            .await?;
        let gone_locally = !local.storage.join("gone.txt").exists();
        local.stop().await?;
        assert!(!l_error, "{l}");
        assert!(
            gone_locally,
            "the run deleted gone.txt with STORAGE_MODE=bind"
        );
        assert_eq!(essence(&r), essence(&l), "copy and bind differ");

        // Another server on the same daemon, with its own storage folder (another principal's
        // world alike): every folder's copy is at the same path in its containers, yet it
        // neither sees nor reaches the first one's session.
        let other = Server::start_with(remote_opts(port, pki.dir.path())).await?;
        let checked = session_in_copy_mode(&remote, &other).await;
        other.stop().await?;
        checked?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("remote server's log:\n{}", remote.log());
    }
    let stopped = remote.stop().await;
    result?;
    stopped?;
    Ok(())
}

#[tokio::test]
async fn a_daemon_whose_certificate_is_not_trusted_is_a_clear_error() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = make_pki()?;
    let port = tls_proxy(pki.server.clone()).await?;
    // The client trusts another CA.
    let other = make_pki()?;
    std::fs::copy(
        other.dir.path().join("ca.pem"),
        pki.dir.path().join("ca.pem"),
    )?;
    let s = Server::start_with(remote_opts(port, pki.dir.path())).await?;
    let (r, is_error) = s.run("print('never')").await?;
    assert!(is_error, "{r}");
    let error = str_field(&r, "error").to_lowercase();
    assert!(error.contains("docker"), "{r}");
    // The server keeps answering.
    let (c, _) = s.call("list_runs", json!({})).await?;
    assert_eq!(c["status"], "success", "{c}");
    s.stop().await?;
    Ok(())
}
