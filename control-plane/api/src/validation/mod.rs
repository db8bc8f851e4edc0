//! Validation: the checks kube-apiserver runs before storing an object (the ones users hit
//! most, from `pkg/apis/*/validation`), reported as `StatusCause`s with the same reasons,
//! field paths and messages, so `kubectl` prints what it prints against a real cluster:
//!
//! ```text
//! The Deployment "web" is invalid: spec.template.spec.containers[0].image: Required value
//! ```
//!
//! [`validate`] expects a defaulted object (run [`crate::defaults::apply_defaults`] first) and,
//! on update, the stored object as `old` for the immutability checks. [`check_decodes`] is the
//! earlier step that answers 400 for a body that does not have the kind's shape, and
//! [`unknown_fields`] lists the fields `fieldValidation=Strict|Warn` reports.

mod kinds;
mod names;
mod pod;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use kinds::NODE_PORT_RANGE;
pub use names::*;
pub use schema::{DecodeError, check_decodes, unknown_fields};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{registry::Resource, selector::LabelSelector};

/// One problem with an object: a Kubernetes `StatusCause` (`details.causes[]` of a 422
/// `Invalid` Status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`,
    /// `FieldValueNotFound`.
    pub reason: String,
    /// The message without the field: `Required value`, `Invalid value: "x": ...`.
    pub message: String,
    /// The field path: `spec.template.spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    fn new(reason: &str, field: &str, message: String) -> Self {
        Self {
            reason: reason.to_owned(),
            message,
            field: field.to_owned(),
        }
    }

    /// `field: message`, as kube-apiserver joins them into the Status message.
    #[must_use]
    pub fn error_string(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// The message of the 422 Status: `Deployment.apps "web" is invalid: <cause>` (several causes
/// in brackets, comma-separated).
#[must_use]
pub fn invalid_message(resource: &Resource, name: &str, causes: &[Cause]) -> String {
    let kind = if resource.group.is_empty() {
        resource.kind.to_owned()
    } else {
        format!("{}.{}", resource.kind, resource.group)
    };
    let quoted = go_quote(name);
    match causes {
        [] => format!("{kind} {quoted} is invalid"),
        [one] => format!("{kind} {quoted} is invalid: {}", one.error_string()),
        many => format!(
            "{kind} {quoted} is invalid: [{}]",
            many.iter()
                .map(Cause::error_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Validates an object of `resource` (and, on update, its change from `old`).
///
/// # Errors
/// Every problem found, in the order kube-apiserver reports them (roughly: metadata, then
/// spec).
pub fn validate(resource: &Resource, obj: &Value, old: Option<&Value>) -> Result<(), Vec<Cause>> {
    let mut v = Validator::default();
    if let Err(e) = check_decodes(resource, obj) {
        v.invalid(
            "",
            &go_quote(&e.to_string()),
            "the object cannot be decoded",
        );
        return Err(v.causes);
    }
    kinds::validate_kind(&mut v, resource, obj, old);
    if v.causes.is_empty() {
        Ok(())
    } else {
        Err(v.causes)
    }
}

/// Collects causes.
#[derive(Default)]
pub(crate) struct Validator {
    causes: Vec<Cause>,
}

impl Validator {
    fn required(&mut self, field: &str, detail: &str) {
        self.causes.push(Cause::new(
            "FieldValueRequired",
            field,
            with_detail("Required value".to_owned(), detail),
        ));
    }

    /// `value` is already formatted (quoted string, number, ...).
    fn invalid(&mut self, field: &str, value: &str, detail: &str) {
        self.causes.push(Cause::new(
            "FieldValueInvalid",
            field,
            with_detail(format!("Invalid value: {value}"), detail),
        ));
    }

    fn invalid_str(&mut self, field: &str, value: &str, detail: &str) {
        self.invalid(field, &go_quote(value), detail);
    }

    fn invalid_int(&mut self, field: &str, value: i64, detail: &str) {
        self.invalid(field, &value.to_string(), detail);
    }

    fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list = supported
            .iter()
            .map(|s| go_quote(s))
            .collect::<Vec<_>>()
            .join(", ");
        self.causes.push(Cause::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {list}",
                go_quote(value)
            ),
        ));
    }

    fn duplicate(&mut self, field: &str, value: &str) {
        self.causes.push(Cause::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {value}"),
        ));
    }

    fn forbidden(&mut self, field: &str, detail: &str) {
        self.causes.push(Cause::new(
            "FieldValueForbidden",
            field,
            with_detail("Forbidden".to_owned(), detail),
        ));
    }

    fn too_long(&mut self, field: &str, max: usize) {
        self.causes.push(Cause::new(
            "FieldValueTooLong",
            field,
            format!("Too long: must have at most {max} bytes"),
        ));
    }

    fn not_found(&mut self, field: &str, value: &str) {
        self.causes.push(Cause::new(
            "FieldValueNotFound",
            field,
            format!("Not found: {value}"),
        ));
    }

    /// Each message of a syntax check as an `Invalid` cause.
    fn each_str(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.invalid_str(field, value, &m);
        }
    }

    fn non_negative(&mut self, obj: &Value, key: &str, field: &str) {
        if let Some(n) = int(obj, key)
            && n < 0
        {
            self.invalid_int(field, n, "must be greater than or equal to 0");
        }
    }

    fn port_num(&mut self, field: &str, port: i64) {
        for m in is_valid_port_num(port) {
            self.invalid_int(field, port, &m);
        }
    }

    fn one_of(&mut self, obj: &Value, key: &str, field: &str, supported: &[&str]) {
        if let Some(s) = obj.get(key).and_then(Value::as_str)
            && !supported.contains(&s)
        {
            self.not_supported(field, s, supported);
        }
    }
}

