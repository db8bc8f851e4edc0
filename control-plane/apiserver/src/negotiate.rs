//! Content negotiation: what a client accepts (Tables, aggregated discovery) and what it sent.

use axum::http::{HeaderMap, header};

/// The `Accept` entries, in the client's order, lower-cased and without spaces.
fn accepts(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase().replace(' ', ""))
        .collect()
}

/// The Table version the client asks for (`v1` or `v1beta1`), if it wants Tables.
#[must_use]
pub fn table_version(headers: &HeaderMap) -> Option<&'static str> {
    for entry in accepts(headers) {
        if entry.contains("as=table") && entry.contains("g=meta.k8s.io") {
            if entry.contains("v=v1beta1") {
                return Some("v1beta1");
            }
            if entry.contains("v=v1") {
                return Some("v1");
            }
        }
    }
    None
}

/// The aggregated discovery version the client prefers (`v2` or `v2beta1`), or `None` for the
/// legacy documents. kubectl 1.27-1.29 only understand v2beta1, 1.30+ prefer v2.
#[must_use]
pub fn discovery_version(headers: &HeaderMap) -> Option<&'static str> {
    for entry in accepts(headers) {
        if entry.contains("as=apigroupdiscoverylist") && entry.contains("g=apidiscovery.k8s.io") {
            if entry.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if entry.contains("v=v2") {
                return Some("v2");
            }
        }
        if entry.starts_with("application/json") || entry == "*/*" {
            return None;
        }
    }
    None
}

/// The request body's media type without parameters; a missing one is JSON, as the Python
/// client sends creates without a Content-Type.
#[must_use]
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || "application/json".to_owned(),
            |v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            },
        )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn h(accept: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        m
    }

    #[test]
    fn kubectl_accept_headers() {
        assert_eq!(
            table_version(&h(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Some("v1")
        );
        assert_eq!(table_version(&h("application/json")), None);
        let v132 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(discovery_version(&h(v132)), Some("v2"));
        let v128 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(discovery_version(&h(v128)), Some("v2beta1"));
        assert_eq!(discovery_version(&h("application/json, */*")), None);
        assert_eq!(content_type(&HeaderMap::new()), "application/json");
    }
}
