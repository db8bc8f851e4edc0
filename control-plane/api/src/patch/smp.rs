//! Strategic merge patch, after k8s.io/apimachinery/pkg/util/strategicpatch's `mergeMap`
//! with `MergeParallelList` and `IgnoreUnmatchedNulls` (the server's options). Schema lookups
//! follow kubectl's `PatchMetaFromOpenAPIV3`: extensions sit on the property, `allOf[0]` and
//! `$ref` lead to the type.
//!
//! Deliberate differences from upstream, all more lenient:
//! - `$patch: merge` (in a map or as a list element) is accepted as "merge as usual" instead
//!   of "merging lists cannot yet be specified in the patch".
//! - Values new to the object are cleaned the same way merged ones are (directives applied,
//!   nulls dropped) rather than copied with directives left inside.
//! - Fields the schema does not know merge like maps / replace like lists instead of
//!   failing the lookup.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::PatchError;
use crate::openapi::{FieldMeta, SchemaNode};

type Obj = Map<String, Value>;
type Schema = Option<SchemaNode<'static>>;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// The field meta and the schema of a struct field (or of a map's values).
fn lookup_struct(schema: Schema, key: &str) -> (FieldMeta, Schema) {
    let Some(node) = schema else {
        return (FieldMeta::default(), None);
    };
    if let Some((meta, sub)) = node.property(key) {
        return (meta, Some(sub));
    }
    (FieldMeta::default(), node.additional_properties())
}

/// The field meta of a list field and the schema of its items.
fn lookup_slice(schema: Schema, key: &str) -> (FieldMeta, Schema) {
    let (meta, node) = lookup_struct(schema, key);
    (meta, node.and_then(|n| n.items()))
}

/// The patch strategy without `retainKeys` (which only shapes how clients compute patches;
/// the server obeys the `$retainKeys` directive).
fn strategy(meta: &FieldMeta) -> &str {
    meta.patch_strategies
        .iter()
        .map(String::as_str)
        .find(|s| *s != "retainKeys")
        .unwrap_or("")
}

/// Applies `patch` to `original`.
pub(super) fn merge_map(
    mut original: Obj,
    mut patch: Obj,
    schema: Schema,
) -> Result<Obj, PatchError> {
    if let Some(d) = patch.remove(DIRECTIVE) {
        match d.as_str() {
            Some("replace") => return merge_map(Obj::new(), patch, schema),
            Some("delete") => return Ok(Obj::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::invalid(format!(
                    "unknown patch type {d} in map"
                )));
            }
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, schema)?;

    for (k, pv) in patch {
        let (key, is_delete_list) = match k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) => (rest.to_owned(), true),
            None => (k, false),
        };
        if key.starts_with('$') {
            return Err(PatchError::invalid(format!("unknown directive {key}")));
        }
        if pv.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(ov) = original.remove(&key) else {
            if !is_delete_list {
                let value = fresh(pv, schema, &key)?;
                original.insert(key, value);
            }
            continue;
        };
        let merged = match (ov, pv) {
            (Value::Object(o), Value::Object(p)) if !is_delete_list => {
                let (meta, sub) = lookup_struct(schema, &key);
                if strategy(&meta) == "replace" {
                    Value::Object(merge_map(Obj::new(), p, sub)?)
                } else {
                    Value::Object(merge_map(o, p, sub)?)
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                let (meta, items) = lookup_slice(schema, &key);
                Value::Array(merge_slice_handler(o, p, items, &meta, is_delete_list)?)
            }
            // A deletion list that does not match the live value leaves it alone.
            (ov, _) if is_delete_list => ov,
            (_, pv) => fresh(pv, schema, &key)?,
        };
        original.insert(key, merged);
    }
    Ok(original)
}

