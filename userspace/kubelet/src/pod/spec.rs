//! From a Pod to CRI configurations: the sandbox config, each container's config (command,
//! env, resources), and the labels that tie runtime objects back to their pod.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

use crate::{
    KubeletConfig,
    runtime::{cri, image_spec},
};

pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks what this kubelet made, so orphans can be found without touching anything else.
pub const LABEL_MANAGED: &str = "skiff.io/managed";

const CPU_PERIOD_US: i64 = 100_000;
const MIN_SHARES: i64 = 2;

/// Pod identity the runtime objects carry.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (LABEL_POD_UID.into(), m.uid.clone().unwrap_or_default()),
        (LABEL_POD_NAME.into(), m.name.clone().unwrap_or_default()),
        (
            LABEL_POD_NAMESPACE.into(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (LABEL_MANAGED.into(), "true".into()),
    ])
}

/// The pod's log directory (`ROOT/NAMESPACE_NAME_UID`), as the kubelet lays it out.
pub fn log_directory(config: &KubeletConfig, pod: &Pod) -> String {
    let m = &pod.metadata;
    config
        .pod_log_dir
        .join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        ))
        .display()
        .to_string()
}

pub fn sandbox_config(config: &KubeletConfig, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        let h = spec
            .hostname
            .clone()
            .unwrap_or_else(|| m.name.clone().unwrap_or_default());
        // A hostname is a DNS label: at most 63 bytes, no trailing '-' or '.'.
        h.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_owned()
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let mut labels: HashMap<String, String> =
        m.labels.clone().unwrap_or_default().into_iter().collect();
    labels.extend(pod_labels(pod));
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: log_directory(config, pod),
        dns_config: config.dns.as_ref().and_then(|hook| (hook.0)(pod)),
        port_mappings,
        labels,
        annotations: m
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup(config, pod),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_network {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    pid: pid_mode(pod),
                    ipc: if spec.host_ipc.unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `CGROUP_ROOT/pod<uid>` (cgroupfs layout: the runtime creates it in every hierarchy).
pub fn pod_cgroup(config: &KubeletConfig, pod: &Pod) -> String {
    format!(
        "{}/pod{}",
        config.cgroup_root.trim_end_matches('/'),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn pid_mode(pod: &Pod) -> i32 {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        cri::NamespaceMode::Node as i32
    } else if spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
    {
        cri::NamespaceMode::Pod as i32
    } else {
        cri::NamespaceMode::Container as i32
    }
}

/// A container's config. `envs` are resolved already (see `env.rs`); `$(VAR)` references in
/// the command and args are expanded from them, as the kubelet does. `memory_capacity` (the
/// node's, in bytes) scales a Burstable container's OOM score.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    envs: &[(String, String)],
    memory_capacity: u64,
) -> cri::ContainerConfig {
    let vars: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand(s, &vars)).collect()
    };
    let mut labels = pod_labels(pod);
    labels.insert(LABEL_CONTAINER_NAME.into(), container.name.clone());
    let security = container.security_context.as_ref();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(image_spec(container.image.as_deref().unwrap_or_default())),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: envs
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        labels,
        annotations: HashMap::from([(
            "io.kubernetes.container.restartCount".into(),
            attempt.to_string(),
        )]),
        log_path: format!("{}/{attempt}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                oom_score_adj: oom_score_adj(pod, container, memory_capacity),
                ..linux_resources(container.resources.as_ref())
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.host_network)
                        .unwrap_or(false)
                    {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    pid: pid_mode(pod),
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                privileged: security.and_then(|s| s.privileged).unwrap_or(false),
                run_as_user: security
                    .and_then(|s| s.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: security
                    .and_then(|s| s.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                readonly_rootfs: security
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Requests and limits as cgroup settings: CPU request → shares, CPU limit → CFS quota,
/// memory limit → memory limit (the kubelet's mapping).
pub fn linux_resources(resources: Option<&ResourceRequirements>) -> cri::LinuxContainerResources {
    let get =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| m.and_then(|m| m.get(k)).and_then(|q| parse_quantity(&q.0));
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let cpu_request = get(requests, "cpu").or_else(|| get(limits, "cpu"));
    let cpu_limit = get(limits, "cpu");
    let memory_limit = get(limits, "memory");
    let milli = |cpu: f64| (cpu * 1000.0).ceil() as i64;
    cri::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(MIN_SHARES, |c| (milli(c) * 1024 / 1000).max(MIN_SHARES)),
        cpu_period: if cpu_limit.is_some() {
            CPU_PERIOD_US
        } else {
            0
        },
        // 1 ms is the kernel's minimum quota.
        cpu_quota: cpu_limit.map_or(0, |c| (milli(c) * CPU_PERIOD_US / 1000).max(1000)),
        memory_limit_in_bytes: memory_limit.map_or(0, |m| m as i64),
        ..Default::default()
    }
}

/// The kubelet's OOM score policy: Guaranteed pods are killed last, BestEffort first,
/// Burstable in between by the share of the node's memory they request.
pub fn oom_score_adj(pod: &Pod, container: &Container, memory_capacity: u64) -> i64 {
    match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"))
                .and_then(|q| parse_quantity(&q.0))
                .unwrap_or(0.0);
            let capacity = memory_capacity.max(1) as f64;
            let score = 1000 - (1000.0 * request / capacity) as i64;
            score.clamp(3, 999)
        }
    }
}

/// The pod's QoS class: Guaranteed when every container limits CPU and memory with requests
/// equal to the limits, BestEffort when nothing asks for or limits either, Burstable otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let get =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| m.and_then(|m| m.get(k)).and_then(|q| parse_quantity(&q.0));
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        for k in ["cpu", "memory"] {
            let (request, limit) = (get(requests, k), get(limits, k));
            any |= request.is_some_and(|v| v > 0.0) || limit.is_some_and(|v| v > 0.0);
            // A limit alone defaults the request to it.
            guaranteed &= limit.is_some() && request.is_none_or(|r| Some(r) == limit);
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Parses a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1G`, `1e3`) into its value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let v = number * factor;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Expands `$(VAR)` from `vars`; `$$` escapes a `$`; unknown references stay as written.
pub fn expand(s: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("12xyz"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn resources_map_to_shares_quota_and_memory() {
        let q = |s: &str| Quantity(s.into());
        let r = ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), q("250m"))])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), q("500m")),
                ("memory".into(), q("64Mi")),
            ])),
            ..Default::default()
        };
        let l = linux_resources(Some(&r));
        assert_eq!(l.cpu_shares, 256);
        assert_eq!(l.cpu_period, 100_000);
        assert_eq!(l.cpu_quota, 50_000);
        assert_eq!(l.memory_limit_in_bytes, 64 * 1024 * 1024);
        // Nothing asked: minimum shares, no quota, no memory limit.
        let none = linux_resources(None);
        assert_eq!(
            (none.cpu_shares, none.cpu_quota, none.memory_limit_in_bytes),
            (2, 0, 0)
        );
    }

    #[test]
    fn sandbox_config_carries_identity_hostname_ports_cgroup_logs_and_dns() {
        let config = KubeletConfig {
            cgroup_root: "/node1/pods/".into(),
            pod_log_dir: "/var/log/pods".into(),
            dns: Some(crate::DnsHook(std::sync::Arc::new(|pod: &Pod| {
                Some(cri::DnsConfig {
                    servers: vec!["10.96.0.10".into()],
                    searches: vec![format!(
                        "{}.svc.cluster.local",
                        pod.metadata.namespace.as_deref().unwrap_or_default()
                    )],
                    options: vec!["ndots:5".into()],
                })
            }))),
            ..KubeletConfig::default()
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-0", "namespace": "shop", "uid": "u1", "labels": { "app": "web" } },
            "spec": {
                "hostname": "web-0-host",
                "containers": [{
                    "name": "c",
                    "ports": [
                        { "containerPort": 80, "hostPort": 8080 },
                        { "containerPort": 53, "protocol": "UDP", "hostPort": 5353 },
                        { "containerPort": 9090 }
                    ]
                }]
            }
        }))
        .unwrap();
        let sb = sandbox_config(&config, &pod, 2);
        let m = sb.metadata.unwrap();
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.uid.as_str(),
                m.attempt
            ),
            ("web-0", "shop", "u1", 2)
        );
        assert_eq!(sb.hostname, "web-0-host");
        assert_eq!(sb.log_directory, "/var/log/pods/shop_web-0_u1");
        assert_eq!(sb.labels["app"], "web");
        assert_eq!(sb.labels[LABEL_POD_UID], "u1");
        // Only ports with a hostPort are mapped.
        let ports: Vec<(i32, i32, i32)> = sb
            .port_mappings
            .iter()
            .map(|p| (p.protocol, p.container_port, p.host_port))
            .collect();
        assert_eq!(
            ports,
            [
                (cri::Protocol::Tcp as i32, 80, 8080),
                (cri::Protocol::Udp as i32, 53, 5353)
            ]
        );
        let linux = sb.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/node1/pods/podu1");
        let dns = sb.dns_config.unwrap();
        assert_eq!(dns.servers, ["10.96.0.10"]);
        assert_eq!(dns.searches, ["shop.svc.cluster.local"]);
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn container_config_expands_args_and_labels_the_run() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u2" },
            "spec": { "containers": [] }
        }))
        .unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "image": "busybox:1.35",
            "command": ["sh", "-c"],
            "args": ["echo $(GREETING) $(UNSET)"],
            "workingDir": "/work",
        }))
        .unwrap();
        let cfg = container_config(&pod, &c, 3, &[("GREETING".into(), "hi".into())], 1 << 30);
        assert_eq!(cfg.args, ["echo hi $(UNSET)"]);
        assert_eq!(cfg.command, ["sh", "-c"]);
        assert_eq!(cfg.working_dir, "/work");
        assert_eq!(cfg.log_path, "app/3.log");
        assert_eq!(cfg.metadata.unwrap().attempt, 3);
        assert_eq!(cfg.labels[LABEL_CONTAINER_NAME], "app");
        assert_eq!(cfg.labels[LABEL_POD_UID], "u2");
        assert_eq!(cfg.envs[0].key, "GREETING");
        assert_eq!(cfg.image.unwrap().image, "busybox:1.35");
    }

    #[test]
    fn qos_classes() {
        let with = |requests: &[(&str, &str)], limits: &[(&str, &str)]| {
            let map = |kv: &[(&str, &str)]| {
                (!kv.is_empty()).then(|| {
                    kv.iter()
                        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                        .collect()
                })
            };
            let p = Pod {
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        resources: Some(ResourceRequirements {
                            requests: map(requests),
                            limits: map(limits),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            qos_class(&p)
        };
        assert_eq!(with(&[], &[]), "BestEffort");
        assert_eq!(with(&[], &[("cpu", "1"), ("memory", "1Gi")]), "Guaranteed");
        assert_eq!(
            with(
                &[("cpu", "1"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")]
            ),
            "Guaranteed"
        );
        assert_eq!(
            with(&[("cpu", "100m")], &[("cpu", "1"), ("memory", "1Gi")]),
            "Burstable"
        );
        assert_eq!(with(&[("memory", "1Gi")], &[]), "Burstable");
    }

    #[test]
    fn oom_scores_follow_qos() {
        let pod_with = |resources: serde_json::Value| -> (Pod, Container) {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": { "name": "p" },
                "spec": { "containers": [{ "name": "c", "resources": resources }] }
            }))
            .unwrap();
            let c = pod.spec.as_ref().unwrap().containers[0].clone();
            (pod, c)
        };
        let gib = 1 << 30;
        let (p, c) = pod_with(serde_json::json!({}));
        assert_eq!(oom_score_adj(&p, &c, 4 * gib), 1000);
        let (p, c) = pod_with(serde_json::json!({ "limits": { "cpu": "1", "memory": "1Gi" } }));
        assert_eq!(oom_score_adj(&p, &c, 4 * gib), -997);
        // A quarter of the node's memory requested: 1000 - 250.
        let (p, c) = pod_with(serde_json::json!({ "requests": { "memory": "1Gi" } }));
        assert_eq!(oom_score_adj(&p, &c, 4 * gib), 750);
        let (p, c) = pod_with(serde_json::json!({ "requests": { "memory": "8Gi" } }));
        assert_eq!(oom_score_adj(&p, &c, 4 * gib), 3);
        let (p, c) = pod_with(serde_json::json!({ "requests": { "cpu": "100m" } }));
        assert_eq!(oom_score_adj(&p, &c, 4 * gib), 999);
    }

    #[test]
    fn expansion_follows_the_kubelet_rules() {
        let vars = HashMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)y$(B)", &vars), "x1ytwo");
        assert_eq!(expand("$(C) $$(A) $", &vars), "$(C) $(A) $");
    }
}
