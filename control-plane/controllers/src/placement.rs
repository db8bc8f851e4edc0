//! Where a pod may run, as upstream's v1helper decides it: taints against tolerations, node
//! selector terms against a node's labels and name. Shared by the DaemonSet and node lifecycle
//! controllers and the scheduler, so all three agree.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

/// Whether `toleration` tolerates `taint` (upstream's `Toleration.ToleratesTaint`): the effect
/// must match when given; an empty key with `Exists` tolerates everything; otherwise the keys
/// match and, for `Equal` (the default), the values.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// One nodeSelectorTerm against a node: expressions on its labels and fields (only
/// `metadata.name`, as upstream) ANDed; an empty term matches nothing.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

/// One requirement against a value (absent: the label is not set). `Gt`/`Lt` compare integers
/// and take exactly one value.
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(int), values) else {
                return false;
            };
            let Some(bound) = int(bound) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.to_owned()),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn tolerations_match_like_upstream() {
        let t = taint("k", "v", "NoSchedule");
        assert!(
            tolerates(&toleration("k", "", "v", ""), &t),
            "Equal is the default"
        );
        assert!(tolerates(&toleration("k", "Exists", "", "NoSchedule"), &t));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "tolerates everything"
        );
        assert!(!tolerates(&toleration("", "Equal", "", ""), &t));
        assert!(!tolerates(&toleration("k", "Equal", "w", ""), &t));
        assert!(!tolerates(&toleration("k", "Exists", "", "NoExecute"), &t));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
    }

    #[test]
    fn terms_and_requirements() {
        let labels: BTreeMap<String, String> = [
            ("zone".to_owned(), "a".to_owned()),
            ("cores".to_owned(), "8".to_owned()),
        ]
        .into();
        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        };
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        assert!(term_matches(
            &term(vec![req("zone", "In", &["a", "b"])], vec![]),
            &labels,
            "n1"
        ));
        assert!(term_matches(
            &term(vec![req("cores", "Gt", &["4"])], vec![]),
            &labels,
            "n1"
        ));
        assert!(!term_matches(
            &term(vec![req("cores", "Lt", &["4"])], vec![]),
            &labels,
            "n1"
        ));
        assert!(!term_matches(
            &term(vec![req("cores", "Gt", &["4", "5"])], vec![]),
            &labels,
            "n1"
        ));
        assert!(term_matches(
            &term(vec![], vec![req("metadata.name", "In", &["n1"])]),
            &labels,
            "n1"
        ));
        assert!(!term_matches(
            &term(vec![], vec![req("metadata.name", "In", &["n2"])]),
            &labels,
            "n1"
        ));
        assert!(
            !term_matches(&term(vec![], vec![]), &labels, "n1"),
            "an empty term"
        );
        assert!(term_matches(
            &term(vec![req("gpu", "DoesNotExist", &[])], vec![]),
            &labels,
            "n1"
        ));
    }
}
