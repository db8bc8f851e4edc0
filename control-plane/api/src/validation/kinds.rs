//! Per-kind validation: the dispatch, and every kind but pods and workloads.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::Value;

use super::{
    NameRule, Validator, child, get, go_quote, immutable, index, int, int_or_percent,
    is_config_map_key, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_cidr,
    is_valid_ip, is_valid_label_value, key, label_selector, list, object_meta, pod,
    port_num_or_name, show, string, validate_finalizer, validate_labels,
};
use crate::registry::Resource;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The largest ConfigMap or Secret payload.
const MAX_DATA_SIZE: usize = 1024 * 1024;
/// The NodePort range of a default kube-apiserver (`--service-node-port-range`).
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

fn name_rule(resource: &Resource) -> NameRule {
    match (resource.group, resource.kind) {
        ("", "Service") => NameRule::Dns1035,
        ("", "Namespace") | ("apps", "StatefulSet") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

pub(super) fn validate_kind(
    v: &mut Validator,
    resource: &Resource,
    obj: &Value,
    old: Option<&Value>,
) {
    let reviews = ["authorization.k8s.io", "authentication.k8s.io"];
    if reviews.contains(&resource.group) {
        review(v, resource, obj);
        return;
    }
    object_meta(v, resource, obj, old, name_rule(resource));
    match (resource.group, resource.version, resource.kind) {
        ("", _, "Pod") => pod::pod(v, obj, old),
        ("", _, "Service") => service(v, obj, old),
        ("", _, "Endpoints") => endpoints(v, obj),
        ("", _, "ConfigMap") => config_map(v, obj, old),
        ("", _, "Secret") => secret(v, obj, old),
        ("", _, "Namespace") => {
            for (i, f) in list(obj.get("spec").unwrap_or(&Value::Null), "finalizers")
                .iter()
                .enumerate()
            {
                if let Some(f) = f.as_str() {
                    validate_finalizer(v, f, &index("spec.finalizers", i));
                }
            }
        }
        ("", _, "Node") => node(v, obj),
        ("", _, "Event") => event(v, obj),
        ("certificates.k8s.io", _, "CertificateSigningRequest") => csr(v, obj),
        ("apps", _, "Deployment") => pod::deployment(v, obj, old),
        ("apps", _, "ReplicaSet") => pod::replica_set(v, obj, old),
        ("apps", _, "StatefulSet") => pod::stateful_set(v, obj, old),
        ("apps", _, "DaemonSet") => pod::daemon_set(v, obj, old),
        ("apps", _, "ControllerRevision") => {
            if get(obj, "data").is_none() {
                v.required("data", "data is mandatory");
            }
            v.non_negative(obj, "revision", "revision");
            if let Some(old) = old {
                immutable(v, get(obj, "data"), get(old, "data"), "data");
            }
        }
        ("batch", _, "Job") => pod::job(v, obj, old),
        ("batch", _, "CronJob") => pod::cron_job(v, obj),
        ("autoscaling", version, "HorizontalPodAutoscaler") => hpa(v, obj, version == "v1"),
        ("discovery.k8s.io", _, "EndpointSlice") => endpoint_slice(v, obj),
        ("networking.k8s.io", _, "Ingress") => ingress(v, obj),
        ("networking.k8s.io", _, "NetworkPolicy") => network_policy(v, obj),
        ("policy", _, "PodDisruptionBudget") => pdb(v, obj),
        ("coordination.k8s.io", _, "Lease") => {
            let spec = obj.get("spec").unwrap_or(&Value::Null);
            if let Some(d) = int(spec, "leaseDurationSeconds")
                && d <= 0
            {
                v.invalid_int("spec.leaseDurationSeconds", d, "must be greater than 0");
            }
            v.non_negative(spec, "leaseTransitions", "spec.leaseTransitions");
        }
        (RBAC_GROUP, _, "Role") => rules(v, obj, true),
        (RBAC_GROUP, _, "ClusterRole") => rules(v, obj, false),
        (RBAC_GROUP, _, "RoleBinding") => binding(v, obj, old, true),
        (RBAC_GROUP, _, "ClusterRoleBinding") => binding(v, obj, old, false),
        _ => {}
    }
}

fn service(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let ty = string(spec, "type");
    let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !ty.is_empty() && !types.contains(&ty) {
        v.not_supported("spec.type", ty, &types);
    }
    let cluster_ip = string(spec, "clusterIP");
    let headless = cluster_ip == "None";
    if ty == "ExternalName" {
        let external_name = string(spec, "externalName");
        if external_name.is_empty() {
            v.required("spec.externalName", "");
        } else {
            let trimmed = external_name.strip_suffix('.').unwrap_or(external_name);
            v.each_str(
                "spec.externalName",
                external_name,
                is_dns1123_subdomain(trimmed),
            );
        }
    } else {
        for (i, ip) in list(spec, "clusterIPs").iter().enumerate() {
            let ip = ip.as_str().unwrap_or("");
            if ip != "None" {
                v.each_str(&index("spec.clusterIPs", i), ip, is_valid_ip(ip));
            }
        }
        if !cluster_ip.is_empty() && !headless && list(spec, "clusterIPs").is_empty() {
            v.each_str("spec.clusterIP", cluster_ip, is_valid_ip(cluster_ip));
        }
    }
    let ports = list(spec, "ports");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        v.required("spec.ports", "");
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = index("spec.ports", i);
        let name = string(p, "name");
        if ports.len() > 1 && name.is_empty() {
            v.required(&child(&f, "name"), "");
        } else if !name.is_empty() {
            v.each_str(&child(&f, "name"), name, is_dns1123_label(name));
            if !names.insert(name.to_owned()) {
                v.duplicate(&child(&f, "name"), &go_quote(name));
            }
        }
        let port = int(p, "port").unwrap_or(0);
        v.port_num(&child(&f, "port"), port);
        let proto = string(p, "protocol");
        if proto.is_empty() {
            v.required(&child(&f, "protocol"), "");
        } else if !PROTOCOLS.contains(&proto) {
            v.not_supported(&child(&f, "protocol"), proto, PROTOCOLS);
        }
        port_num_or_name(v, p.get("targetPort"), &child(&f, "targetPort"));
        if !seen.insert((port, proto.to_owned())) {
            v.duplicate(&f, &format!("{port}/{proto}"));
        }
        if let Some(np) = int(p, "nodePort").filter(|np| *np != 0) {
            let nf = child(&f, "nodePort");
            if ty != "NodePort" && ty != "LoadBalancer" {
                v.forbidden(
                    &nf,
                    &format!(
                        "may not be used when `type` is '{}'",
                        if ty.is_empty() { "ClusterIP" } else { ty }
                    ),
                );
            } else if !NODE_PORT_RANGE.contains(&np) {
                v.invalid_int(
                    &nf,
                    np,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                );
            } else if !node_ports.insert((np, proto.to_owned())) {
                v.duplicate(&nf, &np.to_string());
            }
        }
    }
    v.one_of(
        spec,
        "sessionAffinity",
        "spec.sessionAffinity",
        &["ClientIP", "None"],
    );
    validate_labels(v, spec.get("selector"), "spec.selector");
    for (i, ip) in list(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        v.each_str(&index("spec.externalIPs", i), ip, is_valid_ip(ip));
    }
    let etp = string(spec, "externalTrafficPolicy");
    if !etp.is_empty() {
        v.one_of(
            spec,
            "externalTrafficPolicy",
            "spec.externalTrafficPolicy",
            &["Cluster", "Local"],
        );
    }
    v.one_of(
        spec,
        "internalTrafficPolicy",
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
    );
    v.one_of(
        spec,
        "ipFamilyPolicy",
        "spec.ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
    );
    for (i, family) in list(spec, "ipFamilies").iter().enumerate() {
        let family = family.as_str().unwrap_or("");
        if family != "IPv4" && family != "IPv6" {
            v.not_supported(&index("spec.ipFamilies", i), family, &["IPv4", "IPv6"]);
        }
    }
    if let Some(old) = old {
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        if ty != "ExternalName"
            && !old_ip.is_empty()
            && !cluster_ip.is_empty()
            && old_ip != cluster_ip
        {
            v.invalid(
                "spec.clusterIPs[0]",
                &show(spec.get("clusterIPs").or(spec.get("clusterIP"))),
                "may not change once set",
            );
        }
    }
}

fn endpoints(v: &mut Validator, obj: &Value) {
    for (i, subset) in list(obj, "subsets").iter().enumerate() {
        let sf = index("subsets", i);
        for k in ["addresses", "notReadyAddresses"] {
            for (j, a) in list(subset, k).iter().enumerate() {
                let f = child(&index(&child(&sf, k), j), "ip");
                let ip = string(a, "ip");
                v.each_str(&f, ip, is_valid_ip(ip));
            }
        }
        let ports = list(subset, "ports");
        for (j, p) in ports.iter().enumerate() {
            let f = index(&child(&sf, "ports"), j);
            let name = string(p, "name");
            if ports.len() > 1 && name.is_empty() {
                v.required(&child(&f, "name"), "");
            } else if !name.is_empty() {
                v.each_str(&child(&f, "name"), name, is_dns1123_label(name));
            }
            v.port_num(&child(&f, "port"), int(p, "port").unwrap_or(0));
            v.one_of(p, "protocol", &child(&f, "protocol"), PROTOCOLS);
        }
    }
}

fn data_keys(v: &mut Validator, obj: &Value, field: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for k in obj
        .get(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        v.each_str(&key(field, k), k, is_config_map_key(k));
        keys.insert(k.clone());
    }
    keys
}

/// The immutability of `immutable: true` ConfigMaps and Secrets.
fn immutable_data(v: &mut Validator, obj: &Value, old: Option<&Value>, fields: &[&str]) {
    let Some(old) = old else {
        return;
    };
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    const MSG: &str = "field is immutable when `immutable` is set";
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        v.forbidden("immutable", MSG);
    }
    for f in fields {
        let norm = |x: Option<&Value>| x.filter(|x| !x.is_null()).cloned();
        if norm(obj.get(*f)) != norm(old.get(*f)) {
            v.forbidden(f, MSG);
        }
    }
}

