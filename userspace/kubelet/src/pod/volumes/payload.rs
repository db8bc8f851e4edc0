//! The files of API-backed volumes (configMap, secret, downwardAPI, projected), built from the
//! objects they name as upstream's `MakePayload` does: every key or the listed items with
//! their modes, missing objects and keys per `optional`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, ResourceFieldSelector,
};

use super::{
    VolumeError,
    atomic::{FileProjection, Payload, validate_path},
};
use crate::pod::spec::parse_quantity;

/// The mode of files that give none (upstream's `0644`).
pub const DEFAULT_MODE: i32 = 0o644;

/// A ConfigMap's or Secret's data (`data` and `binaryData` of a ConfigMap), by key.
pub type Data = BTreeMap<String, Vec<u8>>;

/// The permission bits of `mode`, refusing anything outside `0..=0777` (the API's rule).
pub fn file_mode(mode: i32) -> Result<u32, VolumeError> {
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or(VolumeError::Mode { mode })
}

/// Adds one file; a path given twice is an error (upstream's validation refuses it).
pub fn insert(out: &mut Payload, path: &str, data: Vec<u8>, mode: i32) -> Result<(), VolumeError> {
    validate_path(path)?;
    let mode = file_mode(mode)?;
    if out.contains_key(path) {
        return Err(VolumeError::DuplicatePath {
            path: path.to_owned(),
        });
    }
    out.insert(path.to_owned(), FileProjection { data, mode });
    Ok(())
}

/// A configMap or secret source: all keys, or `items` (key -> path, mode).
pub struct Keyed<'a> {
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub items: Option<&'a [KeyToPath]>,
    pub optional: bool,
}

