//! API defaulting: the values kube-apiserver fills in when a client leaves them out (the
//! `SetDefaults_*` functions of `pkg/apis/*/v1`, plus the few the v1 conversions and the
//! default admission chain add), so that stored objects and `kubectl describe` look as they
//! do on a real cluster (a port without `protocol` prints as `80/`).
//!
//! [`apply_defaults`] works on the JSON object in place, only ever adding what is missing, so
//! it is idempotent and keeps fields it does not know. A field of the wrong type is left
//! alone for validation to report.
//!
//! Besides `SetDefaults_*`, a Pod also gets what the default admission plugins add:
//! `serviceAccountName: default` (ServiceAccount), `priority: 0` and
//! `preemptionPolicy: PreemptLowerPriority` (Priority), and the `not-ready`/`unreachable`
//! `NoExecute` tolerations for 300s (DefaultTolerationSeconds). The ServiceAccount plugin's
//! projected token volume is not added: it needs a generated name and the token machinery.

use serde_json::{Map, Value, json};

use crate::registry::Resource;

#[cfg(test)]
mod tests;

type Obj = Map<String, Value>;

/// Fills in the defaults of an object of `resource`, in place. Idempotent.
pub fn apply_defaults(resource: &Resource, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    match (resource.group, resource.version, resource.kind) {
        ("", _, "Pod") => pod(o),
        ("", _, "Service") => service(o),
        ("", _, "Endpoints") => endpoints(o),
        ("", _, "Secret") => secret(o),
        ("", _, "Namespace") => namespace(o),
        ("", _, "Node") => node(o),
        ("apps", _, "Deployment") => deployment(o),
        ("apps", _, "ReplicaSet") => replica_set(o),
        ("apps", _, "StatefulSet") => stateful_set(o),
        ("apps", _, "DaemonSet") => daemon_set(o),
        ("batch", _, "Job") => job(o),
        ("batch", _, "CronJob") => cron_job(o),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            if let Some(spec) = child_or_new(o, "spec") {
                default_ptr(spec, "minReplicas", json!(1));
            }
        }
        ("autoscaling", _, "HorizontalPodAutoscaler") => hpa_v2(o),
        ("discovery.k8s.io", _, "EndpointSlice") => {
            for port in items(o, "ports") {
                default_ptr(port, "name", json!(""));
                default_ptr(port, "protocol", json!("TCP"));
            }
        }
        ("networking.k8s.io", _, "NetworkPolicy") => network_policy(o),
        ("rbac.authorization.k8s.io", _, "RoleBinding" | "ClusterRoleBinding") => binding(o),
        _ => {}
    }
}

/// Sets `key` when it is missing or null (Go: a nil pointer).
fn default_ptr(m: &mut Obj, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), value);
    }
}

/// Sets `key` when it is missing, null or "" (Go: an empty string field).
fn default_str(m: &mut Obj, key: &str, value: &str) {
    if m.get(key)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
    {
        m.insert(key.to_owned(), json!(value));
    }
}

/// Sets `key` when it is missing, null or 0 (Go: an int field left at zero).
fn default_num(m: &mut Obj, key: &str, value: i64) {
    if m.get(key)
        .is_none_or(|v| v.is_null() || v.as_i64() == Some(0))
    {
        m.insert(key.to_owned(), json!(value));
    }
}

fn str_of<'a>(m: &'a Obj, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

fn is_unset(m: &Obj, key: &str) -> bool {
    m.get(key).is_none_or(Value::is_null)
}

/// The object at `key`, if there is one.
fn child<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    m.get_mut(key)?.as_object_mut()
}

/// The object at `key`, created empty when missing or null (Go: a struct field).
fn child_or_new<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    default_ptr(m, key, json!({}));
    child(m, key)
}

/// The objects of the list at `key`.
fn items<'a>(m: &'a mut Obj, key: &str) -> impl Iterator<Item = &'a mut Obj> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn is_non_empty_list(m: &Obj, key: &str) -> bool {
    m.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Whether a Pod's spec or a template's: templates get only the `SetDefaults_PodSpec` part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PodKind {
    Pod,
    Template,
}

