//! OpenAPI v3 documents for the served group versions, generated from k8s-openapi's schemars
//! schemas plus the team's [`extensions`](crate::extensions) table, and the schema walker that
//! strategic merge patch and server-side apply use to find list and map semantics.
//!
//! kubectl reads these documents for `create -f` / `apply` (does the PATCH operation take
//! `fieldValidation`? does it accept strategic merge patch?), for client-side apply's patch
//! computation (the `x-kubernetes-patch-*` extensions) and for `explain` (schemas found by
//! `x-kubernetes-group-version-kind`). Each document is generated once, lazily, and cached.

mod kinds;
mod paths;

pub use paths::PATCH_CONTENT_TYPES;

use std::sync::OnceLock;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::{
    extensions::{self, ListType, MapType},
    registry,
};

/// `info.version` of every document, as kube-apiserver writes it. (The schemas are k8s-openapi's
/// `v1_33` types.)
pub const INFO_VERSION: &str = "unversioned";

/// One generated group-version document, ready to serve.
#[derive(Debug)]
pub struct GroupVersionDoc {
    pub group: &'static str,
    pub version: &'static str,
    /// The document.
    pub doc: Value,
    /// `doc` serialised as JSON, the body to serve.
    pub json: Vec<u8>,
    /// A stable content hash of `json` (upper-case hex), for `?hash=` and the `ETag`.
    pub hash: String,
}

impl GroupVersionDoc {
    /// The document's path under `/openapi/v3/` (`api/v1`, `apis/apps/v1`).
    #[must_use]
    pub fn path(&self) -> String {
        gv_path(self.group, self.version)
    }

    /// `components.schemas`.
    #[must_use]
    pub fn schemas(&self) -> Option<&Map<String, Value>> {
        self.doc.pointer("/components/schemas")?.as_object()
    }
}

/// `api/v1` for the core group, `apis/<group>/<version>` otherwise.
#[must_use]
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

struct Slot {
    group: &'static str,
    version: &'static str,
    doc: OnceLock<GroupVersionDoc>,
}

fn slots() -> &'static [Slot] {
    static SLOTS: OnceLock<Vec<Slot>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        registry::groups()
            .into_iter()
            .flat_map(|g| {
                g.versions.into_iter().map(move |version| Slot {
                    group: g.name,
                    version,
                    doc: OnceLock::new(),
                })
            })
            .collect()
    })
}

/// The cached document of a served group version, generated on first use.
#[must_use]
pub fn cached(group: &str, version: &str) -> Option<&'static GroupVersionDoc> {
    let slot = slots()
        .iter()
        .find(|s| s.group == group && s.version == version)?;
    Some(slot.doc.get_or_init(|| generate(slot.group, slot.version)))
}

/// The document of a served group version and its hash (the `ETag`); `None` for a group
/// version skiff does not serve. Clones the cached document: servers should prefer
/// [`cached`], which also holds the serialised bytes.
#[must_use]
pub fn v3_group_version(group: &str, version: &str) -> Option<(Value, String)> {
    cached(group, version).map(|d| (d.doc.clone(), d.hash.clone()))
}

/// The content hash of a group version's document (generating it if needed).
#[must_use]
pub fn content_hash(group: &str, version: &str) -> Option<String> {
    cached(group, version).map(|d| d.hash.clone())
}

