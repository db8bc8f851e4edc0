use serde_json::{Value, json};

use super::*;
use crate::registry::{self, RESOURCES};

fn res(group: &str, version: &str, plural: &str) -> &'static Resource {
    registry::find(group, version, plural).unwrap()
}

fn defaulted(resource: &Resource, mut obj: Value) -> Value {
    apply_defaults(resource, &mut obj);
    obj
}

/// `kubectl create deployment web --image=nginx` sends this body (kubectl 1.32, as JSON)...
fn kubectl_create_deployment() -> Value {
    json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
            },
            "strategy": {},
        },
        "status": {},
    })
}

#[test]
fn kubectl_create_deployment_is_stored_as_upstream_stores_it() {
    // ...and kube-apiserver stores (`kubectl get deploy web -o json`, server fields aside):
    let want = json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {
            "progressDeadlineSeconds": 600,
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                "type": "RollingUpdate",
            },
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "image": "nginx",
                        "imagePullPolicy": "Always",
                        "name": "nginx",
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
        "status": {},
    });
    let deployments = res("apps", "v1", "deployments");
    let got = defaulted(deployments, kubectl_create_deployment());
    assert_eq!(got, want);
    assert_eq!(defaulted(deployments, got.clone()), want, "idempotent");
}

#[test]
fn kubectl_run_pod_gets_defaults_and_admission_fields() {
    let pods = res("", "v1", "pods");
    let sent = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "nginx", "creationTimestamp": null, "labels": {"run": "nginx"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"},
        "status": {},
    });
    let want_spec = json!({
        "containers": [{
            "image": "nginx", "imagePullPolicy": "Always", "name": "nginx", "resources": {},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        }],
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
        ],
    });
    let got = defaulted(pods, sent);
    assert_eq!(got["spec"], want_spec);
    assert_eq!(defaulted(pods, got.clone()), got, "idempotent");

    // A toleration the user gave for the same key is kept and not duplicated.
    let own = defaulted(
        pods,
        json!({"spec": {"containers": [], "priorityClassName": "high",
                        "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]}}),
    );
    let keys: Vec<&str> = own["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/not-ready"
        ]
    );
    assert!(
        own["spec"].get("priority").is_none(),
        "Priority resolves a named class"
    );
}

#[test]
fn templates_get_pod_spec_defaults_but_not_pod_only_ones() {
    let got = defaulted(
        res("apps", "v1", "deployments"),
        kubectl_create_deployment(),
    );
    let spec = &got["spec"]["template"]["spec"];
    for pod_only in [
        "enableServiceLinks",
        "serviceAccountName",
        "priority",
        "tolerations",
        "preemptionPolicy",
    ] {
        assert!(spec.get(pod_only).is_none(), "{pod_only}");
    }
}

#[test]
fn image_pull_policy_follows_the_tag() {
    let cases = [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("library/nginx", "Always"),
        ("localhost:5000/app", "Always"),
        ("registry.example.com:5000/team/app:v1", "IfNotPresent"),
        ("registry.example.com:5000/team/app", "Always"),
        (
            "nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
            "IfNotPresent",
        ),
        (
            "nginx:latest@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
            "Always",
        ),
        ("Nginx", "IfNotPresent"),
        ("", "IfNotPresent"),
        (" nginx", "IfNotPresent"),
    ];
    for (image, want) in cases {
        let pod = defaulted(
            res("", "v1", "pods"),
            json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
        );
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"], want,
            "{image:?}"
        );
    }
    let explicit = defaulted(
        res("", "v1", "pods"),
        json!({"spec": {"containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]}}),
    );
    assert_eq!(
        explicit["spec"]["containers"][0]["imagePullPolicy"],
        "Never"
    );
}

#[test]
fn container_details_get_defaults() {
    let pod = defaulted(
        res("", "v1", "pods"),
        json!({"spec": {
            "hostNetwork": true,
            "containers": [{
                "name": "c", "image": "app:1",
                "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}],
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 3, "timeoutSeconds": 0},
                "startupProbe": {"grpc": {"port": 9000}},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}},
            }],
            "volumes": [
                {"name": "scratch"},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "host", "hostPath": {"path": "/var/log"}},
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
            ],
        }}),
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP", "hostPort": 8080},
               {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}])
    );
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
               "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 3);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
    assert_eq!(
        c["startupProbe"]["grpc"],
        json!({"port": 9000, "service": ""})
    );
    assert_eq!(
        c["lifecycle"]["preStop"]["httpGet"],
        json!({"port": 80, "path": "/quit", "scheme": "HTTP"})
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"})
    );
    let v = &pod["spec"]["volumes"];
    assert_eq!(v[0], json!({"name": "scratch", "emptyDir": {}}));
    assert_eq!(v[1]["configMap"]["defaultMode"], 420);
    assert_eq!(v[2]["secret"]["defaultMode"], 256);
    assert_eq!(v[3]["hostPath"]["type"], "");
    assert_eq!(v[4]["projected"]["defaultMode"], 420);
    assert_eq!(
        v[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
    assert_eq!(
        v[4]["projected"]["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
        "v1"
    );
}

#[test]
fn pod_status_ips_mirror_each_other() {
    let pods = res("", "v1", "pods");
    let from_single = defaulted(
        pods,
        json!({"spec": {"containers": []}, "status": {"podIP": "10.0.0.5", "hostIP": "192.168.1.2"}}),
    );
    assert_eq!(from_single["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
    assert_eq!(
        from_single["status"]["hostIPs"],
        json!([{"ip": "192.168.1.2"}])
    );
    let from_list = defaulted(
        pods,
        json!({"spec": {"containers": []}, "status": {"podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}]}}),
    );
    assert_eq!(from_list["status"]["podIP"], "fd00::5");
}

#[test]
fn service_defaults() {
    let svcs = res("", "v1", "services");
    let cluster_ip = defaulted(
        svcs,
        json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"},
               "ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "TCP"}, {"port": 53, "targetPort": 0}]}}),
    );
    assert_eq!(
        cluster_ip["spec"],
        json!({
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"port": 80, "protocol": "TCP", "targetPort": 80},
                {"port": 443, "protocol": "TCP", "targetPort": "https"},
                {"port": 53, "protocol": "TCP", "targetPort": 53},
            ],
            "selector": {"app": "web"},
            "sessionAffinity": "None",
            "type": "ClusterIP",
        })
    );
    assert_eq!(cluster_ip["status"], json!({"loadBalancer": {}}));

    let node_port = defaulted(
        svcs,
        json!({"spec": {"type": "NodePort", "clusterIPs": ["fd00::10"], "ports": [{"port": 80, "nodePort": 30080}],
                        "sessionAffinity": "ClientIP"}}),
    );
    assert_eq!(node_port["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(node_port["spec"]["clusterIP"], "fd00::10");
    assert_eq!(node_port["spec"]["ipFamilies"], json!(["IPv6"]));
    assert_eq!(
        node_port["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );

    let lb = defaulted(
        svcs,
        json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}, {"hostname": "lb.example.com"}]}}}),
    );
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    assert!(
        lb["status"]["loadBalancer"]["ingress"][1]
            .get("ipMode")
            .is_none()
    );

    let external = defaulted(
        svcs,
        json!({"spec": {"type": "ExternalName", "externalName": "db.example.com",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}),
    );
    for absent in [
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
        "clusterIPs",
        "sessionAffinityConfig",
    ] {
        assert!(external["spec"].get(absent).is_none(), "{absent}");
    }
}

#[test]
fn workload_defaults() {
    let sts = defaulted(
        res("apps", "v1", "statefulsets"),
        json!({"spec": {"serviceName": "db", "template": {"spec": {"containers": [{"name": "db", "image": "pg:16"}]}},
               "volumeClaimTemplates": [{"metadata": {"name": "data"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
    );
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["apiVersion"], "v1");
    assert_eq!(claim["kind"], "PersistentVolumeClaim");
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["status"], json!({"phase": "Pending"}));

    let ds = defaulted(
        res("apps", "v1", "daemonsets"),
        json!({"spec": {"template": {"spec": {"containers": []}}}}),
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

    let recreate = defaulted(
        res("apps", "v1", "deployments"),
        json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(recreate["spec"]["replicas"], 0);

    let rs = defaulted(res("apps", "v1", "replicasets"), json!({"spec": {}}));
    assert_eq!(rs["spec"]["replicas"], 1);
    assert_eq!(rs["spec"]["template"]["spec"]["restartPolicy"], "Always");
}

#[test]
fn job_and_cron_job_defaults() {
    let jobs = res("batch", "v1", "jobs");
    let job = defaulted(
        jobs,
        json!({"metadata": {"name": "pi"},
               "spec": {"template": {"metadata": {"labels": {"app": "pi"}},
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34"}]}}}}),
    );
    let spec = &job["spec"];
    assert_eq!(
        (
            &spec["completions"],
            &spec["parallelism"],
            &spec["backoffLimit"],
            &spec["completionMode"],
            &spec["suspend"],
            &spec["podReplacementPolicy"],
        ),
        (
            &json!(1),
            &json!(1),
            &json!(6),
            &json!("NonIndexed"),
            &json!(false),
            &json!("TerminatingOrFailed")
        )
    );
    assert_eq!(job["metadata"]["labels"], json!({"app": "pi"}));
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");

    let parallel = defaulted(
        jobs,
        json!({"metadata": {"labels": {"own": "x"}},
               "spec": {"parallelism": 3, "backoffLimitPerIndex": 1, "completionMode": "Indexed", "completions": 5,
                        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
                        "template": {"metadata": {"labels": {"app": "pi"}}}}}),
    );
    assert_eq!(parallel["spec"]["parallelism"], 3);
    assert_eq!(parallel["spec"]["completions"], 5);
    assert_eq!(parallel["spec"]["backoffLimit"], 2_147_483_647);
    assert_eq!(parallel["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(
        parallel["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );
    assert_eq!(parallel["metadata"]["labels"], json!({"own": "x"}));
    let only_completions = defaulted(jobs, json!({"spec": {"completions": 4}}));
    assert_eq!(only_completions["spec"]["parallelism"], 1);
    assert_eq!(only_completions["spec"]["completions"], 4);

    let cron = defaulted(
        res("batch", "v1", "cronjobs"),
        json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
               "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
    );
    let spec = &cron["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    let job_spec = &spec["jobTemplate"]["spec"];
    assert!(
        job_spec.get("backoffLimit").is_none(),
        "Job defaults stay off the template"
    );
    assert_eq!(
        job_spec["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(
        job_spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
}

#[test]
fn namespace_defaults_add_the_finalizer_only_at_creation() {
    let ns = res("", "v1", "namespaces");
    let created = defaulted(ns, json!({"metadata": {"name": "team-a"}}));
    assert_eq!(
        created,
        json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
               "spec": {"finalizers": ["kubernetes"]},
               "status": {"phase": "Active"}})
    );
    // The namespace controller removed the finalizer; an update must not bring it back.
    let finalized = defaulted(
        ns,
        json!({"metadata": {"name": "team-a", "uid": "u-1", "deletionTimestamp": "2025-01-01T00:00:00Z"},
               "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}),
    );
    assert_eq!(finalized["spec"]["finalizers"], json!([]));
    assert_eq!(finalized["status"]["phase"], "Terminating");
    let existing = defaulted(
        ns,
        json!({"metadata": {"name": "b", "uid": "u-2"}, "spec": {}}),
    );
    assert!(existing["spec"].get("finalizers").is_none());
    let kept = defaulted(
        ns,
        json!({"metadata": {"name": "c"}, "spec": {"finalizers": ["example.com/x"]}}),
    );
    assert_eq!(
        kept["spec"]["finalizers"],
        json!(["example.com/x", "kubernetes"])
    );
}

#[test]
fn secret_defaults_type_and_merges_string_data() {
    let secrets = res("", "v1", "secrets");
    let s = defaulted(
        secrets,
        json!({"metadata": {"name": "s"}, "data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "u": "admin"}}),
    );
    assert_eq!(
        s,
        json!({"metadata": {"name": "s"}, "type": "Opaque",
               "data": {"a": "bmV3", "keep": "eA==", "u": "YWRtaW4="}})
    );
    let typed = defaulted(secrets, json!({"type": "kubernetes.io/tls"}));
    assert_eq!(typed["type"], "kubernetes.io/tls");
}

#[test]
fn other_kind_defaults() {
    let hpa = defaulted(
        res("autoscaling", "v2", "horizontalpodautoscalers"),
        json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
    );
    assert_eq!(
        hpa["spec"]["behavior"],
        json!({
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]},
            "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        })
    );
    let hpa_v1 = defaulted(
        res("autoscaling", "v1", "horizontalpodautoscalers"),
        json!({"spec": {"maxReplicas": 5}}),
    );
    assert_eq!(hpa_v1["spec"], json!({"maxReplicas": 5, "minReplicas": 1}));

    let np = defaulted(
        res("networking.k8s.io", "v1", "networkpolicies"),
        json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}], "egress": [{}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    let ingress_only = defaulted(
        res("networking.k8s.io", "v1", "networkpolicies"),
        json!({"spec": {"podSelector": {}}}),
    );
    assert_eq!(ingress_only["spec"]["policyTypes"], json!(["Ingress"]));

    let rb = defaulted(
        res("rbac.authorization.k8s.io", "v1", "rolebindings"),
        json!({"roleRef": {"kind": "Role", "name": "r"},
               "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "d"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert!(rb["subjects"][1].get("apiGroup").is_none());

    let slice = defaulted(
        res("discovery.k8s.io", "v1", "endpointslices"),
        json!({"addressType": "IPv4", "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
    );
    assert_eq!(
        slice["ports"],
        json!([{"port": 80, "name": "", "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}])
    );
    let ep = defaulted(
        res("", "v1", "endpoints"),
        json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

    let node = defaulted(
        res("", "v1", "nodes"),
        json!({"status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
    );
    assert_eq!(node["status"]["allocatable"], node["status"]["capacity"]);
}

fn samples() -> Vec<Value> {
    vec![
        json!({}),
        json!({"metadata": {"name": "x"}}),
        kubectl_create_deployment(),
        json!({"metadata": {"name": "x"}, "spec": {"type": "NodePort", "ports": [{"port": 80}],
               "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 1}], "livenessProbe": {"exec": {}}}],
               "template": {"spec": {"containers": [{"name": "c"}], "volumes": [{"name": "v"}]}},
               "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}},
               "behavior": {}, "ingress": [{"ports": [{}]}]},
               "status": {"podIP": "10.0.0.1", "capacity": {"cpu": "1"}},
               "stringData": {"k": "v"}, "ports": [{}], "subsets": [{"ports": [{}]}],
               "roleRef": {}, "subjects": [{"kind": "Group", "name": "g"}]}),
        // Wrong types everywhere: left alone, never a panic.
        json!({"metadata": "x", "spec": "x", "status": 1, "stringData": "x", "data": 1}),
        json!({"spec": {"containers": "x", "template": [], "strategy": 3, "ports": [1, null, "x"],
                        "updateStrategy": {"type": 1}, "jobTemplate": {"spec": "x"}, "behavior": []}}),
        json!({"spec": {"containers": [1, null, {"ports": "x", "livenessProbe": [], "resources": {"limits": "x"}}]}}),
        json!("not an object"),
        json!(null),
    ]
}

#[test]
fn defaulting_is_idempotent_and_never_panics_for_every_kind() {
    for r in RESOURCES {
        for sample in samples() {
            let once = defaulted(r, sample.clone());
            let twice = defaulted(r, once.clone());
            assert_eq!(once, twice, "{} {sample}", r.plural);
        }
    }
}

#[test]
fn pods_get_the_service_account_token_volume_unless_they_opt_out() {
    let pod = || {
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [{"name": "a", "image": "i", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
                           {"name": "b", "image": "i"}],
            "volumes": [{"name": "x", "emptyDir": {}}]}})
    };
    let mut p = pod();
    mount_service_account_token(&mut p, None, "abcde");
    let volume = &p["spec"]["volumes"][1];
    assert_eq!(volume["name"], "kube-api-access-abcde");
    let sources = volume["projected"]["sources"].as_array().expect("sources");
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
    for (list, i) in [("initContainers", 0), ("containers", 0), ("containers", 1)] {
        let mounts = p["spec"][list][i]["volumeMounts"]
            .as_array()
            .expect("mounts");
        let last = mounts.last().expect("a mount");
        assert_eq!(last["mountPath"], SERVICE_ACCOUNT_MOUNT, "{list}[{i}]");
        assert_eq!(last["readOnly"], true);
    }
    // Idempotent: a second pass adds nothing.
    let again = {
        let mut q = p.clone();
        mount_service_account_token(&mut q, None, "zzzzz");
        q
    };
    assert_eq!(again, p);

    for (mut p, account) in [
        (
            {
                let mut p = pod();
                p["spec"]["automountServiceAccountToken"] = json!(false);
                p
            },
            None,
        ),
        (pod(), Some(false)),
        (
            {
                let mut p = pod();
                p["spec"]["containers"][1]["volumeMounts"] =
                    json!([{"name": "own", "mountPath": format!("{SERVICE_ACCOUNT_MOUNT}/")}]);
                p
            },
            None,
        ),
    ] {
        let before = p.clone();
        mount_service_account_token(&mut p, account, "abcde");
        assert_eq!(p, before);
    }
    // The pod's own choice wins over its account's.
    let mut p = pod();
    p["spec"]["automountServiceAccountToken"] = json!(true);
    mount_service_account_token(&mut p, Some(false), "abcde");
    assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    // Malformed pods are left alone.
    for mut bad in [
        json!({"spec": "x"}),
        json!(null),
        json!({"spec": {"containers": [1]}}),
    ] {
        mount_service_account_token(&mut bad, None, "abcde");
    }
}
