//! The real kubectl against `skiff server`, command by command, at two kubectl minors (the
//! machine's kubectl is a dispatcher that runs the kubectl of the server's minor version):
//! 1.32 sends protobuf bodies for typed commands, 1.29 sends JSON and only speaks v2beta1
//! aggregated discovery.

mod common;

use common::ControlPlane;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
        env: [{name: MODE, value: one}, {name: DEBUG, value: \"1\"}]
";

fn workflow(minor: u32) {
    let cp = ControlPlane::start(minor);
    let version = cp.ok(&["version"]);
    assert!(
        version.contains(&format!("Server Version: v1.{minor}.")),
        "{version}"
    );

    // Namespaces and typed creates (protobuf bodies on 1.32+).
    cp.ok(&["create", "namespace", "demo"]);
    let ns = cp.ok(&["get", "namespaces"]);
    assert!(ns.contains("demo") && ns.contains("kube-system"), "{ns}");
    cp.ok(&[
        "-n",
        "demo",
        "create",
        "deployment",
        "hello",
        "--image=busybox",
        "--replicas=2",
    ]);
    let cm_file = cp.file("settings.conf", "color=blue\n");
    cp.ok(&[
        "-n",
        "demo",
        "create",
        "configmap",
        "settings",
        &format!("--from-file={cm_file}"),
        "--from-literal=size=3",
    ]);
    cp.ok(&[
        "-n",
        "demo",
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    cp.ok(&["-n", "demo", "create", "sa", "viewer"]);
    let cm = cp.json(&["-n", "demo", "get", "configmap", "settings"]);
    assert_eq!(cm["data"]["settings.conf"], "color=blue\n");
    assert_eq!(cm["data"]["size"], "3");
    let secret = cp.json(&["-n", "demo", "get", "secret", "creds"]);
    assert_eq!(secret["data"]["password"], "czNjcmV0");
    let hello = cp.json(&["-n", "demo", "get", "deployment", "hello"]);
    assert_eq!(hello["spec"]["replicas"], 2);
    assert_eq!(
        hello["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );

    // Manifests: create -f validates against OpenAPI, apply twice patches strategically.
    let manifest = cp.file("web.yaml", DEPLOYMENT);
    cp.ok(&["create", "-f", &manifest]);
    assert!(
        cp.fails(&["create", "-f", &manifest])
            .contains("already exists")
    );
    let changed = cp.file(
        "web2.yaml",
        &DEPLOYMENT
            .replace("nginx:1.25", "nginx:1.26")
            .replace("replicas: 2", "replicas: 3"),
    );
    cp.ok(&["apply", "-f", &manifest]);
    cp.ok(&["apply", "-f", &changed]);
    let web = cp.json(&["get", "deployment", "web"]);
    assert_eq!(web["spec"]["replicas"], 3);
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Imperative edits.
    cp.ok(&["scale", "deployment", "web", "--replicas=4"]);
    assert_eq!(
        cp.json(&["get", "deployment", "web"])["spec"]["replicas"],
        4,
        "kubectl scale went through the scale subresource"
    );
    cp.ok(&["label", "deployment", "web", "tier=front"]);
    cp.ok(&["annotate", "deployment", "web", "owner=team-a"]);
    cp.ok(&["set", "image", "deployment/web", "nginx=nginx:1.27"]);
    cp.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    cp.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    cp.ok(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","imagePullPolicy":"Always"}]}}}}"#]);
    let web = cp.json(&["get", "deployment", "web"]);
    assert_eq!(web["spec"]["replicas"], 5);
    assert_eq!(web["metadata"]["labels"]["tier"], "front");
    assert_eq!(web["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(web["spec"]["minReadySeconds"], 5);
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (
            container["image"].as_str(),
            container["imagePullPolicy"].as_str()
        ),
        (Some("nginx:1.27"), Some("Always"))
    );
    assert_eq!(
        container["ports"][0]["containerPort"], 80,
        "a strategic patch keeps the rest of the container"
    );
    let editor = cp.file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 6/' \"$1\"\n",
    );
    std::process::Command::new("chmod")
        .args(["+x", &editor])
        .status()
        .unwrap();
    let out = cp
        .kubectl(&["edit", "deployment", "web"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cp.json(&["get", "deployment", "web"])["spec"]["replicas"],
        6
    );

    // Services.
    cp.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=80",
        "--type=NodePort",
    ]);
    let svc = cp.json(&["get", "service", "web"]);
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.")
    );
    assert_eq!(svc["spec"]["selector"]["app"], "web");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP", "defaulted");

    // Server-side apply, and dry runs.
    let cm = cp.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: \"1\"}\n",
    );
    cp.ok(&["apply", "--server-side", "-f", &cm]);
    let ssa = cp.json(&["get", "configmap", "ssa", "--show-managed-fields"]);
    assert_eq!(ssa["metadata"]["managedFields"][0]["manager"], "kubectl");
    cp.ok(&["run", "probe", "--image=busybox", "--dry-run=server"]);
    assert!(cp.fails(&["get", "pod", "probe"]).contains("not found"));

    // Reading: tables, wide, all namespaces, yaml, describe, explain, api-resources.
    let table = cp.ok(&["get", "deployments"]);
    assert!(
        table.starts_with("NAME") && table.contains("READY") && table.contains("UP-TO-DATE"),
        "{table}"
    );
    let wide = cp.ok(&["get", "deployments", "-o", "wide"]);
    assert!(
        wide.contains("IMAGES") && wide.contains("nginx:1.27"),
        "{wide}"
    );
    let all_ns = cp.ok(&["get", "deployments", "--all-namespaces"]);
    assert!(
        all_ns.contains("NAMESPACE") && all_ns.contains("demo") && all_ns.contains("hello"),
        "{all_ns}"
    );
    let all = cp.ok(&["get", "all"]);
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );
    assert!(
        cp.ok(&["get", "deployment", "web", "-o", "yaml"])
            .contains("kind: Deployment")
    );
    let described = cp.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("Replicas:") && described.contains("nginx:1.27"),
        "{described}"
    );
    let explained = cp.ok(&["explain", "pods.spec.containers"]);
    assert!(explained.contains("imagePullPolicy"), "{explained}");
    let recursive = cp.ok(&["explain", "deployment.spec", "--recursive"]);
    assert!(recursive.contains("revisionHistoryLimit"), "{recursive}");
    let resources = cp.ok(&["api-resources"]);
    assert!(
        resources.contains("deployments")
            && resources.contains("deploy")
            && resources.contains("apps/v1"),
        "{resources}"
    );
    cp.ok(&["get", "pods", "-o", "wide", "--all-namespaces"]);
    assert!(
        cp.kubectl(&["get", "nodes"])
            .output()
            .unwrap()
            .status
            .success(),
        "no nodes yet, but a valid answer"
    );

    // Watching: `get -w` prints the change as it happens.
    let mut watch = cp.kubectl(&["get", "configmaps", "-w"]);
    watch.stdout(std::process::Stdio::piped());
    let mut watcher = skiff_test_support::ChildGuard::spawn(watch, "kubectl get -w");
    let stdout = watcher.child().stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("watched") {
                let _ = seen_tx.send(line);
                return;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    cp.ok(&["create", "configmap", "watched", "--from-literal=x=y"]);
    let line = seen_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("kubectl get -w printed the new configmap");
    assert!(line.starts_with("watched"), "{line}");
    drop(watcher);

    // Rollout history and undo (the API side: revisions are ReplicaSets, undo a JSON patch).
    rollout(&cp);

    // Deleting.
    cp.ok(&["delete", "deployment", "hello", "-n", "demo"]);
    assert!(
        cp.fails(&["get", "deployment", "hello", "-n", "demo"])
            .contains("not found")
    );
    cp.ok(&["delete", "namespace", "demo"]);
    assert!(
        cp.fails(&["get", "namespace", "demo"])
            .contains("not found")
    );
}

/// Two ReplicaSets of `web` stand for two rollouts; `rollout undo` puts the first template back.
fn rollout(cp: &ControlPlane) {
    let web = cp.json(&["get", "deployment", "web"]);
    let uid = web["metadata"]["uid"].as_str().unwrap().to_owned();
    for (revision, image, hash) in [
        ("1", "nginx:1.25", "aaaa1111"),
        ("2", "nginx:1.27", "bbbb2222"),
    ] {
        let rs = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("web-{hash}"),
                "labels": {"app": "web", "pod-template-hash": hash},
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid, "controller": true}],
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
                "template": {
                    "metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                    "spec": {"containers": [{"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]},
                },
            },
        });
        let file = cp.file(&format!("rs-{revision}.json"), &rs.to_string());
        cp.ok(&["create", "-f", &file]);
    }
    let history = cp.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("REVISION") && history.contains('1') && history.contains('2'),
        "{history}"
    );
    cp.ok(&["rollout", "undo", "deployment/web", "--to-revision=1"]);
    let web = cp.json(&["get", "deployment", "web"]);
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25",
        "undone to revision 1"
    );
}

#[test]
fn kubectl_1_32_workflow() {
    workflow(32);
}

#[test]
fn kubectl_1_29_workflow() {
    workflow(29);
}
