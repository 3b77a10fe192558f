//! Policy: the pure translation of a purpose, limits and an environment into container settings
//! (DESIGN §3). Nothing here talks to Docker; every field is unit-tested.
//!
//! | purpose  | user    | network          | env volume | storage dir | capabilities |
//! |----------|---------|------------------|------------|-------------|--------------|
//! | Run      | run_as  | none             | read-only  | read-write  | none         |
//! | Inspect  | run_as  | none             | read-only  | —           | none         |
//! | Install  | run_as  | install network  | read-write | —           | none         |
//! | Create   | run_as  | none             | read-write | —           | none         |
//! | Prepare  | root    | none             | read-write | —           | CHOWN only   |
//!
//! Every container also gets: no-new-privileges, read-only root filesystem with a size-limited
//! `/tmp`, memory = memory+swap, CPU and pids limits, init, no core dumps, private IPC, an
//! allow-listed environment, and a deadline enforced inside it.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, ResourcesUlimits,
};

use crate::limits::{InstallSource, Limits, OPEN_FILES_LIMIT};
use crate::environment::EnvSpec;

/// Every container this server makes carries this label (value `true`).
pub const LABEL_MANAGED: &str = "mcp-code-executor.managed";
/// The id of the server instance that made the container.
pub const LABEL_INSTANCE: &str = "mcp-code-executor.instance";
/// Unix time after which the container is certainly finished (its in-container deadline).
pub const LABEL_DEADLINE: &str = "mcp-code-executor.deadline";
/// The environment the container uses.
pub const LABEL_ENV: &str = "mcp-code-executor.env";
/// What the container is for (run, inspect, install, create, prepare).
pub const LABEL_PURPOSE: &str = "mcp-code-executor.purpose";
/// Marks environment volumes (value `true`).
pub const LABEL_ENV_VOLUME: &str = "mcp-code-executor.env-volume";
/// On environment volumes: the environment type.
pub const LABEL_ENV_TYPE: &str = "mcp-code-executor.env-type";
/// On environment volumes: the venv path or conda name.
pub const LABEL_ENV_LOCATION: &str = "mcp-code-executor.env-location";
/// On environment volumes: the image they were seeded from.
pub const LABEL_IMAGE: &str = "mcp-code-executor.image";
/// On the marker volume saying an environment volume is complete: that volume's name.
pub const LABEL_ENV_READY: &str = "mcp-code-executor.env-ready";

/// Seconds the in-container deadline adds to the server's timeout: the server kills first, the
/// container's own deadline is the backstop when the server itself is gone.
pub const DEADLINE_GRACE_SECS: u64 = 5;
/// Where the CA bundle for installs is mounted.
pub const CA_PATH: &str = "/etc/mcp-code-executor/ca.pem";

/// The runner script, fed to `python -c`; it reads the program from stdin.
pub const RUNNER: &str = include_str!("runner.py");

/// What a container is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Run the user's program.
    Run,
    /// Look at the environment (offline, read-only): package checks.
    Inspect,
    /// Install packages: the only purpose with network access.
    Install,
    /// Create a new environment in its (empty) volume.
    Create,
    /// Hand a freshly seeded environment volume to the run user (root with CAP_CHOWN only).
    Prepare,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Run => "run",
            Purpose::Inspect => "inspect",
            Purpose::Install => "install",
            Purpose::Create => "create",
            Purpose::Prepare => "prepare",
        }
    }

    fn env_writable(self) -> bool {
        matches!(self, Purpose::Install | Purpose::Create | Purpose::Prepare)
    }

    /// Create and Prepare run before the environment's interpreter is known to exist.
    fn uses_system_python(self) -> bool {
        matches!(self, Purpose::Create | Purpose::Prepare)
    }
}