fn config_map(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let data = data_keys(v, obj, "data");
    let binary = data_keys(v, obj, "binaryData");
    for k in data.intersection(&binary) {
        v.invalid_str("data", k, "duplicate of key present in binaryData");
    }
    let size: usize = obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum::<usize>()
        + obj
            .get("binaryData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + base64_len(v))
            .sum::<usize>();
    if size > MAX_DATA_SIZE {
        v.too_long("", MAX_DATA_SIZE);
    }
    immutable_data(v, obj, old, &["data", "binaryData"]);
}

/// The decoded length of a base64 string value.
fn base64_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    let pad = s.bytes().rev().take_while(|&c| c == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad)
}

fn secret(v: &mut Validator, obj: &Value, old: Option<&Value>) {
    let keys = data_keys(v, obj, "data");
    let size: usize = obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(_, v)| base64_len(v))
        .sum();
    if size > MAX_DATA_SIZE {
        v.too_long("data", MAX_DATA_SIZE);
    }
    let need = |v: &mut Validator, k: &str| {
        if !keys.contains(k) {
            v.required(&key("data", k), "");
        }
    };
    match string(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let annotated = obj
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !annotated {
                v.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" => need(v, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" => need(v, ".dockerconfigjson"),
        "kubernetes.io/basic-auth" if !keys.contains("username") && !keys.contains("password") => {
            need(v, "username");
            need(v, "password");
        }
        "kubernetes.io/ssh-auth" => need(v, "ssh-privatekey"),
        "kubernetes.io/tls" => {
            need(v, "tls.key");
            need(v, "tls.crt");
        }
        _ => {}
    }
    if let Some(old) = old {
        let (new_ty, old_ty) = (string(obj, "type"), string(old, "type"));
        if new_ty != old_ty {
            v.invalid_str("type", new_ty, "field is immutable");
        }
    }
    immutable_data(v, obj, old, &["data"]);
}

