//! Labels and names: how the server marks what it leaves on the daemon (containers, environment
//! volumes, their ready markers and seed locks), so that a server that starts later finds its
//! predecessors' things and decides, here and purely, which of them are leftovers.

use std::collections::{HashMap, HashSet};

use crate::environment::EnvSpec;

/// Every container this server makes carries this label (value `true`).
pub const LABEL_MANAGED: &str = "mcp-code-executor.managed";
/// The id of the server instance that made the container.
pub const LABEL_INSTANCE: &str = "mcp-code-executor.instance";
/// Unix time after which the container is certainly finished (its in-container deadline).
pub const LABEL_DEADLINE: &str = "mcp-code-executor.deadline";
/// The environment the container uses.
pub const LABEL_ENV: &str = "mcp-code-executor.env";
/// What the container is for (run, inspect, install, create, prepare, lock, sentinel).
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

/// On session containers: the session id.
pub const LABEL_SESSION: &str = "mcp-code-executor.session";
/// On session containers: the name the client gave the session.
pub const LABEL_SESSION_NAME: &str = "mcp-code-executor.session-name";
/// On session containers: the storage folder (as the daemon sees it) the session belongs to.
pub const LABEL_STORAGE: &str = "mcp-code-executor.storage";
/// The principal whose world an environment volume belongs to (HTTP only).
pub const LABEL_PRINCIPAL: &str = "mcp-code-executor.principal";
/// On session containers: Unix time of creation.
pub const LABEL_CREATED: &str = "mcp-code-executor.created";

/// The purpose label of session containers.
pub const SESSION: &str = "session";
/// The purpose label of sentinels.
pub const SENTINEL: &str = "sentinel";
/// The purpose label of seed locks.
pub const LOCK: &str = "lock";

/// Containers of an instance without a sentinel are left alone this long after creation.
pub const ORPHAN_GRACE_SECS: i64 = 10;

/// The labels of every container: ours, this instance's, its deadline and its purpose.
pub fn base_labels(instance: &str, deadline_unix: u64, purpose: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_DEADLINE.to_string(), deadline_unix.to_string()),
        (LABEL_PURPOSE.to_string(), purpose.to_string()),
    ])
}

/// Whether a listed container should be removed by a sweep: it is past its deadline, or it
/// belongs to an instance with no running sentinel and is old enough that its server cannot
/// still be starting up. Sessions belong to their storage folder, not to a server: a running
/// session is spared until its deadline, a stopped one (its runner's idle timeout) goes.
pub fn is_leftover(
    labels: &HashMap<String, String>,
    created_unix: i64,
    running: bool,
    live_instances: &HashSet<String>,
    now_unix: u64,
) -> bool {
    let expired = labels
        .get(LABEL_DEADLINE)
        .and_then(|d| d.parse::<u64>().ok())
        .is_none_or(|d| d <= now_unix);
    if is_session(labels) {
        // A stopped session (its runner's idle timeout) goes; one just created and not yet
        // started is left alone for the grace period.
        return expired || (!running && created_unix + ORPHAN_GRACE_SECS < now_unix as i64);
    }
    let orphan = labels
        .get(LABEL_INSTANCE)
        .is_none_or(|i| !live_instances.contains(i))
        && created_unix + ORPHAN_GRACE_SECS < now_unix as i64;
    expired || orphan
}

/// The name of the volume holding `env` as seeded from `image_id` and owned by `run_as`, for
/// `principal` (over HTTP each principal has its own volumes, so its installs are its own). A
/// rebuilt image or another run user gets a fresh volume. Without a principal (stdio) the name
/// is what it always was, so existing environments are kept.
pub fn env_volume_name(
    env: &EnvSpec,
    image_id: &str,
    run_as: (u32, u32),
    principal: Option<&str>,
) -> String {
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
    let mut key = format!(
        "{}|{}|{id}|{}:{}",
        env.env_type,
        env.location(),
        run_as.0,
        run_as.1
    );
    let owner = match principal {
        None => String::new(),
        Some(p) => {
            key.push_str(&format!("|principal={p}"));
            format!("{p}-")
        }
    };
    let digest = fnv1a64(key.as_bytes());
    format!("mce-{}-{owner}{slug}-{digest:016x}", env.env_type.as_str())
}

/// A stable, dependency-free hash for names (not for security).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Labels of an environment volume (of `principal`'s world, over HTTP).
pub fn env_volume_labels(
    env: &EnvSpec,
    image: &str,
    principal: Option<&str>,
) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_ENV_VOLUME.to_string(), "true".to_string()),
        (
            LABEL_ENV_TYPE.to_string(),
            env.env_type.as_str().to_string(),
        ),
        (LABEL_ENV_LOCATION.to_string(), env.location().to_string()),
        (LABEL_IMAGE.to_string(), image.to_string()),
    ]);
    if let Some(p) = principal {
        labels.insert(LABEL_PRINCIPAL.to_string(), p.to_string());
    }
    labels
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

/// Whether these are a session container's labels.
pub fn is_session(labels: &HashMap<String, String>) -> bool {
    labels.get(LABEL_PURPOSE).map(String::as_str) == Some(SESSION)
}

