"""The official Python Kubernetes client against skiff: create, list, watch, patch.

Usage: client.py KUBECONFIG. Prints one JSON report and exits non-zero on any failure.
"""
import json
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    report = {}

    events = []
    ready = threading.Event()

    def watcher():
        w = watch.Watch()
        ready.set()
        for event in w.stream(
            core.list_namespaced_config_map, "default", label_selector="from=python", timeout_seconds=5
        ):
            events.append((event["type"], event["object"].metadata.name))
            if len(events) >= 3:
                w.stop()

    # Not labelled: the selector of the list and of the watch must leave it out.
    plain = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-plain"), data={"c": "3"})
    core.create_namespaced_config_map("default", plain)

    t = threading.Thread(target=watcher)
    t.start()
    ready.wait()

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"from": "python"}), data={"a": "1"})
    core.create_namespaced_config_map("default", cm)
    core.patch_namespaced_config_map("py-cm", "default", {"data": {"b": "2"}})
    listed = core.list_namespaced_config_map("default", label_selector="from=python")
    report["listed"] = [item.metadata.name for item in listed.items]
    report["data"] = listed.items[0].data

    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")]),
            ),
        ),
    )
    apps.create_namespaced_deployment("default", deployment)
    apps.patch_namespaced_deployment("py-web", "default", {"spec": {"replicas": 3}})
    report["replicas"] = apps.read_namespaced_deployment("py-web", "default").spec.replicas
    core.delete_namespaced_config_map("py-cm", "default")

    t.join(timeout=10)
    report["events"] = events
    print(json.dumps(report))
    ok = (
        report["listed"] == ["py-cm"]
        and report["data"] == {"a": "1", "b": "2"}
        and report["replicas"] == 3
        and [e[0] for e in events[:3]] == ["ADDED", "MODIFIED", "DELETED"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1])