fn node(v: &mut Validator, obj: &Value) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut seen = BTreeSet::new();
    for (i, t) in list(spec, "taints").iter().enumerate() {
        let f = index("spec.taints", i);
        let k = string(t, "key");
        if k.is_empty() {
            v.required(&child(&f, "key"), "");
        } else {
            v.each_str(&child(&f, "key"), k, is_qualified_name(k));
        }
        let value = string(t, "value");
        v.each_str(&child(&f, "value"), value, is_valid_label_value(value));
        let effect = string(t, "effect");
        let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        if effect.is_empty() {
            v.required(&child(&f, "effect"), "");
        } else if !effects.contains(&effect) {
            v.not_supported(&child(&f, "effect"), effect, &effects);
        }
        if !seen.insert((k.to_owned(), effect.to_owned())) {
            v.duplicate(&f, &format!("{k}:{effect}"));
        }
    }
    let cidr = string(spec, "podCIDR");
    if !cidr.is_empty() {
        v.each_str("spec.podCIDR", cidr, is_valid_cidr(cidr));
    }
    for (i, c) in list(spec, "podCIDRs").iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        v.each_str(&index("spec.podCIDRs", i), c, is_valid_cidr(c));
    }
}

fn event(v: &mut Validator, obj: &Value) {
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved = obj
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mismatch = if involved.is_empty() {
        !namespace.is_empty() && namespace != "default"
    } else {
        namespace != involved
    };
    if mismatch {
        v.invalid_str(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        );
    }
}