/// Adds the files of a configMap or secret source whose object holds `data` (`None`: not
/// found).
pub fn keyed(
    out: &mut Payload,
    source: &Keyed<'_>,
    data: Option<Data>,
    default_mode: i32,
) -> Result<(), VolumeError> {
    let Some(mut data) = data else {
        if source.optional {
            return Ok(());
        }
        return Err(VolumeError::Missing {
            kind: source.kind,
            name: source.name.to_owned(),
        });
    };
    match source.items.filter(|i| !i.is_empty()) {
        None => {
            for (key, value) in data {
                insert(out, &key, value, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.remove(&item.key) {
                    Some(value) => {
                        insert(out, &item.path, value, item.mode.unwrap_or(default_mode))?;
                    }
                    None if source.optional => {}
                    None => {
                        return Err(VolumeError::MissingKey {
                            kind: source.kind,
                            namespace: source.namespace.to_owned(),
                            name: source.name.to_owned(),
                            key: item.key.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// The node's capacity: the value of a resource limit a container does not set.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub cpus: f64,
    pub memory_bytes: u64,
}

/// Adds the files of a downwardAPI source.
pub fn downward(
    out: &mut Payload,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    capacity: Capacity,
) -> Result<(), VolumeError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field(pod, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            resource(pod, r, capacity)?
        } else {
            return Err(VolumeError::FieldPath(format!(
                "{}: neither fieldRef nor resourceFieldRef",
                item.path
            )));
        };
        insert(
            out,
            &item.path,
            value.into_bytes(),
            item.mode.unwrap_or(default_mode),
        )?;
    }
    Ok(())
}

/// The metadata fields a downwardAPI volume may show (status fields are for env only).
pub fn field(pod: &Pod, path: &str) -> Result<String, VolumeError> {
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
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        _ => indexed("metadata.labels['", &m.labels)
            .or_else(|| indexed("metadata.annotations['", &m.annotations))
            .ok_or_else(|| VolumeError::FieldPath(path.to_owned()))?,
    })
}

/// `key="value"` lines, sorted by key, values quoted as Go's `%q` does (upstream's format).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let code = u32::from(c);
                if code < 0x80 {
                    out.push_str(&format!("\\x{code:02x}"));
                } else {
                    out.push_str(&format!("\\u{code:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A container's request or limit, divided by `divisor` and rounded up (upstream's rule); a
/// limit the container does not set is the node's capacity.
fn resource(
    pod: &Pod,
    r: &ResourceFieldSelector,
    capacity: Capacity,
) -> Result<String, VolumeError> {
    let bad = || VolumeError::FieldPath(format!("resourceFieldRef {}", r.resource));
    let spec = pod.spec.as_ref().ok_or_else(bad)?;
    let name = r.container_name.as_deref().unwrap_or_default();
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .ok_or_else(|| {
            VolumeError::FieldPath(format!("resourceFieldRef: no container {name:?}"))
        })?;
    let (kind, key) = r.resource.split_once('.').ok_or_else(bad)?;
    let resources = container.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|x| x.limits.as_ref()),
        "requests" => resources.and_then(|x| x.requests.as_ref()),
        _ => return Err(bad()),
    };
    let set = map
        .and_then(|m| m.get(key))
        .and_then(|q| parse_quantity(&q.0));
    let value = match (kind, key, set) {
        (_, "cpu" | "memory" | "ephemeral-storage", Some(v)) => v,
        ("limits", "cpu", None) => capacity.cpus,
        ("limits", "memory", None) => capacity.memory_bytes as f64,
        (_, "cpu" | "memory" | "ephemeral-storage", None) => 0.0,
        _ => return Err(bad()),
    };
    let divisor = match &r.divisor {
        Some(d) => parse_quantity(&d.0).filter(|d| *d > 0.0).ok_or_else(bad)?,
        None => 1.0,
    };
    // Rounded up, as upstream does (a 250m request with divisor 1 shows "1").
    let v = (value / divisor - 1e-9).ceil().max(0.0);
    Ok(format!("{v:.0}"))
}

/// A projected volume's sources, once fetched: `objects` maps (kind, name) to data; `tokens`
/// maps a token source's index to the token.
pub struct Fetched<'a> {
    pub objects: &'a BTreeMap<(&'static str, String), Option<Data>>,
    pub tokens: &'a BTreeMap<usize, String>,
}

/// Adds the files of a projected volume.
pub fn projected(
    out: &mut Payload,
    pod: &Pod,
    source: &ProjectedVolumeSource,
    fetched: &Fetched<'_>,
    capacity: Capacity,
) -> Result<(), VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
    for (i, p) in source.sources.iter().flatten().enumerate() {
        if let Some(c) = &p.config_map {
            let data = fetched
                .objects
                .get(&("configmap", c.name.clone()))
                .cloned()
                .flatten();
            keyed(
                out,
                &Keyed {
                    kind: "configmap",
                    namespace,
                    name: &c.name,
                    items: c.items.as_deref(),
                    optional: c.optional.unwrap_or(false),
                },
                data,
                default_mode,
            )?;
        } else if let Some(s) = &p.secret {
            let data = fetched
                .objects
                .get(&("secret", s.name.clone()))
                .cloned()
                .flatten();
            keyed(
                out,
                &Keyed {
                    kind: "secret",
                    namespace,
                    name: &s.name,
                    items: s.items.as_deref(),
                    optional: s.optional.unwrap_or(false),
                },
                data,
                default_mode,
            )?;
        } else if let Some(d) = &p.downward_api {
            downward(
                out,
                pod,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
                capacity,
            )?;
        } else if let Some(t) = &p.service_account_token {
            // A token the server could not issue is left out (see `Volumes::tokens`).
            if let Some(token) = fetched.tokens.get(&i) {
                insert(out, &t.path, token.clone().into_bytes(), default_mode)?;
            }
        } else {
            return Err(VolumeError::Unsupported {
                kind: if p.cluster_trust_bundle.is_some() {
                    "projected clusterTrustBundle".to_owned()
                } else {
                    "projected source".to_owned()
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn items(v: serde_json::Value) -> Vec<KeyToPath> {
        serde_json::from_value(v).unwrap()
    }

    fn data() -> Data {
        Data::from([("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])
    }

    #[test]
    fn keyed_sources_take_all_keys_or_items_with_modes() {
        let source = |items: Option<&'static [KeyToPath]>, optional| Keyed {
            kind: "configmap",
            namespace: "ns",
            name: "cm",
            items,
            optional,
        };
        let mut out = Payload::new();
        keyed(&mut out, &source(None, false), Some(data()), 0o600).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out["a"].mode, 0o600);
        let listed: &'static [KeyToPath] = Box::leak(
            items(serde_json::json!([
                { "key": "a", "path": "dir/x", "mode": 0o400 },
                { "key": "b", "path": "y" },
            ]))
            .into_boxed_slice(),
        );
        let mut out = Payload::new();
        keyed(&mut out, &source(Some(listed), false), Some(data()), 0o644).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["dir/x", "y"]);
        assert_eq!((out["dir/x"].mode, out["y"].mode), (0o400, 0o644));
        assert_eq!(out["y"].data, b"2");
        // A missing object: an error unless optional.
        let mut out = Payload::new();
        let err = keyed(&mut out, &source(None, false), None, 0o644).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"cm\" not found");
        keyed(&mut out, &source(None, true), None, 0o644).unwrap();
        assert!(out.is_empty());
        // A missing key.
        let missing: &'static [KeyToPath] =
            Box::leak(items(serde_json::json!([{ "key": "zz", "path": "z" }])).into_boxed_slice());
        let err = keyed(&mut out, &source(Some(missing), false), Some(data()), 0o644).unwrap_err();
        assert!(err.to_string().contains("zz"), "{err}");
        keyed(&mut out, &source(Some(missing), true), Some(data()), 0o644).unwrap();
    }

    #[test]
    fn bad_modes_paths_and_duplicates_are_errors() {
        assert!(file_mode(0o1777).is_err());
        assert!(file_mode(-1).is_err());
        assert_eq!(file_mode(0o755).unwrap(), 0o755);
        let mut out = Payload::new();
        assert!(matches!(
            insert(&mut out, "x", vec![], 0o4755),
            Err(VolumeError::Mode { .. })
        ));
        assert!(insert(&mut out, "../x", vec![], 0o644).is_err());
        assert!(insert(&mut out, "/abs", vec![], 0o644).is_err());
        insert(&mut out, "x", vec![], 0o644).unwrap();
        assert!(matches!(
            insert(&mut out, "x", vec![], 0o644),
            Err(VolumeError::DuplicatePath { .. })
        ));
    }

    #[test]
    fn downward_api_files_show_metadata_and_resources() {
        let p = pod(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u1",
                "labels": { "b": "2", "a": "x\"y" },
                "annotations": { "note": "hi" },
            },
            "spec": { "containers": [{
                "name": "c",
                "resources": { "requests": { "cpu": "250m" }, "limits": { "memory": "64Mi" } },
            }] },
        }));
        let files: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            { "path": "name", "fieldRef": { "fieldPath": "metadata.name" } },
            { "path": "uid", "fieldRef": { "fieldPath": "metadata.uid" } },
            { "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } },
            { "path": "note", "fieldRef": { "fieldPath": "metadata.annotations['note']" } },
            { "path": "cpu_m", "resourceFieldRef": { "containerName": "c", "resource": "requests.cpu", "divisor": "1m" } },
            { "path": "cpu", "resourceFieldRef": { "containerName": "c", "resource": "requests.cpu" } },
            { "path": "mem_mi", "resourceFieldRef": { "containerName": "c", "resource": "limits.memory", "divisor": "1Mi" } },
            { "path": "cpu_limit", "resourceFieldRef": { "containerName": "c", "resource": "limits.cpu" }, "mode": 0o400 },
        ]))
        .unwrap();
        let mut out = Payload::new();
        let capacity = Capacity {
            cpus: 4.0,
            memory_bytes: 1 << 30,
        };
        downward(&mut out, &p, &files, 0o644, capacity).unwrap();
        let text = |k: &str| String::from_utf8(out[k].data.clone()).unwrap();
        assert_eq!(text("name"), "p");
        assert_eq!(text("uid"), "u1");
        assert_eq!(text("labels"), "a=\"x\\\"y\"\nb=\"2\"");
        assert_eq!(text("note"), "hi");
        assert_eq!(text("cpu_m"), "250");
        assert_eq!(text("cpu"), "1");
        assert_eq!(text("mem_mi"), "64");
        assert_eq!(text("cpu_limit"), "4");
        assert_eq!(out["cpu_limit"].mode, 0o400);
        let status: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            { "path": "ip", "fieldRef": { "fieldPath": "status.podIP" } },
        ]))
        .unwrap();
        assert!(matches!(
            downward(&mut Payload::new(), &p, &status, 0o644, capacity),
            Err(VolumeError::FieldPath(_))
        ));
    }
}
