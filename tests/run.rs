//! Running code over MCP with the real binary and real containers: results, exit codes,
//! tracebacks, files written by runs, isolation seen from inside, timeouts, cleanup.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::os::unix::fs::MetadataExt;

use common::{Opts, Server, expected_run_uid, str_field, under_gvisor};
use serde_json::{Value, json};

#[tokio::test]
async fn execute_code_stores_the_file_and_runs_it() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let code = "import sys, os\nprint(1 + 1)\nprint(__name__, sys.argv[0] == __file__, os.getcwd())\n\
                open('written_by_run.txt', 'w').write('hello')\n";
    let (r, is_error) = s
        .call(
            "execute_code",
            json!({ "code": code, "filename": "my analysis" }),
        )
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "success");
    assert_eq!(r["exit_code"], 0);
    let storage = s.storage.display().to_string();
    assert_eq!(
        str_field(&r, "stdout"),
        format!("2\n__main__ True {storage}\n")
    );
    assert_eq!(str_field(&r, "stderr"), "");
    assert_eq!(str_field(&r, "output"), str_field(&r, "stdout"));
    for flag in ["timed_out", "oom_killed", "truncated"] {
        assert_eq!(r[flag], false, "{flag}");
    }
    assert!(r["duration_ms"].as_u64().is_some());

    // The code is stored under the sanitized name plus a random suffix.
    let name = str_field(&r, "generated_filename");
    assert!(
        name.starts_with("my_analysis_") && name.ends_with(".py"),
        "{name}"
    );
    let path = std::path::PathBuf::from(str_field(&r, "file_path"));
    assert_eq!(path, s.storage.join(name));
    assert_eq!(std::fs::read_to_string(&path)?, code);

    // The file the code wrote landed on the host, owned by the user code runs as.
    let written = s.storage.join("written_by_run.txt");
    assert_eq!(std::fs::read_to_string(&written)?, "hello");
    assert_eq!(std::fs::metadata(&written)?.uid(), expected_run_uid());

    assert!(
        s.containers().await.is_empty(),
        "container left after the run"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn exit_codes_decide_success_not_stderr() -> anyhow::Result<()> {
    let s = Server::start().await?;

    // A warning on stderr with exit code 0 is a success.
    let (r, is_error) = s
        .run("import warnings\nwarnings.warn('careful')\nprint('done')")
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "success");
    assert!(
        str_field(&r, "stderr").contains("UserWarning: careful"),
        "{r}"
    );
    assert_eq!(str_field(&r, "stdout"), "done\n");
    assert!(
        str_field(&r, "output").contains("done\n") && str_field(&r, "output").contains("careful")
    );

    // A non-zero exit code is an error, whatever was printed.
    let (r, is_error) = s.run("import sys\nprint('partial')\nsys.exit(3)").await?;
    assert!(is_error, "{r}");
    assert_eq!(str_field(&r, "status"), "error");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(str_field(&r, "stdout"), "partial\n");
    assert!(str_field(&r, "error").contains("exited with code 3"), "{r}");

    // os._exit and stdin at EOF behave as with `python file.py`.
    let (r, _) = s
        .run("import sys, os\nprint(repr(sys.stdin.read()))\nsys.stdout.flush()\nos._exit(7)")
        .await?;
    assert_eq!(r["exit_code"], 7);
    assert_eq!(str_field(&r, "stdout"), "''\n");
    assert!(s.containers().await.is_empty());
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn traceback_names_the_stored_file() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let (r, is_error) = s
        .call(
            "execute_code",
            json!({ "code": "def f():\n    return 1 / 0\n\nf()\n", "filename": "boom" }),
        )
        .await?;
    assert!(is_error);
    assert_eq!(r["exit_code"], 1);
    let stderr = str_field(&r, "stderr");
    let path = str_field(&r, "file_path");
    assert!(
        stderr.starts_with("Traceback (most recent call last):\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("File \"{path}\", line 4, in <module>")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("File \"{path}\", line 2, in f")),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("ZeroDivisionError: division by zero"),
        "{stderr}"
    );
    assert!(!stderr.contains("<string>"), "runner frames leak: {stderr}");

    // A syntax error names the file and line too.
    let (r, is_error) = s.run("x = 1\nif x\n  print(x)\n").await?;
    assert!(is_error);
    let stderr = str_field(&r, "stderr");
    assert!(
        stderr.contains(&format!("File \"{}\", line 2", str_field(&r, "file_path"))),
        "{stderr}"
    );
    assert!(stderr.contains("SyntaxError"), "{stderr}");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn isolation_seen_from_inside() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("SERVER_SECRET_TOKEN", "do-not-leak")).await?;
    let code = r#"