/// The `/openapi/v3` index: `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=H"}}}`
/// for every served group version. `hash_of(group, version)` supplies each hash; pass
/// [`content_hash`] to hash the generated documents (which generates all of them), or any
/// cheaper stable function of the build. A `None` hash leaves `?hash=` off that URL.
pub fn v3_index(hash_of: impl Fn(&str, &str) -> Option<String>) -> Value {
    let mut paths = Map::new();
    for slot in slots() {
        let path = gv_path(slot.group, slot.version);
        let url = match hash_of(slot.group, slot.version) {
            Some(h) => format!("/openapi/v3/{path}?hash={h}"),
            None => format!("/openapi/v3/{path}"),
        };
        paths.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// FNV-1a, 64 bits, twice with different offsets: stable across builds and platforms, which
/// is all an `ETag` needs.
#[must_use]
pub fn stable_hash(bytes: &[u8]) -> String {
    fn fnv1a(bytes: &[u8], offset: u64) -> u64 {
        bytes.iter().fold(offset, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    format!(
        "{:016X}{:016X}",
        fnv1a(bytes, 0xcbf2_9ce4_8422_2325),
        fnv1a(bytes, 0x6c62_272e_07bb_0142)
    )
}

const REF_PREFIX: &str = "#/components/schemas/";

/// A `$ref` to a named schema.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn generate(group: &'static str, version: &'static str) -> GroupVersionDoc {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let mut kinds: Vec<(&'static str, &'static str, &'static str)> = Vec::new();
    for r in registry::resources_of(group, version) {
        kinds.push((r.group, r.version, r.kind));
        for s in r.subresources {
            kinds.push((s.group, s.version, s.kind));
        }
    }
    let mut named = Vec::new();
    for (g, v, k) in kinds {
        if let Some(name) = kinds::add_schema(&mut generator, g, v, k) {
            named.push((g, v, k, name));
        }
    }
    kinds::add_common(&mut generator);
    let mut schemas = generator.take_definitions(true);

    // Lists of the stored kinds, as upstream names them (io.k8s.api.core.v1.PodList).
    for r in registry::resources_of(group, version).filter(|r| r.is_stored()) {
        if let Some((.., name)) = named
            .iter()
            .find(|(g, v, k, _)| (*g, *v, *k) == (r.group, r.version, r.kind))
        {
            schemas.insert(format!("{name}List"), list_schema(r.kind, name));
        }
    }
    decorate(&mut schemas);

    let paths = paths::paths(group, version, &named);
    let doc = json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": INFO_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    });
    // Serialising a `Value` cannot fail (string keys only).
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    let hash = stable_hash(&json);
    GroupVersionDoc {
        group,
        version,
        doc,
        json,
        hash,
    }
}

fn list_schema(kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": { "allOf": [schema_ref(item)], "default": {} },
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "allOf": [schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")],
                "default": {},
                "description": "Standard list metadata.",
            },
        },
        "required": ["items"],
    })
}

/// Inserts the extension table into the generated schemas: list and merge extensions at the
/// properties, map types at the types, group-version-kinds at the kinds.
fn decorate(schemas: &mut Map<String, Value>) {
    for (name, schema) in schemas.iter_mut() {
        let Some(obj) = schema.as_object_mut() else {
            continue;
        };
        if let Some(gvk) = extensions::gvk_of_schema(name) {
            obj.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{ "group": gvk.group, "version": gvk.version, "kind": gvk.kind }]),
            );
        }
        if let Some(t) = extensions::type_ext(name) {
            obj.insert("x-kubernetes-map-type".into(), t.map_type.as_str().into());
        }
        let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, prop) in props.iter_mut() {
            let Some(ext) = extensions::field_ext(name, field) else {
                continue;
            };
            let Some(p) = prop.as_object_mut() else {
                continue;
            };
            if let Some(s) = ext.patch_strategy {
                p.insert("x-kubernetes-patch-strategy".into(), s.into());
            }
            if let Some(k) = ext.patch_merge_key {
                p.insert("x-kubernetes-patch-merge-key".into(), k.into());
            }
            if let Some(t) = ext.list_type {
                p.insert("x-kubernetes-list-type".into(), t.as_str().into());
            }
            if !ext.list_map_keys.is_empty() {
                p.insert(
                    "x-kubernetes-list-map-keys".into(),
                    json!(ext.list_map_keys),
                );
            }
            if let Some(t) = ext.map_type {
                p.insert("x-kubernetes-map-type".into(), t.as_str().into());
            }
        }
    }
}

/// The list and merge semantics of one field, read from its schema's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMeta {
    /// `x-kubernetes-patch-strategy`, split on commas (`merge`, `retainKeys`, `replace`).
    pub patch_strategies: Vec<String>,
    pub patch_merge_key: Option<String>,
    pub list_type: Option<ListType>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<MapType>,
}

