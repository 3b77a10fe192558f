//! The OCI runtime containers run under (`RUNTIME`, e.g. gVisor's `runsc`): which runtime each
//! container gets, what a runtime changes in a container's settings, and the check that the
//! daemon offers it. The decisions ([`install_runtime`], [`apply`], [`check_listed`]) are pure;
//! [`RuntimeGate`] asks the engine once and remembers a runtime it found.
//!
//! - Every container of ours uses `RUNTIME`, except installs, which need a network: they use
//!   `<RUNTIME>-net`, a second registration of the same runtime that allows one
//!   (`scripts/setup-gvisor.sh` registers `runsc` with `--network=none` and `runsc-net` with
//!   `--network=host`, i.e. the container's own network namespace). When the daemon does not
//!   list `<RUNTIME>-net`, installs are refused with a message saying so; runs go on.
//! - Under gVisor, the cgroup pids limit counts the sandbox's *host* tasks (~40–56 when idle,
//!   ~5–6 per guest process), and exceeding it crashes the whole sandbox (exit 2, output lost).
//!   So the guest keeps the same bound on processes and threads through the `nproc` ulimit
//!   (per user *inside* the sandbox, whose kernel is its own), which fails `fork`/`clone`
//!   cleanly with EAGAIN, and the host pids limit gets the headroom of [`gvisor_pids_limit`].
//!   Under runc `nproc` would count the user's processes on the whole host: never set there.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::engine::{ContainerEngine, ContainerSpec};
use super::lifecycle::lock;
use super::policy::Purpose;
use crate::error::SandboxError;

/// The suffix of the network-enabled registration of a runtime, used by installs.
pub const NET_SUFFIX: &str = "-net";

/// Host tasks a gVisor sandbox has before any guest process (measured: 40–56).
const GVISOR_BASE_TASKS: i64 = 64;
/// Host tasks per guest process or thread, with room to spare (measured: 5–6).
const GVISOR_TASKS_PER_GUEST: i64 = 8;

/// The runtime a container for `purpose` uses under `runtime` (`None`: the daemon's default).
pub fn for_purpose(runtime: Option<&str>, purpose: Purpose) -> Option<String> {
    let runtime = runtime?;
    Some(if purpose == Purpose::Install {
        install_runtime(runtime)
    } else {
        runtime.to_string()
    })
}

/// The registration installs use under `runtime`: `<runtime>-net`.
pub fn install_runtime(runtime: &str) -> String {
    format!("{runtime}{NET_SUFFIX}")
}

/// Whether `runtime` names gVisor: `runsc`, `runsc-*` or anything with `gvisor` in its name.
pub fn is_gvisor(runtime: &str) -> bool {
    let name = runtime.to_ascii_lowercase();
    name == "runsc" || name.starts_with("runsc-") || name.contains("gvisor")
}

/// The host pids limit of a gVisor sandbox whose guest may run `guest` processes/threads.
pub fn gvisor_pids_limit(guest: i64) -> i64 {
    GVISOR_BASE_TASKS + GVISOR_TASKS_PER_GUEST * guest
}

/// Makes `spec` run under `runtime` (`None`: the daemon's default, nothing changes). Under
/// gVisor the spec's pids limit becomes the guest's `nproc` ulimit and the host limit gets
/// headroom (see the module header), so the guest bound stays what the policy chose.
pub fn apply(spec: &mut ContainerSpec, runtime: Option<String>) {
    let Some(runtime) = runtime else {
        return;
    };
    match spec.pids_limit {
        Some(guest) if is_gvisor(&runtime) => {
            spec.ulimits.retain(|(name, _)| name != "nproc");
            spec.ulimits.push(("nproc".to_string(), guest));
            spec.pids_limit = Some(gvisor_pids_limit(guest));
        }
        _ => {}
    }
    spec.runtime = Some(runtime);
}

/// Checks that the daemon lists `runtime` (`listed`: the runtimes it offers).
pub fn check_listed(runtime: &str, listed: &BTreeSet<String>) -> Result<(), SandboxError> {
    if listed.contains(runtime) {
        return Ok(());
    }
    Err(SandboxError::RuntimeUnknown {
        runtime: runtime.to_string(),
        listed: listed.iter().cloned().collect::<Vec<_>>().join(", "),
    })
}

/// Checks that the daemon lists the registration installs use under `runtime`.
pub fn check_install_listed(runtime: &str, listed: &BTreeSet<String>) -> Result<(), SandboxError> {
    let install = install_runtime(runtime);
    if listed.contains(&install) {
        return Ok(());
    }
    Err(SandboxError::InstallRuntimeMissing {
        runtime: runtime.to_string(),
        install,
        listed: listed.iter().cloned().collect::<Vec<_>>().join(", "),
    })
}

/// Whether the daemon offers the configured runtime, asked once it does: a runtime found is
/// remembered; one missing is asked about again on the next check (it may be registered
/// meanwhile), and so is a daemon that did not answer.
#[derive(Debug)]
pub struct RuntimeGate {
    runtime: Option<String>,
    /// The daemon's runtimes, once they included `runtime`.
    listed: Mutex<Option<BTreeSet<String>>>,
}