/// A patch value for a field the object does not have (or has with another type): its
/// directives applied and its nulls dropped.
fn fresh(value: Value, schema: Schema, key: &str) -> Result<Value, PatchError> {
    Ok(match value {
        Value::Object(p) => {
            let (_, sub) = lookup_struct(schema, key);
            Value::Object(merge_map(Obj::new(), p, sub)?)
        }
        Value::Array(p) => {
            let (meta, items) = lookup_slice(schema, key);
            Value::Array(merge_slice_handler(Vec::new(), p, items, &meta, false)?)
        }
        v => v,
    })
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Schema,
    meta: &FieldMeta,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if strategy(meta) == "merge" || is_delete_list {
        merge_slice(
            original,
            patch,
            items,
            meta.patch_merge_key.as_deref(),
            is_delete_list,
        )
    } else {
        // Replaced whole; object elements are cleaned of directives and nulls.
        patch
            .into_iter()
            .map(|v| match v {
                Value::Object(o) => merge_map(Obj::new(), o, items).map(Value::Object),
                v => Ok(v),
            })
            .collect()
    }
}

/// Whether the elements of a list are maps (`Some(true)`), scalars (`Some(false)`) or
/// there are none; mixed lists and lists of lists are errors, as upstream.
fn element_kind(lists: [&[Value]; 2]) -> Result<Option<bool>, PatchError> {
    let mut kind = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        if v.is_array() {
            return Err(PatchError::invalid("lists of lists cannot be merged"));
        }
        let is_map = v.is_object();
        match kind {
            None => kind = Some(is_map),
            Some(k) if k != is_map => {
                return Err(PatchError::invalid(
                    "cannot merge a list whose elements are of different types",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Schema,
    merge_key: Option<&str>,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    match element_kind([&original, &patch])? {
        None => Ok(original),
        Some(false) => {
            if is_delete_list {
                let mut original = original;
                original.retain(|v| !patch.contains(v));
                return Ok(original);
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            let (in_patch, server_only) = partition(merged, &patch, None);
            Ok(normalize_element_order(
                in_patch,
                server_only,
                &patch,
                &original,
                None,
            ))
        }
        Some(true) => {
            let key = merge_key.ok_or_else(|| {
                PatchError::invalid("cannot merge lists of objects without a merge key")
            })?;
            let (original, patch) = apply_special_elements(original, patch, key, items)?;
            let server_order = original.clone();
            let merged = merge_by_key(original, &patch, key, items)?;
            let (in_patch, server_only) = partition(merged, &patch, Some(key));
            Ok(normalize_element_order(
                in_patch,
                server_only,
                &patch,
                &server_order,
                Some(key),
            ))
        }
    }
}

/// `$patch: delete` (drop matching entries), `$patch: replace` (the list is the patch's other
/// elements) and `$patch: merge` elements of a list patch.
fn apply_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    items: Schema,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Some(directive) = v.get(DIRECTIVE) else {
            plain.push(v);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = v.get(key).ok_or_else(|| {
                    PatchError::invalid(format!(
                        "map: {v} does not contain declared merge key: {key}"
                    ))
                })?;
                original.retain(|o| o.get(key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => {}
            _ => {
                return Err(PatchError::invalid(format!(
                    "unknown patch type {directive} in list element"
                )));
            }
        }
    }
    if replace {
        let replaced = plain
            .into_iter()
            .map(|v| match v {
                Value::Object(o) => merge_map(Obj::new(), o, items).map(Value::Object),
                v => Ok(v),
            })
            .collect::<Result<_, _>>()?;
        return Ok((replaced, Vec::new()));
    }
    Ok((original, plain))
}

fn merge_by_key(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    items: Schema,
) -> Result<Vec<Value>, PatchError> {
    for p in patch {
        let Value::Object(pm) = p else {
            return Err(PatchError::invalid("list element is not an object"));
        };
        let value = pm.get(key).ok_or_else(|| {
            PatchError::invalid(format!(
                "map: {p} does not contain declared merge key: {key}"
            ))
        })?;
        match original.iter().position(|o| o.get(key) == Some(value)) {
            Some(i) => {
                let current = original
                    .get_mut(i)
                    .map(Value::take)
                    .and_then(|v| match v {
                        Value::Object(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or_default();
                let merged = merge_map(current, pm.clone(), items)?;
                if let Some(slot) = original.get_mut(i) {
                    *slot = Value::Object(merged);
                }
            }
            None => original.push(Value::Object(merge_map(Obj::new(), pm.clone(), items)?)),
        }
    }
    Ok(original)
}

/// The position of `v` in `list`: by merge key for objects, by value for scalars.
fn index(list: &[Value], v: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(k) => {
            let kv = v.get(k)?;
            list.iter().position(|x| x.get(k) == Some(kv))
        }
        None => list.iter().position(|x| x == v),
    }
}

/// Splits `merged` into the elements present in `list` and the others.
fn partition(merged: Vec<Value>, list: &[Value], key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| index(list, v, key).is_some())
}

fn sort_by_order(mut items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    items.sort_by(|a, b| match (index(order, a, key), index(order, b, key)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    items
}

/// Sorts the patch's elements by `patch_order` and the server-only ones by `server_order`,
/// then interleaves them (upstream's `normalizeElementOrder` + `mergeSortedSlice`): a
/// server-only element goes before the first patch element that comes after it on the
/// server.
fn normalize_element_order(
    in_patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let right = sort_by_order(in_patch, patch_order, key);
    let left = sort_by_order(server_only, server_order, key);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.by_ref()),
            (None, Some(_)) => out.extend(right.by_ref()),
            (Some(l), Some(r)) => {
                let less = matches!(
                    (index(server_order, l, key), index(server_order, r, key)),
                    (Some(li), Some(ri)) if li < ri
                );
                let next = if less { left.next() } else { right.next() };
                out.extend(next);
            }
        }
    }
    out
}

/// `$retainKeys: [..]`: drop every field of the original that is not listed. Every field the
/// patch sets must be listed.
fn apply_retain_keys(original: &mut Obj, patch: &mut Obj) -> Result<(), PatchError> {
    let Some(keys) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(keys) = keys else {
        return Err(PatchError::invalid(
            "$retainKeys must be a list of field names",
        ));
    };
    let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
            || k == DIRECTIVE
        {
            continue;
        }
        if !keys.contains(&k.as_str()) {
            return Err(PatchError::invalid(format!(
                "doesn't satisfy strategic merge patch format: all the fields in the patch must be present in the $retainKeys list ({k})"
            )));
        }
    }
    original.retain(|k, _| keys.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>: [..]`: merges the field's patch list (if any) into the original
/// and orders the result: the listed elements in the listed order, server-only elements
/// interleaved where they were.
fn apply_set_element_order(
    original: &mut Obj,
    patch: &mut Obj,
    schema: Schema,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let Some(field) = directive.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        let field = field.to_owned();
        let Some(Value::Array(order)) = patch.remove(&directive) else {
            return Err(PatchError::invalid(format!("{directive} must be a list")));
        };
        let original_list = match original.remove(&field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                // Not a list on the server: leave it to the plain merge below.
                original.insert(field.clone(), other);
                continue;
            }
        };
        let patch_list = match patch.remove(&field) {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(other) => {
                if let Some(l) = original_list {
                    original.insert(field.clone(), Value::Array(l));
                }
                patch.insert(field, other);
                continue;
            }
        };
        let had_original = original_list.is_some();
        let original_list = original_list.unwrap_or_default();
        let (meta, items) = lookup_slice(schema, &field);
        let key = meta.patch_merge_key.clone();
        let server_order = original_list.clone();
        let merged = if original_list.is_empty() && patch_list.is_empty() {
            Vec::new()
        } else {
            merge_slice_handler(original_list, patch_list, items, &meta, false)?
        };
        let key = match element_kind([&merged, &order])? {
            Some(true) => key,
            _ => None,
        };
        let (in_order, server_only) = partition(merged, &order, key.as_deref());
        let sorted =
            normalize_element_order(in_order, server_only, &order, &server_order, key.as_deref());
        if had_original || !sorted.is_empty() {
            original.insert(field, Value::Array(sorted));
        }
    }
    Ok(())
}
