//! The file tools over MCP: building a program up with initialize/append/read/execute, and
//! paths that must be refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use common::{Server, str_field};
use serde_json::json;

#[tokio::test]
async fn build_up_and_run_a_long_program() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let (r, is_error) = s
        .call(
            "initialize_code_file",
            json!({ "content": "total = 0\n", "filename": "long_job" }),
        )
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "success");
    let path = str_field(&r, "file_path").to_string();
    let name = str_field(&r, "filename").to_string();
    assert!(name.starts_with("long_job_") && name.ends_with(".py"));
    assert_eq!(path, s.storage.join(&name).display().to_string());

    // Append by absolute path, then by bare name.
    for (i, target) in [&path, &name].into_iter().enumerate() {
        let (r, is_error) = s
            .call(
                "append_to_code_file",
                json!({ "file_path": target, "content": format!("total += {}\n", i + 1) }),
            )
            .await?;
        assert!(!is_error, "{r}");
        assert_eq!(str_field(&r, "file_path"), path);
    }
    s.call(
        "append_to_code_file",
        json!({ "file_path": name, "content": "print('total', total)\n" }),
    )
    .await?;

    let (r, is_error) = s
        .call("read_code_file", json!({ "file_path": name }))
        .await?;
    assert!(!is_error);
    assert_eq!(
        str_field(&r, "content"),
        "total = 0\ntotal += 1\ntotal += 2\nprint('total', total)\n"
    );

    for target in [&path, &name] {
        let (r, is_error) = s
            .call("execute_code_file", json!({ "file_path": target }))
            .await?;
        assert!(!is_error, "{r}");
        assert_eq!(str_field(&r, "stdout"), "total 3\n");
        assert_eq!(str_field(&r, "file_path"), path);
        assert_eq!(str_field(&r, "generated_filename"), name);
    }
    assert!(s.containers().await.is_empty());
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn paths_outside_the_storage_dir_are_refused() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let outside = tempfile::tempdir()?;
    let secret = outside.path().join("secret.py");
    std::fs::write(&secret, "print('secret')\n")?;
    // A symlink planted in the storage dir that points outside it.
    std::os::unix::fs::symlink(&secret, s.storage.join("link.py"))?;
    let root = s.storage.display().to_string();

    let refused = [
        ("../secret.py".to_string(), "outside the storage directory"),
        (
            secret.display().to_string(),
            "outside the storage directory",
        ),
        (
            format!("{root}/../secret.py"),
            "outside the storage directory",
        ),
        ("/etc/passwd".to_string(), "outside the storage directory"),
        ("sub/dir.py".to_string(), "outside the storage directory"),
        ("link.py".to_string(), "symbolic link"),
        ("..\\secret.py".to_string(), "backslash"),
        ("missing.py".to_string(), "no file"),
    ];
    for (given, expected) in &refused {
        for tool in ["read_code_file", "execute_code_file"] {
            let (r, is_error) = s.call(tool, json!({ "file_path": given })).await?;
            assert!(is_error, "{tool} {given}: {r}");
            assert_eq!(str_field(&r, "status"), "error");
            let msg = str_field(&r, "error");
            assert!(msg.contains(expected), "{tool} {given}: {msg}");
        }
        let (r, is_error) = s
            .call(
                "append_to_code_file",
                json!({ "file_path": given, "content": "x" }),
            )
            .await?;
        assert!(is_error, "append {given}: {r}");
    }
    // Nothing outside was touched, and no container was started for a refused file.
    assert_eq!(std::fs::read_to_string(&secret)?, "print('secret')\n");
    assert!(s.containers().await.is_empty());

    // A hostile filename hint cannot escape either: it is sanitized.
    let (r, is_error) = s
        .call(
            "initialize_code_file",
            json!({ "content": "x = 1\n", "filename": "../../escape" }),
        )
        .await?;
    assert!(!is_error, "{r}");
    assert!(
        str_field(&r, "file_path").starts_with(&format!("{root}/escape_")),
        "{r}"
    );

    // The server keeps answering.
    let (r, is_error) = s.run("print('ok')").await?;
    assert!(!is_error);
    assert_eq!(str_field(&r, "stdout"), "ok\n");
    s.stop().await?;
    Ok(())
}
