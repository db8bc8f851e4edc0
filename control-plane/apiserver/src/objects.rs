//! Objects as stored: JSON without `metadata.resourceVersion` (the store's revision is the
//! resourceVersion, set on the way out), keyed by resource, namespace and name.

use serde_json::{Map, Value, json};
use skiff_api::registry::{Resource, storage_prefix};
use skiff_store::{KeyValue, Revision};

use crate::errors::{ApiError, ApiResult};

/// The store key of an object.
#[must_use]
pub fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!("{}{ns}/{name}", storage_prefix(resource)),
        _ => format!("{}{name}", storage_prefix(resource)),
    }
}

/// The key prefix of a list: everything of the resource, or of one namespace.
#[must_use]
pub fn list_prefix(resource: &Resource, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!("{}{ns}/", storage_prefix(resource)),
        _ => storage_prefix(resource),
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
#[must_use]
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[must_use]
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `metadata` of an object, created if missing; `None` when the object is not a JSON object.
pub fn meta_mut(obj: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the object is not a JSON object"));
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(meta.as_object_mut().expect("checked above"))
}

#[must_use]
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Decodes a stored object and stamps its resourceVersion.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    if let Ok(meta) = meta_mut(obj) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// The bytes to store: the object without its resourceVersion.
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Ok(meta) = meta_mut(&mut obj) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// The resourceVersion a client sent, if any ("" counts as none).
pub fn resource_version(obj: &Value) -> ApiResult<Option<Revision>> {
    match meta_str(obj, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_resource_versions() {
        let pods = skiff_api::registry::find("", "v1", "pods").unwrap();
        assert_eq!(
            key(pods, Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let nodes = skiff_api::registry::find("", "v1", "nodes").unwrap();
        assert_eq!(key(nodes, None, "n1"), "/registry/nodes/n1");
        let mut obj = json!({"metadata": {"name": "x", "resourceVersion": "7"}});
        assert_eq!(resource_version(&obj).unwrap(), Some(7));
        let stored = encode(&obj);
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        set_resource_version(&mut obj, 9);
        assert_eq!(obj["metadata"]["resourceVersion"], "9");
        assert!(now().ends_with('Z') && now().len() == 20);
    }
}
