//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`, `Impersonate-Extra-*`): which
//! `impersonate` checks a request needs and who it then acts as (upstream's
//! `WithImpersonation` filter).

use std::collections::BTreeMap;

use thiserror::Error;

use super::{
    ANONYMOUS, AUTHENTICATED, Attributes, Decision, RbacSnapshot, SERVICE_ACCOUNT_PREFIX,
    SERVICE_ACCOUNTS_GROUP, UNAUTHENTICATED, UserInfo, service_account_username,
};

/// The `Impersonate-*` headers of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImpersonationRequest {
    /// `Impersonate-User`; "" if absent.
    pub user: String,
    /// `Impersonate-Group`, each occurrence.
    pub groups: Vec<String>,
    /// `Impersonate-Extra-<key>`, key lower-cased and percent-decoded.
    pub extra: BTreeMap<String, Vec<String>>,
    /// `Impersonate-Uid`; "" if absent.
    pub uid: String,
}

/// An impersonation request that cannot be served (400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImpersonationError {
    #[error("requested {what} without impersonating a user")]
    WithoutUser { what: String },
}

/// The checks an impersonating request needs and the user it then acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// One `impersonate` check per impersonated attribute, each authorized for the real user.
    pub checks: Vec<Attributes>,
    /// The user the request acts as once every check is allowed.
    pub user: UserInfo,
}

const USER_HEADER: &str = "impersonate-user";
const GROUP_HEADER: &str = "impersonate-group";
const UID_HEADER: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ImpersonationRequest {
    /// Collects the impersonation headers from `(name, value)` pairs (names in any case);
    /// `None` if there are none.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut req = Self::default();
        let mut any = false;
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if name == USER_HEADER {
                if req.user.is_empty() {
                    req.user = value.to_owned();
                }
            } else if name == GROUP_HEADER {
                req.groups.push(value.to_owned());
            } else if name == UID_HEADER {
                if req.uid.is_empty() {
                    req.uid = value.to_owned();
                }
            } else if let Some(key) = name.strip_prefix(EXTRA_PREFIX) {
                req.extra
                    .entry(percent_decode(key))
                    .or_default()
                    .push(value.to_owned());
            } else {
                continue;
            }
            any = true;
        }
        any.then_some(req)
    }
}

/// A DNS-1123 label, as service account namespaces must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain, as service account names must be.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `system:serviceaccount:NS:NAME` split, if the user name is a valid service account's
/// (upstream `serviceaccount.SplitUsername`).
#[must_use]
pub fn split_service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    (!name.contains(':') && is_dns_label(ns) && is_dns_subdomain(name)).then_some((ns, name))
}

fn check(
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: &str,
    name: &str,
) -> Attributes {
    Attributes::Resource {
        verb: "impersonate".to_owned(),
        group: group.to_owned(),
        version: if group.is_empty() { "" } else { "v1" }.to_owned(),
        resource: resource.to_owned(),
        subresource: subresource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The `impersonate` checks for a request and the user it acts as:
/// - a service account user name: `impersonate` on `serviceaccounts` NAME in NS (core group);
///   without `Impersonate-Group` it gets the service account groups;
/// - another user: `impersonate` on `users` NAME (core group);
/// - each group: `impersonate` on `groups` NAME (core group);
/// - each extra value: `impersonate` on `userextras/<key>` VALUE in `authentication.k8s.io`;
/// - the uid: `impersonate` on `uids` UID in `authentication.k8s.io`.
///
/// A user other than `system:anonymous` gets `system:authenticated` unless the groups
/// already name it or `system:unauthenticated`.
pub fn impersonation_attributes(
    req: &ImpersonationRequest,
) -> Result<Impersonation, ImpersonationError> {
    if req.user.is_empty() {
        let mut what = Vec::new();
        what.extend(req.groups.iter().map(|g| format!("Group {g:?}")));
        for (k, values) in &req.extra {
            what.extend(values.iter().map(|v| format!("UserExtra {k}={v:?}")));
        }
        if !req.uid.is_empty() {
            what.push(format!("UID {:?}", req.uid));
        }
        return Err(ImpersonationError::WithoutUser {
            what: format!("[{}]", what.join(", ")),
        });
    }
    let mut checks = Vec::new();
    let mut groups = req.groups.clone();
    let username = if let Some((ns, name)) = split_service_account(&req.user) {
        checks.push(check("", "serviceaccounts", "", ns, name));
        if req.groups.is_empty() {
            groups = vec![
                SERVICE_ACCOUNTS_GROUP.to_owned(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{ns}"),
            ];
        }
        service_account_username(ns, name)
    } else {
        checks.push(check("", "users", "", "", &req.user));
        req.user.clone()
    };
    for g in &req.groups {
        checks.push(check("", "groups", "", "", g));
    }
    for (key, values) in &req.extra {
        for v in values {
            checks.push(check("authentication.k8s.io", "userextras", key, "", v));
        }
    }
    if !req.uid.is_empty() {
        checks.push(check("authentication.k8s.io", "uids", "", "", &req.uid));
    }
    if username != ANONYMOUS
        && !groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        groups.push(AUTHENTICATED.to_owned());
    }
    Ok(Impersonation {
        checks,
        user: UserInfo {
            username,
            uid: req.uid.clone(),
            groups,
            extra: req.extra.clone(),
        },
    })
}

/// Runs the impersonation checks for `requestor`: the user to act as, or the first denied
/// check's decision (its `denied_message` is the 403 message).
pub fn authorize_impersonation(
    snapshot: &RbacSnapshot,
    requestor: &UserInfo,
    impersonation: &Impersonation,
) -> Result<UserInfo, Decision> {
    for attrs in &impersonation.checks {
        let decision = snapshot.authorize(requestor, attrs);
        if !decision.allowed {
            return Err(decision);
        }
    }
    Ok(impersonation.user.clone())
}
