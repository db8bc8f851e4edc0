//! Conversion between served versions of one kind that share their stored objects:
//! autoscaling/v1 and autoscaling/v2 HorizontalPodAutoscalers.

use serde_json::{Map, Value, json};

/// Converts `obj` to `api_version` in place, if it is stored in another version of a kind
/// that has several. Objects of other kinds are left alone.
pub fn to_version(obj: &mut Value, api_version: &str) {
    let current = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
    if current == api_version || obj["kind"] != "HorizontalPodAutoscaler" {
        return;
    }
    match (current.as_str(), api_version) {
        ("autoscaling/v2", "autoscaling/v1") => hpa_v2_to_v1(obj),
        ("autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(obj),
        _ => return,
    }
    obj["apiVersion"] = json!(api_version);
}

fn cpu_utilization(metrics: &Value) -> Option<Value> {
    metrics.as_array()?.iter().find_map(|m| {
        let resource = &m["resource"];
        (m["type"] == "Resource" && resource["name"] == "cpu")
            .then(|| resource["target"]["averageUtilization"].clone())
            .or_else(|| {
                (resource["name"] == "cpu")
                    .then(|| resource["current"]["averageUtilization"].clone())
            })
            .filter(|v| !v.is_null())
    })
}

fn hpa_v2_to_v1(obj: &mut Value) {
    let spec = obj["spec"].take();
    let mut v1 = Map::new();
    for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if !spec[field].is_null() {
            v1.insert(field.into(), spec[field].clone());
        }
    }
    if let Some(cpu) = cpu_utilization(&spec["metrics"]) {
        v1.insert("targetCPUUtilizationPercentage".into(), cpu);
    }
    obj["spec"] = Value::Object(v1);
    if let Some(status) = obj
        .get_mut("status")
        .map(Value::take)
        .filter(Value::is_object)
    {
        let mut v1 = Map::new();
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if !status[field].is_null() {
                v1.insert(field.into(), status[field].clone());
            }
        }
        if let Some(cpu) = status["currentMetrics"].as_array().and_then(|m| {
            m.iter().find_map(|m| {
                (m["resource"]["name"] == "cpu")
                    .then(|| m["resource"]["current"]["averageUtilization"].clone())
            })
        }) {
            v1.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
        obj["status"] = Value::Object(v1);
    }
}

fn hpa_v1_to_v2(obj: &mut Value) {
    let spec = obj["spec"].take();
    let mut v2 = Map::new();
    for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if !spec[field].is_null() {
            v2.insert(field.into(), spec[field].clone());
        }
    }
    if let Some(cpu) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        v2.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
        );
    }
    obj["spec"] = Value::Object(v2);
    if let Some(status) = obj
        .get_mut("status")
        .map(Value::take)
        .filter(Value::is_object)
    {
        let mut v2 = Map::new();
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if !status[field].is_null() {
                v2.insert(field.into(), status[field].clone());
            }
        }
        if let Some(cpu) = status
            .get("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            v2.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
            );
        }
        obj["status"] = Value::Object(v2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_between_v1_and_v2() {
        let v2 = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}]},
        });
        let mut v1 = v2.clone();
        to_version(&mut v1, "autoscaling/v1");
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 30);
        assert!(v1["spec"].get("metrics").is_none());
        let mut back = v1.clone();
        to_version(&mut back, "autoscaling/v2");
        assert_eq!(back["spec"], v2["spec"]);
        assert_eq!(back["status"], v2["status"]);
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
        to_version(&mut pod, "apps/v1");
        assert_eq!(pod["apiVersion"], "v1", "other kinds are left alone");
    }
}
