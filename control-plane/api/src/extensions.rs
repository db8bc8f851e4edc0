//! The team's table of the `x-kubernetes-*` facts kubectl and the server rely on, keyed by
//! (schema name, field): patch strategies and merge keys (strategic merge patch), list types
//! and list-map keys (server-side apply), map types, and the group-version-kind of every
//! served kind's schema. Written by hand from the Kubernetes API types (v1.33); k8s-openapi's
//! schemars output carries none of them, so [`crate::openapi`] inserts them from here.

mod table;

pub use table::{FIELDS, KINDS, TYPES};

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value: replaced whole, owned whole.
    Atomic,
    /// Scalars, merged as a set.
    Set,
    /// Objects keyed by `x-kubernetes-list-map-keys`.
    Map,
}

impl ListType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Atomic => "atomic",
            Self::Set => "set",
            Self::Map => "map",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "atomic" => Some(Self::Atomic),
            "set" => Some(Self::Set),
            "map" => Some(Self::Map),
            _ => None,
        }
    }
}

/// `x-kubernetes-map-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// Replaced and owned whole.
    Atomic,
    /// Each key separately (the default).
    Granular,
}

impl MapType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Atomic => "atomic",
            Self::Granular => "granular",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "atomic" => Some(Self::Atomic),
            "granular" => Some(Self::Granular),
            _ => None,
        }
    }
}

/// The extensions of one property of one schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldExt {
    /// Upstream schema name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub schema: &'static str,
    /// JSON field name, e.g. `containers`.
    pub field: &'static str,
    /// `x-kubernetes-patch-strategy`: `merge`, `replace`, `retainKeys` or `merge,retainKeys`.
    pub patch_strategy: Option<&'static str>,
    /// `x-kubernetes-patch-merge-key`.
    pub patch_merge_key: Option<&'static str>,
    pub list_type: Option<ListType>,
    /// `x-kubernetes-list-map-keys` (for `list_type == Some(Map)`).
    pub list_map_keys: &'static [&'static str],
    pub map_type: Option<MapType>,
}

/// `x-kubernetes-map-type` of a whole type (`+structType=atomic`, `+mapType=atomic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeExt {
    pub schema: &'static str,
    pub map_type: MapType,
}

/// A group, version and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

/// The schema that describes a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSchema {
    pub gvk: Gvk,
    pub schema: &'static str,
}

/// The extensions of `schema.field`.
#[must_use]
pub fn field_ext(schema: &str, field: &str) -> Option<&'static FieldExt> {
    FIELDS
        .iter()
        .find(|f| f.schema == schema && f.field == field)
}

/// The map type of a whole type.
#[must_use]
pub fn type_ext(schema: &str) -> Option<&'static TypeExt> {
    TYPES.iter().find(|t| t.schema == schema)
}

/// The schema name of a kind.
#[must_use]
pub fn schema_of_gvk(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|k| k.gvk.group == group && k.gvk.version == version && k.gvk.kind == kind)
        .map(|k| k.schema)
}

/// The group-version-kind a schema describes: a kind's schema, or its list's
/// (`io.k8s.api.core.v1.PodList` → v1 `PodList`).
#[must_use]
pub fn gvk_of_schema(schema: &str) -> Option<GvkOwned> {
    if let Some(k) = KINDS.iter().find(|k| k.schema == schema) {
        return Some(GvkOwned::from(k.gvk));
    }
    let item = schema.strip_suffix("List")?;
    let k = KINDS.iter().find(|k| k.schema == item)?;
    // Only kinds that are stored have lists.
    crate::registry::RESOURCES
        .iter()
        .any(|r| {
            r.is_stored()
                && (r.group, r.version, r.kind) == (k.gvk.group, k.gvk.version, k.gvk.kind)
        })
        .then(|| GvkOwned {
            group: k.gvk.group.to_owned(),
            version: k.gvk.version.to_owned(),
            kind: format!("{}List", k.gvk.kind),
        })
}

/// A group-version-kind with an owned kind (list kinds are derived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GvkOwned {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl From<Gvk> for GvkOwned {
    fn from(g: Gvk) -> Self {
        Self {
            group: g.group.to_owned(),
            version: g.version.to_owned(),
            kind: g.kind.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
