//! CPU and memory of the node and of each container, sampled on an interval so that a request
//! gets a usage rate (nano-cores over the last window) at once, as metrics-server expects from
//! the kubelet's `/stats/summary`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::Timestamp;
use serde_json::{Value, json};
use tracing::debug;

use crate::{Runtime, cri, pod::spec};

/// One reading of CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub time: Option<Timestamp>,
    /// Average use over the last window; unknown until two samples exist.
    pub nano_cores: Option<u64>,
    pub core_nanos: u64,
    pub working_set: u64,
    pub usage_bytes: u64,
    pub available: Option<u64>,
}

impl Usage {
    fn cpu_json(&self) -> Value {
        let mut cpu = json!({"usageCoreNanoSeconds": self.core_nanos});
        if let Some(t) = self.time {
            cpu["time"] = json!(t.to_string());
        }
        if let Some(n) = self.nano_cores {
            cpu["usageNanoCores"] = json!(n);
        }
        cpu
    }

    fn memory_json(&self) -> Value {
        let mut memory =
            json!({"workingSetBytes": self.working_set, "usageBytes": self.usage_bytes});
        if let Some(t) = self.time {
            memory["time"] = json!(t.to_string());
        }
        if let Some(a) = self.available {
            memory["availableBytes"] = json!(a);
        }
        memory
    }

    fn add(&mut self, other: &Self) {
        self.time = self.time.max(other.time);
        self.nano_cores = match (self.nano_cores, other.nano_cores) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.core_nanos += other.core_nanos;
        self.working_set += other.working_set;
        self.usage_bytes += other.usage_bytes;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerUsage {
    namespace: String,
    pod: String,
    uid: String,
    name: String,
    usage: Usage,
}

#[derive(Debug, Default)]
struct Sampled {
    node: Usage,
    containers: Vec<ContainerUsage>,
    /// Previous cumulative CPU readings (nanoseconds) and when, per container id and for the node.
    previous: HashMap<String, (Timestamp, u64)>,
}

/// The latest samples.
#[derive(Debug, Default)]
pub struct Stats(Mutex<Sampled>);

/// Nano-cores between two cumulative readings.
fn rate(before: Option<(Timestamp, u64)>, now: (Timestamp, u64)) -> Option<u64> {
    let (t0, c0) = before?;
    let elapsed = now.0.duration_since(t0).as_nanos();
    if elapsed <= 0 || now.1 < c0 {
        return None;
    }
    let cores = u128::from(now.1 - c0) * 1_000_000_000 / elapsed.unsigned_abs();
    u64::try_from(cores).ok()
}

const NODE_KEY: &str = "";

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sampled> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a node reading (cumulative CPU, memory) taken at `now`.
    pub fn record_node(&self, now: Timestamp, cpu_nanos: u64, memory: MemInfo) {
        let mut s = self.lock();
        let before = s.previous.insert(NODE_KEY.to_owned(), (now, cpu_nanos));
        s.node = Usage {
            time: Some(now),
            nano_cores: rate(before, (now, cpu_nanos)),
            core_nanos: cpu_nanos,
            working_set: memory.total.saturating_sub(memory.available),
            usage_bytes: memory.total.saturating_sub(memory.free),
            available: Some(memory.available),
        };
    }

    /// Records the runtime's container statistics taken at `now`.
    pub fn record_containers(&self, now: Timestamp, stats: &[cri::ContainerStats]) {
        let mut s = self.lock();
        let mut containers = Vec::new();
        let mut previous: HashMap<String, (Timestamp, u64)> = s
            .previous
            .remove(NODE_KEY)
            .map(|node| (NODE_KEY.to_owned(), node))
            .into_iter()
            .collect();
        for stat in stats {
            let Some(attrs) = &stat.attributes else {
                continue;
            };
            let label = |k: &str| attrs.labels.get(k).cloned().unwrap_or_default();
            let cpu = stat
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds.as_ref())
                .map_or(0, |v| v.value);
            let memory = stat.memory.as_ref();
            let read = |f: fn(&cri::MemoryUsage) -> Option<&cri::UInt64Value>| {
                memory.and_then(f).map_or(0, |v| v.value)
            };
            let before = s.previous.get(&attrs.id).copied();
            previous.insert(attrs.id.clone(), (now, cpu));
            containers.push(ContainerUsage {
                namespace: label(spec::LABEL_POD_NAMESPACE),
                pod: label(spec::LABEL_POD_NAME),
                uid: label(spec::LABEL_POD_UID),
                name: attrs
                    .metadata
                    .as_ref()
                    .map_or_else(|| label(spec::LABEL_CONTAINER_NAME), |m| m.name.clone()),
                usage: Usage {
                    time: Some(now),
                    nano_cores: rate(before, (now, cpu)),
                    core_nanos: cpu,
                    working_set: read(|m| m.working_set_bytes.as_ref()),
                    usage_bytes: read(|m| m.usage_bytes.as_ref()),
                    available: memory
                        .and_then(|m| m.available_bytes.as_ref())
                        .map(|v| v.value),
                },
            });
        }
        s.previous = previous;
        s.containers = containers;
    }

