//! Request paths to the resource they address:
//! `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE[/REST...]]]` and the same under
//! `/apis/GROUP/VERSION`, plus the legacy `/watch/` form.

use skiff_api::registry::{self, Resource};

use crate::errors::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// What follows a `proxy` subresource.
    pub rest: Option<String>,
    /// Addressed through the legacy `/watch/` prefix.
    pub watch: bool,
}

/// `(group, version, rest)` of an API path; `None` for non-resource paths.
#[must_use]
pub fn split_group_version(path: &str) -> Option<(&str, &str, &str)> {
    if let Some(rest) = path.strip_prefix("/api/v1") {
        return Some(("", "v1", rest.strip_prefix('/').unwrap_or(rest)));
    }
    let rest = path.strip_prefix("/apis/")?;
    let (group, rest) = rest.split_once('/')?;
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    Some((group, version, rest))
}

pub fn parse(path: &str) -> ApiResult<Option<Target>> {
    let Some((group, version, rest)) = split_group_version(path) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let (watch, rest) = match rest.strip_prefix("watch/") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let lookup = |plural: &str| {
        registry::find(group, version, plural).ok_or_else(|| ApiError::no_route(path))
    };
    let (resource, namespace, tail): (&'static Resource, Option<String>, &[&str]) =
        match segments.as_slice() {
            ["namespaces", ns, plural, tail @ ..]
                if registry::find(group, version, plural).is_some_and(|r| r.namespaced) =>
            {
                (lookup(plural)?, Some((*ns).to_owned()), tail)
            }
            [plural, tail @ ..] => (lookup(plural)?, None, tail),
            [] => return Ok(None),
        };
    let (name, subresource, rest) = match tail {
        [] => (None, None, None),
        [name] => (Some(*name), None, None),
        [name, sub, more @ ..] => {
            if resource.subresource(sub).is_none() {
                return Err(ApiError::no_route(path));
            }
            let rest = (!more.is_empty()).then(|| more.join("/"));
            (Some(*name), Some((*sub).to_owned()), rest)
        }
    };
    if name.is_some_and(str::is_empty) {
        return Err(ApiError::no_route(path));
    }
    // Resource names are the node, pod and service names kubectl proxy passes through; a
    // `name:port` or `scheme:name:port` form only makes sense for proxy.
    Ok(Some(Target {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource,
        rest,
        watch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Target {
        parse(path).unwrap().unwrap()
    }

    #[test]
    fn paths_resolve_to_resources() {
        let p = t("/api/v1/namespaces/default/pods/web-1");
        assert_eq!(
            (p.resource.plural, p.namespace.as_deref(), p.name.as_deref()),
            ("pods", Some("default"), Some("web-1"))
        );
        let all = t("/api/v1/pods");
        assert_eq!((all.namespace, all.name), (None, None));
        let ns = t("/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.resource.plural, ns.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let fin = t("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (fin.resource.plural, fin.subresource.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let scale = t("/apis/apps/v1/namespaces/d/deployments/web/scale");
        assert_eq!(scale.subresource.as_deref(), Some("scale"));
        let proxy = t("/api/v1/namespaces/d/services/web:80/proxy/a/b");
        assert_eq!(
            (proxy.name.as_deref(), proxy.rest.as_deref()),
            (Some("web:80"), Some("a/b"))
        );
        let w = t("/api/v1/watch/namespaces/d/pods");
        assert!(w.watch);
        assert_eq!(
            t("/apis/rbac.authorization.k8s.io/v1/clusterroles/view").namespace,
            None
        );
    }

    #[test]
    fn unknown_things_are_not_found() {
        assert!(parse("/api/v1/namespaces/d/widgets").is_err());
        assert!(parse("/apis/apps/v1/namespaces/d/deployments/web/nope").is_err());
        assert!(parse("/version").unwrap().is_none());
        assert!(parse("/api/v1").unwrap().is_none());
    }
}
