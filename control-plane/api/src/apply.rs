//! Server-side apply (`application/apply-patch+yaml`) and field ownership
//! (`metadata.managedFields`), after sigs.k8s.io/structured-merge-diff's `Updater`:
//! - [`server_side_apply`] merges an applied configuration into the live object (list maps by
//!   their keys, sets as sets, atomic lists and maps whole), makes the manager own exactly the
//!   fields it applied, removes fields it applied before and no longer does (unless someone
//!   else owns them), and refuses to change fields other managers own unless forced;
//! - [`record_update`] records what a create, update or patch changed, as kube-apiserver does
//!   for every non-apply write with a field manager.
//!
//! List and map semantics come from the [`extensions`](crate::extensions) table through the
//! OpenAPI schemas: `x-kubernetes-list-type`/`-list-map-keys`, falling back to the patch
//! strategy (`merge` + key = map, `merge` = set), else atomic; `x-kubernetes-map-type`.

pub mod fieldset;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use self::fieldset::FieldSet;
use crate::{
    extensions::{ListType, MapType},
    openapi::{self, FieldMeta, SchemaNode},
    patch::Kind,
};

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// HTTP 409: other managers own fields this apply would change.
    #[error("{}", conflict_message(.causes))]
    Conflict { causes: Vec<ConflictCause> },
    /// HTTP 400: the body is neither JSON nor YAML, or not one object.
    #[error("invalid apply body: {message}")]
    InvalidBody { message: String },
    /// HTTP 400/422: the applied configuration is not a valid object of the kind.
    #[error("invalid apply configuration: {message}")]
    Invalid { message: String },
}

/// One conflicting field, as a `Status` cause: reason `FieldManagerConflict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictCause {
    /// The manager that owns the field.
    pub manager: String,
    /// The API version that manager used.
    pub api_version: String,
    /// The field, as upstream prints it (`.spec.replicas`).
    pub field: String,
}

impl ConflictCause {
    /// `Status.details.causes[].reason`.
    pub const REASON: &'static str = "FieldManagerConflict";

    /// `Status.details.causes[].message`: `conflict with "m" using apps/v1`.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "conflict with \"{}\" using {}",
            self.manager, self.api_version
        )
    }

    /// The cause as a `StatusCause` object.
    #[must_use]
    pub fn to_status_cause(&self) -> Value {
        json!({ "reason": Self::REASON, "message": self.message(), "field": self.field })
    }
}

fn conflict_message(causes: &[ConflictCause]) -> String {
    match causes {
        [one] => format!(
            "Apply failed with 1 conflict: {}: {}",
            one.message(),
            one.field
        ),
        _ => {
            let lines: Vec<String> = causes
                .iter()
                .map(|c| format!("- {}: {}", c.message(), c.field))
                .collect();
            format!(
                "Apply failed with {} conflicts:\n{}",
                causes.len(),
                lines.join("\n")
            )
        }
    }
}

/// Parses an apply body: JSON (what kubectl sends) or YAML (one document).
pub fn parse_apply_body(body: &[u8]) -> Result<Value, ApplyError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(json_err) => {
            serde_saphyr::from_slice(body).map_err(|yaml_err| ApplyError::InvalidBody {
                message: format!("not JSON ({json_err}) nor YAML ({yaml_err})"),
            })?
        }
    };
    if !value.is_object() {
        return Err(ApplyError::InvalidBody {
            message: "the body must be a single object".into(),
        });
    }
    Ok(value)
}

/// The operation of a managed fields entry.
pub const APPLY: &str = "Apply";
/// The operation recorded for create, update and non-apply patches.
pub const UPDATE: &str = "Update";

/// Applies `applied` as `manager` (at the current time); see [`server_side_apply_at`].
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    kind: Kind<'_>,
) -> Result<Value, ApplyError> {
    server_side_apply_at(live, applied, manager, force, kind, &now_rfc3339())
}