    /// The `/stats/summary` document (a subset of upstream's stats/v1alpha1 Summary).
    pub fn summary(&self, node_name: &str) -> Value {
        let s = self.lock();
        let mut pods: BTreeMap<(&str, &str, &str), (Usage, Vec<Value>)> = BTreeMap::new();
        for c in &s.containers {
            let entry = pods
                .entry((c.namespace.as_str(), c.pod.as_str(), c.uid.as_str()))
                .or_default();
            entry.0.add(&c.usage);
            entry.1.push(json!({
                "name": c.name,
                "cpu": c.usage.cpu_json(),
                "memory": c.usage.memory_json(),
            }));
        }
        let pods: Vec<Value> = pods
            .into_iter()
            .map(|((namespace, name, uid), (usage, containers))| {
                json!({
                    "podRef": {"name": name, "namespace": namespace, "uid": uid},
                    "cpu": usage.cpu_json(),
                    "memory": usage.memory_json(),
                    "containers": containers,
                })
            })
            .collect();
        json!({
            "node": {
                "nodeName": node_name,
                "cpu": s.node.cpu_json(),
                "memory": s.node.memory_json(),
            },
            "pods": pods,
        })
    }
}

/// The machine's memory, in bytes (/proc/meminfo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let bytes = value.parse::<u64>().unwrap_or(0) * 1024;
        match key {
            "MemTotal:" => m.total = bytes,
            "MemFree:" => m.free = bytes,
            "MemAvailable:" => m.available = bytes,
            _ => {}
        }
    }
    m
}

/// Busy CPU time of the whole machine in nanoseconds, from /proc/stat's `cpu` line (in
/// USER_HZ ticks, 100 per second on Linux): everything but idle and iowait.
pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| *t)
        .sum();
    Some(busy * 10_000_000)
}

/// Samples the node and the runtime's containers every `interval`.
pub async fn sample<R: Runtime>(runtime: Arc<R>, stats: Arc<Stats>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        let cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t));
        let memory = std::fs::read_to_string("/proc/meminfo")
            .map(|t| parse_meminfo(&t))
            .unwrap_or_default();
        if let Some(cpu) = cpu {
            stats.record_node(now, cpu, memory);
        }
        match runtime.list_container_stats().await {
            Ok(list) => stats.record_containers(now, &list),
            Err(e) => debug!(error = %e, "sampling container statistics"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, pod: &str, name: &str, cpu: u64, memory: u64) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: id.into(),
                metadata: Some(cri::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                labels: [
                    (spec::LABEL_POD_NAMESPACE.to_owned(), "default".to_owned()),
                    (spec::LABEL_POD_NAME.to_owned(), pod.to_owned()),
                    (spec::LABEL_POD_UID.to_owned(), format!("uid-{pod}")),
                ]
                .into(),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                usage_core_nano_seconds: Some(cri::UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                working_set_bytes: Some(cri::UInt64Value { value: memory }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rates_come_from_two_samples_and_pods_sum_their_containers() {
        let stats = Stats::default();
        let t0: Timestamp = "2026-11-27T12:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-11-27T12:00:10Z".parse().expect("time");
        stats.record_containers(t0, &[container("a", "web", "app", 1_000_000_000, 10 << 20)]);
        let first = stats.summary("n1");
        assert!(first["pods"][0]["cpu"].get("usageNanoCores").is_none());
        stats.record_containers(
            t1,
            &[
                // 0.5 s of CPU in 10 s: 50 millicores.
                container("a", "web", "app", 1_500_000_000, 12 << 20),
                container("b", "web", "sidecar", 7, 1 << 20),
            ],
        );
        let s = stats.summary("n1");
        let pod = &s["pods"][0];
        assert_eq!(pod["podRef"]["name"], "web");
        assert_eq!(pod["podRef"]["uid"], "uid-web");
        assert_eq!(pod["containers"].as_array().map(Vec::len), Some(2));
        assert_eq!(pod["containers"][0]["cpu"]["usageNanoCores"], 50_000_000);
        // The new container has no rate yet; the pod's is its known containers' sum.
        assert!(pod["containers"][1]["cpu"].get("usageNanoCores").is_none());
        assert_eq!(pod["cpu"]["usageNanoCores"], 50_000_000);
        assert_eq!(pod["memory"]["workingSetBytes"], (12 << 20) + (1 << 20));
        assert_eq!(s["node"]["nodeName"], "n1");
    }

    #[test]
    fn a_restarted_container_gets_no_negative_rate() {
        let t0: Timestamp = "2026-11-27T12:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-11-27T12:00:10Z".parse().expect("time");
        assert_eq!(rate(Some((t0, 100)), (t1, 50)), None);
        assert_eq!(rate(Some((t1, 100)), (t1, 200)), None);
        assert_eq!(
            rate(Some((t0, 0)), (t1, 10_000_000_000)),
            Some(1_000_000_000)
        );
    }

    #[test]
    fn node_readings_from_proc() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        // user+nice+system+irq+softirq+steal = 161 ticks of 10 ms.
        assert_eq!(parse_proc_stat(stat), Some(1_610_000_000));
        assert_eq!(parse_proc_stat("intr 1 2"), None);
        let m =
            parse_meminfo("MemTotal:       1000 kB\nMemFree:  200 kB\nMemAvailable:   600 kB\n");
        assert_eq!(
            m,
            MemInfo {
                total: 1_024_000,
                free: 204_800,
                available: 614_400
            }
        );
        let stats = Stats::default();
        let t0: Timestamp = "2026-11-27T12:00:00Z".parse().expect("time");
        stats.record_node(t0, 1, m);
        let s = stats.summary("n1");
        assert_eq!(s["node"]["memory"]["workingSetBytes"], 1_024_000 - 614_400);
        assert_eq!(s["node"]["memory"]["availableBytes"], 614_400);
    }
}
