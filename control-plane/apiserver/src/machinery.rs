//! The one place where the API server calls into the API machinery of skiff-api (defaulting,
//! validation, selectors, tables, body decoding, patches), so request handling reads the same
//! whichever implementation stands behind each step.

use serde_json::{Value, json};
use skiff_api::registry::Resource;

use crate::errors::{ApiError, ApiResult};

/// Defaults a new or updated object as Kubernetes would.
pub fn apply_defaults(resource: &Resource, obj: &mut Value) {
    skiff_api::defaults::apply_defaults(resource, obj);
}

/// Validates an object (and, on update, the change from `old`): 422 with field causes.
pub fn validate(resource: &Resource, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    skiff_api::validation::validate(resource, obj, old).map_err(|causes| {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let details = json!({
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": causes,
        });
        ApiError::new(
            422,
            "Invalid",
            skiff_api::validation::invalid_message(resource, name, &causes),
        )
        .with_details(details)
    })
}

/// Fields of `obj` its kind does not have, for fieldValidation=Strict|Warn.
pub fn unknown_fields(resource: &Resource, obj: &Value) -> Vec<String> {
    skiff_api::validation::unknown_fields(resource, obj)
}

/// A parsed `labelSelector` + `fieldSelector`.
#[derive(Debug, Default, Clone)]
pub struct Selectors {
    labels: Option<skiff_api::selector::LabelSelector>,
    fields: Option<skiff_api::selector::FieldSelector>,
}

impl Selectors {
    /// Parses both selectors; a field the resource cannot select by is a 400, as upstream.
    pub fn parse(resource: &Resource, label: Option<&str>, field: Option<&str>) -> ApiResult<Self> {
        let labels = label
            .map(|l| {
                skiff_api::selector::LabelSelector::parse(l)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
            })
            .transpose()?;
        let fields = field
            .map(|f| {
                skiff_api::selector::FieldSelector::parse_for(resource, f)
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            })
            .transpose()?;
        Ok(Self { labels, fields })
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    #[must_use]
    pub fn matches(&self, resource: &Resource, obj: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches_object(obj))
            && self
                .fields
                .as_ref()
                .is_none_or(|f| f.matches(resource, obj))
    }
}

/// A meta.k8s.io Table (`version` v1 or v1beta1) of `items`, with the row objects the client
/// asked for (`includeObject`).
pub fn table(
    resource: &Resource,
    items: &[Value],
    list_metadata: Value,
    version: &str,
    include_object: Option<&str>,
) -> ApiResult<Value> {
    let options = skiff_api::table::TableOptions {
        include_object: include_object
            .and_then(skiff_api::table::IncludeObject::parse)
            .unwrap_or_default(),
        no_headers: false,
    };
    let mut table = skiff_api::table::to_table_with(
        resource,
        items,
        list_metadata,
        skiff_api::table::now(),
        options,
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    table["apiVersion"] = json!(format!("meta.k8s.io/{version}"));
    Ok(table)
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
