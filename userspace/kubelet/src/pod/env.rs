//! A container's environment: `envFrom` (ConfigMaps, Secrets), then `env` with `value`
//! (`$(VAR)` expanded from what came before) and `valueFrom` (fieldRef, configMapKeyRef,
//! secretKeyRef).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

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

/// Something that serves ConfigMaps and Secrets (the API; a map in tests).
pub trait Objects: Send + Sync {
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

/// The environment, in order (later entries override earlier ones of the same name).
pub async fn resolve(
    objects: &impl Objects,
    pod: &Pod,
    container: &Container,
    placement: &Placement,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
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
            let vars: HashMap<&str, &str> =
                out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Some(expand(env.value.as_deref().unwrap_or_default(), &vars))
        };
        if let Some(value) = value {
            set(&mut out, env.name.clone(), value);
        }
    }
    Ok(out)
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
    let indexed = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
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
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, SecretEnvSource,
    };

    use super::*;

    struct Fixed;

    impl Objects for Fixed {
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
        let env = resolve(&Fixed, &pod(), &c, &placement).await.unwrap();
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
        let err = resolve(&Fixed, &pod(), &c, &Placement::default())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "configmap \"nope\" not found");
        c.env_from.as_mut().unwrap()[0]
            .config_map_ref
            .as_mut()
            .unwrap()
            .optional = Some(true);
        assert!(
            resolve(&Fixed, &pod(), &c, &Placement::default())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