fn endpoint_slice(v: &mut Validator, obj: &Value) {
    let ty = string(obj, "addressType");
    let types = ["IPv4", "IPv6", "FQDN"];
    if ty.is_empty() {
        v.required("addressType", "");
    } else if !types.contains(&ty) {
        v.not_supported("addressType", ty, &types);
    }
    for (i, e) in list(obj, "endpoints").iter().enumerate() {
        let f = child(&index("endpoints", i), "addresses");
        let addresses = list(e, "addresses");
        if addresses.is_empty() {
            v.required(&f, "must contain at least 1 address");
        } else if addresses.len() > 100 {
            v.causes.push(super::Cause::new(
                "FieldValueTooMany",
                &f,
                format!("Too many: {}: must have at most 100 items", addresses.len()),
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let af = index(&f, j);
            match ty {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => {
                    v.invalid_str(&af, a, "must be a valid IPv4 address");
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    v.invalid_str(&af, a, "must be a valid IPv6 address");
                }
                "FQDN" => v.each_str(&af, a, is_dns1123_subdomain(a)),
                _ => {}
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, p) in list(obj, "ports").iter().enumerate() {
        let f = index("ports", i);
        let name = string(p, "name");
        if !name.is_empty() {
            v.each_str(&child(&f, "name"), name, is_dns1123_label(name));
        }
        if !names.insert(name.to_owned()) {
            v.duplicate(&child(&f, "name"), &go_quote(name));
        }
        if let Some(port) = int(p, "port") {
            v.port_num(&child(&f, "port"), port);
        }
        v.one_of(p, "protocol", &child(&f, "protocol"), PROTOCOLS);
    }
}

fn ingress_backend(v: &mut Validator, backend: &Value, f: &str) {
    let service = get(backend, "service");
    let resource = get(backend, "resource");
    match (service, resource) {
        (Some(_), Some(_)) => v.invalid(
            f,
            &show(Some(backend)),
            "cannot set both `service` and `resource` backends",
        ),
        (None, None) => v.invalid(
            f,
            &show(Some(backend)),
            "one backend (`service` or `resource`) must be specified",
        ),
        (Some(svc), None) => {
            let sf = child(f, "service");
            let name = string(svc, "name");
            if name.is_empty() {
                v.required(&child(&sf, "name"), "");
            } else {
                v.each_str(&child(&sf, "name"), name, super::is_dns1035_label(name));
            }
            let port = svc.get("port").unwrap_or(&Value::Null);
            let pf = child(&sf, "port");
            let (pname, number) = (string(port, "name"), int(port, "number").unwrap_or(0));
            match (pname.is_empty(), number == 0) {
                (false, false) => v.invalid(
                    &pf,
                    &show(Some(port)),
                    "cannot set both port name & port number",
                ),
                (true, true) => {
                    v.invalid(&pf, &show(Some(port)), "port name or number is required");
                }
                (false, true) => {
                    v.each_str(&child(&pf, "name"), pname, super::is_valid_port_name(pname));
                }
                (true, false) => v.port_num(&child(&pf, "number"), number),
            }
        }
        (None, Some(_)) => {}
    }
}

fn ingress_host(v: &mut Validator, host: &str, f: &str) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        v.invalid_str(f, host, "must be a DNS name, not an IP address");
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    v.each_str(f, host, is_dns1123_subdomain(name));
}

fn ingress(v: &mut Validator, obj: &Value) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let rules = list(spec, "rules");
    if rules.is_empty() && get(spec, "defaultBackend").is_none() {
        v.invalid(
            "spec",
            &show(Some(spec)),
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    if let Some(b) = get(spec, "defaultBackend") {
        ingress_backend(v, b, "spec.defaultBackend");
    }
    for (i, rule) in rules.iter().enumerate() {
        let rf = index("spec.rules", i);
        let host = string(rule, "host");
        if !host.is_empty() {
            ingress_host(v, host, &child(&rf, "host"));
        }
        let Some(http) = get(rule, "http") else {
            continue;
        };
        let hf = child(&child(&rf, "http"), "paths");
        let paths = list(http, "paths");
        if paths.is_empty() {
            v.required(&hf, "");
        }
        for (j, p) in paths.iter().enumerate() {
            let pf = index(&hf, j);
            let path_type = string(p, "pathType");
            let path = string(p, "path");
            let types = ["Exact", "ImplementationSpecific", "Prefix"];
            if path_type.is_empty() {
                v.required(&child(&pf, "pathType"), "pathType must be specified");
            } else if !types.contains(&path_type) {
                v.not_supported(&child(&pf, "pathType"), path_type, &types);
            } else if path_type != "ImplementationSpecific" && !path.starts_with('/') {
                v.invalid_str(&child(&pf, "path"), path, "must be an absolute path");
            }
            ingress_backend(
                v,
                p.get("backend").unwrap_or(&Value::Null),
                &child(&pf, "backend"),
            );
        }
    }
    for (i, tls) in list(spec, "tls").iter().enumerate() {
        for (j, h) in list(tls, "hosts").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            ingress_host(v, h, &index(&child(&index("spec.tls", i), "hosts"), j));
        }
    }
}

fn network_policy(v: &mut Validator, obj: &Value) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(sel) = get(spec, "podSelector") {
        label_selector(v, sel, "spec.podSelector");
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in list(spec, direction).iter().enumerate() {
            let rf = index(&child("spec", direction), i);
            for (j, p) in list(rule, "ports").iter().enumerate() {
                let pf = index(&child(&rf, "ports"), j);
                v.one_of(p, "protocol", &child(&pf, "protocol"), PROTOCOLS);
                port_num_or_name(v, p.get("port"), &child(&pf, "port"));
                if let Some(end) = int(p, "endPort") {
                    match int(p, "port") {
                        Some(port) if end >= port => {}
                        Some(_) => v.invalid_int(
                            &child(&pf, "endPort"),
                            end,
                            "must be greater than or equal to `port`",
                        ),
                        None => v.required(
                            &child(&pf, "port"),
                            "when endPort is specified, port must be specified",
                        ),
                    }
                }
            }
            for (j, peer) in list(rule, peers).iter().enumerate() {
                let pf = index(&child(&rf, peers), j);
                let ip_block = get(peer, "ipBlock");
                let selectors = ["podSelector", "namespaceSelector"]
                    .iter()
                    .filter(|k| get(peer, k).is_some())
                    .count();
                if ip_block.is_none() && selectors == 0 {
                    v.required(&pf, "must specify a peer");
                } else if ip_block.is_some() && selectors > 0 {
                    v.forbidden(&pf, "may not specify both ipBlock and another peer");
                }
                for k in ["podSelector", "namespaceSelector"] {
                    if let Some(sel) = get(peer, k) {
                        label_selector(v, sel, &child(&pf, k));
                    }
                }
                if let Some(block) = ip_block {
                    let bf = child(&pf, "ipBlock");
                    let cidr = string(block, "cidr");
                    if cidr.is_empty() {
                        v.required(&child(&bf, "cidr"), "");
                    } else {
                        v.each_str(&child(&bf, "cidr"), cidr, is_valid_cidr(cidr));
                    }
                    for (x, e) in list(block, "except").iter().enumerate() {
                        let e = e.as_str().unwrap_or("");
                        v.each_str(&index(&child(&bf, "except"), x), e, is_valid_cidr(e));
                    }
                }
            }
        }
    }
    let types = list(spec, "policyTypes");
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if t != "Ingress" && t != "Egress" {
            v.not_supported(&index("spec.policyTypes", i), t, &["Ingress", "Egress"]);
        }
    }
    if types.len() > 2 {
        v.invalid(
            "spec.policyTypes",
            &show(spec.get("policyTypes")),
            "may not have more than 2 items",
        );
    }
}

fn hpa(v: &mut Validator, obj: &Value, v1: bool) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    for k in ["kind", "name"] {
        let s = string(target, k);
        let f = child("spec.scaleTargetRef", k);
        if s.is_empty() {
            v.required(&f, "");
        } else {
            v.each_str(&f, s, super::is_valid_path_segment_name(s));
        }
    }
    let min = int(spec, "minReplicas");
    if let Some(m) = min.filter(|m| *m < 1) {
        v.invalid_int("spec.minReplicas", m, "must be greater than or equal to 1");
    }
    let max = int(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        v.invalid_int("spec.maxReplicas", max, "must be greater than 0");
    } else if min.is_some_and(|m| max < m) {
        v.invalid_int(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        );
    }
    if v1 {
        if let Some(t) = int(spec, "targetCPUUtilizationPercentage").filter(|t| *t < 1) {
            v.invalid_int(
                "spec.targetCPUUtilizationPercentage",
                t,
                "must be greater than 0",
            );
        }
        return;
    }
    let types = [
        "ContainerResource",
        "External",
        "Object",
        "Pods",
        "Resource",
    ];
    for (i, m) in list(spec, "metrics").iter().enumerate() {
        let f = index("spec.metrics", i);
        let ty = string(m, "type");
        if ty.is_empty() {
            v.required(&child(&f, "type"), "must specify a metric source type");
            continue;
        }
        if !types.contains(&ty) {
            v.not_supported(&child(&f, "type"), ty, &types);
            continue;
        }
        let source = match ty {
            "ContainerResource" => "containerResource",
            "External" => "external",
            "Object" => "object",
            "Pods" => "pods",
            _ => "resource",
        };
        let Some(src) = get(m, source) else {
            v.required(
                &child(&f, source),
                "must populate information for the given metric source",
            );
            continue;
        };
        let target = src.get("target").unwrap_or(&Value::Null);
        let target_types = ["AverageValue", "Utilization", "Value"];
        let tt = string(target, "type");
        let tf = child(&child(&f, source), "target");
        if tt.is_empty() {
            v.required(&child(&tf, "type"), "must specify a metric target type");
        } else if !target_types.contains(&tt) {
            v.not_supported(&child(&tf, "type"), tt, &target_types);
        }
        if let Some(u) = int(target, "averageUtilization").filter(|u| *u < 1) {
            v.invalid_int(
                &child(&tf, "averageUtilization"),
                u,
                "must be greater than 0",
            );
        }
    }
}