impl FieldMeta {
    fn read(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        Self {
            patch_strategies: s("x-kubernetes-patch-strategy")
                .map(|s| s.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            patch_merge_key: s("x-kubernetes-patch-merge-key").map(str::to_owned),
            list_type: s("x-kubernetes-list-type").and_then(ListType::parse),
            list_map_keys: v
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            map_type: s("x-kubernetes-map-type").and_then(MapType::parse),
        }
    }

    #[must_use]
    pub fn has_strategy(&self, s: &str) -> bool {
        self.patch_strategies.iter().any(|x| x == s)
    }
}

/// A position in a document's schemas: a resolved schema (no `$ref`/`allOf` wrapper left).
#[derive(Debug, Clone, Copy)]
pub struct SchemaNode<'a> {
    schemas: &'a Map<String, Value>,
    schema: &'a Value,
}

impl<'a> SchemaNode<'a> {
    fn resolve(schemas: &'a Map<String, Value>, mut v: &'a Value) -> Self {
        // Follows `allOf[0]` and `$ref`, as kubectl's PatchMetaFromOpenAPIV3 does; bounded
        // so that a malformed document cannot loop.
        for _ in 0..8 {
            if let Some(first) = v.get("allOf").and_then(|a| a.get(0)) {
                v = first;
                continue;
            }
            if let Some(target) = v
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
                .and_then(|n| schemas.get(n))
            {
                v = target;
                continue;
            }
            break;
        }
        Self { schemas, schema: v }
    }

    /// The schema of a named type in the same document.
    #[must_use]
    pub fn named(schemas: &'a Map<String, Value>, name: &str) -> Option<Self> {
        schemas.get(name).map(|s| Self::resolve(schemas, s))
    }

    /// The schema value itself.
    #[must_use]
    pub fn value(&self) -> &'a Value {
        self.schema
    }

    /// A property: its field meta (extensions at the property) and its resolved schema.
    #[must_use]
    pub fn property(&self, name: &str) -> Option<(FieldMeta, SchemaNode<'a>)> {
        let p = self.schema.get("properties")?.get(name)?;
        Some((FieldMeta::read(p), Self::resolve(self.schemas, p)))
    }

    /// Whether the schema declares properties (a struct, as opposed to a map or a scalar).
    #[must_use]
    pub fn has_properties(&self) -> bool {
        self.schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
    }

    /// The item schema of an array.
    #[must_use]
    pub fn items(&self) -> Option<SchemaNode<'a>> {
        self.schema
            .get("items")
            .map(|i| Self::resolve(self.schemas, i))
    }

    /// The value schema of a map (`additionalProperties`).
    #[must_use]
    pub fn additional_properties(&self) -> Option<SchemaNode<'a>> {
        self.schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| Self::resolve(self.schemas, a))
    }

    /// `x-kubernetes-map-type` on the type itself (`atomic` for LabelSelector, ...).
    #[must_use]
    pub fn map_type(&self) -> Option<MapType> {
        self.schema
            .get("x-kubernetes-map-type")
            .and_then(Value::as_str)
            .and_then(MapType::parse)
    }

    /// `type` of the schema, if declared.
    #[must_use]
    pub fn type_name(&self) -> Option<&'a str> {
        self.schema.get("type").and_then(Value::as_str)
    }
}

/// The root schema of a kind at (group, version, kind), in its group version's document.
#[must_use]
pub fn kind_schema(group: &str, version: &str, kind: &str) -> Option<SchemaNode<'static>> {
    let name = extensions::schema_of_gvk(group, version, kind)?;
    if let Some(node) = cached(group, version)
        .and_then(GroupVersionDoc::schemas)
        .and_then(|s| SchemaNode::named(s, name))
    {
        return Some(node);
    }
    // Kinds served only as a subresource (autoscaling/v1 Scale, policy/v1 Eviction) live in
    // the document of the resource that has the subresource.
    let owner = registry::RESOURCES.iter().find(|r| {
        r.subresources
            .iter()
            .any(|s| (s.group, s.version, s.kind) == (group, version, kind))
    })?;
    SchemaNode::named(cached(owner.group, owner.version)?.schemas()?, name)
}

#[cfg(test)]
mod tests;
