//! Policy: the pure translation of limits and an environment into the settings of a run
//! container (DESIGN §3). Nothing here talks to Docker; every field is unit-tested.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits};

use crate::config::Limits;
use crate::environment::EnvSpec;

/// Every container this server makes carries this label (value `true`).
pub const LABEL_MANAGED: &str = "mcp-code-executor.managed";
/// The id of the server instance that made the container.
pub const LABEL_INSTANCE: &str = "mcp-code-executor.instance";
/// Unix time after which the container is certainly finished (its in-container deadline).
pub const LABEL_DEADLINE: &str = "mcp-code-executor.deadline";
/// The environment the container runs.
pub const LABEL_ENV: &str = "mcp-code-executor.env";

/// Seconds the in-container deadline adds to the server's timeout: the server kills first, the
/// container's own deadline is the backstop when the server itself is gone.
pub const DEADLINE_GRACE_SECS: u64 = 5;

/// The runner script, fed to `python -c`; it reads the program from stdin.
pub const RUNNER: &str = include_str!("runner.py");

/// Everything that decides how one run container is made.
#[derive(Debug, Clone)]
pub struct RunPolicy<'a> {
    pub image: &'a str,
    pub env: &'a EnvSpec,
    pub limits: &'a Limits,
    /// uid, gid the program runs as (never 0).
    pub run_as: (u32, u32),
    /// The storage directory as the Docker daemon sees it (bind source).
    pub host_workdir: &'a str,
    /// The storage directory as the server sees it: mounted at the same path in the container,
    /// so paths the server returns are valid inside and tracebacks name them.
    pub workdir: &'a str,
    pub instance: &'a str,
    /// Unix time the container was created.
    pub now_unix: u64,
}

impl RunPolicy<'_> {
    /// Seconds the container may live at most (enforced inside it by `timeout -s KILL`).
    pub fn lifetime_secs(&self) -> u64 {
        self.limits.timeout_secs + DEADLINE_GRACE_SECS
    }
}

/// The variables a run sees: an allow-list built here, never the server's own environment.
pub fn run_env(env: &EnvSpec) -> Vec<String> {
    let mut vars: Vec<(String, String)> = [
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONIOENCODING", "utf-8"),
        ("MPLBACKEND", "Agg"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(env.activation_env());
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The command of a run container: the runner under the in-container deadline.
pub fn run_command(policy: &RunPolicy) -> Vec<String> {
    vec![
        "timeout".to_string(),
        "-s".to_string(),
        "KILL".to_string(),
        policy.lifetime_secs().to_string(),
        policy.env.interpreter(),
        "-c".to_string(),
        RUNNER.to_string(),
    ]
}

pub fn labels(policy: &RunPolicy) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), policy.instance.to_string()),
        (
            LABEL_DEADLINE.to_string(),
            (policy.now_unix + policy.lifetime_secs()).to_string(),
        ),
        (LABEL_ENV.to_string(), policy.env.to_string()),
    ])
}