import ctypes, os, json
status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
PR_GET_NO_NEW_PRIVS = 39
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
    "cap_bnd": status['CapBnd'].strip(),
    "no_new_privs": ctypes.CDLL(None).prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
    "seccomp": status['Seccomp'].strip(),
    "root_writable": writable('/usr/evil'),
    "tmp_writable": writable('/tmp/ok'),
    "docker_sock": os.path.exists('/var/run/docker.sock'),
    "env": sorted(os.environ),
}))
"#;
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let facts: Value = serde_json::from_str(str_field(&r, "stdout"))?;
    assert_ne!(facts["uid"], 0, "code runs as root");
    assert_eq!(facts["uid"], expected_run_uid());
    assert_eq!(facts["net"], json!(["lo"]), "network interfaces besides lo");
    assert_eq!(facts["routes"], json!([]), "routes exist");
    assert_eq!(facts["cap_eff"], "0000000000000000");
    assert_eq!(facts["cap_bnd"], "0000000000000000");
    assert_eq!(facts["no_new_privs"], 1);
    if under_gvisor() {
        // gVisor does not apply Docker's seccomp profile inside its sandbox: the program's
        // system calls are served by gVisor's own kernel, which itself runs on the host under
        // a strict seccomp filter of its own.
        assert_eq!(facts["seccomp"], "0");
    } else {
        assert_eq!(facts["seccomp"], "2", "seccomp filter not active");
    }
    assert_eq!(facts["root_writable"], false);
    assert_eq!(facts["tmp_writable"], true);
    assert_eq!(facts["docker_sock"], false);
    let env: Vec<String> = serde_json::from_value(facts["env"].clone())?;
    assert!(!env.iter().any(|k| k == "SERVER_SECRET_TOKEN"), "{env:?}");
    assert!(
        !env.iter()
            .any(|k| k == "CODE_STORAGE_DIR" || k == "CONDA_IMAGE"),
        "{env:?}"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_run_past_the_timeout_is_killed_and_keeps_its_output() -> anyhow::Result<()> {
    // No pre-imports: on a loaded machine a pre-started container still importing pandas would
    // spend part of the 2 s limit before the program starts (a known limit of the pool).
    let opts = Opts::default()
        .env("EXECUTION_TIMEOUT", "2")
        .env("PREIMPORT", "");
    let s = Server::start_with(opts).await?;
    let started = std::time::Instant::now();
    let (r, is_error) = s
        .run("print('before the loop', flush=True)\nwhile True:\n    pass\n")
        .await?;
    let elapsed = started.elapsed();
    assert!(is_error);
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["oom_killed"], false);
    assert_eq!(str_field(&r, "stdout"), "before the loop\n");
    assert!(str_field(&r, "error").contains("EXECUTION_TIMEOUT"), "{r}");
    assert!(elapsed.as_secs() < 15, "took {elapsed:?}");
    assert!(s.containers().await.is_empty());
    // The server keeps answering.
    let (r, is_error) = s.run("print('still here')").await?;
    assert!(!is_error);
    assert_eq!(str_field(&r, "stdout"), "still here\n");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn output_is_capped_per_stream() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("OUTPUT_LIMIT", "1000")).await?;
    let (r, is_error) = s
        .run("import sys\nprint('A' * 5000 + 'END')\nsys.stderr.write('e' * 10)")
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["truncated"], true);
    let out = str_field(&r, "stdout");
    assert!(out.starts_with(&"A".repeat(500)), "{out}");
    assert!(out.ends_with("END\n"), "{out}");
    assert!(out.contains("bytes cut"), "{out}");
    assert!(out.len() < 1200, "{}", out.len());
    assert_eq!(str_field(&r, "stderr"), "e".repeat(10));
    s.stop().await?;
    Ok(())
}
