//! Pods, pod templates and the workloads that carry them (`pkg/apis/core/validation`'s
//! `ValidatePodSpec`, `pkg/apis/apps/validation`, `pkg/apis/batch/validation`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    Validator, child, get, go_quote, index, int, int_or_percent, int_or_percent_is_zero,
    is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_qualified_name,
    is_valid_label_value, is_valid_port_name, key, list, port_num_or_name, selector_and_template,
    show, string, validate_labels,
};

pub(super) const RESTART_ANY: &[&str] = &["Always", "OnFailure", "Never"];
pub(super) const RESTART_ALWAYS: &[&str] = &["Always"];
pub(super) const RESTART_JOB: &[&str] = &["OnFailure", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Where a pod spec sits.
#[derive(Clone, Copy)]
pub(super) struct PodSpecOpts {
    /// A Pod (image required) rather than a template.
    pub is_pod: bool,
    /// The restart policies the owner allows.
    pub restart: &'static [&'static str],
}

/// `ValidatePodSpec`.
pub(super) fn pod_spec(v: &mut Validator, spec: &Value, field: &str, opts: PodSpecOpts) {
    let volumes = volumes(v, spec, &child(field, "volumes"));
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    let containers = list(spec, "containers");
    if containers.is_empty() {
        v.required(&child(field, "containers"), "");
    }
    for (list_name, init) in [("initContainers", true), ("containers", false)] {
        for (i, c) in list(spec, list_name).iter().enumerate() {
            let f = index(&child(field, list_name), i);
            container(v, c, &f, opts, &volumes, &mut names, &mut host_ports);
            let restart = string(c, "restartPolicy");
            let sidecar = init && restart == "Always";
            if init {
                if !restart.is_empty() && restart != "Always" {
                    v.not_supported(&child(&f, "restartPolicy"), restart, &["Always"]);
                }
                if !sidecar {
                    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                        if get(c, probe).is_some() {
                            v.forbidden(
                                &child(&f, probe),
                                "may not be set for init containers without restartPolicy=Always",
                            );
                        }
                    }
                }
            } else if !restart.is_empty() {
                v.forbidden(
                    &child(&f, "restartPolicy"),
                    "may not be set for non-init containers",
                );
            }
            if !init || sidecar {
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    if let Some(p) = get(c, probe) {
                        self::probe(v, p, &child(&f, probe), probe != "readinessProbe");
                    }
                }
            }
        }
    }
    for (i, c) in list(spec, "ephemeralContainers").iter().enumerate() {
        let f = index(&child(field, "ephemeralContainers"), i);
        container(v, c, &f, opts, &volumes, &mut names, &mut host_ports);
    }

    let restart = string(spec, "restartPolicy");
    if !restart.is_empty() && !opts.restart.contains(&restart) {
        v.not_supported(&child(field, "restartPolicy"), restart, opts.restart);
    }
    let dns = string(spec, "dnsPolicy");
    if !dns.is_empty() {
        let supported = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
        if !supported.contains(&dns) {
            v.not_supported(&child(field, "dnsPolicy"), dns, &supported);
        } else if dns == "None" && get(spec, "dnsConfig").is_none() {
            v.required(
                &child(field, "dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            );
        }
    }
    validate_labels(v, spec.get("nodeSelector"), &child(field, "nodeSelector"));
    for k in ["serviceAccountName", "nodeName"] {
        let s = string(spec, k);
        if !s.is_empty() {
            v.each_str(&child(field, k), s, is_dns1123_subdomain(s));
        }
    }
    for k in ["hostname", "subdomain"] {
        let s = string(spec, k);
        if !s.is_empty() {
            v.each_str(&child(field, k), s, is_dns1123_label(s));
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        v.invalid_int(
            &child(field, "activeDeadlineSeconds"),
            ads,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    tolerations(v, spec, &child(field, "tolerations"));
}

fn volumes(v: &mut Validator, spec: &Value, field: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, vol) in list(spec, "volumes").iter().enumerate() {
        let f = index(field, i);
        let name = string(vol, "name");
        if name.is_empty() {
            v.required(&child(&f, "name"), "");
        } else {
            v.each_str(&child(&f, "name"), name, is_dns1123_label(name));
            if !names.insert(name.to_owned()) {
                v.duplicate(&child(&f, "name"), &go_quote(name));
            }
        }
        let sources: Vec<&String> = vol
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, val)| *k != "name" && !val.is_null())
            .map(|(k, _)| k)
            .collect();
        if let Some(second) = sources.get(1) {
            v.forbidden(
                &child(&f, second),
                "may not specify more than 1 volume type",
            );
        }
    }
    names
}

fn container(
    v: &mut Validator,
    c: &Value,
    f: &str,
    opts: PodSpecOpts,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    host_ports: &mut BTreeSet<String>,
) {
    let name = string(c, "name");
    if name.is_empty() {
        v.required(&child(f, "name"), "");
    } else {
        v.each_str(&child(f, "name"), name, is_dns1123_label(name));
        if !names.insert(name.to_owned()) {
            v.duplicate(&child(f, "name"), &go_quote(name));
        }
    }
    if opts.is_pod {
        let image = string(c, "image");
        if image.is_empty() {
            v.required(&child(f, "image"), "");
        } else if image.trim() != image {
            v.invalid_str(
                &child(f, "image"),
                image,
                "must not have leading or trailing whitespace",
            );
        }
    }
    v.one_of(
        c,
        "imagePullPolicy",
        &child(f, "imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
    );
    v.one_of(
        c,
        "terminationMessagePolicy",
        &child(f, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
    );

    let mut port_names = BTreeSet::new();
    for (i, p) in list(c, "ports").iter().enumerate() {
        let pf = index(&child(f, "ports"), i);
        match int(p, "containerPort") {
            None | Some(0) => v.required(&child(&pf, "containerPort"), ""),
            Some(n) => v.port_num(&child(&pf, "containerPort"), n),
        }
        let host_port = int(p, "hostPort").unwrap_or(0);
        if host_port != 0 {
            v.port_num(&child(&pf, "hostPort"), host_port);
        }
        let port_name = string(p, "name");
        if !port_name.is_empty() {
            v.each_str(
                &child(&pf, "name"),
                port_name,
                is_valid_port_name(port_name),
            );
            if !port_names.insert(port_name.to_owned()) {
                v.duplicate(&child(&pf, "name"), &go_quote(port_name));
            }
        }
        v.one_of(p, "protocol", &child(&pf, "protocol"), PROTOCOLS);
        if host_port != 0 {
            let proto = match string(p, "protocol") {
                "" => "TCP",
                other => other,
            };
            let id = format!("{host_port}/{proto}");
            if !host_ports.insert(format!("{}{id}", string(p, "hostIP"))) {
                v.duplicate(&child(&pf, "hostPort"), &go_quote(&id));
            }
        }
    }

    for (i, e) in list(c, "env").iter().enumerate() {
        let ef = index(&child(f, "env"), i);
        let env_name = string(e, "name");
        if env_name.is_empty() {
            v.required(&child(&ef, "name"), "");
        } else {
            v.each_str(&child(&ef, "name"), env_name, is_env_var_name(env_name));
        }
        if get(e, "valueFrom").is_some() && !string(e, "value").is_empty() {
            v.invalid(
                &child(&ef, "valueFrom"),
                "\"\"",
                "may not be specified when `value` is not empty",
            );
        }
    }

    let mut mount_paths = BTreeSet::new();
    for (i, m) in list(c, "volumeMounts").iter().enumerate() {
        let mf = index(&child(f, "volumeMounts"), i);
        let vol = string(m, "name");
        if vol.is_empty() {
            v.required(&child(&mf, "name"), "");
        } else if !volumes.contains(vol) {
            v.not_found(&child(&mf, "name"), &go_quote(vol));
        }
        let path = string(m, "mountPath");
        if path.is_empty() {
            v.required(&child(&mf, "mountPath"), "");
        } else if !mount_paths.insert(path.to_owned()) {
            v.invalid_str(&child(&mf, "mountPath"), path, "must be unique");
        }
    }

    resources(v, c.get("resources"), &child(f, "resources"));
}

fn probe(v: &mut Validator, p: &Value, f: &str, success_must_be_one: bool) {
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|h| get(p, h).is_some())
        .collect();
    match handlers.as_slice() {
        [] => v.required(f, "must specify a handler type"),
        [_] => {}
        [_, second, ..] => v.forbidden(
            &child(f, second),
            "may not specify more than 1 handler type",
        ),
    }
    for k in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    ] {
        v.non_negative(p, k, &child(f, k));
    }
    if success_must_be_one
        && let Some(n) = int(p, "successThreshold")
        && n != 1
    {
        v.invalid_int(&child(f, "successThreshold"), n, "must be 1");
    }
    if let Some(get_action) = get(p, "httpGet") {
        let hf = child(f, "httpGet");
        port_num_or_name(v, get_action.get("port"), &child(&hf, "port"));
        v.one_of(
            get_action,
            "scheme",
            &child(&hf, "scheme"),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(tcp) = get(p, "tcpSocket") {
        port_num_or_name(v, tcp.get("port"), &child(&child(f, "tcpSocket"), "port"));
    }
    if let Some(grpc) = get(p, "grpc")
        && let Some(port) = int(grpc, "port")
    {
        v.port_num(&child(&child(f, "grpc"), "port"), port);
    }
}

/// A parsed quantity, in units (precision is enough to compare requests with limits).
fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
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
    Some(number * scale)
}

fn resources(v: &mut Validator, resources: Option<&Value>, f: &str) {
    let Some(resources) = resources else {
        return;
    };
    let read = |k: &str| -> Vec<(String, String, Option<f64>)> {
        resources
            .get(k)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, q)| {
                let q = match q {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                let parsed = quantity(&q);
                Some((name.clone(), q, parsed))
            })
            .collect()
    };
    let limits = read("limits");
    let requests = read("requests");
    for (k, entries) in [("limits", &limits), ("requests", &requests)] {
        for (name, raw, parsed) in entries {
            let qf = key(&child(f, k), name);
            match parsed {
                None => v.invalid_str(
                    &qf,
                    raw,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                ),
                Some(q) if *q < 0.0 => {
                    v.invalid_str(&qf, raw, "must be greater than or equal to 0");
                }
                Some(_) => {}
            }
        }
    }
    for (name, raw, parsed) in &requests {
        let Some((_, limit_raw, Some(limit))) = limits.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        if parsed.is_some_and(|r| r > *limit) {
            v.invalid_str(
                &key(&child(f, "requests"), name),
                raw,
                &format!("must be less than or equal to {name} limit of {limit_raw}"),
            );
        }
    }
}

fn tolerations(v: &mut Validator, spec: &Value, field: &str) {
    for (i, t) in list(spec, "tolerations").iter().enumerate() {
        let f = index(field, i);
        let k = string(t, "key");
        if !k.is_empty() {
            v.each_str(&child(&f, "key"), k, is_qualified_name(k));
        }
        let op = string(t, "operator");
        if k.is_empty() && op != "Exists" {
            v.invalid_str(
                &child(&f, "operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        match op {
            "" | "Equal" => {
                let value = string(t, "value");
                v.each_str(&child(&f, "value"), value, is_valid_label_value(value));
            }
            "Exists" => {
                if !string(t, "value").is_empty() {
                    v.invalid_str(
                        &child(&f, "operator"),
                        string(t, "value"),
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            other => v.not_supported(&child(&f, "operator"), other, &["Equal", "Exists"]),
        }
        let effect = string(t, "effect");
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            v.invalid_str(
                &child(&f, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        if !effect.is_empty() {
            v.one_of(
                t,
                "effect",
                &child(&f, "effect"),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
}

/// `ValidatePodTemplateSpec` at `field` (`spec.template`).
pub(super) fn pod_template(
    v: &mut Validator,
    template: Option<&Value>,
    field: &str,
    restart: &'static [&'static str],
) {
    let Some(template) = template else {
        v.required(field, "");
        return;
    };
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    validate_labels(v, meta.get("labels"), &child(field, "labels"));
    super::validate_annotations(v, meta.get("annotations"), &child(field, "annotations"));
    let spec = template.get("spec").unwrap_or(&Value::Null);
    pod_spec(
        v,
        spec,
        &child(field, "spec"),
        PodSpecOpts {
            is_pod: false,
            restart,
        },
    );
    if restart == RESTART_ALWAYS && get(spec, "activeDeadlineSeconds").is_some() {
        v.forbidden(
            &child(&child(field, "spec"), "activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        );
    }
}

/// The fields of a pod spec an update may change (masked before comparing).
fn pod_spec_without_mutable(spec: &Value) -> Value {
    let mut spec = spec.clone();
    if let Some(m) = spec.as_object_mut() {
        for k in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ] {
            m.remove(k);
        }
        for list_name in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list_name).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    spec
}

pub(super) fn pod(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    pod_spec(
        v,
        spec,
        "spec",
        PodSpecOpts {
            is_pod: true,
            restart: RESTART_ANY,
        },
    );
    if let Some(old) = old {
        let before = old.get("spec").unwrap_or(&Value::Null);
        if pod_spec_without_mutable(spec) != pod_spec_without_mutable(before) {
            v.forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            );
        }
    }
}

fn replicas_and_history(v: &mut Validator, spec: &Value) {
    for k in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        v.non_negative(spec, k, &child("spec", k));
    }
}

fn selector_immutable(v: &mut Validator, spec: &Value, old: Option<&Value>) {
    if let Some(old) = old {
        super::immutable(
            v,
            get(spec, "selector"),
            old.pointer("/spec/selector"),
            "spec.selector",
        );
    }
}

pub(super) fn deployment(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    replicas_and_history(v, spec);
    selector_and_template(v, spec, "spec", "/template", "deployment", true);
    pod_template(v, get(spec, "template"), "spec.template", RESTART_ALWAYS);
    if let Some(strategy) = get(spec, "strategy") {
        let ty = string(strategy, "type");
        let ru = get(strategy, "rollingUpdate");
        match ty {
            "Recreate" => {
                if ru.is_some() {
                    v.forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    );
                }
            }
            "RollingUpdate" | "" => {
                if let Some(ru) = ru {
                    rolling_update(v, ru, "spec.strategy.rollingUpdate");
                }
            }
            other => v.not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"]),
        }
    }
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        v.non_negative(
            spec,
            "progressDeadlineSeconds",
            "spec.progressDeadlineSeconds",
        );
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            v.invalid_int(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            );
        }
    }
    selector_immutable(v, spec, old);
}

fn rolling_update(v: &mut Validator, ru: &Value, f: &str) {
    let max_unavailable = ru.get("maxUnavailable");
    let max_surge = ru.get("maxSurge");
    int_or_percent(v, max_unavailable, &child(f, "maxUnavailable"), true);
    int_or_percent(v, max_surge, &child(f, "maxSurge"), false);
    if int_or_percent_is_zero(max_unavailable) && int_or_percent_is_zero(max_surge) {
        v.invalid(
            &child(f, "maxUnavailable"),
            show(max_unavailable).trim_matches('"'),
            "may not be 0 when `maxSurge` is 0",
        );
    }
}

pub(super) fn replica_set(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    replicas_and_history(v, spec);
    selector_and_template(v, spec, "spec", "/template", "deployment", true);
    pod_template(v, get(spec, "template"), "spec.template", RESTART_ALWAYS);
    selector_immutable(v, spec, old);
}

pub(super) fn daemon_set(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    replicas_and_history(v, spec);
    selector_and_template(v, spec, "spec", "/template", "daemonset", true);
    pod_template(v, get(spec, "template"), "spec.template", RESTART_ALWAYS);
    if let Some(strategy) = get(spec, "updateStrategy") {
        match string(strategy, "type") {
            "RollingUpdate" => {
                if let Some(ru) = get(strategy, "rollingUpdate") {
                    rolling_update(v, ru, "spec.updateStrategy.rollingUpdate");
                }
            }
            "OnDelete" | "" => {}
            other => v.not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            ),
        }
    }
    selector_immutable(v, spec, old);
}

pub(super) fn stateful_set(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    replicas_and_history(v, spec);
    selector_and_template(v, spec, "spec", "/template", "statefulset", true);
    pod_template(v, get(spec, "template"), "spec.template", RESTART_ALWAYS);
    v.one_of(
        spec,
        "podManagementPolicy",
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
    );
    if let Some(strategy) = get(spec, "updateStrategy") {
        v.one_of(
            strategy,
            "type",
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
        );
        if let Some(partition) = strategy.pointer("/rollingUpdate/partition")
            && let Some(p) = partition.as_i64().filter(|p| *p < 0)
        {
            v.invalid_int(
                "spec.updateStrategy.rollingUpdate.partition",
                p,
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(old) = old {
        let mask = |spec: Option<&Value>| {
            let mut s = spec.cloned().unwrap_or(Value::Null);
            if let Some(m) = s.as_object_mut() {
                for k in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "revisionHistoryLimit",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(k);
                }
            }
            s
        };
        if mask(obj.get("spec")) != mask(old.get("spec")) {
            v.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            );
        }
    }
}

/// `ValidateJobSpec` at `field` (`spec`, or `spec.jobTemplate.spec` of a CronJob).
fn job_spec(v: &mut Validator, spec: &Value, field: &str) {
    for k in ["parallelism", "completions", "backoffLimit"] {
        v.non_negative(spec, k, &child(field, k));
    }
    v.non_negative(
        spec,
        "activeDeadlineSeconds",
        &child(field, "activeDeadlineSeconds"),
    );
    selector_and_template(v, spec, field, "/template", "job", false);
    pod_template(
        v,
        get(spec, "template"),
        &child(field, "template"),
        RESTART_JOB,
    );
    let mode = string(spec, "completionMode");
    if !mode.is_empty() && mode != "NonIndexed" && mode != "Indexed" {
        v.not_supported(
            &child(field, "completionMode"),
            mode,
            &["NonIndexed", "Indexed"],
        );
    }
    if mode == "Indexed" && get(spec, "completions").is_none() {
        v.required(
            &child(field, "completions"),
            "when completion mode is Indexed",
        );
    }
}

pub(super) fn job(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    job_spec(v, spec, "spec");
    if let Some(old) = old {
        for k in ["selector", "template", "completionMode"] {
            super::immutable(
                v,
                get(spec, k),
                old.get("spec").and_then(|s| get(s, k)),
                &child("spec", k),
            );
        }
    }
}

pub(super) fn cron_job(v: &mut Validator, obj: &Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        v.invalid_str("metadata.name", name, "must be no more than 52 characters");
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => v.required("spec.schedule", ""),
        Some(schedule) => {
            if let Err(e) = check_schedule(schedule) {
                v.invalid_str("spec.schedule", schedule, &e);
            }
        }
    }
    if let Some(tz) = get(spec, "timeZone").and_then(Value::as_str)
        && (tz.is_empty() || tz.contains(' ') || tz.starts_with('/'))
    {
        v.invalid_str("spec.timeZone", tz, "unknown time zone");
    }
    v.one_of(
        spec,
        "concurrencyPolicy",
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
    );
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        v.non_negative(spec, k, &child("spec", k));
    }
    let job_spec_value = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
    job_spec(v, job_spec_value, "spec.jobTemplate.spec");
}

/// The cron syntax robfig/cron (and so the CronJob controller) accepts: five fields or a
/// `@descriptor`.
pub(super) fn check_schedule(schedule: &str) -> Result<(), String> {
    if schedule.contains("TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".to_owned());
    }
    if let Some(descriptor) = schedule.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            d if d.starts_with("every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {schedule}")),
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {schedule}",
            fields.len()
        ));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(i64, i64, &[&str], i64); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 0),
        (1, 12, MONTHS, 1),
        (0, 6, DAYS, 0),
    ];
    for (field, (min, max, names, name_base)) in fields.iter().zip(bounds) {
        for expr in field.split(',') {
            let (range, step) = match expr.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (expr, None),
            };
            if let Some(step) = step
                && step.parse::<u32>().map_or(true, |s| s == 0)
            {
                return Err(format!("failed to parse int from {step}: {expr}"));
            }
            if range == "*" || range == "?" {
                continue;
            }
            let value = |s: &str| -> Result<i64, String> {
                if let Some(pos) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
                    return Ok(i64::try_from(pos).unwrap_or(0) + name_base);
                }
                s.parse::<i64>()
                    .map_err(|_| format!("failed to parse int from {s}: {expr}"))
            };
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None => {
                    let x = value(range)?;
                    (x, x)
                }
            };
            if lo < min {
                return Err(format!(
                    "beginning of range ({lo}) below minimum ({min}): {expr}"
                ));
            }
            if hi > max {
                return Err(format!("end of range ({hi}) above maximum ({max}): {expr}"));
            }
            if lo > hi {
                return Err(format!(
                    "beginning of range ({lo}) beyond end of range ({hi}): {expr}"
                ));
            }
        }
    }
    Ok(())
}
