//! The one place where the API server calls into the API machinery of skiff-api (defaulting,
//! validation, selectors, tables, body decoding, patches), so request handling reads the same
//! whichever implementation stands behind each step.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use skiff_api::registry::Resource;

use crate::errors::{ApiError, ApiResult};

/// Defaults a new or updated object as Kubernetes would.
pub fn apply_defaults(_resource: &Resource, _obj: &mut Value) {}

/// Validates an object (and, on update, the change from `old`).
pub fn validate(_resource: &Resource, _obj: &Value, _old: Option<&Value>) -> ApiResult<()> {
    Ok(())
}

/// Fields of `obj` its kind does not have, for fieldValidation=Strict|Warn.
pub fn unknown_fields(_resource: &Resource, _obj: &Value) -> Vec<String> {
    Vec::new()
}

/// A parsed `labelSelector` + `fieldSelector`.
#[derive(Debug, Default, Clone)]
pub struct Selectors {
    labels: Vec<(String, Option<String>, bool)>,
    fields: Vec<(String, String, bool)>,
}

impl Selectors {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> ApiResult<Self> {
        let mut s = Self::default();
        for term in label
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, Some(v), false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, Some(v), true)
            } else if let Some(k) = term.strip_prefix('!') {
                (k, None, false)
            } else {
                (term, None, true)
            };
            s.labels.push((
                key.trim().to_owned(),
                value.map(|v| v.trim().to_owned()),
                equal,
            ));
        }
        for term in field
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector {term:?}"
                )));
            };
            s.fields
                .push((key.trim().to_owned(), value.trim().to_owned(), equal));
        }
        Ok(s)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    #[must_use]
    pub fn matches(&self, _resource: &Resource, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> = crate::objects::labels(obj);
        let labels_ok = self.labels.iter().all(|(k, v, equal)| match v {
            Some(v) => (labels.get(k) == Some(v)) == *equal,
            None => labels.contains_key(k) == *equal,
        });
        labels_ok
            && self.fields.iter().all(|(path, v, equal)| {
                let mut cur = obj;
                for part in path.split('.') {
                    cur = cur.get(part).unwrap_or(&Value::Null);
                }
                let actual = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (actual == *v) == *equal
            })
    }
}

/// A meta.k8s.io Table of `items`.
pub fn table(_resource: &Resource, items: &[Value], list_metadata: Value, version: &str) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": [o["metadata"]["name"].clone(), o["metadata"]["creationTimestamp"].clone()],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": o["metadata"].clone()},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_metadata,
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "Creation timestamp", "priority": 0},
        ],
        "rows": rows,
    })
}

/// Decodes a request body by its media type: JSON, Kubernetes protobuf (what kubectl 1.32+
/// sends for typed commands), or an apply configuration (JSON or YAML).
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    if skiff_api::protobuf::is_protobuf(content_type) {
        return skiff_api::protobuf::decode_request(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the protobuf request body could not be decoded: {e}"
            ))
        });
    }
    match content_type {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/apply-patch+yaml" | "application/yaml" => {
            skiff_api::apply::parse_apply_body(body)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// The (group, version, kind) a patch to `resource` (or its `subresource`) is computed in.
fn patch_kind<'a>(
    resource: &'a Resource,
    subresource: Option<&str>,
) -> (&'a str, &'a str, &'a str) {
    match subresource.and_then(|s| resource.subresource(s)) {
        Some(sub) if sub.kind == "Scale" => (sub.group, sub.version, sub.kind),
        _ => (resource.group, resource.version, resource.kind),
    }
}

fn patch_error(e: skiff_api::patch::PatchError) -> ApiError {
    use skiff_api::patch::PatchError as P;
    match e {
        P::UnsupportedKind { .. } => {
            ApiError::unsupported_media_type("application/strategic-merge-patch+json")
        }
        P::JsonPatch { message } => ApiError::new(
            422,
            "Invalid",
            format!("the JSON patch could not be applied: {message}"),
        ),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Applies a PATCH body of `content_type` to `live` (an object of `resource`, or the view of
/// its `subresource`). Server-side apply records `manager`'s ownership; its conflicts are 409s.
pub fn patch(
    resource: &Resource,
    subresource: Option<&str>,
    content_type: &str,
    live: &Value,
    body: &[u8],
    manager: &str,
    force: bool,
) -> ApiResult<Value> {
    let parse = || -> ApiResult<Value> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
    };
    let kind = patch_kind(resource, subresource);
    match content_type {
        "application/merge-patch+json" => {
            skiff_api::patch::merge_patch(live, &parse()?).map_err(patch_error)
        }
        "application/json-patch+json" => {
            skiff_api::patch::json_patch(live, &parse()?).map_err(patch_error)
        }
        "application/strategic-merge-patch+json" => {
            skiff_api::patch::strategic_merge_patch(kind, live, &parse()?).map_err(patch_error)
        }
        "application/apply-patch+yaml" => {
            let applied = skiff_api::apply::parse_apply_body(body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            apply(resource, Some(live), &applied, manager, force)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Server-side apply of `applied` over `live` (`None`: the object is created).
pub fn apply(
    resource: &Resource,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> ApiResult<Value> {
    use skiff_api::apply::ApplyError as A;
    let kind = (resource.group, resource.version, resource.kind);
    skiff_api::apply::server_side_apply(live, applied, manager, force, kind).map_err(|e| match e {
        A::Conflict { ref causes } => {
            let details = json!({
                "name": applied["metadata"]["name"],
                "group": resource.group,
                "kind": resource.plural,
                "causes": causes.iter().map(skiff_api::apply::ConflictCause::to_status_cause).collect::<Vec<_>>(),
            });
            ApiError::new(409, "Conflict", e.to_string()).with_details(details)
        }
        A::InvalidBody { .. } => ApiError::bad_request(e.to_string()),
        A::Invalid { .. } => ApiError::new(422, "Invalid", e.to_string()),
    })
}

/// Records a non-apply write by `manager` in `metadata.managedFields`.
pub fn record_update(old: Option<&Value>, new: &Value, manager: &str) -> Value {
    skiff_api::apply::record_update(old, new, manager, skiff_api::apply::UPDATE)
}
