//! ClusterRole aggregation (upstream's clusterrole-aggregation controller): a ClusterRole with
//! `aggregationRule.clusterRoleSelectors` gets the union of the rules of the ClusterRoles whose
//! labels match any selector.

use serde_json::Value;

use super::{meta_str, rule::PolicyRule};

/// A parsed `metav1.LabelSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    match_labels: Vec<(String, String)>,
    expressions: Vec<(String, Op, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Parses a selector; `None` if it is malformed (unknown operator, `In` without values,
    /// non-string labels), which upstream rejects too.
    #[must_use]
    pub fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let mut match_labels = Vec::new();
        if let Some(labels) = o.get("matchLabels").filter(|l| !l.is_null()) {
            for (k, v) in labels.as_object()? {
                match_labels.push((k.clone(), v.as_str()?.to_owned()));
            }
        }
        let mut expressions = Vec::new();
        if let Some(exprs) = o.get("matchExpressions").filter(|e| !e.is_null()) {
            for e in exprs.as_array()? {
                let key = e.get("key")?.as_str()?.to_owned();
                let values: Vec<String> = match e.get("values") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(v) => v
                        .as_array()?
                        .iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<_>>()?,
                };
                let op = match e.get("operator")?.as_str()? {
                    "In" => Op::In,
                    "NotIn" => Op::NotIn,
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    _ => return None,
                };
                let needs_values = matches!(op, Op::In | Op::NotIn);
                if needs_values == values.is_empty() {
                    return None;
                }
                expressions.push((key, op, values));
            }
        }
        Some(Self {
            match_labels,
            expressions,
        })
    }

    /// Whether an object's `metadata.labels` match. An empty selector matches everything.
    #[must_use]
    pub fn matches(&self, labels: &serde_json::Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.expressions.iter().all(|(k, op, values)| {
                let has = |v: &str| values.iter().any(|x| x == v);
                match (op, get(k)) {
                    (Op::In, Some(v)) => has(v),
                    (Op::In, None) | (Op::DoesNotExist, Some(_)) | (Op::Exists, None) => false,
                    (Op::NotIn, Some(v)) => !has(v),
                    (Op::NotIn | Op::DoesNotExist, None) | (Op::Exists, Some(_)) => true,
                }
            })
    }
}

/// ClusterRole aggregation. For every ClusterRole with an `aggregationRule`, the rules it
/// should have: for each selector in order, the matching ClusterRoles (itself excluded) by
/// name, their rules in order, each rule once. Aggregated roles feed each other (`admin`
/// selects `edit`, which selects `view`), so this runs to a fixed point over the given roles
/// rather than over their stored rules alone.
///
/// Returns every aggregating ClusterRole with its rules in wire form; the server stores those
/// whose stored rules differ. A role whose aggregationRule has a malformed selector is left
/// out (upstream's controller errors on it and leaves the role alone).
#[must_use]
pub fn aggregate(cluster_roles: &[Value]) -> Vec<(String, Vec<Value>)> {
    struct Role<'a> {
        name: &'a str,
        labels: Option<&'a serde_json::Map<String, Value>>,
        /// None: not aggregating; Some(None): aggregating with a malformed selector.
        selectors: Option<Option<Vec<LabelSelector>>>,
        rules: Vec<PolicyRule>,
    }
    let mut roles: Vec<Role<'_>> = cluster_roles
        .iter()
        .filter(|r| !meta_str(r, "name").is_empty())
        .map(|r| Role {
            name: meta_str(r, "name"),
            labels: r
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object),
            selectors: r.get("aggregationRule").filter(|a| !a.is_null()).map(|a| {
                match a.get("clusterRoleSelectors") {
                    None | Some(Value::Null) => Some(Vec::new()),
                    Some(s) => s
                        .as_array()
                        .and_then(|s| s.iter().map(LabelSelector::from_json).collect()),
                }
            }),
            rules: PolicyRule::list_from(r),
        })
        .collect();
    let mut order: Vec<usize> = (0..roles.len()).collect();
    order.sort_by(|&a, &b| roles[a].name.cmp(roles[b].name));

    // Each pass can only propagate rules one aggregation level further, so as many passes as
    // roles reach the fixed point even through chains; cycles stop there too.
    for _ in 0..=roles.len() {
        let mut changed = false;
        for i in 0..roles.len() {
            let Some(Some(selectors)) = &roles[i].selectors else {
                continue;
            };
            let mut rules: Vec<PolicyRule> = Vec::new();
            for selector in selectors {
                for &j in &order {
                    if j == i || roles[j].name == roles[i].name {
                        continue;
                    }
                    let empty = serde_json::Map::new();
                    if !selector.matches(roles[j].labels.unwrap_or(&empty)) {
                        continue;
                    }
                    for rule in &roles[j].rules {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
            if rules != roles[i].rules {
                roles[i].rules = rules;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    roles
        .iter()
        .filter(|r| matches!(r.selectors, Some(Some(_))))
        .map(|r| {
            (
                r.name.to_owned(),
                r.rules.iter().map(PolicyRule::to_json).collect(),
            )
        })
        .collect()
}
