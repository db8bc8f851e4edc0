//! The result a successful ADD prints (and that arrives back as `prevResult`), the VERSION
//! answer, and the conflist-to-plugin-config step a runtime performs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    config::{SUPPORTED_VERSIONS, version_at_least},
    error::{CniError, Code, Result},
};

/// A CNI result (the 0.3.0+ shape). Addresses stay strings so that a prevResult from another
/// plugin (IPv6, extra fields) passes through this plugin unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container-side interfaces; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// 0.3.x and 0.4.0 results carry the family ("4"); 1.0.0 dropped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation, e.g. `10.244.1.2/32`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

impl CniResult {
    /// Re-labels the result for `version`, adding or dropping the per-IP family field the
    /// pre-1.0 formats had.
    #[must_use]
    pub fn for_version(mut self, version: &str) -> Self {
        let old = !version_at_least(version, "1.0.0");
        for ip in &mut self.ips {
            ip.version = old.then(|| if ip.address.contains(':') { "6" } else { "4" }.to_owned());
        }
        self.cni_version = version.to_owned();
        self
    }
}

/// VERSION's answer.
#[must_use]
pub fn version_result(requested: &str) -> Value {
    let version = if SUPPORTED_VERSIONS.contains(&requested) {
        requested
    } else {
        crate::config::LATEST_VERSION
    };
    serde_json::json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})
}

/// What a runtime does with a conflist before it execs plugin `index`: copy the plugin's
/// object, inject the list's `name` and `cniVersion`, and add the previous result. Test
/// runtimes (and the agent's own conflist checks) use this.
pub fn plugin_config(list: &Value, index: usize, prev_result: Option<&Value>) -> Result<Value> {
    let invalid = |d: &str| CniError::new(Code::InvalidConfig, "invalid conflist", d);
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no plugins array"))?;
    let mut conf = plugins
        .get(index)
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| invalid("no such plugin"))?;
    for key in ["name", "cniVersion"] {
        let v = list
            .get(key)
            .cloned()
            .ok_or_else(|| invalid(&format!("conflist has no {key}")))?;
        conf.insert(key.to_owned(), v);
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".to_owned(), prev.clone());
    }
    Ok(Value::Object(conf))
}

/// The version a 1.1 runtime picks from a conflist's `cniVersions` (newest it and this
/// plugin both know), falling back to the list's `cniVersion`.
#[must_use]
pub fn negotiate_list_version(list: &Value) -> Option<String> {
    let listed = list
        .get("cniVersions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max_by(|a, b| {
            if version_at_least(a, b) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Less
            }
        });
    listed
        .or_else(|| list.get("cniVersion").and_then(Value::as_str))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "skf0123".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/p".into()),
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: "10.244.1.2/32".into(),
                gateway: Some("169.254.1.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("169.254.1.1".into()),
            }],
            dns: None,
        }
    }

    #[test]
    fn result_serializes_in_the_spec_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "skf0123", "mac": "02:00:00:00:00:01", "mtu": 1500},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "mtu": 1500, "sandbox": "/run/netns/p"}
                ],
                "ips": [{"address": "10.244.1.2/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
            })
        );
        let old = serde_json::to_value(sample().for_version("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        let back: CniResult = serde_json::from_value(old).unwrap();
        assert_eq!(back.for_version("1.1.0"), sample());
    }

    #[test]
    fn foreign_prev_results_round_trip() {
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "x", "socketPath": "/s"}],
            "ips": [{"address": "fd00::2/64"}], "dns": {"nameservers": ["1.1.1.1"]}});
        let r: CniResult = serde_json::from_value(prev).unwrap();
        assert_eq!(r.ips[0].address, "fd00::2/64");
        assert_eq!(r.dns, Some(json!({"nameservers": ["1.1.1.1"]})));
    }

    #[test]
    fn version_answer_lists_everything() {
        let v = version_result("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(version_result("7.0.0")["cniVersion"], "1.1.0");
    }

    #[test]
    fn conflist_becomes_plugin_configs() {
        let list = json!({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.1.0", "2.0.0"], "name": "skiff",
            "plugins": [{"type": "skiff-cni", "mtu": 1400}, {"type": "portmap", "capabilities": {"portMappings": true}}]});
        assert_eq!(negotiate_list_version(&list).as_deref(), Some("1.1.0"));
        let first = plugin_config(&list, 0, None).unwrap();
        assert_eq!(
            first,
            json!({"type": "skiff-cni", "mtu": 1400, "name": "skiff", "cniVersion": "1.0.0"})
        );
        let prev = json!({"cniVersion": "1.0.0"});
        let second = plugin_config(&list, 1, Some(&prev)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            plugin_config(&list, 2, None).unwrap_err().code,
            Code::InvalidConfig
        );
    }
}
