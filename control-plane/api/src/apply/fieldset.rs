//! Sets of field paths in Kubernetes' `FieldsV1` encoding: a tree whose keys are path
//! elements (`f:<field>`, `k:<json of the key fields>`, `v:<json value>`, `i:<index>`) and
//! whose `.` key marks a node that is itself in the set and also has children.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A set of paths. The root is never a member itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a path (a list of encoded path elements).
    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        if !path.is_empty() {
            node.member = true;
        }
    }

    /// Whether the set has no paths.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Whether `path` itself is in the set.
    #[must_use]
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether `path` or anything below it is in the set.
    #[must_use]
    pub fn contains_prefix(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for pe in path {
            node = node.children.get(pe)?;
        }
        Some(node)
    }

    /// Removes `path` and everything below it.
    pub fn remove_subtree(&mut self, path: &[String]) {
        let Some((last, parents)) = path.split_last() else {
            *self = Self::default();
            return;
        };
        let mut node = self;
        for pe in parents {
            match node.children.get_mut(pe) {
                Some(n) => node = n,
                None => return,
            }
        }
        node.children.remove(last);
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, o) in &other.children {
            self.children.entry(k.clone()).or_default().union_with(o);
        }
    }

    #[must_use]
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// The paths of `self` that are not in `other`.
    #[must_use]
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, s) in &self.children {
            let child = match other.children.get(k) {
                Some(o) => s.difference(o),
                None => s.clone(),
            };
            if !child.is_empty() {
                out.children.insert(k.clone(), child);
            }
        }
        out
    }

    /// The paths in both.
    #[must_use]
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, s) in &self.children {
            if let Some(o) = other.children.get(k) {
                let child = s.intersection(o);
                if !child.is_empty() {
                    out.children.insert(k.clone(), child);
                }
            }
        }
        out
    }

    /// Every path in the set, parents before children.
    #[must_use]
    pub fn paths(&self) -> Vec<Vec<String>> {
        fn walk(node: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            for (k, child) in &node.children {
                prefix.push(k.clone());
                if child.member {
                    out.push(prefix.clone());
                }
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `FieldsV1` JSON of the set.
    #[must_use]
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (k, child) in &self.children {
            if child.is_empty() {
                continue;
            }
            let mut v = child.to_fields_v1();
            if child.member
                && !child.children.is_empty()
                && let Value::Object(o) = &mut v
            {
                o.insert(".".into(), Value::Object(Map::new()));
            }
            m.insert(k.clone(), v);
        }
        Value::Object(m)
    }

    /// Parses `FieldsV1` JSON; anything that is not an object of objects is ignored.
    #[must_use]
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        let Some(m) = v.as_object() else {
            return out;
        };
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let mut node = FieldSet::from_fields_v1(child);
            let is_leaf = child.as_object().is_some_and(Map::is_empty);
            let has_dot = child.get(".").is_some();
            node.member = is_leaf || has_dot;
            out.children.insert(k.clone(), node);
        }
        out
    }
}

/// `f:<name>`.
#[must_use]
pub fn field(name: &str) -> String {
    format!("f:{name}")
}

/// `v:<json>`.
#[must_use]
pub fn value(v: &Value) -> String {
    format!("v:{v}")
}

/// `k:<json>` of the key fields (serde_json's map orders them by name, as upstream does).
#[must_use]
pub fn key(fields: &Map<String, Value>) -> String {
    format!("k:{}", Value::Object(fields.clone()))
}

/// A path as upstream prints it in conflicts: `.spec.containers[name="nginx"].image`.
#[must_use]
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_else(|_| vec![k.to_owned()]);
            out.push('[');
            out.push_str(&parts.join(","));
            out.push(']');
        } else if let Some(v) = pe.strip_prefix("v:") {
            out.push_str("[=");
            out.push_str(v);
            out.push(']');
        } else if let Some(i) = pe.strip_prefix("i:") {
            out.push('[');
            out.push_str(i);
            out.push(']');
        } else {
            out.push_str(pe);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fields_v1_round_trip_with_dot_members() {
        let v = json!({
            "f:metadata": { "f:labels": { ".": {}, "f:app": {} } },
            "f:spec": {
                "f:replicas": {},
                "f:template": { "f:spec": { "f:containers": {
                    "k:{\"name\":\"nginx\"}": { ".": {}, "f:image": {}, "f:name": {} }
                } } },
            },
        });
        let s = FieldSet::from_fields_v1(&v);
        assert!(s.contains(&p(&["f:metadata", "f:labels"])));
        assert!(!s.contains(&p(&["f:metadata"])));
        assert!(s.contains(&p(&["f:spec", "f:replicas"])));
        assert!(s.contains_prefix(&p(&["f:spec", "f:template"])));
        assert_eq!(s.to_fields_v1(), v);
        assert_eq!(s.paths().len(), 6);
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&p(&["f:spec", "f:replicas"]));
        a.insert(&p(&["f:spec", "f:paused"]));
        let mut b = FieldSet::new();
        b.insert(&p(&["f:spec", "f:replicas"]));
        b.insert(&p(&["f:metadata", "f:labels", "f:x"]));
        assert_eq!(
            a.intersection(&b).paths(),
            vec![p(&["f:spec", "f:replicas"])]
        );
        assert_eq!(a.difference(&b).paths(), vec![p(&["f:spec", "f:paused"])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        let mut c = a.union(&b);
        c.remove_subtree(&p(&["f:spec"]));
        assert_eq!(c.paths(), vec![p(&["f:metadata", "f:labels", "f:x"])]);
        assert!(FieldSet::new().is_empty());
        assert!(FieldSet::from_fields_v1(&json!("junk")).is_empty());
    }

    #[test]
    fn display_like_upstream() {
        assert_eq!(
            display(&p(&[
                "f:spec",
                "f:containers",
                "k:{\"name\":\"nginx\"}",
                "f:image"
            ])),
            ".spec.containers[name=\"nginx\"].image"
        );
        assert_eq!(
            display(&p(&["f:metadata", "f:finalizers", "v:\"a\""])),
            ".metadata.finalizers[=\"a\"]"
        );
    }
}
