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

/// Decodes a request body by its media type.
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    match content_type {
        "application/json" | "" | "*/*" | "application/apply-patch+yaml" => {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Applies a PATCH body of `content_type` to `live`.
pub fn patch(
    _resource: &Resource,
    content_type: &str,
    live: &Value,
    body: &[u8],
    _manager: &str,
    _force: bool,
) -> ApiResult<Value> {
    let mut target = live.clone();
    match content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
            json_patch::merge(&mut target, &patch);
            Ok(target)
        }
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut target, &patch).map_err(|e| {
                ApiError::new(422, "Invalid", format!("the JSON patch failed: {e}"))
            })?;
            Ok(target)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}
