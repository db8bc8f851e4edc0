//! A container's environment: `envFrom` (ConfigMaps, Secrets), then `env` with `value`
//! (`$(VAR)` expanded from what came before, then from the service variables) and `valueFrom`
//! (fieldRef, configMapKeyRef, secretKeyRef), then the service variables (upstream
//! `makeEnvironmentVariables` with `getServiceEnvVarMap` and `envvars.FromServices`).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::{Api, api::ListParams};

use super::spec::expand;

/// Why an environment could not be built (the container waits with
/// `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{kind} \"{name}\" not found")]
    Missing { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("reading {kind} {name}: {source}")]
    Api {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("unsupported fieldRef {0}")]
    FieldPath(String),
}

/// Where the pod runs: values for `status.*` and `spec.nodeName` field references.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
}

/// The namespace and name of the API server's own Service, whose variables every container gets
/// (upstream's "master services").
const KUBERNETES_SERVICE: (&str, &str) = ("default", "kubernetes");

/// Something that serves ConfigMaps, Secrets and Services (the API; a map in tests).
pub trait Objects: Send + Sync {
    /// One Service, `None` when it does not exist.
    fn service(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Service>, EnvError>> + Send;
    /// Every Service of a namespace.
    fn services(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<Service>, EnvError>> + Send;
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<HashMap<String, String>>, EnvError>> + Send;
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<HashMap<String, String>>, EnvError>> + Send;
}

impl Objects for kube::Client {
    async fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>, EnvError> {
        let api: Api<Service> = Api::namespaced(self.clone(), namespace);
        api.get_opt(name).await.map_err(|source| EnvError::Api {
            kind: "service",
            name: format!("{namespace}/{name}"),
            source,
        })
    }

    async fn services(&self, namespace: &str) -> Result<Vec<Service>, EnvError> {
        let api: Api<Service> = Api::namespaced(self.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|source| EnvError::Api {
                kind: "services of namespace",
                name: namespace.to_owned(),
                source,
            })?;
        Ok(list.items)
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EnvError> {
        let api: Api<ConfigMap> = Api::namespaced(self.clone(), namespace);
        let cm = api.get_opt(name).await.map_err(|source| EnvError::Api {
            kind: "configmap",
            name: name.to_owned(),
            source,
        })?;
        Ok(cm.map(|cm| cm.data.unwrap_or_default().into_iter().collect()))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EnvError> {
        let api: Api<Secret> = Api::namespaced(self.clone(), namespace);
        let s = api.get_opt(name).await.map_err(|source| EnvError::Api {
            kind: "secret",
            name: name.to_owned(),
            source,
        })?;
        Ok(s.map(|s| {
            let mut out: HashMap<String, String> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            out.extend(s.string_data.unwrap_or_default());
            out
        }))
    }
}

/// The environment, in order (later entries override earlier ones of the same name): the
/// container's own variables, then the service variables it does not set itself, by name.
pub async fn resolve(
    objects: &impl Objects,
    pod: &Pod,
    container: &Container,
    placement: &Placement,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let services = service_env(objects, namespace, links).await?;
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = out.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, kind, name) = if let Some(r) = &from.config_map_ref {
            (
                objects.config_map(namespace, &r.name).await?,
                r.optional.unwrap_or(false),
                "configmap",
                r.name.clone(),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                objects.secret(namespace, &r.name).await?,
                r.optional.unwrap_or(false),
                "secret",
                r.name.clone(),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                let mut keys: Vec<_> = data.into_iter().collect();
                keys.sort();
                for (k, v) in keys {
                    set(&mut out, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(EnvError::Missing { kind, name }),
        }
    }
    for env in container.env.iter().flatten() {
        let value = if let Some(from) = &env.value_from {
            if let Some(f) = &from.field_ref {
                field(pod, &f.field_path, placement)?
            } else if let Some(r) = &from.config_map_key_ref {
                key_of(
                    objects.config_map(namespace, &r.name).await?,
                    "configmap",
                    namespace,
                    &r.name,
                    &r.key,
                    r.optional.unwrap_or(false),
                )?
            } else if let Some(r) = &from.secret_key_ref {
                key_of(
                    objects.secret(namespace, &r.name).await?,
                    "secret",
                    namespace,
                    &r.name,
                    &r.key,
                    r.optional.unwrap_or(false),
                )?
            } else {
                // resourceFieldRef and fileKeyRef are not supported yet: an empty value beats
                // refusing to run the container.
                Some(String::new())
            }
        } else {
            // The container's own variables first, the service variables as a fallback
            // (upstream `MappingFuncFor(tmpEnv, serviceEnv)`).
            let vars: HashMap<&str, &str> = services
                .iter()
                .chain(out.iter().map(|(k, v)| (k, v)))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Some(expand(env.value.as_deref().unwrap_or_default(), &vars))
        };
        if let Some(value) = value {
            set(&mut out, env.name.clone(), value);
        }
    }
    for (k, v) in services {
        if !out.iter().any(|(name, _)| *name == k) {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// The service variables of a pod in `namespace` (upstream `getServiceEnvVarMap`): those of
/// `default/kubernetes` always, and with service links on, those of every Service of the
/// namespace, which win over `default/kubernetes` when one of them is called `kubernetes`.
async fn service_env(
    objects: &impl Objects,
    namespace: &str,
    links: bool,
) -> Result<BTreeMap<String, String>, EnvError> {
    let (kubernetes_ns, kubernetes_name) = KUBERNETES_SERVICE;
    let mut by_name: BTreeMap<String, Service> = BTreeMap::new();
    if links {
        for s in objects.services(namespace).await? {
            if has_cluster_ip(&s) {
                by_name.insert(s.metadata.name.clone().unwrap_or_default(), s);
            }
        }
    }
    // In `default` with links on, the list already held it (if it exists).
    let listed = links && namespace == kubernetes_ns;
    if !listed
        && !by_name.contains_key(kubernetes_name)
        && let Some(s) = objects.service(kubernetes_ns, kubernetes_name).await?
        && has_cluster_ip(&s)
    {
        by_name.insert(kubernetes_name.to_owned(), s);
    }
    Ok(service_vars(by_name.values()).into_iter().collect())
}

/// Whether a Service has a cluster IP (upstream `IsServiceIPSet`): headless and ExternalName
/// Services have none, so they get no variables.
fn has_cluster_ip(s: &Service) -> bool {
    let ip = s
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or_default();
    !ip.is_empty() && ip != "None"
}

/// The variables of the given Services, in order (upstream `envvars.FromServices`):
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (first port), `<NAME>_SERVICE_PORT_<PORT>` for
/// each named port, and the Docker link variables `<NAME>_PORT` (first port) and
/// `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}` for each port.
pub fn service_vars<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for service in services {
        if !has_cluster_ip(service) {
            continue;
        }
        let Some(spec) = &service.spec else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let prefix = env_name(service.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        // Validation gives every Service with a cluster IP a port; upstream would index out of
        // range without one, here it just has no port variables.
        if let Some(first) = ports.first() {
            let name = format!("{prefix}_SERVICE_PORT");
            out.push((name.clone(), first.port.to_string()));
            for p in ports {
                if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                    out.push((
                        format!("{name}_{}", env_name(port_name)),
                        p.port.to_string(),
                    ));
                }
            }
        }
        // An IPv6 address is bracketed, as Go's `net.JoinHostPort` does.
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        for (i, p) in ports.iter().enumerate() {
            let protocol = p
                .protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{host}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_owned()));
        }
    }
    out
}

/// A Service or port name as a variable name (upstream `makeEnvVariableName`).
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

fn key_of(
    data: Option<HashMap<String, String>>,
    kind: &'static str,
    namespace: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, EnvError> {
    match data.and_then(|mut d| d.remove(key)) {
        Some(v) => Ok(Some(v)),
        None if optional => Ok(None),
        None => Err(EnvError::MissingKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        }),
    }
}

fn field(pod: &Pod, path: &str, placement: &Placement) -> Result<Option<String>, EnvError> {
    let m = &pod.metadata;
    let indexed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|k| {
                map.as_ref()
                    .and_then(|m| m.get(k))
                    .cloned()
                    .unwrap_or_default()
            })
    };
    let v = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => placement.node_name.clone(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => placement.host_ip.clone(),
        "status.podIP" | "status.podIPs" => placement.pod_ip.clone(),
        _ => {
            if let Some(v) = indexed("metadata.labels['", &m.labels) {
                v
            } else if let Some(v) = indexed("metadata.annotations['", &m.annotations) {
                v
            } else {
                return Err(EnvError::FieldPath(path.to_owned()));
            }
        }
    };
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, SecretEnvSource, ServicePort, ServiceSpec,
    };

    use super::*;

    /// Fixed ConfigMaps and Secrets, the given Services, and how often Services were read.
    #[derive(Default)]
    struct Fixed {
        services: Vec<Service>,
        gets: AtomicUsize,
        lists: AtomicUsize,
    }

    impl Fixed {
        fn with(services: Vec<Service>) -> Self {
            Self {
                services,
                ..Self::default()
            }
        }
    }

    impl Objects for Fixed {
        async fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>, EnvError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            Ok(self
                .services
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.name.as_deref() == Some(name)
                })
                .cloned())
        }
        async fn services(&self, namespace: &str) -> Result<Vec<Service>, EnvError> {
            self.lists.fetch_add(1, Ordering::Relaxed);
            Ok(self
                .services
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
                .cloned()
                .collect())
        }
        async fn config_map(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<HashMap<String, String>>, EnvError> {
            Ok((name == "cm")
                .then(|| HashMap::from([("A".into(), "a".into()), ("B".into(), "b".into())])))
        }
        async fn secret(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<HashMap<String, String>>, EnvError> {
            Ok((name == "s").then(|| HashMap::from([("PASS".into(), "pw".into())])))
        }
    }

    /// A Service; each port is (name, port, protocol).
    fn svc(namespace: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some(namespace.into());
        s.metadata.name = Some(name.into());
        s.spec = Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|&(name, port, protocol)| ServicePort {
                        name: (!name.is_empty()).then(|| name.into()),
                        port,
                        protocol: (!protocol.is_empty()).then(|| protocol.into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        s
    }

    fn kubernetes() -> Service {
        svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            &[("https", 443, "TCP")],
        )
    }

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p1".into());
        p.metadata.namespace = Some("ns1".into());
        p
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn field_var(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn env_from_then_env_with_fields_and_expansion() {
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cm".into(),
                        optional: None,
                    }),
                    prefix: Some("CM_".into()),
                    secret_ref: None,
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "s".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![
                field_var("NAME", "metadata.name"),
                field_var("NS", "metadata.namespace"),
                field_var("IP", "status.podIP"),
                field_var("NODE", "spec.nodeName"),
                var("GREETING", "$(NAME) in $(NS) on $(NODE)"),
                var("CM_A", "override"),
                EnvVar {
                    name: "KEY".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cm".into(),
                            key: "B".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                },
            ]),
            ..Default::default()
        };
        let placement = Placement {
            node_name: "n1".into(),
            host_ip: "192.0.2.1".into(),
            pod_ip: "10.244.0.9".into(),
        };
        let env = resolve(&Fixed::default(), &pod(), &c, &placement)
            .await
            .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_A"), Some("override"));
        assert_eq!(get("CM_B"), Some("b"));
        assert_eq!(get("PASS"), Some("pw"));
        assert_eq!(get("IP"), Some("10.244.0.9"));
        assert_eq!(get("GREETING"), Some("p1 in ns1 on n1"));
        assert_eq!(get("KEY"), Some("b"));
        // Overriding keeps the first position.
        assert_eq!(env[0].0, "CM_A");
    }

    #[tokio::test]
    async fn a_missing_config_map_is_an_error_unless_optional() {
        let mut c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "nope".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let err = resolve(&Fixed::default(), &pod(), &c, &Placement::default())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "configmap \"nope\" not found");
        c.env_from.as_mut().unwrap()[0]
            .config_map_ref
            .as_mut()
            .unwrap()
            .optional = Some(true);
        assert!(
            resolve(&Fixed::default(), &pod(), &c, &Placement::default())
                .await
                .unwrap()
                .is_empty()
        );
    }

    fn names(env: &[(String, String)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Upstream's `TestEnvVarsFromServices` (pkg/kubelet/envvars/envvars_test.go).
    #[test]
    fn service_vars_match_upstream() {
        let services = [
            svc("ns", "foo-bar", "1.2.3.4", &[("", 8080, "TCP")]),
            svc(
                "ns",
                "abc-123",
                "5.6.7.8",
                &[("u-d-p", 8081, "UDP"), ("t-c-p", 8081, "TCP")],
            ),
            svc(
                "ns",
                "q-u-u-x",
                "9.8.7.6",
                &[("", 8082, ""), ("8083", 8083, "TCP")],
            ),
            svc("ns", "svrc-clusterip-none", "None", &[("", 8082, "TCP")]),
            svc("ns", "svrc-clusterip-empty", "", &[("", 8082, "TCP")]),
            svc(
                "ns",
                "super-ipv6",
                "2001:DB8::",
                &[("u-d-p", 8084, "UDP"), ("t-c-p", 8084, "TCP")],
            ),
        ];
        let expected = [
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8080"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
            ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ("ABC_123_SERVICE_HOST", "5.6.7.8"),
            ("ABC_123_SERVICE_PORT", "8081"),
            ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
            ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
            ("ABC_123_PORT", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
            ("ABC_123_PORT_8081_UDP_PORT", "8081"),
            ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
            ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
            ("ABC_123_PORT_8081_TCP_PORT", "8081"),
            ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
            ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
            ("Q_U_U_X_SERVICE_PORT", "8082"),
            ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
            ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
            ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
            ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
            ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
            ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
            ("SUPER_IPV6_SERVICE_HOST", "2001:DB8::"),
            ("SUPER_IPV6_SERVICE_PORT", "8084"),
            ("SUPER_IPV6_SERVICE_PORT_U_D_P", "8084"),
            ("SUPER_IPV6_SERVICE_PORT_T_C_P", "8084"),
            ("SUPER_IPV6_PORT", "udp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_UDP", "udp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_UDP_PROTO", "udp"),
            ("SUPER_IPV6_PORT_8084_UDP_PORT", "8084"),
            ("SUPER_IPV6_PORT_8084_UDP_ADDR", "2001:DB8::"),
            ("SUPER_IPV6_PORT_8084_TCP", "tcp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_TCP_PROTO", "tcp"),
            ("SUPER_IPV6_PORT_8084_TCP_PORT", "8084"),
            ("SUPER_IPV6_PORT_8084_TCP_ADDR", "2001:DB8::"),
        ];
        let got = service_vars(&services);
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn service_links_add_the_namespace_services_and_kubernetes() {
        let objects = Fixed::with(vec![
            kubernetes(),
            svc("default", "elsewhere", "10.96.0.7", &[("", 80, "TCP")]),
            svc("ns1", "web", "10.96.0.10", &[("http", 80, "TCP")]),
            svc("ns1", "headless", "None", &[("", 80, "TCP")]),
            svc("other", "web2", "10.96.0.11", &[("", 80, "TCP")]),
        ]);
        let c = Container {
            name: "c".into(),
            env: Some(vec![var("OWN", "x")]),
            ..Default::default()
        };
        let env = resolve(&objects, &pod(), &c, &Placement::default())
            .await
            .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("WEB_SERVICE_HOST"), Some("10.96.0.10"));
        assert_eq!(get("WEB_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("WEB_PORT_80_TCP_ADDR"), Some("10.96.0.10"));
        let names = names(&env);
        for absent in ["HEADLESS_", "ELSEWHERE_", "WEB2_"] {
            assert!(
                !names.iter().any(|n| n.starts_with(absent)),
                "{absent}: {names:?}"
            );
        }
        // The container's own variables first, then the service variables by name.
        assert_eq!(names[0], "OWN");
        assert!(names[1..].is_sorted(), "{names:?}");
        assert_eq!(names.len(), 1 + 8 + 8);
        assert_eq!(objects.lists.load(Ordering::Relaxed), 1);
        assert_eq!(objects.gets.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn without_service_links_only_kubernetes_is_added() {
        let objects = Fixed::with(vec![
            kubernetes(),
            svc("ns1", "web", "10.96.0.10", &[("http", 80, "TCP")]),
        ]);
        let mut p = pod();
        p.spec = Some(PodSpec {
            enable_service_links: Some(false),
            ..Default::default()
        });
        let env = resolve(&objects, &p, &Container::default(), &Placement::default())
            .await
            .unwrap();
        let names = names(&env);
        assert!(names.contains(&"KUBERNETES_SERVICE_HOST"), "{names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("KUBERNETES_")),
            "{names:?}"
        );
        assert_eq!(objects.lists.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn container_env_overrides_and_expands_service_vars() {
        let objects = Fixed::with(vec![
            kubernetes(),
            svc("ns1", "cm", "10.96.0.10", &[("", 80, "TCP")]),
        ]);
        let c = Container {
            name: "c".into(),
            // envFrom sets CM_SERVICE_A and CM_SERVICE_B, next to the Service `cm`'s variables.
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                prefix: Some("CM_SERVICE_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                var(
                    "URL",
                    "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
                ),
                var("KUBERNETES_SERVICE_PORT", "6443"),
                var("AFTER", "$(KUBERNETES_SERVICE_PORT)"),
                var("CM_SERVICE_HOST", "overridden"),
            ]),
            ..Default::default()
        };
        let env = resolve(&objects, &pod(), &c, &Placement::default())
            .await
            .unwrap();
        let all = |k: &str| -> Vec<&str> {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(all("URL"), ["https://10.96.0.1:443"]);
        // The container's own value wins, and later references see it.
        assert_eq!(all("KUBERNETES_SERVICE_PORT"), ["6443"]);
        assert_eq!(all("AFTER"), ["6443"]);
        assert_eq!(all("CM_SERVICE_HOST"), ["overridden"]);
        assert_eq!(all("CM_SERVICE_PORT"), ["80"]);
        assert_eq!(all("KUBERNETES_SERVICE_HOST"), ["10.96.0.1"]);
    }

    #[tokio::test]
    async fn a_namespace_kubernetes_service_wins_and_default_needs_no_get() {
        let objects = Fixed::with(vec![
            kubernetes(),
            svc("ns1", "kubernetes", "10.96.5.5", &[("", 8443, "TCP")]),
        ]);
        let env = resolve(
            &objects,
            &pod(),
            &Container::default(),
            &Placement::default(),
        )
        .await
        .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.5.5"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), None);

        let objects = Fixed::with(vec![kubernetes()]);
        let mut p = pod();
        p.metadata.namespace = Some("default".into());
        let env = resolve(&objects, &p, &Container::default(), &Placement::default())
            .await
            .unwrap();
        assert_eq!(
            env.iter()
                .find(|(n, _)| n == "KUBERNETES_SERVICE_HOST")
                .map(|(_, v)| v.as_str()),
            Some("10.96.0.1")
        );
        assert_eq!(objects.gets.load(Ordering::Relaxed), 0);
        assert_eq!(objects.lists.load(Ordering::Relaxed), 1);
    }
}
