//! The member pod template: the `rstore-node` container with the flags of
//! DESIGN.md derived from the spec, probes, security context, scheduling.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, TCPSocketAction, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::statefulset::DATA_VOLUME;
use crate::crd::{AntiAffinity, ReplicationSpec};
use crate::labels;
use crate::validate::ValidatedStore;

/// Name of the node container.
pub const CONTAINER: &str = "rstore";
/// Path of the node binary in the image.
pub const NODE_BINARY: &str = "/usr/local/bin/rstore-node";
/// Where the data volume is mounted.
pub const DATA_DIR: &str = "/data";
/// UID/GID the node runs as (the image's non-root user).
pub const RUN_AS: i64 = 10001;
/// Env var naming the admin token file (the node's fallback for
/// `--admin-token-file`).
pub const ADMIN_TOKEN_FILE_ENV: &str = "RSTORE_ADMIN_TOKEN_FILE";
/// Where the admin token Secret is mounted (read-only): the node reads
/// `<dir>/token` on every mutating admin call, so a replaced Secret reaches
/// running members when the kubelet updates the volume, with no restart.
pub const ADMIN_TOKEN_DIR: &str = "/etc/rstore/admin";
/// Name of the admin token volume.
const ADMIN_TOKEN_VOLUME: &str = "admin-token";
/// Key of the token in the per-store admin token Secret.
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Env var holding the password (the node's fallback for `--requirepass`).
pub const PASSWORD_ENV: &str = "RSTORE_REQUIREPASS";
/// Env var holding the node id (the pod name).
pub const NODE_ID_ENV: &str = "RSTORE_NODE_ID";

/// The node's command-line flags for this store. The password is not a
/// flag: it comes from the Secret through [`PASSWORD_ENV`], so it never
/// shows in the pod spec or the process list.
pub fn node_args(store: &ValidatedStore) -> Vec<String> {
    let repl = &store.spec.replication;
    vec![
        format!("--listen=0.0.0.0:{}", labels::RESP_PORT),
        format!("--repl-listen=0.0.0.0:{}", labels::REPL_PORT),
        format!("--admin-listen=0.0.0.0:{}", labels::ADMIN_PORT),
        format!("--data-dir={DATA_DIR}"),
        format!("--node-id=$({NODE_ID_ENV})"),
        // Every replication setting, whatever the mode: the node's own
        // defaults differ from the spec's, and the operator compares what
        // a node reports with the spec to push changes live.
        format!("--replication-mode={}", repl.mode.as_str()),
        format!("--sync-replicas={}", repl.sync_replicas),
        format!("--sync-timeout={}", repl.sync_timeout_ms),
        format!("--on-sync-timeout={}", repl.on_sync_timeout.as_str()),
        format!("--ack-level={}", repl.ack_level.as_str()),
        format!("--fsync={}", store.spec.durability.fsync),
    ]
}

/// Pod template annotation: the hash of the template with the replication
/// settings left out. Those settings are applied to running members
/// through the admin API (`POST /config`), so a pod whose restart hash
/// equals the StatefulSet's needs no restart even when its revision is
/// older (see [`crate::rollout`]).
pub const RESTART_HASH_ANNOTATION: &str = "rstore.dev/restart-hash";

/// The restart hash of `store`'s pod template: FNV-1a (64 bits, hex) of
/// the template built with [`ReplicationSpec::default`] in place of the
/// spec's replication settings, so changing only those leaves it as it is.
/// Stable across builds and platforms (not `std`'s hasher, whose output
/// may change between Rust releases).
pub fn restart_hash(store: &ValidatedStore) -> String {
    let mut normalized = store.clone();
    normalized.spec.replication = ReplicationSpec::default();
    // A PodTemplateSpec always serializes; the fallback only keeps this
    // total (an empty document hashes like any other constant).
    let bytes = serde_json::to_vec(&template_without_hash(&normalized)).unwrap_or_default();
    format!("{:016x}", fnv1a64(&bytes))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The pod template of the StatefulSet, annotated with its
/// [`restart_hash`].
pub fn template(store: &ValidatedStore) -> PodTemplateSpec {
    let mut template = template_without_hash(store);
    if let Some(meta) = template.metadata.as_mut() {
        meta.annotations = Some(BTreeMap::from([(
            RESTART_HASH_ANNOTATION.to_string(),
            restart_hash(store),
        )]));
    }
    template
}

fn template_without_hash(store: &ValidatedStore) -> PodTemplateSpec {
    let scheduling = &store.spec.scheduling;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::common_labels(&store.name)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(store)],
            // Nodes never talk to the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(30),
            image_pull_secrets: store.spec.image_pull_secrets.clone(),
            security_context: Some(store.spec.pod_security_context.clone().unwrap_or(
                PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(RUN_AS),
                    run_as_group: Some(RUN_AS),
                    fs_group: Some(RUN_AS),
                    fs_group_change_policy: Some("OnRootMismatch".to_string()),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_string(),
                        ..SeccompProfile::default()
                    }),
                    ..PodSecurityContext::default()
                },
            )),
            volumes: Some(vec![
                Volume {
                    // The root filesystem is read-only; /tmp is scratch space.
                    name: "tmp".to_string(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    // Only the operator (which owns the Secret) can fence,
                    // promote or repoint a member.
                    name: ADMIN_TOKEN_VOLUME.to_string(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(labels::admin_token_secret_name(&store.name)),
                        default_mode: Some(0o440),
                        optional: Some(false),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            affinity: affinity(store),
            node_selector: scheduling.node_selector.clone(),
            tolerations: scheduling.tolerations.clone(),
            topology_spread_constraints: scheduling.topology_spread_constraints.clone(),
            priority_class_name: scheduling.priority_class_name.clone(),
            ..PodSpec::default()
        }),
    }
}

fn container(store: &ValidatedStore) -> Container {
    let mut env = vec![EnvVar {
        name: NODE_ID_ENV.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    env.push(EnvVar {
        name: ADMIN_TOKEN_FILE_ENV.to_string(),
        value: Some(format!("{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}")),
        ..EnvVar::default()
    });
    if let Some(auth) = &store.spec.auth {
        env.push(EnvVar {
            name: PASSWORD_ENV.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: auth.password_secret_ref.name.clone(),
                    key: auth.password_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    Container {
        name: CONTAINER.to_string(),
        image: Some(store.image.clone()),
        image_pull_policy: store.spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec![NODE_BINARY.to_string()]),
        args: Some(node_args(store)),
        env: Some(env),
        ports: Some(vec![
            container_port("resp", labels::RESP_PORT),
            container_port("repl", labels::REPL_PORT),
            container_port("admin", labels::ADMIN_PORT),
        ]),
        startup_probe: Some(startup_probe()),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        // Every second: a promoted member joins the leader Service (and a
        // demoted one leaves the read Service) within about a second.
        readiness_probe: Some(http_probe("/readyz", 1, 2)),
        resources: Some(resources(store)),
        security_context: Some(
            store
                .spec
                .security_context
                .clone()
                .unwrap_or(SecurityContext {
                    run_as_non_root: Some(true),
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_string()]),
                        ..Capabilities::default()
                    }),
                    ..SecurityContext::default()
                }),
        ),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_string(),
                mount_path: DATA_DIR.to_string(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".to_string(),
                mount_path: "/tmp".to_string(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: ADMIN_TOKEN_VOLUME.to_string(),
                mount_path: ADMIN_TOKEN_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

/// How often the startup probe looks, seconds.
pub const STARTUP_PERIOD_SECONDS: i32 = 2;
/// Startup probe failures tolerated: with [`STARTUP_PERIOD_SECONDS`], 30
/// minutes of recovery.
pub const STARTUP_FAILURE_THRESHOLD: i32 = 900;

/// Recovery (snapshot load, then WAL replay) runs before the node binds
/// any listener, the admin port included: a large log can keep it silent
/// for minutes. Without this probe the liveness probe would kill it
/// mid-replay and the restart would replay again from the start, forever.
/// Kubernetes runs neither liveness nor readiness until this succeeds, so
/// a TCP connection to the admin port means exactly "recovery finished";
/// from then on /healthz (storage failures included) is liveness's job, on
/// its short budget. The budget here is generous on purpose: a node that
/// is slow to recover is replaying, not dead, and failover does not wait
/// for it (the operator's own probes drive that).
fn startup_probe() -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("admin".to_string()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(STARTUP_PERIOD_SECONDS),
        timeout_seconds: Some(2),
        failure_threshold: Some(STARTUP_FAILURE_THRESHOLD),
        ..Probe::default()
    }
}

/// Liveness and readiness: they start once the startup probe succeeded,
/// so they need no initial delay of their own.
fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("admin".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The spec's resources, else modest requests and no limits.
fn resources(store: &ValidatedStore) -> ResourceRequirements {
    store
        .spec
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".to_string())),
                ("memory".to_string(), Quantity("128Mi".to_string())),
            ])),
            ..ResourceRequirements::default()
        })
}