/// Everything that decides how one container is made.
#[derive(Debug, Clone)]
pub struct RunPolicy<'a> {
    pub purpose: Purpose,
    pub image: &'a str,
    pub env: &'a EnvSpec,
    /// The named volume holding the environment, mounted at its prefix.
    pub env_volume: &'a str,
    /// Limits for this purpose (installs have their own).
    pub limits: &'a Limits,
    /// uid, gid of the program (never 0; Prepare alone runs as root, with CHOWN only).
    pub run_as: (u32, u32),
    /// The storage directory as the Docker daemon sees it (bind source; Run only).
    pub host_workdir: &'a str,
    /// The storage directory as the server sees it: mounted at the same path in the container,
    /// so paths the server returns are valid inside and tracebacks name them.
    pub workdir: &'a str,
    /// For Install: where packages come from.
    pub install: Option<&'a InstallSource>,
    /// Seconds a pre-started container may wait for its program (0: started for one at once).
    pub idle_secs: u64,
    /// Modules a pre-started runner imports while it waits (Run only).
    pub preimport: &'a [String],
    pub instance: &'a str,
    /// Unix time the container is created.
    pub now_unix: u64,
}

impl RunPolicy<'_> {
    /// Seconds the container may live at most (enforced inside it by `timeout -s KILL`).
    pub fn lifetime_secs(&self) -> u64 {
        self.idle_secs + self.limits.timeout_secs + DEADLINE_GRACE_SECS
    }
}

/// The name of the volume holding `env` as seeded from `image_id` and owned by `run_as`. A
/// rebuilt image or another run user gets a fresh volume.
pub fn env_volume_name(env: &EnvSpec, image_id: &str, run_as: (u32, u32)) -> String {
    let slug: String = env
        .location()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let id = image_id.trim_start_matches("sha256:");
    let key = format!(
        "{}|{}|{id}|{}:{}",
        env.env_type,
        env.location(),
        run_as.0,
        run_as.1
    );
    let digest = fnv1a64(key.as_bytes());
    format!("mce-{}-{slug}-{digest:016x}", env.env_type.as_str())
}

/// A stable, dependency-free hash for names (not for security).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Labels of an environment volume.
pub fn env_volume_labels(env: &EnvSpec, image: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_ENV_VOLUME.to_string(), "true".to_string()),
        (
            LABEL_ENV_TYPE.to_string(),
            env.env_type.as_str().to_string(),
        ),
        (LABEL_ENV_LOCATION.to_string(), env.location().to_string()),
        (LABEL_IMAGE.to_string(), image.to_string()),
    ])
}

/// The marker volume whose existence says `volume` is seeded and handed to the run user.
pub fn ready_marker_name(volume: &str) -> String {
    format!("{volume}-ready")
}

/// The name of the lock container for seeding `volume` (container names are unique
/// daemon-wide, so only one server at a time can create it).
pub fn seed_lock_name(volume: &str) -> String {
    format!("{volume}-seeding")
}

