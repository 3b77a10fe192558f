//! A [`ContainerSpec`] in Docker's API terms: the create body with its host config, security
//! options and mounts. Pure translation; what each field is for is said where the spec is made
//! (sandbox/policy.rs).

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, ResourcesUlimits,
};

use crate::sandbox::engine::{ContainerSpec, MountKind, MountSpec};

/// Docker's create body for `spec`.
pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_config = HostConfig {
        network_mode: Some(spec.network.clone()),
        cap_drop: some_vec(&spec.cap_drop),
        cap_add: some_vec(&spec.cap_add),
        security_opt: security_opt(spec),
        readonly_rootfs: Some(spec.readonly_rootfs),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone()),
        memory: spec.memory_bytes,
        memory_swap: spec.memory_bytes,
        nano_cpus: spec.nano_cpus,
        pids_limit: spec.pids_limit,
        init: spec.init.then_some(true),
        ipc_mode: spec.private_ipc_shm_bytes.map(|_| "private".to_string()),
        shm_size: spec.private_ipc_shm_bytes,
        ulimits: (!spec.ulimits.is_empty()).then(|| {
            spec.ulimits
                .iter()
                .map(|(name, value)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(*value),
                    hard: Some(*value),
                })
                .collect()
        }),
        mounts: (!spec.mounts.is_empty()).then(|| spec.mounts.iter().map(mount).collect()),
        runtime: spec.runtime.clone(),
        auto_remove: Some(false),
        privileged: Some(false),
        ..Default::default()
    };
    let interactive = spec.interactive.then_some(true);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(spec.entrypoint.clone()),
        cmd: Some(vec![]),
        user: spec.user.clone(),
        env: some_vec(&spec.env),
        working_dir: spec.working_dir.clone(),
        labels: Some(spec.labels.clone()),
        hostname: spec.hostname.clone(),
        network_disabled: Some(spec.network == "none"),
        attach_stdin: interactive,
        attach_stdout: interactive,
        attach_stderr: interactive,
        open_stdin: interactive,
        stdin_once: Some(spec.interactive && !spec.keep_stdin_open),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// `no-new-privileges` and the seccomp profile file, when asked for.
fn security_opt(spec: &ContainerSpec) -> Option<Vec<String>> {
    let mut options = Vec::new();
    if spec.no_new_privileges {
        options.push("no-new-privileges:true".to_string());
    }
    if let Some(profile) = &spec.seccomp_profile {
        options.push(format!("seccomp={profile}"));
    }
    (!options.is_empty()).then_some(options)
}

fn mount(m: &MountSpec) -> Mount {
    let (typ, volume_options) = match m.kind {
        MountKind::Bind => (MountType::BIND, None),
        // An empty volume is seeded with what the image has at the target.
        MountKind::Volume => (
            MountType::VOLUME,
            Some(MountVolumeOptions {
                no_copy: Some(false),
                ..Default::default()
            }),
        ),
    };
    Mount {
        target: Some(m.target.clone()),
        source: Some(m.source.clone()),
        typ: Some(typ),
        read_only: Some(m.read_only),
        volume_options,
        ..Default::default()
    }
}