fn with_detail(mut s: String, detail: &str) -> String {
    if !detail.is_empty() {
        s.push_str(": ");
        s.push_str(detail);
    }
    s
}

/// Go's `%q`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `map[string]string` (the value of a label mismatch).
fn go_map(labels: &BTreeMap<String, String>) -> String {
    let inner = labels
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("map[string]string{{{inner}}}")
}

/// A JSON value as a cause shows it (compact JSON).
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".to_owned(),
        Some(Value::String(s)) => go_quote(s),
        Some(other) => other.to_string(),
    }
}

// Paths.

fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

// JSON access; a value of the wrong type reads as absent (decoding reports it).

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn string<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    crate::selector::labels_of(v)
}

// Shared checks.

/// The name rule of a kind's `metadata.name`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

impl NameRule {
    /// With `prefix`, a trailing `-` is allowed (generateName).
    fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.ends_with('-') && self != Self::PathSegment {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            Self::Subdomain => is_dns1123_subdomain(name),
            Self::Label => is_dns1123_label(name),
            Self::Dns1035 => is_dns1035_label(name),
            Self::PathSegment => is_valid_path_segment_name(name),
        }
    }
}

const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn validate_labels(v: &mut Validator, labels: Option<&Value>, field: &str) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, val) in map {
        v.each_str(field, k, is_qualified_name(k));
        if let Some(s) = val.as_str() {
            v.each_str(field, s, is_valid_label_value(s));
        }
    }
}

fn validate_annotations(v: &mut Validator, annotations: Option<&Value>, field: &str) {
    let Some(map) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (k, val) in map {
        v.each_str(field, k, is_qualified_name(&k.to_lowercase()));
        total += k.len() + val.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        v.too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT);
    }
}

fn validate_finalizer(v: &mut Validator, name: &str, field: &str) {
    let msgs = is_qualified_name(name);
    let bad_syntax = !msgs.is_empty();
    v.each_str(field, name, msgs);
    if !bad_syntax
        && !name.contains('/')
        && !["kubernetes", "orphan", "foregroundDeletion"].contains(&name)
    {
        v.invalid_str(
            field,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        );
    }
}

/// `ValidateObjectMeta` (+ `ValidateObjectMetaUpdate` when `old` is given).
fn object_meta(
    v: &mut Validator,
    resource: &Resource,
    obj: &Value,
    old: Option<&Value>,
    rule: NameRule,
) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let name = string(meta, "name");
    let generate_name = string(meta, "generateName");
    if !generate_name.is_empty() {
        v.each_str(
            "metadata.generateName",
            generate_name,
            rule.check(generate_name, true),
        );
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            v.required("metadata.name", "name or generateName is required");
        }
    } else {
        v.each_str("metadata.name", name, rule.check(name, false));
    }
    let namespace = string(meta, "namespace");
    if resource.namespaced {
        if namespace.is_empty() {
            v.required("metadata.namespace", "");
        } else {
            v.each_str("metadata.namespace", namespace, is_dns1123_label(namespace));
        }
    } else if !namespace.is_empty() {
        v.forbidden("metadata.namespace", "not allowed on this type");
    }
    validate_labels(v, meta.get("labels"), "metadata.labels");
    validate_annotations(v, meta.get("annotations"), "metadata.annotations");
    let owners = list(meta, "ownerReferences");
    let mut controllers = Vec::new();
    for (i, r) in owners.iter().enumerate() {
        let f = index("metadata.ownerReferences", i);
        let api_version = string(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            v.invalid_str(
                &child(&f, "apiVersion"),
                api_version,
                "version must not be empty",
            );
        }
        for (k, what) in [("kind", "kind"), ("name", "name"), ("uid", "uid")] {
            if string(r, k).is_empty() {
                v.invalid_str(&child(&f, k), "", &format!("{what} must not be empty"));
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers.push(format!("{}/{}", string(r, "kind"), string(r, "name")));
        }
    }
    if controllers.len() > 1 {
        v.invalid(
            "metadata.ownerReferences",
            &show(meta.get("ownerReferences")),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        );
    }
    for (i, f) in list(meta, "finalizers").iter().enumerate() {
        if let Some(f) = f.as_str() {
            validate_finalizer(v, f, &index("metadata.finalizers", i));
        }
    }
    if let Some(old) = old {
        let old_meta = old.get("metadata").unwrap_or(&Value::Null);
        for k in ["name", "namespace", "uid", "creationTimestamp"] {
            let (new, before) = (get(meta, k), get(old_meta, k));
            if before.is_some() && new.is_some() && new != before {
                v.invalid(&child("metadata", k), &show(new), "field is immutable");
            }
        }
    }
}