/// Server-side apply at time `now` (RFC 3339). `live` is `None` when the object does not exist
/// (apply creates it). Returns the new object with its `metadata.managedFields`; the caller
/// stores it (or not, on dry run) and fills in server-owned metadata.
pub fn server_side_apply_at(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    kind: Kind<'_>,
    now: &str,
) -> Result<Value, ApplyError> {
    let (group, version, k) = kind;
    let api_version = api_version_of(group, version);
    let Some(config) = applied.as_object() else {
        return Err(invalid("the applied configuration must be an object"));
    };
    match config.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(invalid(format!(
                "apiVersion {v} does not match {api_version}"
            )));
        }
        None => return Err(invalid("apiVersion must be set")),
    }
    match config.get("kind").and_then(Value::as_str) {
        Some(v) if v == k => {}
        Some(v) => return Err(invalid(format!("kind {v} does not match {k}"))),
        None => return Err(invalid("kind must be set")),
    }
    if manager.is_empty() {
        return Err(invalid("fieldManager is required for apply"));
    }
    let mut config = applied.clone();
    strip_managed_fields(&mut config);
    let schema = openapi::kind_schema(group, version, k);
    let root = Walk::root(schema);

    let live_obj = live.cloned().map(|mut l| {
        strip_managed_fields(&mut l);
        l
    });
    let mut managers = live.map(read_managed_fields).unwrap_or_default();

    // The manager's new set: exactly what it applied.
    let mut applied_set = FieldSet::new();
    root.to_field_set(&config, &mut Vec::new(), &mut applied_set)?;
    strip_meta_paths(&mut applied_set);

    let mut merged = root.merge(live_obj.clone(), &config)?;

    // Fields this manager applied before and no longer applies go, unless someone owns them.
    let previous = managers
        .iter()
        .find(|e| e.manager == manager && e.operation == APPLY && e.subresource.is_none())
        .map(|e| e.set.clone());
    if let Some(previous) = previous {
        let mut owned = applied_set.clone();
        for e in managers
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == APPLY))
        {
            owned.union_with(&e.set);
        }
        for path in previous.difference(&owned).paths() {
            if !owned.contains_prefix(&path) {
                remove_path(&mut merged, &path);
            }
            // (A path whose parent went first is simply not found.)
        }
    }

    let cmp = root.compare(live_obj.as_ref(), Some(&merged));
    let changed = cmp.modified.union(&cmp.added);
    let mut causes = Vec::new();
    for e in managers
        .iter_mut()
        .filter(|e| !(e.manager == manager && e.operation == APPLY))
    {
        let conflict = e.set.intersection(&changed);
        if conflict.is_empty() {
            continue;
        }
        if force {
            e.set = e.set.difference(&conflict);
        } else {
            causes.extend(conflict.paths().iter().map(|p| ConflictCause {
                manager: e.manager.clone(),
                api_version: e.api_version.clone(),
                field: fieldset::display(p),
            }));
        }
    }
    if !causes.is_empty() {
        return Err(ApplyError::Conflict { causes });
    }
    for e in &mut managers {
        if !(e.manager == manager && e.operation == APPLY) {
            e.set = e.set.difference(&cmp.removed);
        }
    }
    match managers
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == APPLY && e.subresource.is_none())
    {
        Some(e) => {
            if e.set != applied_set || e.api_version != api_version {
                e.set = applied_set;
                e.api_version.clone_from(&api_version);
                now.clone_into(&mut e.time);
            }
        }
        None => managers.push(Entry {
            manager: manager.to_owned(),
            operation: APPLY.to_owned(),
            api_version: api_version.clone(),
            time: now.to_owned(),
            subresource: None,
            set: applied_set,
        }),
    }
    managers.retain(|e| !e.set.is_empty());

    let mut out = if cmp.is_same() && live_obj.is_some() {
        live_obj.unwrap_or_default()
    } else {
        merged
    };
    write_managed_fields(&mut out, &managers);
    Ok(out)
}

/// Records a non-apply write (create: `old` is `None`; update; patch) by `manager` at the
/// current time; see [`record_update_at`].
#[must_use]
pub fn record_update(old: Option<&Value>, new: &Value, manager: &str, operation: &str) -> Value {
    record_update_at(old, new, manager, operation, &now_rfc3339())
}

