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
//! allow-listed environment, and a deadline enforced inside it. Under an OCI runtime other than
//! the daemon's default (`RUNTIME`), [`super::runtime`] adds what that runtime needs.
//!
//! [`for_engine`] adapts a spec to the engine that makes it, so that every engine gives a
//! container the same walls: on Podman, a read-only root gets read-only `/run` and `/var/tmp`
//! (Podman would add writable, unbounded tmpfs there), a listed `nproc` (Podman requires it
//! when any ulimit is listed), and the seccomp profile `scripts/setup-podman.sh` writes:
//! Podman's default profile allows `unshare`/`clone` of new namespaces (user namespaces above
//! all) to everyone, Docker's only to CAP_SYS_ADMIN.

use std::borrow::Cow;
use std::collections::HashMap;

use super::copy::COPY_MOUNT;
use super::engine::{ContainerSpec, EngineKind, MountKind, MountSpec};
use super::labels::{self, LABEL_ENV};
use super::runtime;
use crate::environment::EnvSpec;
use crate::limits::{InstallSource, Limits, OPEN_FILES_LIMIT};

/// Seconds the in-container deadline adds to the server's timeout: the server kills first, the
/// container's own deadline is the backstop when the server itself is gone.
pub const DEADLINE_GRACE_SECS: u64 = 5;
/// Where the CA bundle for installs is mounted.
pub const CA_PATH: &str = "/etc/mcp-code-executor/ca.pem";

/// The runner script, fed to `python -c`; it reads the program from stdin.
pub const RUNNER: &str = concat!(include_str!("common.py"), include_str!("runner.py"));
/// The session runner, fed to `python -c`: one interpreter serving many calls (argv[1]: its
/// idle timeout in seconds).
pub const SESSION_RUNNER: &str = concat!(include_str!("common.py"), include_str!("session.py"));

/// What a container is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Run the user's program.
    Run,
    /// Keep a live interpreter for a session's calls (same isolation as Run).
    Session,
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
            Purpose::Session => "session",
            Purpose::Inspect => "inspect",
            Purpose::Install => "install",
            Purpose::Create => "create",
            Purpose::Prepare => "prepare",
        }
    }

    fn env_writable(self) -> bool {
        matches!(self, Purpose::Install | Purpose::Create | Purpose::Prepare)
    }

    /// Whether the container runs the user's code (and sees the storage folder).
    pub fn runs_user_code(self) -> bool {
        matches!(self, Purpose::Run | Purpose::Session)
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
    /// The storage directory as the Docker daemon sees it (bind source; Run only). Empty in
    /// copy mode (STORAGE_MODE=copy): an anonymous volume at `COPY_MOUNT` instead.
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
    /// The OCI runtime (`RUNTIME`; `None`: the daemon's default). Installs use its network
    /// registration (see [`runtime::for_purpose`]).
    pub runtime: Option<&'a str>,
}

impl RunPolicy<'_> {
    /// Seconds the container may live at most (enforced inside it by `timeout -s KILL`).
    pub fn lifetime_secs(&self) -> u64 {
        self.idle_secs + self.limits.timeout_secs + DEADLINE_GRACE_SECS
    }
}

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
        if policy.purpose == Purpose::Session {
            SESSION_RUNNER
        } else {
            RUNNER
        }
        .to_string(),
    ];
    if policy.purpose == Purpose::Run && !policy.preimport.is_empty() {
        cmd.push(policy.preimport.join(","));
    }
    cmd
}

/// The labels of a container made for `policy`.
pub fn container_labels(policy: &RunPolicy) -> HashMap<String, String> {
    let mut l = labels::base_labels(
        policy.instance,
        policy.now_unix + policy.lifetime_secs(),
        policy.purpose.as_str(),
    );
    l.insert(LABEL_ENV.to_string(), policy.env.to_string());
    l
}

