//! PolicyRule: parsing from stored JSON, matching a request, and coverage (escalation checks).
//! Matching mirrors upstream's `rbac.RuleAllows` and `rbacv1helpers.*Matches`; coverage mirrors
//! `validation.Covers`, `BreakdownRule`, `CompactRules` and `CompactString`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Attributes, go_quote};

/// One `rules[]` entry of a Role or ClusterRole. Empty lists stand for absent fields (upstream
/// compares rules with semantic equality, where nil and empty lists are equal).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// `*`: every verb, group, resource or non-resource URL.
pub const ALL: &str = "*";

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

impl PolicyRule {
    /// Parses a stored rule; `None` if it is malformed (a field that is not a list of
    /// strings). Malformed rules grant nothing.
    #[must_use]
    pub fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        Some(Self {
            verbs: strings(o.get("verbs"))?,
            api_groups: strings(o.get("apiGroups"))?,
            resources: strings(o.get("resources"))?,
            resource_names: strings(o.get("resourceNames"))?,
            non_resource_urls: strings(o.get("nonResourceURLs"))?,
        })
    }

    /// The rules of a Role or ClusterRole object (`rules`), malformed entries left out.
    #[must_use]
    pub fn list_from(obj: &Value) -> Vec<Self> {
        obj.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().filter_map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// The wire form: `verbs` always, the other fields only when non-empty (`omitempty`).
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        let mut put = |key: &str, list: &[String], always: bool| {
            if always || !list.is_empty() {
                o.insert(key.into(), Value::from(list.to_vec()));
            }
        };
        put("verbs", &self.verbs, true);
        put("apiGroups", &self.api_groups, false);
        put("resources", &self.resources, false);
        put("resourceNames", &self.resource_names, false);
        put("nonResourceURLs", &self.non_resource_urls, false);
        Value::Object(o)
    }

    /// Whether this rule allows the request (upstream `RuleAllows`).
    #[must_use]
    pub fn allows(&self, attrs: &Attributes) -> bool {
        match attrs {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                self.verb_matches(verb)
                    && self.group_matches(group)
                    && self.resource_matches(resource, subresource)
                    && self.name_matches(name)
            }
            Attributes::NonResource { verb, path } => {
                self.verb_matches(verb) && self.url_matches(path)
            }
        }
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == ALL || v == verb)
    }

    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == ALL || g == group)
    }

    /// `*`, the exact `resource` or `resource/subresource`, or `*/subresource`. There is no
    /// `pods/*` wildcard upstream: such an entry only matches a literal `pods/*` request.
    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == ALL {
                return true;
            }
            if subresource.is_empty() {
                return r == resource;
            }
            let combined = r.len() == resource.len() + 1 + subresource.len()
                && r.starts_with(resource)
                && r[resource.len()..].starts_with('/')
                && r.ends_with(subresource);
            combined || r.strip_prefix("*/") == Some(subresource)
        })
    }

    /// No names means every name; otherwise the request's name must be listed, so a list,
    /// watch or create without a name never matches a rule with `resourceNames`.
    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    /// `*`, the exact path, or a prefix ending in `*` (`/apis/*` matches `/apis/apps/v1`).
    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls
            .iter()
            .any(|u| u == ALL || u == path || url_prefix_matches(u, path))
    }
}

fn url_prefix_matches(rule_url: &str, path: &str) -> bool {
    rule_url.ends_with('*') && path.starts_with(rule_url.trim_end_matches('*'))
}

/// Whether any of `rules` allows the request.
#[must_use]
pub fn rules_allow(attrs: &Attributes, rules: &[PolicyRule]) -> bool {
    rules.iter().any(|r| r.allows(attrs))
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_owned()]
}

/// Splits a rule into rules of one group, resource, verb and resource name each (one URL and
/// verb for non-resource rules), so each piece is covered whole by a single owner rule or not
/// at all (upstream `BreakdownRule`).
#[must_use]
pub fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    out.extend(rule.resource_names.iter().map(|n| PolicyRule {
                        resource_names: one(n),
                        ..base.clone()
                    }));
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, ALL) || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

fn urls_cover(owner: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|path| {
        owner
            .iter()
            .any(|o| o == path || url_prefix_matches(o, path))
    })
}

/// Whether `owner` covers `sub`, a piece from [`breakdown`] (upstream `ruleCovers`).
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, ALL) || has_all(&owner.api_groups, &sub.api_groups);
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs
        && groups
        && resources_cover(&owner.resources, &sub.resources)
        && names
        && urls_cover(&owner.non_resource_urls, &sub.non_resource_urls)
}

/// Whether `owner` rules cover every permission in `wanted`; the pieces not covered otherwise
/// (upstream `Covers`).
pub fn covers(owner: &[PolicyRule], wanted: &[PolicyRule]) -> Result<(), Vec<PolicyRule>> {
    let missing: Vec<PolicyRule> = wanted
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Merges rules of a single group and resource (and at most one name) that differ only in
/// verbs (upstream `CompactRules`).
#[must_use]
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let is_simple = rule.resource_names.len() <= 1
            && rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !is_simple {
            out.push(rule);
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == rule.api_groups
                && s.resources == rule.resources
                && s.resource_names == rule.resource_names
        }) {
            Some(existing) => existing.verbs.extend(rule.verbs),
            None => simple.push(rule),
        }
    }
    out.extend(simple);
    out
}

fn go_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}`, as escalation errors
/// print a rule (upstream `CompactString`).
#[must_use]
pub fn compact_string(rule: &PolicyRule) -> String {
    let parts: Vec<String> = [
        ("APIGroups", &rule.api_groups),
        ("Resources", &rule.resources),
        ("NonResourceURLs", &rule.non_resource_urls),
        ("ResourceNames", &rule.resource_names),
        ("Verbs", &rule.verbs),
    ]
    .into_iter()
    .filter(|(_, list)| !list.is_empty())
    .map(|(label, list)| format!("{label}:{}", go_list(list)))
    .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The sorted, de-duplicated descriptions of missing rules, one a line.
#[must_use]
pub fn describe_missing(missing: Vec<PolicyRule>) -> String {
    let set: BTreeSet<String> = compact(missing).iter().map(compact_string).collect();
    set.into_iter().collect::<Vec<_>>().join("\n")
}