/// Returns `new` with `metadata.managedFields` updated as kube-apiserver does for a write that
/// is not an apply: the manager gains every field the write added or changed, other managers
/// lose those and every field the write removed. If the request carried managedFields that
/// differ from the old object's, they are taken as the starting point (that is how clients
/// reset them); an empty `manager` records nothing.
#[must_use]
pub fn record_update_at(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    operation: &str,
    now: &str,
) -> Value {
    let mut out = new.clone();
    let old_fields = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let new_fields = new.pointer("/metadata/managedFields");
    let mut managers = match (new_fields, old) {
        (Some(n), _) if Some(n) != old_fields => read_managed_fields(new),
        (_, Some(o)) => read_managed_fields(o),
        _ => Vec::new(),
    };
    if manager.is_empty() {
        write_managed_fields(&mut out, &managers);
        return out;
    }
    let (group, version) = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.split_once('/').unwrap_or(("", v)))
        .unwrap_or_default();
    let api_version = api_version_of(group, version);
    let kind = new.get("kind").and_then(Value::as_str).unwrap_or_default();
    let root = Walk::root(openapi::kind_schema(group, version, kind));

    let mut old_obj = old.cloned().unwrap_or_else(|| json!({}));
    strip_managed_fields(&mut old_obj);
    let mut new_obj = new.clone();
    strip_managed_fields(&mut new_obj);
    let mut cmp = root.compare(Some(&old_obj), Some(&new_obj));
    strip_meta_paths(&mut cmp.added);
    strip_meta_paths(&mut cmp.modified);
    strip_meta_paths(&mut cmp.removed);
    let gained = cmp.modified.union(&cmp.added);

    for e in &mut managers {
        if e.manager != manager || e.operation != operation {
            e.set = e.set.difference(&gained).difference(&cmp.removed);
        }
    }
    match managers
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == operation && e.subresource.is_none())
    {
        Some(e) => {
            let set = e.set.difference(&cmp.removed).union(&gained);
            if set != e.set || e.api_version != api_version {
                e.set = set;
                e.api_version.clone_from(&api_version);
                now.clone_into(&mut e.time);
            }
        }
        None if !gained.is_empty() => managers.push(Entry {
            manager: manager.to_owned(),
            operation: operation.to_owned(),
            api_version,
            time: now.to_owned(),
            subresource: None,
            set: gained,
        }),
        None => {}
    }
    managers.retain(|e| !e.set.is_empty());
    write_managed_fields(&mut out, &managers);
    out
}

fn invalid(message: impl Into<String>) -> ApplyError {
    ApplyError::Invalid {
        message: message.into(),
    }
}

fn api_version_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    set: FieldSet,
}

fn read_managed_fields(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
            if e.get("fieldsType").and_then(Value::as_str) != Some("FieldsV1") {
                return None;
            }
            Some(Entry {
                manager: s("manager").unwrap_or_default(),
                operation: s("operation").unwrap_or_else(|| UPDATE.to_owned()),
                api_version: s("apiVersion").unwrap_or_default(),
                time: s("time").unwrap_or_default(),
                subresource: s("subresource"),
                set: FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

fn write_managed_fields(obj: &mut Value, managers: &[Entry]) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    let meta = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if managers.is_empty() {
        meta.remove("managedFields");
        return;
    }
    let list = managers
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.set.to_fields_v1(),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = s.clone().into();
            }
            v
        })
        .collect();
    meta.insert("managedFields".into(), Value::Array(list));
}

fn strip_managed_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

/// Fields no manager owns: identity and server-maintained metadata (upstream's stripSet).
fn strip_meta_paths(set: &mut FieldSet) {
    set.remove_subtree(&[fieldset::field("apiVersion")]);
    set.remove_subtree(&[fieldset::field("kind")]);
    for f in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "generation",
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        set.remove_subtree(&[fieldset::field("metadata"), fieldset::field(f)]);
    }
}

/// Removes the node at `path` from `obj`; maps and lists the removal leaves empty go too (as
/// upstream's remove walker drops them). Returns whether anything was removed.
fn remove_path(node: &mut Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let is_empty = |v: &Value| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match node {
        Value::Object(m) => {
            let Some(f) = first.strip_prefix("f:") else {
                return false;
            };
            if rest.is_empty() {
                return m.remove(f).is_some();
            }
            let removed = m.get_mut(f).is_some_and(|child| remove_path(child, rest));
            if removed && m.get(f).is_some_and(is_empty) {
                m.remove(f);
            }
            removed
        }
        Value::Array(a) => {
            if rest.is_empty() {
                let before = a.len();
                a.retain(|item| !matches_element(item, first));
                return a.len() != before;
            }
            a.iter_mut()
                .find(|item| matches_element(item, first))
                .is_some_and(|child| remove_path(child, rest))
        }
        _ => false,
    }
}