/// `ValidateLabelSelector` of metav1.
fn label_selector(v: &mut Validator, selector: &Value, field: &str) {
    for (i, expr) in list(selector, "matchExpressions").iter().enumerate() {
        let f = index(&child(field, "matchExpressions"), i);
        let values = list(expr, "values");
        match string(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    v.required(
                        &child(&f, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    v.forbidden(
                        &child(&f, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            op => v.invalid_str(&child(&f, "operator"), op, "not a valid selector operator"),
        }
        let k = string(expr, "key");
        v.each_str(&child(&f, "key"), k, is_qualified_name(k));
        for (j, value) in values.iter().enumerate() {
            if let Some(s) = value.as_str() {
                v.each_str(&index(&child(&f, "values"), j), s, is_valid_label_value(s));
            }
        }
    }
    validate_labels(v, selector.get("matchLabels"), &child(field, "matchLabels"));
}

/// Selector present, valid, non-empty, and matching the template's labels.
fn selector_and_template(
    v: &mut Validator,
    spec: &Value,
    spec_field: &str,
    template_field: &str,
    what: &str,
    required: bool,
) {
    let sel_field = child(spec_field, "selector");
    let Some(selector) = get(spec, "selector") else {
        if required {
            v.required(&sel_field, "");
        }
        return;
    };
    label_selector(v, selector, &sel_field);
    let parsed = LabelSelector::from_json(selector);
    if required && parsed.as_ref().is_ok_and(LabelSelector::is_everything) {
        v.invalid(
            &sel_field,
            &show(Some(selector)),
            &format!("empty selector is invalid for {what}"),
        );
    }
    let Ok(parsed) = parsed else {
        v.invalid(&sel_field, &show(Some(selector)), "invalid label selector");
        return;
    };
    let template = spec.pointer(template_field).unwrap_or(&Value::Null);
    let labels = string_map(template.pointer("/metadata/labels"));
    if !parsed.is_everything() && !parsed.matches(&labels) {
        let f = child(
            &child(spec_field, &template_field[1..].replace('/', ".")),
            "metadata.labels",
        );
        v.invalid(
            &f,
            &go_map(&labels),
            "`selector` does not match template `labels`",
        );
    }
}

/// An int or a percent string (`ValidatePositiveIntOrPercent`); `max_100` also forbids
/// percentages over 100.
fn int_or_percent(v: &mut Validator, value: Option<&Value>, field: &str, max_100: bool) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_i64()
                && n < 0
            {
                v.invalid_int(field, n, "must be greater than or equal to 0");
            }
        }
        Some(Value::String(s)) => {
            let digits = s.strip_suffix('%');
            match digits {
                Some(d) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => {
                    if max_100 && d.parse::<u64>().map_or(true, |p| p > 100) {
                        v.invalid(field, s, "must not be greater than 100%");
                    }
                }
                _ => v.invalid(
                    field,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ),
            }
        }
        Some(other) => v.invalid(
            field,
            &other.to_string(),
            "must be an integer or percentage (e.g '5%')",
        ),
    }
}

fn int_or_percent_is_zero(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => {
            s.strip_suffix('%').and_then(|d| d.parse::<u64>().ok()) == Some(0)
        }
        _ => true,
    }
}

/// A port given by number or by name.
fn port_num_or_name(v: &mut Validator, value: Option<&Value>, field: &str) {
    match value {
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_i64() {
                v.port_num(field, n);
            }
        }
        Some(Value::String(s)) => {
            if s.is_empty() {
                v.required(field, "");
            } else {
                v.each_str(field, s, is_valid_port_name(s));
            }
        }
        _ => {}
    }
}

/// Immutable on update: same JSON value (missing and null alike).
fn immutable(v: &mut Validator, new: Option<&Value>, old: Option<&Value>, field: &str) {
    let norm = |x: Option<&Value>| x.filter(|x| !x.is_null()).cloned();
    if norm(new) != norm(old) {
        v.invalid(field, &show(new), "field is immutable");
    }
}