fn pdb(v: &mut Validator, obj: &Value) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let (min, max) = (get(spec, "minAvailable"), get(spec, "maxUnavailable"));
    if min.is_some() && max.is_some() {
        v.invalid(
            "spec",
            &show(Some(spec)),
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    int_or_percent(v, min, "spec.minAvailable", true);
    int_or_percent(v, max, "spec.maxUnavailable", true);
    if let Some(sel) = get(spec, "selector") {
        label_selector(v, sel, "spec.selector");
    }
    v.one_of(
        spec,
        "unhealthyPodEvictionPolicy",
        "spec.unhealthyPodEvictionPolicy",
        &["AlwaysAllow", "IfHealthyBudget"],
    );
}

fn rules(v: &mut Validator, obj: &Value, namespaced: bool) {
    for (i, rule) in list(obj, "rules").iter().enumerate() {
        let f = index("rules", i);
        if list(rule, "verbs").is_empty() {
            v.required(&child(&f, "verbs"), "verbs must contain at least one value");
        }
        let urls = list(rule, "nonResourceURLs");
        if !urls.is_empty() {
            if namespaced {
                v.invalid(
                    &child(&f, "nonResourceURLs"),
                    &show(rule.get("nonResourceURLs")),
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if !list(rule, "apiGroups").is_empty() || !list(rule, "resources").is_empty() {
                v.invalid(
                    &child(&f, "nonResourceURLs"),
                    &show(rule.get("nonResourceURLs")),
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if list(rule, "apiGroups").is_empty() {
            v.required(
                &child(&f, "apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if list(rule, "resources").is_empty() {
            v.required(
                &child(&f, "resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

fn binding(v: &mut Validator, obj: &Value, old: Option<&Value>, namespaced: bool) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let group = string(role_ref, "apiGroup");
    if group != RBAC_GROUP {
        v.not_supported("roleRef.apiGroup", group, &[RBAC_GROUP]);
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = string(role_ref, "kind");
    if !kinds.contains(&kind) {
        v.not_supported("roleRef.kind", kind, kinds);
    }
    let name = string(role_ref, "name");
    if name.is_empty() {
        v.required("roleRef.name", "");
    } else {
        v.each_str(
            "roleRef.name",
            name,
            super::is_valid_path_segment_name(name),
        );
    }
    for (i, s) in list(obj, "subjects").iter().enumerate() {
        let f = index("subjects", i);
        let name = string(s, "name");
        if name.is_empty() {
            v.required(&child(&f, "name"), "");
        }
        let group = string(s, "apiGroup");
        match string(s, "kind") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    v.each_str(&child(&f, "name"), name, is_dns1123_subdomain(name));
                }
                if !group.is_empty() {
                    v.not_supported(&child(&f, "apiGroup"), group, &[""]);
                }
                if !namespaced && string(s, "namespace").is_empty() {
                    v.required(&child(&f, "namespace"), "");
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    v.not_supported(&child(&f, "apiGroup"), group, &[RBAC_GROUP]);
                }
            }
            other => v.not_supported(
                &child(&f, "kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
    if let Some(old) = old
        && get(obj, "roleRef") != get(old, "roleRef")
    {
        v.invalid(
            "roleRef",
            &show(obj.get("roleRef")),
            "cannot change roleRef",
        );
    }
}

fn review(v: &mut Validator, resource: &Resource, obj: &Value) {
    if resource.group != "authorization.k8s.io" || resource.kind == "SelfSubjectRulesReview" {
        return;
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let (res, non_res) = (
        get(spec, "resourceAttributes"),
        get(spec, "nonResourceAttributes"),
    );
    if res.is_some() && non_res.is_some() {
        v.invalid(
            "spec.nonResourceAttributes",
            &show(non_res),
            "cannot be specified in combination with resourceAttributes",
        );
    }
    if res.is_none() && non_res.is_none() {
        v.invalid(
            "spec.resourceAttributes",
            "null",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        );
    }
    if (resource.kind == "SubjectAccessReview" || resource.kind == "LocalSubjectAccessReview")
        && string(spec, "user").is_empty()
        && list(spec, "groups").is_empty()
    {
        v.invalid(
            "spec.user",
            "\"\"",
            "at least one of user or group must be specified",
        );
    }
    if resource.kind == "LocalSubjectAccessReview" {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let want = res.map_or("", |r| string(r, "namespace"));
        if ns.is_empty() || ns != want {
            v.invalid_str(
                "metadata.namespace",
                ns,
                "must match spec.resourceAttributes.namespace",
            );
        }
    }
}

/// upstream's ValidateCertificateSigningRequestCreate, the parts a client can get wrong.
fn csr(v: &mut Validator, obj: &Value) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let signer = string(spec, "signerName");
    if signer.is_empty() {
        v.required("spec.signerName", "");
    } else if signer.split('/').count() != 2 || signer.starts_with('/') || signer.ends_with('/') {
        v.invalid_str(
            "spec.signerName",
            signer,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
    }
    let request = string(spec, "request");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(request)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    if request.is_empty() {
        v.required("spec.request", "");
    } else if !pem.is_some_and(|p| p.contains("-----BEGIN CERTIFICATE REQUEST-----")) {
        v.invalid_str(
            "spec.request",
            "<request bytes>",
            "PEM block type must be CERTIFICATE REQUEST",
        );
    }
    if list(spec, "usages").is_empty() {
        v.required("spec.usages", "");
    }
    if let Some(seconds) = int(spec, "expirationSeconds")
        && seconds < 600
    {
        v.invalid_int(
            "spec.expirationSeconds",
            seconds,
            "may not specify a duration less than 600 seconds (10 minutes)",
        );
    }
}