/// The lock container: never started, mounts nothing, and carries a deadline so that the
/// leftover cleanup removes it if its server dies while seeding.
pub fn lock_container(
    image: &str,
    instance: &str,
    now_unix: u64,
    lifetime_secs: u64,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["true".to_string()]),
        cmd: Some(vec![]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), instance.to_string()),
            (
                LABEL_DEADLINE.to_string(),
                (now_unix + lifetime_secs).to_string(),
            ),
            (LABEL_PURPOSE.to_string(), "lock".to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            cap_drop: Some(vec!["ALL".to_string()]),
            readonly_rootfs: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sentinel: a tiny container whose stdin is attached to this server for the server's whole
/// life. When the server dies (even by SIGKILL) the connection drops, stdin closes and the
/// sentinel exits, so "a running sentinel" means "a live server".
pub fn sentinel_container(
    image: &str,
    instance: &str,
    run_as: (u32, u32),
    now_unix: u64,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![
            "python3".to_string(),
            "-c".to_string(),
            "import sys; sys.stdin.buffer.read()".to_string(),
        ]),
        cmd: Some(vec![]),
        user: Some(format!("{}:{}", run_as.0, run_as.1)),
        network_disabled: Some(true),
        attach_stdin: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), instance.to_string()),
            // Never expires by time: it ends with its server.
            (
                LABEL_DEADLINE.to_string(),
                (now_unix + 10 * 365 * 86400).to_string(),
            ),
            (LABEL_PURPOSE.to_string(), SENTINEL.to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges:true".to_string()]),
            readonly_rootfs: Some(true),
            memory: Some(32 << 20),
            memory_swap: Some(32 << 20),
            pids_limit: Some(4),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The purpose label of sentinels.
pub const SENTINEL: &str = "sentinel";

/// Whether a listed container should be removed by a starting server: it is past its deadline,
/// or it belongs to an instance with no running sentinel and is old enough that its server
/// cannot still be starting up.
pub fn is_leftover(
    labels: &HashMap<String, String>,
    created_unix: i64,
    live_instances: &std::collections::HashSet<String>,
    now_unix: u64,
) -> bool {
    let expired = labels
        .get(LABEL_DEADLINE)
        .and_then(|d| d.parse::<u64>().ok())
        .is_none_or(|d| d <= now_unix);
    let orphan = labels
        .get(LABEL_INSTANCE)
        .is_none_or(|i| !live_instances.contains(i))
        && created_unix + ORPHAN_GRACE_SECS < now_unix as i64;
    expired || orphan
}

/// Containers of an instance without a sentinel are left alone this long after creation.
pub const ORPHAN_GRACE_SECS: i64 = 10;

/// The variables a container sees: an allow-list built here, never the server's own environment.
pub fn container_env(policy: &RunPolicy) -> Vec<String> {
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
    vars.extend(policy.env.activation_env());
    if let (Purpose::Install, Some(source)) = (policy.purpose, policy.install) {
        let mut set = |k: &str, v: &str| vars.push((k.to_string(), v.to_string()));
        set("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        set("PIP_NO_INPUT", "1");
        set("PIP_NO_CACHE_DIR", "1");
        set("PIP_PROGRESS_BAR", "off");
        set("UV_CACHE_DIR", "/tmp/uv-cache");
        set("CONDA_PKGS_DIRS", "/tmp/conda-pkgs");
        if source.ca_bundle.is_some() {
            for k in [
                "PIP_CERT",
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CONDA_SSL_VERIFY",
            ] {
                set(k, CA_PATH);
            }
            set("UV_NATIVE_TLS", "1");
        }
        if let Some(url) = &source.index_url {
            set("PIP_INDEX_URL", url);
            set("UV_INDEX_URL", url);
        }
        if let Some(url) = &source.extra_index_url {
            set("PIP_EXTRA_INDEX_URL", url);
            set("UV_EXTRA_INDEX_URL", url);
        }
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The command: the runner under the in-container deadline.
pub fn container_command(policy: &RunPolicy) -> Vec<String> {
    let python = if policy.purpose.uses_system_python() {
        "python3".to_string()
    } else {
        policy.env.interpreter()
    };
    let mut cmd = vec![
        "timeout".to_string(),
        "-s".to_string(),
        "KILL".to_string(),
        policy.lifetime_secs().to_string(),
        python,
        "-c".to_string(),
        RUNNER.to_string(),
    ];
    if policy.purpose == Purpose::Run && !policy.preimport.is_empty() {
        cmd.push(policy.preimport.join(","));
    }
    cmd
}

pub fn container_labels(policy: &RunPolicy) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), policy.instance.to_string()),
        (
            LABEL_DEADLINE.to_string(),
            (policy.now_unix + policy.lifetime_secs()).to_string(),
        ),
        (LABEL_ENV.to_string(), policy.env.to_string()),
        (
            LABEL_PURPOSE.to_string(),
            policy.purpose.as_str().to_string(),
        ),
    ])
}

