//! What several controllers share about pods: readiness, ownership, label selectors, and making a
//! pod from a template the way kube-controller-manager does.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Pod, PodTemplateSpec},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use kube::Resource;

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Neither finished (Succeeded/Failed) nor being deleted: it counts towards a replica count.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` (blockOwnerDeletion, for foreground deletion).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `labels` match `selector` (matchLabels and matchExpressions; an empty selector
/// matches everything, as in the API).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_labels = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    by_labels
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// A selector that matches nothing: a controller with a malformed selector must not grab pods.
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// The selector in the query-string form list/watch take (`a=b,c in (d,e),!f`).
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// How a pod made from a template is named.
pub enum PodName<'a> {
    /// `generateName: PREFIX` (ReplicaSets, Jobs, DaemonSets): the server appends 5 characters.
    Generate(&'a str),
    /// A fixed name (StatefulSets: NAME-ORDINAL).
    Fixed(String),
}

/// A pod from `template`, owned by `owner`, in `namespace`, with `extra_labels` added.
pub fn from_template(
    template: &PodTemplateSpec,
    owner: OwnerReference,
    namespace: &str,
    name: PodName<'_>,
    extra_labels: &[(&str, &str)],
) -> Pod {
    let source = template.metadata.clone().unwrap_or_default();
    let mut labels = source.labels.unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_owned(), (*v).to_owned());
    }
    let (name, generate_name) = match name {
        PodName::Generate(prefix) => {
            // The API allows 63 characters and the server adds 5 random ones.
            let mut prefix = format!("{prefix}-");
            if prefix.len() > 58 {
                prefix.truncate(58);
            }
            (None, Some(prefix))
        }
        PodName::Fixed(name) => (Some(name), None),
    };
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: source.annotations,
            finalizers: source.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_like_the_api() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(selector_matches(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "b")]))
        ));
        assert!(!selector_matches(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selector_matches(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "a"), ("canary", "")]))
        ));
        assert!(!selector_matches(&selector, None));
        assert_eq!(selector_string(&selector), "app=web,tier in (a,b),!canary");
        assert!(selector_matches(&LabelSelector::default(), None));
        assert!(selector_is_empty(&LabelSelector::default()));
    }

    #[test]
    fn generated_names_leave_room_for_the_suffix() {
        let owner = OwnerReference::default();
        let long = "x".repeat(80);
        let pod = from_template(
            &PodTemplateSpec::default(),
            owner,
            "ns",
            PodName::Generate(&long),
            &[("pod-template-hash", "abc")],
        );
        assert_eq!(pod.metadata.generate_name.unwrap().len(), 58);
        assert_eq!(pod.metadata.labels.unwrap()["pod-template-hash"], "abc");
    }
}