/// Whether a list element is the one a `k:`/`v:`/`i:` path element names. (`i:` elements are
/// never produced: lists without keys are atomic.)
fn matches_element(item: &Value, pe: &str) -> bool {
    if let Some(k) = pe.strip_prefix("k:") {
        let Ok(keys) = serde_json::from_str::<Map<String, Value>>(k) else {
            return false;
        };
        return keys
            .iter()
            .all(|(name, v)| item.get(name).unwrap_or(&default_key(name)) == v);
    }
    if let Some(v) = pe.strip_prefix("v:") {
        return serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item);
    }
    false
}

/// The default of a list-map key field left out of an item (`protocol` of container and
/// service ports defaults to TCP upstream, so `k:` paths always carry it).
fn default_key(name: &str) -> Value {
    match name {
        "protocol" => Value::String("TCP".into()),
        _ => Value::Null,
    }
}

/// How a node is merged and owned.
#[derive(Debug, Clone)]
enum Shape {
    /// A struct: fields with their own schemas.
    Struct(SchemaNode<'static>),
    /// A granular map: every key is owned on its own.
    Map(Option<SchemaNode<'static>>),
    /// A list map: elements keyed by these fields.
    ListMap(Vec<String>, Option<SchemaNode<'static>>),
    /// A set of scalars.
    Set,
    /// One value: scalars, atomic lists, atomic maps and structs.
    Atomic,
}

/// A position in the schema: the meta of the field that holds the value, and its schema.
#[derive(Debug, Clone, Default)]
struct Walk {
    meta: FieldMeta,
    schema: Option<SchemaNode<'static>>,
}

/// What changed between two objects.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

impl Walk {
    fn root(schema: Option<SchemaNode<'static>>) -> Self {
        Self {
            meta: FieldMeta::default(),
            schema,
        }
    }

    fn shape(&self, value: &Value) -> Shape {
        match value {
            Value::Object(_) => {
                let atomic = self.meta.map_type == Some(MapType::Atomic)
                    || self
                        .schema
                        .as_ref()
                        .and_then(SchemaNode::map_type)
                        .is_some_and(|t| t == MapType::Atomic);
                match &self.schema {
                    _ if atomic => Shape::Atomic,
                    Some(s) if s.has_properties() => Shape::Struct(*s),
                    Some(s) => Shape::Map(s.additional_properties()),
                    None => Shape::Map(None),
                }
            }
            Value::Array(_) => {
                let items = self.schema.as_ref().and_then(SchemaNode::items);
                let m = &self.meta;
                let list_type = m.list_type.or_else(|| {
                    (m.has_strategy("merge")).then(|| {
                        if m.patch_merge_key.is_some() {
                            ListType::Map
                        } else {
                            ListType::Set
                        }
                    })
                });
                match list_type {
                    Some(ListType::Map) => {
                        let keys = if m.list_map_keys.is_empty() {
                            m.patch_merge_key.iter().cloned().collect()
                        } else {
                            m.list_map_keys.clone()
                        };
                        Shape::ListMap(keys, items)
                    }
                    Some(ListType::Set) => Shape::Set,
                    _ => Shape::Atomic,
                }
            }
            _ => Shape::Atomic,
        }
    }

    fn child(&self, shape: &Shape, field: &str) -> Walk {
        match shape {
            Shape::Struct(node) => match node.property(field) {
                Some((meta, schema)) => Walk {
                    meta,
                    schema: Some(schema),
                },
                None => Walk::default(),
            },
            Shape::Map(values) => Walk {
                meta: FieldMeta::default(),
                schema: *values,
            },
            Shape::ListMap(_, items) => Walk {
                meta: FieldMeta::default(),
                schema: *items,
            },
            Shape::Set | Shape::Atomic => Walk::default(),
        }
    }

    /// The `k:` path element of a list-map element; missing key fields take their default.
    fn key_of(keys: &[String], item: &Value) -> Option<String> {
        let mut m = Map::new();
        for k in keys {
            let v = item.get(k).cloned().unwrap_or_else(|| default_key(k));
            if v.is_null() {
                return None;
            }
            m.insert(k.clone(), v);
        }
        Some(fieldset::key(&m))
    }

    /// The fields an applied configuration sets (upstream's ToFieldSet).
    fn to_field_set(
        &self,
        value: &Value,
        path: &mut Vec<String>,
        set: &mut FieldSet,
    ) -> Result<(), ApplyError> {
        let shape = self.shape(value);
        match (&shape, value) {
            (Shape::Struct(_) | Shape::Map(_), Value::Object(m)) => {
                for (k, v) in m {
                    path.push(fieldset::field(k));
                    let is_map_entry = matches!(shape, Shape::Map(_));
                    if is_map_entry || v.is_null() || v.as_object().is_some_and(Map::is_empty) {
                        set.insert(path);
                    }
                    self.child(&shape, k).to_field_set(v, path, set)?;
                    path.pop();
                }
            }
            (Shape::ListMap(keys, _), Value::Array(items)) => {
                let mut seen = Vec::new();
                for item in items {
                    let pe = Self::key_of(keys, item).ok_or_else(|| {
                        invalid(format!(
                            "{}: element {item} lacks a key field ({})",
                            fieldset::display(path),
                            keys.join(", ")
                        ))
                    })?;
                    if seen.contains(&pe) {
                        return Err(invalid(format!(
                            "{}: duplicate entries for key {}",
                            fieldset::display(path),
                            pe.trim_start_matches("k:")
                        )));
                    }
                    seen.push(pe.clone());
                    path.push(pe);
                    set.insert(path);
                    self.child(&shape, "").to_field_set(item, path, set)?;
                    path.pop();
                }
            }
            (Shape::Set, Value::Array(items)) => {
                for v in items {
                    path.push(fieldset::value(v));
                    set.insert(path);
                    path.pop();
                }
            }
            _ => set.insert(path),
        }
        Ok(())
    }

    /// The live object with the configuration merged in.
    fn merge(&self, live: Option<Value>, config: &Value) -> Result<Value, ApplyError> {
        let shape = self.shape(config);
        Ok(match (&shape, live, config) {
            (Shape::Struct(_) | Shape::Map(_), Some(Value::Object(mut l)), Value::Object(c)) => {
                for (k, cv) in c {
                    if cv.is_null() {
                        l.remove(k);
                        continue;
                    }
                    let merged = self.child(&shape, k).merge(l.remove(k), cv)?;
                    l.insert(k.clone(), merged);
                }
                Value::Object(l)
            }
            (Shape::ListMap(keys, _), Some(Value::Array(mut l)), Value::Array(c)) => {
                let child = self.child(&shape, "");
                for item in c {
                    let pe = Self::key_of(keys, item);
                    let pos = pe.as_ref().and_then(|pe| {
                        l.iter()
                            .position(|x| Self::key_of(keys, x).as_ref() == Some(pe))
                    });
                    match pos.and_then(|i| l.get_mut(i)) {
                        Some(slot) => *slot = child.merge(Some(slot.take()), item)?,
                        None => l.push(child.merge(None, item)?),
                    }
                }
                Value::Array(l)
            }
            (Shape::Set, Some(Value::Array(mut l)), Value::Array(c)) => {
                for v in c {
                    if !l.contains(v) {
                        l.push(v.clone());
                    }
                }
                Value::Array(l)
            }
            (Shape::Struct(_) | Shape::Map(_), _, Value::Object(c)) => {
                // New: nulls dropped all the way down.
                let mut out = Map::new();
                for (k, cv) in c {
                    if !cv.is_null() {
                        out.insert(k.clone(), self.child(&shape, k).merge(None, cv)?);
                    }
                }
                Value::Object(out)
            }
            _ => config.clone(),
        })
    }

    /// What changed from `old` to `new` (upstream's Compare), path by path.
    fn compare(&self, old: Option<&Value>, new: Option<&Value>) -> Comparison {
        let mut c = Comparison::default();
        self.compare_into(old, new, &mut Vec::new(), &mut c);
        c
    }

    fn compare_into(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        path: &mut Vec<String>,
        c: &mut Comparison,
    ) {
        match (old, new) {
            (None, None) => {}
            (None, Some(n)) => self.mark(n, path, &mut c.added, false),
            (Some(o), None) => self.mark(o, path, &mut c.removed, true),
            (Some(o), Some(n)) => {
                let (so, sn) = (self.shape(o), self.shape(n));
                match (&sn, o, n) {
                    (Shape::Struct(_) | Shape::Map(_), Value::Object(om), Value::Object(nm))
                        if matches!(so, Shape::Struct(_) | Shape::Map(_)) =>
                    {
                        for k in om.keys().chain(nm.keys().filter(|k| !om.contains_key(*k))) {
                            path.push(fieldset::field(k));
                            self.child(&sn, k)
                                .compare_into(om.get(k), nm.get(k), path, c);
                            path.pop();
                        }
                    }
                    (Shape::ListMap(keys, _), Value::Array(ol), Value::Array(nl))
                        if matches!(so, Shape::ListMap(..)) =>
                    {
                        let child = self.child(&sn, "");
                        let keyed = |l: &[Value]| -> Vec<(String, Value)> {
                            l.iter()
                                .filter_map(|v| Self::key_of(keys, v).map(|k| (k, v.clone())))
                                .collect()
                        };
                        let (ok, nk) = (keyed(ol), keyed(nl));
                        for (k, ov) in &ok {
                            path.push(k.clone());
                            let nv = nk.iter().find(|(x, _)| x == k).map(|(_, v)| v);
                            match nv {
                                Some(nv) => child.compare_into(Some(ov), Some(nv), path, c),
                                None => child.mark(ov, path, &mut c.removed, true),
                            }
                            path.pop();
                        }
                        for (k, nv) in &nk {
                            if !ok.iter().any(|(x, _)| x == k) {
                                path.push(k.clone());
                                child.mark(nv, path, &mut c.added, true);
                                path.pop();
                            }
                        }
                    }
                    (Shape::Set, Value::Array(ol), Value::Array(nl))
                        if matches!(so, Shape::Set) =>
                    {
                        for v in ol.iter().filter(|v| !nl.contains(v)) {
                            path.push(fieldset::value(v));
                            c.removed.insert(path);
                            path.pop();
                        }
                        for v in nl.iter().filter(|v| !ol.contains(v)) {
                            path.push(fieldset::value(v));
                            c.added.insert(path);
                            path.pop();
                        }
                    }
                    _ => {
                        if o != n {
                            c.modified.insert(path);
                        }
                    }
                }
            }
        }
    }

    /// Puts a whole subtree into `set`: the node itself unless it is a non-empty struct
    /// (structs exist implicitly), or always when `member`.
    fn mark(&self, value: &Value, path: &mut Vec<String>, set: &mut FieldSet, member: bool) {
        let shape = self.shape(value);
        let empty_obj = value.as_object().is_some_and(Map::is_empty);
        if member || empty_obj || !matches!(shape, Shape::Struct(_)) {
            set.insert(path);
        }
        match (&shape, value) {
            (Shape::Struct(_) | Shape::Map(_), Value::Object(m)) => {
                for (k, v) in m {
                    path.push(fieldset::field(k));
                    let entry = matches!(shape, Shape::Map(_)) || member;
                    self.child(&shape, k).mark(v, path, set, entry);
                    path.pop();
                }
            }
            (Shape::ListMap(keys, _), Value::Array(items)) => {
                let child = self.child(&shape, "");
                for item in items {
                    if let Some(pe) = Self::key_of(keys, item) {
                        path.push(pe);
                        child.mark(item, path, set, true);
                        path.pop();
                    }
                }
            }
            (Shape::Set, Value::Array(items)) => {
                for v in items {
                    path.push(fieldset::value(v));
                    set.insert(path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// The current time as RFC 3339 with second precision (`2026-11-26T10:00:00Z`).
#[must_use]
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch (civil-from-days, proleptic Gregorian, UTC).
#[must_use]
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