/// The spec's affinity as given, else anti-affinity spreading members over
/// nodes (preferred by default, so small clusters still schedule).
fn affinity(store: &ValidatedStore) -> Option<Affinity> {
    let scheduling = &store.spec.scheduling;
    if let Some(affinity) = &scheduling.affinity {
        return Some(affinity.clone());
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(labels::selector_labels(&store.name)),
            ..LabelSelector::default()
        }),
        topology_key: "kubernetes.io/hostname".to_string(),
        ..PodAffinityTerm::default()
    };
    let anti = match scheduling.anti_affinity {
        AntiAffinity::Disabled => return None,
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(anti),
        ..Affinity::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::test_support::store;

    fn pod_spec(spec: &str) -> PodSpec {
        template(&store(spec)).spec.unwrap()
    }

    #[test]
    fn default_flags() {
        let args = node_args(&store("  {}"));
        assert_eq!(
            args,
            [
                "--listen=0.0.0.0:6379",
                "--repl-listen=0.0.0.0:7379",
                "--admin-listen=0.0.0.0:8080",
                "--data-dir=/data",
                "--node-id=$(RSTORE_NODE_ID)",
                "--replication-mode=semi-sync",
                "--sync-replicas=1",
                "--sync-timeout=1000",
                "--on-sync-timeout=block",
                "--ack-level=received",
                "--fsync=batch",
            ]
        );
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--role") || a.starts_with("--follow"))
        );
    }

    #[test]
    fn flags_follow_the_spec() {
        let args = node_args(&store(
            "  replicas: 5\n  replication: {mode: sync, syncTimeoutMs: 250, onSyncTimeout: degrade, ackLevel: durable}\n  durability: {fsync: 'interval:20'}",
        ));
        assert!(args.contains(&"--replication-mode=sync".to_string()));
        assert!(args.contains(&"--sync-timeout=250".to_string()));
        assert!(args.contains(&"--on-sync-timeout=degrade".to_string()));
        assert!(args.contains(&"--ack-level=durable".to_string()));
        assert!(args.contains(&"--fsync=interval:20".to_string()));
        assert!(args.contains(&"--sync-replicas=1".to_string()));
        // Async too: a node left at its own defaults would differ from the
        // spec, and the operator would push settings to every new pod.
        let async_args = node_args(&store("  replication: {mode: async}"));
        assert!(async_args.contains(&"--ack-level=received".to_string()));
        assert!(async_args.contains(&"--sync-timeout=1000".to_string()));
    }

    fn hash_of(spec: &str) -> String {
        let t = template(&store(spec));
        t.metadata.unwrap().annotations.unwrap()[RESTART_HASH_ANNOTATION].clone()
    }

    #[test]
    fn replication_settings_leave_the_restart_hash_alone() {
        let base = hash_of("  replicas: 3");
        assert_eq!(base.len(), 16);
        for changed in [
            "  replicas: 3\n  replication: {mode: sync}",
            "  replicas: 3\n  replication: {mode: async, syncTimeoutMs: 9}",
            "  replicas: 3\n  replication: {syncReplicas: 2, onSyncTimeout: degrade, ackLevel: applied}",
        ] {
            assert_eq!(hash_of(changed), base, "{changed}");
        }
        // The args still carry them, so a new pod starts with them.
        let t = template(&store("  replicas: 3\n  replication: {mode: sync}"));
        let args = t.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--replication-mode=sync".to_string()));
    }

    #[test]
    fn anything_else_changes_the_restart_hash() {
        let base = hash_of("  replicas: 3");
        for changed in [
            "  replicas: 3\n  image: rstore:next",
            "  replicas: 3\n  durability: {fsync: always}",
            "  replicas: 3\n  resources: {limits: {memory: 1Gi}}",
            "  replicas: 3\n  scheduling: {antiAffinity: required}",
        ] {
            assert_ne!(hash_of(changed), base, "{changed}");
        }
        assert_eq!(hash_of("  replicas: 3"), base, "deterministic");
    }

    #[test]
    fn container_ports_probes_and_security() {
        let spec = pod_spec("  {}");
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("rstore:test"));
        assert_eq!(c.command.as_ref().unwrap(), &[NODE_BINARY.to_string()]);
        let ports: Vec<_> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("resp".into(), 6379),
                ("repl".into(), 7379),
                ("admin".into(), 8080)
            ]
        );
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert_eq!(live.port, IntOrString::String("admin".into()));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(RUN_AS));
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/data", "/tmp", "/etc/rstore/admin"]);
        assert_eq!(spec.automount_service_account_token, Some(false));
    }

    /// Seconds of consecutive failures a probe tolerates before it acts.
    fn budget(p: &Probe) -> i32 {
        p.period_seconds.unwrap() * p.failure_threshold.unwrap()
    }

    #[test]
    fn a_long_wal_replay_is_covered_by_the_startup_probe_not_killed_by_liveness() {
        let spec = pod_spec("  {}");
        let c = &spec.containers[0];
        let startup = c.startup_probe.as_ref().expect("a startup probe");
        // It succeeds when the admin listener is bound, which the node does
        // only after recovery.
        let tcp = startup.tcp_socket.as_ref().expect("a TCP startup probe");
        assert_eq!(tcp.port, IntOrString::String("admin".into()));
        assert!(startup.http_get.is_none() && startup.exec.is_none());
        assert!(
            budget(startup) >= 30 * 60,
            "startup budget {}s is shorter than 30 minutes of replay",
            budget(startup)
        );
        let live = c.liveness_probe.as_ref().unwrap();
        let ready = c.readiness_probe.as_ref().unwrap();
        // Liveness and readiness run only after startup succeeded: no
        // guessed initial delay, and liveness still tolerates a stall of
        // tens of seconds (a long fsync, a big checkpoint) before a restart.
        for p in [live, ready] {
            assert_eq!(p.initial_delay_seconds.unwrap_or(0), 0);
            assert!(p.timeout_seconds.unwrap() >= 2);
        }
        assert!(
            (20..=120).contains(&budget(live)),
            "liveness budget {}s",
            budget(live)
        );
        assert!(budget(live) < budget(startup));
        // Readiness reacts faster than liveness: a node leaves the Services
        // before it is restarted.
        assert!(budget(ready) < budget(live));
    }

    #[test]
    fn node_id_from_pod_name_and_password_from_secret() {
        let spec = pod_spec("  auth:\n    passwordSecretRef: {name: pw}");
        let env = spec.containers[0].env.as_ref().unwrap();
        let node_id = env.iter().find(|e| e.name == NODE_ID_ENV).unwrap();
        let field = node_id
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field.field_path, "metadata.name");
        let pass = env.iter().find(|e| e.name == PASSWORD_ENV).unwrap();
        let secret = pass
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("pw", "password")
        );
        assert!(pass.value.is_none());
        assert!(
            !node_args(&store("  {}"))
                .iter()
                .any(|a| a.contains("requirepass"))
        );
        let no_auth = pod_spec("  {}");
        let env = no_auth.containers[0].env.as_ref().unwrap();
        assert!(!env.iter().any(|e| e.name == PASSWORD_ENV));
    }

    #[test]
    fn pull_secrets_and_security_contexts_come_from_the_spec() {
        let spec = pod_spec(
            "  imagePullSecrets: [{name: regcred}]\n  podSecurityContext: {runAsUser: 2000, runAsNonRoot: true}\n  securityContext: {readOnlyRootFilesystem: false}",
        );
        assert_eq!(spec.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        assert_eq!(
            spec.security_context.as_ref().unwrap().run_as_user,
            Some(2000)
        );
        let c = &spec.containers[0];
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(false)
        );
        // Without them: the hardened defaults, no pull secrets.
        let default = pod_spec("  {}");
        assert!(default.image_pull_secrets.is_none());
        assert_eq!(
            default.security_context.as_ref().unwrap().run_as_user,
            Some(RUN_AS)
        );
    }

    #[test]
    fn the_admin_token_comes_from_the_stores_own_secret_mounted_as_a_file() {
        let spec = pod_spec("  {}");
        let env = spec.containers[0].env.as_ref().unwrap();
        let file = env.iter().find(|e| e.name == ADMIN_TOKEN_FILE_ENV).unwrap();
        assert_eq!(file.value.as_deref(), Some("/etc/rstore/admin/token"));
        assert!(
            env.iter().all(|e| e.name != "RSTORE_ADMIN_TOKEN"),
            "never in the environment (a replaced Secret would not reach it)"
        );
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == ADMIN_TOKEN_VOLUME)
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        let name = secret.secret_name.as_deref().unwrap();
        assert!(name.ends_with("-admin-token"), "{name}");
        assert_eq!(secret.optional, Some(false));
        let mount = spec.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == ADMIN_TOKEN_VOLUME)
            .unwrap();
        assert_eq!(mount.mount_path, ADMIN_TOKEN_DIR);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn custom_resources_pass_through() {
        let spec = pod_spec("  resources:\n    limits: {memory: 1Gi}\n    requests: {cpu: '2'}");
        let r = spec.containers[0].resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "1Gi");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "2");
    }

    #[test]
    fn default_anti_affinity_spreads_members() {
        let spec = pod_spec("  {}");
        let anti = spec.affinity.unwrap().pod_anti_affinity.unwrap();
        let term = &anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(
            term.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            term.pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap(),
            &labels::selector_labels("rs")
        );
        let required = pod_spec("  scheduling: {antiAffinity: required}");
        assert!(
            required
                .affinity
                .unwrap()
                .pod_anti_affinity
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .is_some()
        );
        assert!(
            pod_spec("  scheduling: {antiAffinity: disabled}")
                .affinity
                .is_none()
        );
    }

    #[test]
    fn scheduling_passthrough() {
        let spec = pod_spec(
            "  scheduling:\n    nodeSelector: {disk: ssd}\n    tolerations:\n    - {key: dedicated, operator: Equal, value: rstore, effect: NoSchedule}\n    topologySpreadConstraints:\n    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}\n    affinity:\n      nodeAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms:\n          - matchExpressions:\n            - {key: kubernetes.io/arch, operator: In, values: [amd64]}",
        );
        assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(
            spec.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(
            spec.topology_spread_constraints.unwrap()[0].topology_key,
            "topology.kubernetes.io/zone"
        );
        let affinity = spec.affinity.unwrap();
        assert!(affinity.node_affinity.is_some());
        assert!(
            affinity.pod_anti_affinity.is_none(),
            "explicit affinity replaces the default"
        );
    }
}