fn mounts(policy: &RunPolicy) -> Vec<Mount> {
    let mut mounts = vec![Mount {
        target: Some(policy.env.prefix()),
        source: Some(policy.env_volume.to_string()),
        typ: Some(MountType::VOLUME),
        read_only: Some(!policy.purpose.env_writable()),
        // An empty volume is seeded with what the image has at the prefix.
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if policy.purpose == Purpose::Run {
        mounts.push(Mount {
            target: Some(policy.workdir.to_string()),
            source: Some(policy.host_workdir.to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        });
    }
    if let (
        Purpose::Install,
        Some(InstallSource {
            ca_bundle: Some(ca),
            ..
        }),
    ) = (policy.purpose, policy.install)
    {
        mounts.push(Mount {
            target: Some(CA_PATH.to_string()),
            source: Some(ca.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

fn ulimit(name: &str, value: i64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(value),
        hard: Some(value),
    }
}

/// The full container settings.
pub fn container_body(policy: &RunPolicy) -> ContainerCreateBody {
    let limits = policy.limits;
    let purpose = policy.purpose;
    let network = match (purpose, policy.install) {
        (Purpose::Install, Some(source)) => source.network.clone(),
        _ => "none".to_string(),
    };
    let (user, cap_add) = if purpose == Purpose::Prepare {
        ("0:0".to_string(), Some(vec!["CHOWN".to_string()]))
    } else {
        (format!("{}:{}", policy.run_as.0, policy.run_as.1), None)
    };
    let workdir = if purpose == Purpose::Run {
        policy.workdir.to_string()
    } else {
        "/tmp".to_string()
    };
    let host_config = HostConfig {
        network_mode: Some(network.clone()),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add,
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
        ulimits: Some(vec![
            ulimit("core", 0),
            ulimit("fsize", limits.max_file_bytes),
            ulimit("nofile", OPEN_FILES_LIMIT),
        ]),
        mounts: Some(mounts(policy)),
        auto_remove: Some(false),
        privileged: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(policy.image.to_string()),
        // The entrypoint replaces any the image has; no image command is appended.
        entrypoint: Some(container_command(policy)),
        cmd: Some(vec![]),
        user: Some(user),
        env: Some(container_env(policy)),
        working_dir: Some(workdir),
        labels: Some(container_labels(policy)),
        hostname: Some("sandbox".to_string()),
        network_disabled: Some(network == "none"),
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
            max_file_bytes: 256 << 20,
        }
    }

    fn source() -> InstallSource {
        InstallSource {
            network: "bridge".to_string(),
            ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".to_string()),
            index_url: Some("https://mirror.example/simple".to_string()),
            extra_index_url: None,
        }
    }

    fn body_for(purpose: Purpose, env: &EnvSpec) -> ContainerCreateBody {
        let limits = limits();
        let source = source();
        let policy = RunPolicy {
            purpose,
            image: "mcp-code-executor/venv",
            env,
            env_volume: "mce-venv-vol",
            limits: &limits,
            run_as: (1000, 1001),
            host_workdir: "/host/code",
            workdir: "/data/code",
            install: Some(&source),
            idle_secs: 0,
            preimport: &[],
            instance: "inst-1",
            now_unix: 1_000,
        };
        container_body(&policy)
    }

    #[test]
    fn pre_started_containers_live_longer_and_preimport() {
        let limits = limits();
        let env = venv();
        let preimport = vec!["numpy".to_string(), "pandas".to_string()];
        let policy = RunPolicy {
            purpose: Purpose::Run,
            image: "i",
            env: &env,
            env_volume: "v",
            limits: &limits,
            run_as: (1000, 1000),
            host_workdir: "/h",
            workdir: "/w",
            install: None,
            idle_secs: 600,
            preimport: &preimport,
            instance: "x",
            now_unix: 0,
        };
        let b = container_body(&policy);
        let cmd = b.entrypoint.unwrap();
        assert_eq!(cmd[3], "635");
        assert_eq!(cmd.last().map(String::as_str), Some("numpy,pandas"));
        assert_eq!(
            b.labels.unwrap().get(LABEL_DEADLINE).map(String::as_str),
            Some("635")
        );
        // Only runs pre-import.
        let install = container_body(&RunPolicy {
            purpose: Purpose::Install,
            ..policy
        });
        assert_eq!(
            install.entrypoint.unwrap().last().map(String::as_str),
            Some(RUNNER)
        );
    }

    fn body(env: &EnvSpec) -> ContainerCreateBody {
        body_for(Purpose::Run, env)
    }

    fn venv() -> EnvSpec {
        EnvSpec::default_for(EnvType::Venv)
    }

    #[test]
    fn isolation_baseline() {
        for purpose in [
            Purpose::Run,
            Purpose::Inspect,
            Purpose::Install,
            Purpose::Create,
            Purpose::Prepare,
        ] {
            let b = body_for(purpose, &venv());
            let h = b.host_config.clone().unwrap();
            assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]), "{purpose:?}");
            assert_eq!(
                h.security_opt,
                Some(vec!["no-new-privileges:true".to_string()])
            );
            assert_eq!(h.readonly_rootfs, Some(true));
            assert_eq!(h.privileged, Some(false));
            assert_eq!(h.init, Some(true));
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
    }

    #[test]
    fn only_installs_have_network() {
        for purpose in [
            Purpose::Run,
            Purpose::Inspect,
            Purpose::Create,
            Purpose::Prepare,
        ] {
            let b = body_for(purpose, &venv());
            assert_eq!(
                b.host_config.unwrap().network_mode.as_deref(),
                Some("none"),
                "{purpose:?}"
            );
            assert_eq!(b.network_disabled, Some(true));
        }
        let b = body_for(Purpose::Install, &venv());
        assert_eq!(
            b.host_config.unwrap().network_mode.as_deref(),
            Some("bridge")
        );
        assert_eq!(b.network_disabled, Some(false));
    }

    #[test]
    fn only_prepare_is_root_and_only_with_chown() {
        for purpose in [
            Purpose::Run,
            Purpose::Inspect,
            Purpose::Install,
            Purpose::Create,
        ] {
            let b = body_for(purpose, &venv());
            assert_eq!(b.user.as_deref(), Some("1000:1001"), "{purpose:?}");
            assert_eq!(b.host_config.unwrap().cap_add, None);
        }
        let b = body_for(Purpose::Prepare, &venv());
        assert_eq!(b.user.as_deref(), Some("0:0"));
        assert_eq!(
            b.host_config.unwrap().cap_add,
            Some(vec!["CHOWN".to_string()])
        );
    }

    #[test]
    fn resource_limits() {
        let h = body(&venv()).host_config.unwrap();
        assert_eq!(h.memory, Some(512 << 20));
        assert_eq!(
            h.memory_swap,
            Some(512 << 20),
            "swap must not extend the memory limit"
        );
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.pids_limit, Some(128));
        let ulimits: Vec<(String, i64, i64)> = h
            .ulimits
            .unwrap()
            .into_iter()
            .map(|u| (u.name.unwrap(), u.soft.unwrap(), u.hard.unwrap()))
            .collect();
        assert_eq!(
            ulimits,
            [
                ("core".to_string(), 0, 0),
                ("fsize".to_string(), 256 << 20, 256 << 20),
                ("nofile".to_string(), 1024, 1024)
            ]
        );
    }

    #[test]
    fn runs_mount_the_env_read_only_and_the_storage_dir() {
        let b = body(&venv());
        let h = b.host_config.unwrap();
        let mounts = h.mounts.unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].source.as_deref(), Some("mce-venv-vol"));
        assert_eq!(mounts[0].target.as_deref(), Some("/opt/venv"));
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].source.as_deref(), Some("/host/code"));
        assert_eq!(mounts[1].target.as_deref(), Some("/data/code"));
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
        assert_eq!(mounts[1].read_only, Some(false));
        assert_eq!(h.binds, None);
        assert_eq!(h.volumes_from, None);
        assert_eq!(b.working_dir.as_deref(), Some("/data/code"));
    }

    #[test]
    fn other_purposes_never_see_the_storage_dir() {
        for purpose in [
            Purpose::Inspect,
            Purpose::Install,
            Purpose::Create,
            Purpose::Prepare,
        ] {
            let b = body_for(purpose, &venv());
            let mounts = b.host_config.unwrap().mounts.unwrap();
            assert!(
                mounts
                    .iter()
                    .all(|m| m.source.as_deref() != Some("/host/code")),
                "{purpose:?}"
            );
            assert_eq!(
                mounts[0].read_only,
                Some(purpose == Purpose::Inspect),
                "{purpose:?}"
            );
            assert_eq!(b.working_dir.as_deref(), Some("/tmp"));
        }
    }

    #[test]
    fn installs_get_the_ca_bundle_and_index_from_configuration() {
        let b = body_for(Purpose::Install, &venv());
        let mounts = b.host_config.unwrap().mounts.unwrap();
        let ca = mounts
            .iter()
            .find(|m| m.target.as_deref() == Some(CA_PATH))
            .unwrap();
        assert_eq!(
            ca.source.as_deref(),
            Some("/etc/ssl/certs/ca-certificates.crt")
        );
        assert_eq!(ca.read_only, Some(true));
        let env = b.env.unwrap();
        for var in [
            format!("PIP_CERT={CA_PATH}"),
            format!("SSL_CERT_FILE={CA_PATH}"),
            "PIP_INDEX_URL=https://mirror.example/simple".to_string(),
            "UV_INDEX_URL=https://mirror.example/simple".to_string(),
        ] {
            assert!(env.contains(&var), "{var} missing from {env:?}");
        }
        // Runs get none of it.
        let run_env = body(&venv()).env.unwrap();
        assert!(
            !run_env
                .iter()
                .any(|v| v.starts_with("PIP_") || v.starts_with("SSL_CERT"))
        );
    }

    #[test]
    fn environment_is_an_allow_list() {
        let env = body(&EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap())
            .env
            .unwrap();
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
        let create = body_for(Purpose::Create, &venv()).entrypoint.unwrap();
        assert_eq!(create[4], "python3");
    }

    #[test]
    fn labels_mark_the_container() {
        let l = body(&venv()).labels.unwrap();
        assert_eq!(l.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(l.get(LABEL_INSTANCE).map(String::as_str), Some("inst-1"));
        assert_eq!(l.get(LABEL_DEADLINE).map(String::as_str), Some("1035"));
        assert_eq!(l.get(LABEL_ENV).map(String::as_str), Some("venv /opt/venv"));
        assert_eq!(l.get(LABEL_PURPOSE).map(String::as_str), Some("run"));
    }

    #[test]
    fn lock_container_is_inert_and_expires() {
        let b = lock_container("img", "inst", 100, 50);
        assert_eq!(b.entrypoint, Some(vec!["true".to_string()]));
        assert!(b.host_config.as_ref().unwrap().mounts.is_none());
        let l = b.labels.unwrap();
        assert_eq!(l.get(LABEL_DEADLINE).map(String::as_str), Some("150"));
        assert_eq!(l.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(seed_lock_name("v"), "v-seeding");
        assert_eq!(ready_marker_name("v"), "v-ready");
    }

    #[test]
    fn leftovers() {
        let live: std::collections::HashSet<String> = ["alive".to_string()].into();
        let labels = |inst: &str, deadline: u64| {
            HashMap::from([
                (LABEL_INSTANCE.to_string(), inst.to_string()),
                (LABEL_DEADLINE.to_string(), deadline.to_string()),
            ])
        };
        // A live instance's container before its deadline stays.
        assert!(!is_leftover(&labels("alive", 2000), 900, &live, 1000));
        // Past its deadline it goes, live or not.
        assert!(is_leftover(&labels("alive", 999), 900, &live, 1000));
        // A dead instance's container goes once it is older than the grace period...
        assert!(is_leftover(&labels("dead", 2000), 900, &live, 1000));
        // ...but not while its server may still be starting its sentinel.
        assert!(!is_leftover(&labels("dead", 2000), 990, &live, 1000));
        // No labels at all: a leftover.
        assert!(is_leftover(&HashMap::new(), 0, &live, 1000));
        let s = sentinel_container("img", "i", (1000, 1000), 0);
        assert_eq!(
            s.labels.unwrap().get(LABEL_PURPOSE).map(String::as_str),
            Some(SENTINEL)
        );
        assert_eq!(s.stdin_once, Some(true));
        assert!(s.host_config.unwrap().mounts.is_none());
    }

    #[test]
    fn volume_names() {
        let a = env_volume_name(&venv(), "sha256:abc", (1000, 1000));
        assert!(a.starts_with("mce-venv-opt_venv-"), "{a}");
        assert_eq!(a, env_volume_name(&venv(), "sha256:abc", (1000, 1000)));
        assert_ne!(a, env_volume_name(&venv(), "sha256:abd", (1000, 1000)));
        assert_ne!(a, env_volume_name(&venv(), "sha256:abc", (1001, 1000)));
        let x = EnvSpec::new(EnvType::Venv, Some("/opt/a_b")).unwrap();
        let y = EnvSpec::new(EnvType::Venv, Some("/opt/a/b")).unwrap();
        assert_ne!(
            env_volume_name(&x, "i", (1, 1)),
            env_volume_name(&y, "i", (1, 1))
        );
        let long = EnvSpec::new(EnvType::Conda, Some(&"n".repeat(64))).unwrap();
        let name = env_volume_name(&long, "i", (1, 1));
        assert!(
            name.len() < 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
    }
}
