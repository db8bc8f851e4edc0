//! The three PATCH flavours kube-apiserver accepts, applied to JSON objects: JSON merge patch
//! (RFC 7396, `kubectl scale`), JSON patch (RFC 6902, `kubectl rollout undo`) and strategic
//! merge patch (`kubectl apply`/`edit`/`set`/`label`/`rollout restart`/`cordon`), whose list
//! semantics come from the [`extensions`](crate::extensions) table through the OpenAPI
//! schemas.

mod smp;

use serde_json::Value;

use crate::openapi;

/// Why a patch could not be applied. Every variant is the client's fault (HTTP 400/422),
/// except [`PatchError::UnsupportedKind`] (415, as upstream answers for custom resources).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the {what} must be a JSON object")]
    NotAnObject { what: &'static str },
    #[error("invalid JSON patch document: {source}")]
    InvalidJsonPatch {
        #[source]
        source: serde_json::Error,
    },
    #[error("the JSON patch could not be applied: {message}")]
    JsonPatch { message: String },
    #[error("strategic merge patch is not supported for {kind}")]
    UnsupportedKind { kind: String },
    #[error("invalid strategic merge patch: {message}")]
    Invalid { message: String },
}

impl PatchError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
    }
}

/// (group, version, kind), e.g. `("apps", "v1", "Deployment")`; "" for the core group.
pub type Kind<'a> = (&'a str, &'a str, &'a str);

/// RFC 7396 JSON merge patch. The patch must be an object (a scalar or array would replace
/// the whole object, which is never a valid Kubernetes object).
pub fn merge_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::NotAnObject {
            what: "merge patch",
        });
    }
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

/// RFC 6902 JSON patch: a list of operations, applied atomically (all or none).
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|source| PatchError::InvalidJsonPatch { source })?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::JsonPatch {
        message: e.to_string(),
    })?;
    Ok(doc)
}

/// Kubernetes' strategic merge patch, as kube-apiserver applies it (parallel deletion lists
/// merged, unmatched nulls ignored):
/// - maps merge recursively; `null` deletes a field;
/// - lists with `x-kubernetes-patch-strategy: merge` merge by `x-kubernetes-patch-merge-key`
///   (objects) or as sets (scalars); `replace` and unknown lists are replaced whole;
/// - directives `$patch: replace | delete | merge` (in maps and list elements),
///   `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>` and `$retainKeys`.
///
/// `kind` picks the schema; kinds skiff does not serve are rejected, as upstream rejects
/// strategic merge patches of custom resources.
pub fn strategic_merge_patch(
    kind: Kind<'_>,
    target: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let (group, version, k) = kind;
    let schema =
        openapi::kind_schema(group, version, k).ok_or_else(|| PatchError::UnsupportedKind {
            kind: if group.is_empty() {
                format!("{version}, Kind={k}")
            } else {
                format!("{group}/{version}, Kind={k}")
            },
        })?;
    let Value::Object(original) = target else {
        return Err(PatchError::NotAnObject { what: "object" });
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            what: "strategic merge patch",
        });
    };
    smp::merge_map(original.clone(), patch.clone(), Some(schema)).map(Value::Object)
}

#[cfg(test)]
mod tests;