fn pod(o: &mut Obj) {
    if let Some(spec) = child_or_new(o, "spec") {
        pod_spec(spec, PodKind::Pod);
    }
    if let Some(status) = child(o, "status") {
        // v1 conversion keeps podIP == podIPs[0] (and hostIP == hostIPs[0]).
        for (single, plural) in [("podIP", "podIPs"), ("hostIP", "hostIPs")] {
            let first = status
                .get(plural)
                .and_then(|v| v.pointer("/0/ip"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let one = str_of(status, single).to_owned();
            if !one.is_empty() && !is_non_empty_list(status, plural) {
                status.insert(plural.to_owned(), json!([{ "ip": one }]));
            } else if let (true, Some(first)) = (one.is_empty(), first) {
                status.insert(single.to_owned(), json!(first));
            }
        }
    }
}

fn pod_template(template: &mut Obj) {
    if let Some(spec) = child_or_new(template, "spec") {
        pod_spec(spec, PodKind::Template);
    }
}

fn pod_spec(spec: &mut Obj, kind: PodKind) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_ptr(spec, "securityContext", json!({}));
    default_ptr(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");

    // v1 conversion: the deprecated `serviceAccount` mirrors `serviceAccountName`.
    if str_of(spec, "serviceAccountName").is_empty() && !str_of(spec, "serviceAccount").is_empty() {
        let sa = str_of(spec, "serviceAccount").to_owned();
        spec.insert("serviceAccountName".to_owned(), json!(sa));
    }
    if kind == PodKind::Pod {
        // Admission (ServiceAccount, Priority, DefaultTolerationSeconds).
        default_str(spec, "serviceAccountName", "default");
        if str_of(spec, "priorityClassName").is_empty() {
            default_ptr(spec, "priority", json!(0));
        }
        default_ptr(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        default_tolerations(spec);
        default_ptr(spec, "enableServiceLinks", json!(true));
    }
    let sa = str_of(spec, "serviceAccountName").to_owned();
    if !sa.is_empty() {
        spec.insert("serviceAccount".to_owned(), json!(sa));
    }

    let host_network =
        kind == PodKind::Pod && spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items(spec, list) {
            container(c);
            if kind == PodKind::Pod && list != "ephemeralContainers" {
                requests_from_limits(c);
            }
            if host_network {
                for port in items(c, "ports") {
                    if port
                        .get("hostPort")
                        .is_none_or(|v| v.is_null() || v.as_i64() == Some(0))
                        && let Some(cp) = port.get("containerPort").cloned()
                    {
                        port.insert("hostPort".to_owned(), cp);
                    }
                }
            }
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
}

/// DefaultTolerationSeconds: tolerate `not-ready` and `unreachable` for 300s.
fn default_tolerations(spec: &mut Obj) {
    default_ptr(spec, "tolerations", json!([]));
    let Some(list) = spec.get_mut("tolerations").and_then(Value::as_array_mut) else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            t.get("key").and_then(Value::as_str) == Some(key)
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }));
        }
    }
}

fn container(c: &mut Obj) {
    if str_of(c, "imagePullPolicy").is_empty() {
        let policy = default_pull_policy(str_of(c, "image"));
        c.insert("imagePullPolicy".to_owned(), json!(policy));
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    // Go always serializes the (non-pointer) resources struct.
    default_ptr(c, "resources", json!({}));
    for port in items(c, "ports") {
        default_str(port, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child(c, probe) {
            default_num(p, "timeoutSeconds", 1);
            default_num(p, "periodSeconds", 10);
            default_num(p, "successThreshold", 1);
            default_num(p, "failureThreshold", 3);
            handler(p);
            if let Some(grpc) = child(p, "grpc") {
                default_ptr(grpc, "service", json!(""));
            }
        }
    }
    if let Some(lifecycle) = child(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = child(lifecycle, hook) {
                handler(h);
            }
        }
    }
    for env in items(c, "env") {
        if let Some(field_ref) = child(env, "valueFrom").and_then(|v| child(v, "fieldRef")) {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
}

fn handler(h: &mut Obj) {
    if let Some(get) = child(h, "httpGet") {
        default_str(get, "path", "/");
        default_str(get, "scheme", "HTTP");
    }
}

/// `SetDefaults_Container`: `Always` for `:latest` or no tag, `IfNotPresent` otherwise
/// (including a digest without a tag, and a name that does not parse).
fn default_pull_policy(image: &str) -> &'static str {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return "IfNotPresent";
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo_last, tag) = match last.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (last, None),
    };
    // The repository path must be lower case (a domain such as `Registry:5000` may not be).
    let path_len = name.len() - last.len() + repo_last.len();
    let mut path = &name[..path_len];
    if let Some((first, rest)) = path.split_once('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        path = rest;
    }
    if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return "IfNotPresent";
    }
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

