//! CNI errors: the spec's well-known codes plus skiff's plugin-specific ones (100+), and the
//! error body the runtime reads from stdout.

use serde::Serialize;

/// An error code from the CNI spec (1-99) or one of skiff-cni's own (100+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the requested `cniVersion` is not one this plugin speaks.
    IncompatibleVersion,
    /// 2: a config field this plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or malformed.
    InvalidEnvironment,
    /// 5: reading or writing files (IPAM state, netns) failed.
    Io,
    /// 6: stdin could not be decoded.
    Decode,
    /// 7: the network configuration is invalid.
    InvalidConfig,
    /// 11: a transient condition; the runtime should retry later.
    TryAgainLater,
    /// 50: the plugin cannot serve ADD requests now.
    NotAvailable,
    /// 51: the plugin cannot serve ADD requests and existing pods may have limited
    /// connectivity.
    LimitedConnectivity,
    /// 100: the address pool has no free address.
    PoolExhausted,
    /// 101: CHECK found the attachment not as ADD left it.
    CheckFailed,
    /// 102: a netlink request the kernel refused.
    Netlink,
}

impl Code {
    /// The number the spec (or skiff) assigns to this code.
    #[must_use]
    pub fn number(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidConfig => 7,
            Self::TryAgainLater => 11,
            Self::NotAvailable => 50,
            Self::LimitedConnectivity => 51,
            Self::PoolExhausted => 100,
            Self::CheckFailed => 101,
            Self::Netlink => 102,
        }
    }
}

/// A failed CNI operation, printed to stdout as the spec's error body.
#[derive(Debug, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// What kind of failure.
    pub code: Code,
    /// A short summary.
    pub msg: String,
    /// The long form: the underlying cause.
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>, details: impl std::fmt::Display) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.to_string(),
        }
    }

    /// The spec's error body: `{cniVersion, code, msg, details}`.
    #[must_use]
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Body {
            cni_version,
            code: self.code.number(),
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_spec_fields() {
        let e = CniError::new(Code::InvalidConfig, "bad subnet", "prefix 33");
        let v = e.to_json("1.1.0");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.1.0", "code": 7, "msg": "bad subnet", "details": "prefix 33"})
        );
        assert_eq!(Code::NotAvailable.number(), 50);
        assert_eq!(Code::TryAgainLater.number(), 11);
    }
}