fn mounts(policy: &RunPolicy) -> Vec<MountSpec> {
    let mut mounts = vec![MountSpec {
        kind: MountKind::Volume,
        source: policy.env_volume.to_string(),
        target: policy.env.prefix(),
        read_only: !policy.purpose.env_writable(),
    }];
    if policy.purpose.runs_user_code() && policy.host_workdir.is_empty() {
        // STORAGE_MODE=copy: an anonymous volume (removed with the container) receives the
        // folder's copy.
        mounts.push(MountSpec {
            kind: MountKind::Volume,
            source: String::new(),
            target: COPY_MOUNT.to_string(),
            read_only: false,
        });
    } else if policy.purpose.runs_user_code() {
        mounts.push(MountSpec {
            kind: MountKind::Bind,
            source: policy.host_workdir.to_string(),
            target: policy.workdir.to_string(),
            read_only: false,
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
        mounts.push(MountSpec {
            kind: MountKind::Bind,
            source: ca.clone(),
            target: CA_PATH.to_string(),
            read_only: true,
        });
    }
    mounts
}

/// The hardening every container of ours gets, whatever it is for: no network, all
/// capabilities dropped, no-new-privileges, read-only root, init. Callers add to it.
fn hardened(
    image: &str,
    entrypoint: Vec<String>,
    labels: HashMap<String, String>,
) -> ContainerSpec {
    ContainerSpec {
        image: image.to_string(),
        entrypoint,
        labels,
        network: "none".to_string(),
        cap_drop: vec!["ALL".to_string()],
        no_new_privileges: true,
        readonly_rootfs: true,
        init: true,
        ..Default::default()
    }
}

/// The full container settings for `policy`.
pub fn container_spec(policy: &RunPolicy) -> ContainerSpec {
    let limits = policy.limits;
    let purpose = policy.purpose;
    let mut spec = hardened(
        policy.image,
        container_command(policy),
        container_labels(policy),
    );
    if let (Purpose::Install, Some(source)) = (purpose, policy.install) {
        spec.network = source.network.clone();
    }
    if purpose == Purpose::Prepare {
        spec.user = Some("0:0".to_string());
        spec.cap_add = vec!["CHOWN".to_string()];
    } else {
        spec.user = Some(format!("{}:{}", policy.run_as.0, policy.run_as.1));
    }
    spec.working_dir = Some(if purpose.runs_user_code() {
        policy.workdir.to_string()
    } else {
        "/tmp".to_string()
    });
    spec.env = container_env(policy);
    spec.hostname = Some("sandbox".to_string());
    spec.interactive = true;
    // A session's stdin outlives one attach: a restarted server attaches again.
    spec.keep_stdin_open = purpose == Purpose::Session;
    spec.tmpfs = HashMap::from([(
        "/tmp".to_string(),
        format!("rw,nosuid,nodev,size={}", limits.tmpfs_bytes),
    )]);
    spec.memory_bytes = Some(limits.memory_bytes);
    spec.nano_cpus = Some((limits.cpus * 1e9).round() as i64);
    spec.pids_limit = Some(limits.pids);
    spec.private_ipc_shm_bytes = Some(limits.tmpfs_bytes);
    spec.ulimits = vec![
        ("core".to_string(), 0),
        ("fsize".to_string(), limits.max_file_bytes),
        ("nofile".to_string(), OPEN_FILES_LIMIT),
    ];
    spec.mounts = mounts(policy);
    runtime::apply(&mut spec, runtime::for_purpose(policy.runtime, purpose));
    spec
}

/// The `nproc` limit a container gets on Podman when its create lists ulimits: Podman then
/// drops its default ulimits, and requires nproc and nofile to be listed, no higher than its own
/// hard limits without CAP_SYS_RESOURCE (`scripts/setup-podman.sh` sets 32768 as the default).
/// It bounds the processes of the run user across the host; the pids limit bounds the
/// container's own.
pub const PODMAN_NPROC: i64 = 32768;
/// Where Podman mounts extra writable tmpfs (without a size limit) when the root is read-only.
pub const PODMAN_EXTRA_TMPFS: [&str; 2] = ["/run", "/var/tmp"];
/// The tmpfs mounted there instead: read-only, like the rest of the root (Podman copies the
/// image's files at the path into it, so it looks as under Docker).
pub const READONLY_TMPFS: &str = "ro,nosuid,nodev,noexec,size=1m";

/// The seccomp profile containers get on Podman (written by `scripts/setup-podman.sh`): Podman's
/// default profile with new namespaces (`unshare`, `clone` with `CLONE_NEW*`, `clone3`, `setns`,
/// `mount`, ...) only for CAP_SYS_ADMIN, as in Docker's default profile.
pub const PODMAN_SECCOMP_PROFILE: &str = "/etc/containers/mcp-code-executor/seccomp.json";

/// `spec` as `kind` must be asked for it so that the container gets the same walls everywhere
/// (see the module header). Docker takes it as it is.
pub fn for_engine(spec: &ContainerSpec, kind: EngineKind) -> Cow<'_, ContainerSpec> {
    if kind == EngineKind::Docker {
        return Cow::Borrowed(spec);
    }
    let mut spec = spec.clone();
    spec.seccomp_profile
        .get_or_insert_with(|| PODMAN_SECCOMP_PROFILE.to_string());
    if spec.readonly_rootfs {
        for path in PODMAN_EXTRA_TMPFS {
            spec.tmpfs
                .entry(path.to_string())
                .or_insert_with(|| READONLY_TMPFS.to_string());
        }
    }
    if !spec.ulimits.is_empty() {
        for (name, value) in [("nproc", PODMAN_NPROC), ("nofile", OPEN_FILES_LIMIT)] {
            if !spec.ulimits.iter().any(|(n, _)| n == name) {
                spec.ulimits.push((name.to_string(), value));
            }
        }
    }
    Cow::Owned(spec)
}

/// The lock container: never started, mounts nothing, and carries a deadline so that the
/// leftover cleanup removes it if its server dies while seeding.
pub fn lock_container(
    image: &str,
    instance: &str,
    now_unix: u64,
    lifetime_secs: u64,
) -> ContainerSpec {
    let labels = labels::base_labels(instance, now_unix + lifetime_secs, labels::LOCK);
    hardened(image, vec!["true".to_string()], labels)
}

/// The sentinel: a tiny container whose stdin is attached to this server for the server's whole
/// life. When the server dies (even by SIGKILL) the connection drops, stdin closes and the
/// sentinel exits, so "a running sentinel" means "a live server".
pub fn sentinel_container(
    image: &str,
    instance: &str,
    run_as: (u32, u32),
    now_unix: u64,
) -> ContainerSpec {
    let entrypoint = ["python3", "-c", "import sys; sys.stdin.buffer.read()"]
        .map(String::from)
        .to_vec();
    // Never expires by time: it ends with its server.
    let deadline = now_unix + 10 * 365 * 86400;
    let labels = labels::base_labels(instance, deadline, labels::SENTINEL);
    ContainerSpec {
        user: Some(format!("{}:{}", run_as.0, run_as.1)),
        interactive: true,
        memory_bytes: Some(32 << 20),
        pids_limit: Some(4),
        ..hardened(image, entrypoint, labels)
    }
}

/// The isolation a run container gets, in words, read off its settings (what
/// `get_environment_config` reports; derived, so it cannot drift from what is applied).
pub fn isolation_summary(spec: &ContainerSpec) -> Vec<String> {
    // The storage folder: bind-mounted, or (copy mode) the anonymous volume receiving its copy.
    let storage = |m: &&MountSpec| m.kind == MountKind::Bind || m.source.is_empty();
    let binds = spec.mounts.iter().filter(storage);
    let volumes_read_only = spec.mounts.iter().all(|m| storage(&m) || m.read_only);
    let only_storage = binds.count() <= 1 && volumes_read_only;
    let checks = [
        (spec.network == "none", "network none"),
        (
            spec.cap_drop.iter().any(|c| c == "ALL") && spec.cap_add.is_empty(),
            "all capabilities dropped",
        ),
        (spec.no_new_privileges, "no-new-privileges"),
        (
            spec.user.as_deref().is_some_and(|u| !u.starts_with("0:")),
            "non-root user",
        ),
        (
            spec.readonly_rootfs && spec.tmpfs.values().all(|o| o.contains("size=")),
            "read-only root filesystem, size-limited /tmp",
        ),
        (
            spec.memory_bytes.is_some() && spec.nano_cpus.is_some() && spec.pids_limit.is_some(),
            "memory (no swap), CPU and pids limits",
        ),
        (
            spec.init && spec.entrypoint.first().map(String::as_str) == Some("timeout"),
            "init reaps processes; wall-clock deadline",
        ),
        (!spec.env.is_empty(), "allow-listed environment variables"),
        (only_storage, "only the storage directory is mounted"),
    ];
    let mut words: Vec<String> = checks
        .into_iter()
        .filter(|(holds, _)| *holds)
        .map(|(_, text)| text.to_string())
        .collect();
    match spec.runtime.as_deref() {
        Some(rt) if runtime::is_gvisor(rt) => {
            words.push(format!("gVisor user-space kernel (OCI runtime {rt})"))
        }
        Some(rt) => words.push(format!("OCI runtime {rt}")),
        None => {}
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::EnvType;
    use crate::sandbox::labels::{LABEL_DEADLINE, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PURPOSE};

    const ALL: [Purpose; 5] = [
        Purpose::Run,
        Purpose::Inspect,
        Purpose::Install,
        Purpose::Create,
        Purpose::Prepare,
    ];

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

    fn spec_for(purpose: Purpose, env: &EnvSpec) -> ContainerSpec {
        spec_under(purpose, env, None)
    }

    fn spec_under(purpose: Purpose, env: &EnvSpec, runtime: Option<&str>) -> ContainerSpec {
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
            runtime,
        };
        container_spec(&policy)
    }

    fn spec(env: &EnvSpec) -> ContainerSpec {
        spec_for(Purpose::Run, env)
    }

    fn venv() -> EnvSpec {
        EnvSpec::default_for(EnvType::Venv)
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
            runtime: None,
        };
        let s = container_spec(&policy);
        assert_eq!(s.entrypoint[3], "635");
        assert_eq!(
            s.entrypoint.last().map(String::as_str),
            Some("numpy,pandas")
        );
        assert_eq!(
            s.labels.get(LABEL_DEADLINE).map(String::as_str),
            Some("635")
        );
        // Only runs pre-import.
        let install = container_spec(&RunPolicy {
            purpose: Purpose::Install,
            ..policy
        });
        assert_eq!(install.entrypoint.last().map(String::as_str), Some(RUNNER));
    }

    #[test]
    fn isolation_baseline() {
        for purpose in ALL {
            let s = spec_for(purpose, &venv());
            assert_eq!(s.cap_drop, vec!["ALL".to_string()], "{purpose:?}");
            assert!(s.no_new_privileges);
            assert!(s.readonly_rootfs);
            assert!(s.init);
            assert!(s.interactive);
            assert_eq!(s.runtime, None);
            assert_eq!(
                s.tmpfs.get("/tmp").map(String::as_str),
                Some("rw,nosuid,nodev,size=67108864")
            );
            assert_eq!(s.tmpfs.len(), 1);
            assert_eq!(s.private_ipc_shm_bytes, Some(64 << 20));
        }
    }

    #[test]
    fn only_installs_have_network() {
        for purpose in ALL {
            let expected = if purpose == Purpose::Install {
                "bridge"
            } else {
                "none"
            };
            assert_eq!(spec_for(purpose, &venv()).network, expected, "{purpose:?}");
        }
    }

    #[test]
    fn only_prepare_is_root_and_only_with_chown() {
        for purpose in [
            Purpose::Run,
            Purpose::Inspect,
            Purpose::Install,
            Purpose::Create,
        ] {
            let s = spec_for(purpose, &venv());
            assert_eq!(s.user.as_deref(), Some("1000:1001"), "{purpose:?}");
            assert!(s.cap_add.is_empty());
        }
        let s = spec_for(Purpose::Prepare, &venv());
        assert_eq!(s.user.as_deref(), Some("0:0"));
        assert_eq!(s.cap_add, vec!["CHOWN".to_string()]);
    }

    #[test]
    fn resource_limits() {
        let s = spec(&venv());
        assert_eq!(s.memory_bytes, Some(512 << 20));
        assert_eq!(s.nano_cpus, Some(1_500_000_000));
        assert_eq!(s.pids_limit, Some(128));
        assert_eq!(
            s.ulimits,
            [
                ("core".to_string(), 0),
                ("fsize".to_string(), 256 << 20),
                ("nofile".to_string(), 1024)
            ]
        );
    }

    #[test]
    fn runs_mount_the_env_read_only_and_the_storage_dir() {
        let s = spec(&venv());
        assert_eq!(
            s.mounts,
            [
                MountSpec {
                    kind: MountKind::Volume,
                    source: "mce-venv-vol".to_string(),
                    target: "/opt/venv".to_string(),
                    read_only: true,
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: "/host/code".to_string(),
                    target: "/data/code".to_string(),
                    read_only: false,
                }
            ]
        );
        assert_eq!(s.working_dir.as_deref(), Some("/data/code"));
    }

    #[test]
    fn other_purposes_never_see_the_storage_dir() {
        for purpose in [
            Purpose::Inspect,
            Purpose::Install,
            Purpose::Create,
            Purpose::Prepare,
        ] {
            let s = spec_for(purpose, &venv());
            assert!(
                s.mounts.iter().all(|m| m.source != "/host/code"),
                "{purpose:?}"
            );
            assert_eq!(
                s.mounts[0].read_only,
                purpose == Purpose::Inspect,
                "{purpose:?}"
            );
            assert_eq!(s.working_dir.as_deref(), Some("/tmp"));
        }
    }

    #[test]
    fn installs_get_the_ca_bundle_and_index_from_configuration() {
        let s = spec_for(Purpose::Install, &venv());
        let ca = s.mounts.iter().find(|m| m.target == CA_PATH).unwrap();
        assert_eq!(ca.source, "/etc/ssl/certs/ca-certificates.crt");
        assert!(ca.read_only);
        assert_eq!(ca.kind, MountKind::Bind);
        for var in [
            format!("PIP_CERT={CA_PATH}"),
            format!("SSL_CERT_FILE={CA_PATH}"),
            "PIP_INDEX_URL=https://mirror.example/simple".to_string(),
            "UV_INDEX_URL=https://mirror.example/simple".to_string(),
        ] {
            assert!(s.env.contains(&var), "{var} missing from {:?}", s.env);
        }
        // Runs get none of it.
        let run_env = spec(&venv()).env;
        assert!(
            !run_env
                .iter()
                .any(|v| v.starts_with("PIP_") || v.starts_with("SSL_CERT"))
        );
    }

    #[test]
    fn environment_is_an_allow_list() {
        let env = spec(&EnvSpec::new(EnvType::Conda, Some("analysis")).unwrap()).env;
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
        let cmd = spec(&EnvSpec::default_for(EnvType::VenvUv)).entrypoint;
        assert_eq!(&cmd[..4], &["timeout", "-s", "KILL", "35"]);
        assert_eq!(cmd[4], "/opt/uv-venv/bin/python");
        assert_eq!(cmd[5], "-c");
        assert_eq!(cmd[6], RUNNER);
        let create = spec_for(Purpose::Create, &venv()).entrypoint;
        assert_eq!(create[4], "python3");
    }

    #[test]
    fn labels_mark_the_container() {
        let l = spec(&venv()).labels;
        assert_eq!(l.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(l.get(LABEL_INSTANCE).map(String::as_str), Some("inst-1"));
        assert_eq!(l.get(LABEL_DEADLINE).map(String::as_str), Some("1035"));
        assert_eq!(l.get(LABEL_ENV).map(String::as_str), Some("venv /opt/venv"));
        assert_eq!(l.get(LABEL_PURPOSE).map(String::as_str), Some("run"));
    }

    #[test]
    fn lock_container_is_inert_and_expires() {
        let s = lock_container("img", "inst", 100, 50);
        assert_eq!(s.entrypoint, vec!["true".to_string()]);
        assert!(s.mounts.is_empty());
        assert_eq!(s.network, "none");
        assert!(!s.interactive);
        assert_eq!(
            s.labels.get(LABEL_DEADLINE).map(String::as_str),
            Some("150")
        );
        assert_eq!(
            s.labels.get(LABEL_MANAGED).map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn sentinel_is_small_offline_and_holds_stdin() {
        let s = sentinel_container("img", "i", (1000, 1000), 0);
        assert_eq!(
            s.labels.get(LABEL_PURPOSE).map(String::as_str),
            Some(crate::sandbox::labels::SENTINEL)
        );
        assert!(s.interactive);
        assert!(s.mounts.is_empty());
        assert_eq!(s.network, "none");
        assert_eq!(s.pids_limit, Some(4));
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
    }

    #[test]
    fn isolation_summary_is_read_off_the_run_settings() {
        let words = isolation_summary(&spec(&venv()));
        assert_eq!(
            words,
            [
                "network none",
                "all capabilities dropped",
                "no-new-privileges",
                "non-root user",
                "read-only root filesystem, size-limited /tmp",
                "memory (no swap), CPU and pids limits",
                "init reaps processes; wall-clock deadline",
                "allow-listed environment variables",
                "only the storage directory is mounted",
            ]
        );
        // A weaker container is described as what it is, not as the baseline.
        let mut weaker = spec(&venv());
        weaker.network = "bridge".to_string();
        weaker.cap_add = vec!["NET_RAW".to_string()];
        weaker.mounts[0].read_only = false;
        let words = isolation_summary(&weaker);
        assert!(!words.iter().any(|w| w == "network none"));
        assert!(!words.iter().any(|w| w == "all capabilities dropped"));
        assert!(
            !words
                .iter()
                .any(|w| w == "only the storage directory is mounted")
        );
        assert_eq!(words.len(), 6);
    }

    #[test]
    fn a_runtime_applies_to_every_purpose_and_installs_get_its_network_registration() {
        let env = venv();
        for purpose in ALL.into_iter().chain([Purpose::Session]) {
            let base = spec_for(purpose, &env);
            let s = spec_under(purpose, &env, Some("runsc"));
            let want = if purpose == Purpose::Install {
                "runsc-net"
            } else {
                "runsc"
            };
            assert_eq!(s.runtime.as_deref(), Some(want), "{purpose:?}");
            // The same guest bound, now as nproc; the host limit has gVisor's headroom.
            let guest = base.pids_limit.unwrap();
            assert!(
                s.ulimits.contains(&("nproc".to_string(), guest)),
                "{purpose:?}"
            );
            assert_eq!(s.pids_limit, Some(runtime::gvisor_pids_limit(guest)));
            // Nothing else changes: same network, user, mounts, caps, limits.
            let same = ContainerSpec {
                runtime: None,
                pids_limit: base.pids_limit,
                ulimits: base.ulimits.clone(),
                ..s.clone()
            };
            assert_eq!(same, base, "{purpose:?}");
        }
        let mut run = spec(&env);
        run.runtime = Some("runsc".to_string());
        let words = isolation_summary(&run);
        assert_eq!(
            words.last().map(String::as_str),
            Some("gVisor user-space kernel (OCI runtime runsc)")
        );
        assert_eq!(words.len(), 10);
    }

    #[test]
    fn podman_gets_the_same_walls() {
        let env = venv();
        let run = spec_for(Purpose::Run, &env);
        assert_eq!(for_engine(&run, EngineKind::Docker).as_ref(), &run);
        let podman = for_engine(&run, EngineKind::Podman).into_owned();
        for path in PODMAN_EXTRA_TMPFS {
            let options = podman.tmpfs.get(path).map(String::as_str);
            assert_eq!(options, Some(READONLY_TMPFS), "{path}");
        }
        assert_eq!(podman.tmpfs.get("/tmp"), run.tmpfs.get("/tmp"));
        assert!(
            podman
                .ulimits
                .contains(&("nproc".to_string(), PODMAN_NPROC))
        );
        // Nothing else changes.
        assert_eq!(
            podman.seccomp_profile.as_deref(),
            Some(PODMAN_SECCOMP_PROFILE)
        );
        let same = ContainerSpec {
            tmpfs: run.tmpfs.clone(),
            ulimits: run.ulimits.clone(),
            seccomp_profile: None,
            ..podman.clone()
        };
        assert_eq!(same, run);
        assert_eq!(podman.ulimits.len(), run.ulimits.len() + 1);

        // A container without ulimits keeps Podman's defaults; a writable root gets no tmpfs.
        let mut lock = lock_container("img", "i", 0, 10);
        lock.readonly_rootfs = false;
        let podman_lock = for_engine(&lock, EngineKind::Podman).into_owned();
        assert_eq!(podman_lock.ulimits, lock.ulimits);
        assert_eq!(podman_lock.tmpfs, lock.tmpfs);
        // A nproc already chosen (gVisor's guest bound) is kept.
        let mut bounded = run.clone();
        bounded.ulimits.push(("nproc".to_string(), 64));
        let bounded = for_engine(&bounded, EngineKind::Podman).into_owned();
        let nprocs: Vec<_> = bounded
            .ulimits
            .iter()
            .filter(|(n, _)| n == "nproc")
            .collect();
        assert_eq!(nprocs, [&("nproc".to_string(), 64)]);
    }
}