/// `SetDefaults_Pod`: a resource limited but not requested requests its limit.
fn requests_from_limits(c: &mut Obj) {
    let Some(resources) = child(c, "resources") else {
        return;
    };
    let Some(limits) = resources
        .get("limits")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
        .cloned()
    else {
        return;
    };
    let Some(requests) = child_or_new(resources, "requests") else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

const VOLUME_FILE_MODE: i64 = 0o644;

fn volume(v: &mut Obj) {
    if v.iter().all(|(k, val)| k == "name" || val.is_null()) {
        v.insert("emptyDir".to_owned(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = child(v, source) {
            default_ptr(s, "defaultMode", json!(VOLUME_FILE_MODE));
        }
    }
    if let Some(host_path) = child(v, "hostPath") {
        default_ptr(host_path, "type", json!(""));
    }
    if let Some(d) = child(v, "downwardAPI") {
        downward_items(d);
    }
    if let Some(projected) = child(v, "projected") {
        for source in items(projected, "sources") {
            if let Some(token) = child(source, "serviceAccountToken") {
                default_ptr(token, "expirationSeconds", json!(3600));
            }
            if let Some(d) = child(source, "downwardAPI") {
                downward_items(d);
            }
        }
    }
    if let Some(spec) = child(v, "ephemeral")
        .and_then(|e| child(e, "volumeClaimTemplate"))
        .and_then(|t| child(t, "spec"))
    {
        default_ptr(spec, "volumeMode", json!("Filesystem"));
    }
}

fn downward_items(d: &mut Obj) {
    for item in items(d, "items") {
        if let Some(field_ref) = child(item, "fieldRef") {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
}

fn service(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".to_owned(),
                    json!({ "clientIP": { "timeoutSeconds": 10800 } }),
                );
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    for port in items(spec, "ports") {
        default_str(port, "protocol", "TCP");
        let target_unset = port
            .get("targetPort")
            .is_none_or(|t| t.is_null() || t.as_i64() == Some(0) || t.as_str() == Some(""));
        if target_unset && let Some(p) = port.get("port").cloned() {
            port.insert("targetPort".to_owned(), p);
        }
    }
    let ty = str_of(spec, "type").to_owned();
    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP" && is_non_empty_list(spec, "externalIPs"));
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_ptr(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default_ptr(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        // What the REST layer's IP allocation leaves on a single-stack cluster.
        let cluster_ip = str_of(spec, "clusterIP").to_owned();
        let first = spec
            .get("clusterIPs")
            .and_then(|v| v.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !cluster_ip.is_empty() && !is_non_empty_list(spec, "clusterIPs") {
            spec.insert("clusterIPs".to_owned(), json!([cluster_ip]));
        } else if let (true, Some(first)) = (cluster_ip.is_empty(), first) {
            spec.insert("clusterIP".to_owned(), json!(first));
        }
        default_ptr(spec, "ipFamilyPolicy", json!("SingleStack"));
        if !is_non_empty_list(spec, "ipFamilies") {
            let ip = str_of(spec, "clusterIP");
            let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
            spec.insert("ipFamilies".to_owned(), json!([family]));
        }
    }
    if let Some(status) = child_or_new(o, "status") {
        // Go serializes the (non-pointer) loadBalancer status struct.
        default_ptr(status, "loadBalancer", json!({}));
        if ty == "LoadBalancer"
            && let Some(lb) = child(status, "loadBalancer")
        {
            for ingress in items(lb, "ingress") {
                if !str_of(ingress, "ip").is_empty() {
                    default_ptr(ingress, "ipMode", json!("VIP"));
                }
            }
        }
    }
}

fn endpoints(o: &mut Obj) {
    for subset in items(o, "subsets") {
        for port in items(subset, "ports") {
            default_str(port, "protocol", "TCP");
        }
    }
}

fn secret(o: &mut Obj) {
    default_str(o, "type", "Opaque");
    // v1 conversion: stringData is write-only and overwrites data.
    if let Some(Value::Object(string_data)) = o.remove("stringData") {
        if o.get("data").is_none_or(|d| !d.is_object()) {
            o.insert("data".to_owned(), json!({}));
        }
        if let Some(data) = child(o, "data") {
            for (k, v) in string_data {
                let plain = v.as_str().unwrap_or("").as_bytes().to_vec();
                if let Ok(encoded) = serde_json::to_value(k8s_openapi::ByteString(plain)) {
                    data.insert(k, encoded);
                }
            }
        }
    }
}

fn namespace(o: &mut Obj) {
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let being_created = o
        .get("metadata")
        .is_none_or(|m| m.get("uid").is_none_or(Value::is_null));
    let deleting = o
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|d| !d.is_null());
    if !name.is_empty()
        && let Some(labels) = child_or_new(o, "metadata").and_then(|m| child_or_new(m, "labels"))
    {
        labels.insert("kubernetes.io/metadata.name".to_owned(), json!(name));
    }
    if let Some(status) = child_or_new(o, "status") {
        default_str(status, "phase", "Active");
    }
    // Only at creation: the namespace controller removes it to finish a deletion, and it
    // must not come back.
    if being_created
        && !deleting
        && let Some(spec) = child_or_new(o, "spec")
    {
        default_ptr(spec, "finalizers", json!([]));
        if let Some(list) = spec.get_mut("finalizers").and_then(Value::as_array_mut)
            && !list.iter().any(|f| f.as_str() == Some("kubernetes"))
        {
            list.push(json!("kubernetes"));
        }
    }
}

fn node(o: &mut Obj) {
    if let Some(status) = child(o, "status")
        && is_unset(status, "allocatable")
        && let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned()
    {
        status.insert("allocatable".to_owned(), capacity);
    }
}

fn deployment(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    default_ptr(spec, "replicas", json!(1));
    if let Some(strategy) = child_or_new(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate"
            && let Some(ru) = child_or_new(strategy, "rollingUpdate")
        {
            default_ptr(ru, "maxUnavailable", json!("25%"));
            default_ptr(ru, "maxSurge", json!("25%"));
        }
    }
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    default_ptr(spec, "progressDeadlineSeconds", json!(600));
    if let Some(t) = child_or_new(spec, "template") {
        pod_template(t);
    }
}

fn replica_set(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    default_ptr(spec, "replicas", json!(1));
    if let Some(t) = child_or_new(spec, "template") {
        pod_template(t);
    }
}

fn stateful_set(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = child_or_new(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate"
            && let Some(ru) = child_or_new(strategy, "rollingUpdate")
        {
            default_ptr(ru, "partition", json!(0));
        }
    }
    default_ptr(spec, "replicas", json!(1));
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    if let Some(policy) = child_or_new(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    for claim in items(spec, "volumeClaimTemplates") {
        default_str(claim, "apiVersion", "v1");
        default_str(claim, "kind", "PersistentVolumeClaim");
        if let Some(claim_spec) = child_or_new(claim, "spec") {
            default_ptr(claim_spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = child_or_new(claim, "status") {
            default_str(status, "phase", "Pending");
        }
    }
    if let Some(t) = child_or_new(spec, "template") {
        pod_template(t);
    }
}

fn daemon_set(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    if let Some(strategy) = child_or_new(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate"
            && let Some(ru) = child_or_new(strategy, "rollingUpdate")
        {
            default_ptr(ru, "maxUnavailable", json!(1));
            default_ptr(ru, "maxSurge", json!(0));
        }
    }
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    if let Some(t) = child_or_new(spec, "template") {
        pod_template(t);
    }
}

fn job(o: &mut Obj) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = template_labels
        && let Some(meta) = child_or_new(o, "metadata")
    {
        let has_labels = meta
            .get("labels")
            .and_then(Value::as_object)
            .is_some_and(|l| !l.is_empty());
        if !has_labels {
            meta.insert("labels".to_owned(), labels);
        }
    }
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    if is_unset(spec, "completions") && is_unset(spec, "parallelism") {
        spec.insert("completions".to_owned(), json!(1));
        spec.insert("parallelism".to_owned(), json!(1));
    }
    default_ptr(spec, "parallelism", json!(1));
    let backoff = if is_unset(spec, "backoffLimitPerIndex") {
        6
    } else {
        i64::from(i32::MAX)
    };
    default_ptr(spec, "backoffLimit", json!(backoff));
    default_ptr(spec, "completionMode", json!("NonIndexed"));
    default_ptr(spec, "suspend", json!(false));
    let has_failure_policy = !is_unset(spec, "podFailurePolicy");
    if let Some(policy) = child(spec, "podFailurePolicy") {
        for rule in items(policy, "rules") {
            for pattern in items(rule, "onPodConditions") {
                default_str(pattern, "status", "True");
            }
        }
    }
    default_ptr(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(t) = child_or_new(spec, "template") {
        pod_template(t);
    }
}

fn cron_job(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_ptr(spec, "suspend", json!(false));
    default_ptr(spec, "successfulJobsHistoryLimit", json!(3));
    default_ptr(spec, "failedJobsHistoryLimit", json!(1));
    // The job template gets pod template defaults, not `SetDefaults_Job`.
    if let Some(t) = child_or_new(spec, "jobTemplate")
        .and_then(|jt| child_or_new(jt, "spec"))
        .and_then(|s| child_or_new(s, "template"))
    {
        pod_template(t);
    }
}

fn hpa_v2(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    default_ptr(spec, "minReplicas", json!(1));
    if !is_non_empty_list(spec, "metrics") {
        spec.insert(
            "metrics".to_owned(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": 80 },
                },
            }]),
        );
    }
    if let Some(behavior) = child(spec, "behavior") {
        let scale_up = json!([
            { "type": "Pods", "value": 4, "periodSeconds": 15 },
            { "type": "Percent", "value": 100, "periodSeconds": 15 },
        ]);
        let scale_down = json!([{ "type": "Percent", "value": 100, "periodSeconds": 15 }]);
        for (key, window, policies) in [("scaleUp", 0, scale_up), ("scaleDown", 300, scale_down)] {
            if let Some(rules) = child_or_new(behavior, key) {
                default_ptr(rules, "stabilizationWindowSeconds", json!(window));
                default_ptr(rules, "selectPolicy", json!("Max"));
                default_ptr(rules, "policies", policies);
            }
        }
    }
}

fn network_policy(o: &mut Obj) {
    let Some(spec) = child_or_new(o, "spec") else {
        return;
    };
    if !is_non_empty_list(spec, "policyTypes") {
        let mut types = vec![json!("Ingress")];
        if is_non_empty_list(spec, "egress") {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".to_owned(), Value::Array(types));
    }
    for direction in ["ingress", "egress"] {
        for rule in items(spec, direction) {
            for port in items(rule, "ports") {
                default_ptr(port, "protocol", json!("TCP"));
            }
        }
    }
}

fn binding(o: &mut Obj) {
    if let Some(role_ref) = child(o, "roleRef") {
        default_str(role_ref, "apiGroup", "rbac.authorization.k8s.io");
    }
    for subject in items(o, "subjects") {
        if str_of(subject, "apiGroup").is_empty()
            && matches!(str_of(subject, "kind"), "User" | "Group")
        {
            subject.insert("apiGroup".to_owned(), json!("rbac.authorization.k8s.io"));
        }
    }
}

/// Where the service account's token, CA and namespace appear in containers.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's token volume, added to a Pod when it is created: a
/// projected `kube-api-access-<suffix>` volume (a bound token, the `kube-root-ca.crt` CA and the
/// namespace) mounted read-only at [`SERVICE_ACCOUNT_MOUNT`] in every container. Nothing is
/// added when the pod or its account (`account_automount`) opts out, or a container already
/// mounts something there.
pub fn mount_service_account_token(pod: &mut Value, account_automount: Option<bool>, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or(account_automount)
        .unwrap_or(true);
    let lists = ["initContainers", "containers"];
    let taken = lists.iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["volumeMounts"].as_array().cloned().unwrap_or_default())
            .any(|m| {
                m["mountPath"].as_str().map(|p| p.trim_end_matches('/'))
                    == Some(SERVICE_ACCOUNT_MOUNT)
            })
    });
    let has_volume = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        });
    if !automount || taken || has_volume {
        return;
    }
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.push(volume),
        None => {
            spec.insert("volumes".to_owned(), json!([volume]));
        }
    }
    for list in lists {
        for c in items(spec, list) {
            let mount = json!({"name": name, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": true});
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(mounts) => mounts.push(mount),
                None => {
                    c.insert("volumeMounts".to_owned(), json!([mount]));
                }
            }
        }
    }
}