impl RuntimeGate {
    pub fn new(runtime: Option<String>) -> Self {
        RuntimeGate {
            runtime,
            listed: Mutex::new(None),
        }
    }

    /// Ok when no runtime is configured or the daemon lists it; otherwise an error naming the
    /// runtimes it does list.
    pub async fn check(&self, engine: &dyn ContainerEngine) -> Result<(), SandboxError> {
        let Some(runtime) = &self.runtime else {
            return Ok(());
        };
        if lock(&self.listed).is_some() {
            return Ok(());
        }
        let listed: BTreeSet<String> = engine.runtimes().await?.into_iter().collect();
        check_listed(runtime, &listed)?;
        *lock(&self.listed) = Some(listed);
        Ok(())
    }

    /// Like [`RuntimeGate::check`], for an install container (its `-net` registration).
    pub async fn check_install(&self, engine: &dyn ContainerEngine) -> Result<(), SandboxError> {
        self.check(engine).await?;
        let Some(runtime) = &self.runtime else {
            return Ok(());
        };
        let cached = lock(&self.listed).clone().unwrap_or_default();
        if check_install_listed(runtime, &cached).is_ok() {
            return Ok(());
        }
        let listed: BTreeSet<String> = engine.runtimes().await?.into_iter().collect();
        check_install_listed(runtime, &listed)?;
        *lock(&self.listed) = Some(listed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pids: i64) -> ContainerSpec {
        ContainerSpec {
            pids_limit: Some(pids),
            ulimits: vec![("core".to_string(), 0), ("nofile".to_string(), 1024)],
            ..Default::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn installs_use_the_network_registration() {
        assert_eq!(for_purpose(None, Purpose::Install), None);
        assert_eq!(for_purpose(None, Purpose::Run), None);
        let rt = Some("runsc");
        assert_eq!(
            for_purpose(rt, Purpose::Install).as_deref(),
            Some("runsc-net")
        );
        for p in [
            Purpose::Run,
            Purpose::Session,
            Purpose::Inspect,
            Purpose::Create,
            Purpose::Prepare,
        ] {
            assert_eq!(for_purpose(rt, p).as_deref(), Some("runsc"), "{p:?}");
        }
    }

    #[test]
    fn gvisor_names() {
        for yes in ["runsc", "runsc-net", "RUNSC", "gvisor", "my-gvisor-kvm"] {
            assert!(is_gvisor(yes), "{yes}");
        }
        for no in ["runc", "crun", "kata", "runscx", "io.containerd.runc.v2"] {
            assert!(!is_gvisor(no), "{no}");
        }
    }

    #[test]
    fn default_runtime_changes_nothing() {
        let mut s = spec(128);
        apply(&mut s, None);
        assert_eq!(s, spec(128));
    }

    #[test]
    fn other_runtimes_are_named_only() {
        let mut s = spec(128);
        apply(&mut s, Some("crun".to_string()));
        assert_eq!(s.runtime.as_deref(), Some("crun"));
        assert_eq!(s.pids_limit, Some(128));
        assert!(s.ulimits.iter().all(|(n, _)| n != "nproc"));
    }

    #[test]
    fn gvisor_bounds_guest_processes_by_nproc_with_host_headroom() {
        let mut s = spec(128);
        apply(&mut s, Some("runsc".to_string()));
        assert_eq!(s.runtime.as_deref(), Some("runsc"));
        assert_eq!(s.pids_limit, Some(64 + 8 * 128));
        assert!(s.ulimits.contains(&("nproc".to_string(), 128)));
        assert!(s.ulimits.contains(&("core".to_string(), 0)));
        assert!(s.ulimits.contains(&("nofile".to_string(), 1024)));
        // Applied twice, still one nproc and the same bound.
        let mut twice = s.clone();
        twice.pids_limit = Some(128);
        apply(&mut twice, Some("runsc".to_string()));
        assert_eq!(twice, s);
        // A spec without a pids limit gets no nproc either.
        let mut none = ContainerSpec::default();
        apply(&mut none, Some("runsc-net".to_string()));
        assert_eq!(none.pids_limit, None);
        assert!(none.ulimits.is_empty());
        assert_eq!(gvisor_pids_limit(4), 96);
    }

    #[test]
    fn unlisted_runtimes_are_refused_with_the_list() {
        let listed = set(&["runc", "runsc", "runsc-net"]);
        assert!(check_listed("runsc", &listed).is_ok());
        assert!(check_install_listed("runsc", &listed).is_ok());
        let err = check_listed("kata", &listed).unwrap_err().to_string();
        assert!(err.contains("\"kata\""), "{err}");
        assert!(err.contains("runc, runsc, runsc-net"), "{err}");
        let err = check_install_listed("runsc", &set(&["runc", "runsc"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runsc-net"), "{err}");
        assert!(err.contains("scripts/setup-gvisor.sh"), "{err}");
    }
}