/// The full container settings of a run.
pub fn run_container(policy: &RunPolicy) -> ContainerCreateBody {
    let limits = policy.limits;
    let host_config = HostConfig {
        network_mode: Some("none".to_string()),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={}", limits.tmpfs_bytes),
        )])),
        memory: Some(limits.memory_bytes),
        memory_swap: Some(limits.memory_bytes),
        nano_cpus: Some((limits.cpus * 1e9).round() as i64),
        pids_limit: Some(limits.pids),
        init: Some(true),
        ipc_mode: Some("private".to_string()),
        shm_size: Some(limits.tmpfs_bytes),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("core".to_string()),
            soft: Some(0),
            hard: Some(0),
        }]),
        mounts: Some(vec![Mount {
            target: Some(policy.workdir.to_string()),
            source: Some(policy.host_workdir.to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        }]),
        auto_remove: Some(false),
        privileged: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(policy.image.to_string()),
        // The entrypoint replaces any the image has; no image command is appended.
        entrypoint: Some(run_command(policy)),
        cmd: Some(vec![]),
        user: Some(format!("{}:{}", policy.run_as.0, policy.run_as.1)),
        env: Some(run_env(policy.env)),
        working_dir: Some(policy.workdir.to_string()),
        labels: Some(labels(policy)),
        hostname: Some("sandbox".to_string()),
        network_disabled: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::EnvType;

    fn limits() -> Limits {
        Limits {
            timeout_secs: 30,
            memory_bytes: 512 << 20,
            cpus: 1.5,
            pids: 128,
            output_bytes: 1 << 20,
            tmpfs_bytes: 64 << 20,
            max_code_bytes: 1 << 20,
        }
    }

    fn body(env: &EnvSpec) -> ContainerCreateBody {
        let limits = limits();
        let policy = RunPolicy {
            image: "mcp-code-executor/venv",
            env,
            limits: &limits,
            run_as: (1000, 1001),
            host_workdir: "/host/code",
            workdir: "/data/code",
            instance: "inst-1",
            now_unix: 1_000,
        };
        run_container(&policy)
    }

    #[test]
    fn isolation_baseline() {
        let b = body(&EnvSpec::default_for(EnvType::Venv));
        let h = b.host_config.clone().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(b.network_disabled, Some(true));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.cap_add, None);
        assert_eq!(
            h.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.init, Some(true));
        assert_eq!(b.user.as_deref(), Some("1000:1001"));
        assert_eq!(b.tty, Some(false));
        assert_eq!(b.stdin_once, Some(true));
        assert_eq!(h.auto_remove, Some(false));
        let tmpfs = h.tmpfs.unwrap();
        assert_eq!(
            tmpfs.get("/tmp").map(String::as_str),
            Some("rw,nosuid,nodev,size=67108864")
        );
        assert_eq!(tmpfs.len(), 1);
    }

    #[test]
    fn resource_limits() {
        let h = body(&EnvSpec::default_for(EnvType::Venv))
            .host_config
            .unwrap();
        assert_eq!(h.memory, Some(512 << 20));
        assert_eq!(
            h.memory_swap,
            Some(512 << 20),
            "swap must not extend the memory limit"
        );
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.pids_limit, Some(128));
        let core = h.ulimits.unwrap();
        assert_eq!(core[0].name.as_deref(), Some("core"));
        assert_eq!((core[0].soft, core[0].hard), (Some(0), Some(0)));
    }

    #[test]
    fn only_the_storage_dir_is_mounted() {
        let b = body(&EnvSpec::default_for(EnvType::Venv));
        let h = b.host_config.unwrap();
        let mounts = h.mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].source.as_deref(), Some("/host/code"));
        assert_eq!(mounts[0].target.as_deref(), Some("/data/code"));
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(h.binds, None);
        assert_eq!(h.volumes_from, None);
        assert_eq!(b.working_dir.as_deref(), Some("/data/code"));
    }

    #[test]
    fn environment_is_an_allow_list() {
        let env = run_env(&EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap());
        assert!(env.contains(&"HOME=/tmp".to_string()));
        assert!(env.contains(&"MPLBACKEND=Agg".to_string()));
        assert!(env.contains(&"CONDA_PREFIX=/opt/conda/envs/analysis".to_string()));
        assert!(
            env.iter()
                .any(|v| v.starts_with("PATH=/opt/conda/envs/analysis/bin:"))
        );
        let names: Vec<&str> = env.iter().filter_map(|v| v.split('=').next()).collect();
        for name in &names {
            assert!(
                [
                    "HOME",
                    "TMPDIR",
                    "LANG",
                    "PYTHONUNBUFFERED",
                    "PYTHONDONTWRITEBYTECODE",
                    "PYTHONIOENCODING",
                    "MPLBACKEND",
                    "PATH",
                    "CONDA_PREFIX",
                    "CONDA_DEFAULT_ENV",
                    "VIRTUAL_ENV"
                ]
                .contains(name),
                "unexpected variable {name}"
            );
        }
    }

    #[test]
    fn command_runs_the_env_interpreter_under_a_deadline() {
        let b = body(&EnvSpec::default_for(EnvType::VenvUv));
        let cmd = b.entrypoint.unwrap();
        assert_eq!(&cmd[..4], &["timeout", "-s", "KILL", "35"]);
        assert_eq!(cmd[4], "/opt/uv-venv/bin/python");
        assert_eq!(cmd[5], "-c");
        assert_eq!(cmd[6], RUNNER);
        assert_eq!(b.cmd, Some(vec![]));
    }

    #[test]
    fn labels_mark_the_container() {
        let l = body(&EnvSpec::default_for(EnvType::Venv)).labels.unwrap();
        assert_eq!(l.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(l.get(LABEL_INSTANCE).map(String::as_str), Some("inst-1"));
        assert_eq!(l.get(LABEL_DEADLINE).map(String::as_str), Some("1035"));
        assert_eq!(l.get(LABEL_ENV).map(String::as_str), Some("venv /opt/venv"));
    }
}