/// The name of a session's container.
pub fn session_container_name(id: &str) -> String {
    format!("mce-session-{id}")
}

/// The name of an instance's sentinel.
pub fn sentinel_name(instance: &str) -> String {
    format!("mce-sentinel-{instance}")
}

/// The name a pool container gets once taken (idle ones start with `mce-warm-`), so that
/// observers tell a used one from an idle one.
pub fn used_name(id: &str) -> String {
    format!("mce-run-{}", &id[..id.len().min(24)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::EnvType;

    fn venv() -> EnvSpec {
        EnvSpec::default_for(EnvType::Venv)
    }

    #[test]
    fn leftovers() {
        let live: HashSet<String> = ["alive".to_string()].into();
        let labels = |inst: &str, deadline: u64| {
            HashMap::from([
                (LABEL_INSTANCE.to_string(), inst.to_string()),
                (LABEL_DEADLINE.to_string(), deadline.to_string()),
            ])
        };
        // A live instance's container before its deadline stays.
        assert!(!is_leftover(&labels("alive", 2000), 900, true, &live, 1000));
        // Past its deadline it goes, live or not.
        assert!(is_leftover(&labels("alive", 999), 900, true, &live, 1000));
        // A dead instance's container goes once it is older than the grace period...
        assert!(is_leftover(&labels("dead", 2000), 900, true, &live, 1000));
        // ...but not while its server may still be starting its sentinel.
        assert!(!is_leftover(&labels("dead", 2000), 990, true, &live, 1000));
        // No labels at all: a leftover.
        assert!(is_leftover(&HashMap::new(), 0, true, &live, 1000));
    }

    #[test]
    fn sessions_outlive_their_server_until_they_stop_or_expire() {
        let live: HashSet<String> = HashSet::new();
        let session = |deadline: u64| {
            HashMap::from([
                (LABEL_INSTANCE.to_string(), "dead".to_string()),
                (LABEL_DEADLINE.to_string(), deadline.to_string()),
                (LABEL_PURPOSE.to_string(), SESSION.to_string()),
            ])
        };
        // Its server is gone, but a running session before its deadline stays.
        assert!(!is_leftover(&session(2000), 100, true, &live, 1000));
        // A session whose runner stopped (idle timeout) goes...
        assert!(is_leftover(&session(2000), 100, false, &live, 1000));
        // ...but one just created, not started yet, is spared.
        assert!(!is_leftover(&session(2000), 995, false, &live, 1000));
        // Past its lifetime it goes.
        assert!(is_leftover(&session(999), 100, true, &live, 1000));
        assert!(is_session(&session(0)));
        assert!(!is_session(&HashMap::new()));
    }

    #[test]
    fn base_labels_mark_ours() {
        let l = base_labels("inst", 42, "run");
        assert_eq!(l.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(l.get(LABEL_INSTANCE).map(String::as_str), Some("inst"));
        assert_eq!(l.get(LABEL_DEADLINE).map(String::as_str), Some("42"));
        assert_eq!(l.get(LABEL_PURPOSE).map(String::as_str), Some("run"));
        assert_eq!(sentinel_name("abc"), "mce-sentinel-abc");
        assert_eq!(seed_lock_name("v"), "v-seeding");
        assert_eq!(ready_marker_name("v"), "v-ready");
    }

    #[test]
    fn volume_names() {
        let a = env_volume_name(&venv(), "sha256:abc", (1000, 1000), None);
        assert!(a.starts_with("mce-venv-opt_venv-"), "{a}");
        assert_eq!(
            a,
            env_volume_name(&venv(), "sha256:abc", (1000, 1000), None)
        );
        assert_ne!(
            a,
            env_volume_name(&venv(), "sha256:abd", (1000, 1000), None)
        );
        assert_ne!(
            a,
            env_volume_name(&venv(), "sha256:abc", (1001, 1000), None)
        );
        let x = EnvSpec::new(EnvType::Venv, Some("/opt/a_b")).unwrap();
        let y = EnvSpec::new(EnvType::Venv, Some("/opt/a/b")).unwrap();
        assert_ne!(
            env_volume_name(&x, "i", (1, 1), None),
            env_volume_name(&y, "i", (1, 1), None)
        );
        let long = EnvSpec::new(EnvType::Conda, Some(&"n".repeat(64))).unwrap();
        let owned = env_volume_name(&venv(), "i", (1, 1), Some("team-a"));
        assert!(owned.starts_with("mce-venv-team-a-"), "{owned}");
        assert_ne!(owned, env_volume_name(&venv(), "i", (1, 1), Some("team-b")));
        assert_ne!(owned, env_volume_name(&venv(), "i", (1, 1), None));
        let name = env_volume_name(&long, "i", (1, 1), None);
        assert!(
            name.len() < 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
        let labels = env_volume_labels(&venv(), "img", None);
        assert_eq!(labels.get(LABEL_ENV_TYPE).map(String::as_str), Some("venv"));
        assert_eq!(
            labels.get(LABEL_ENV_LOCATION).map(String::as_str),
            Some("/opt/venv")
        );
    }
}
