//! kube-rs against skiff's API server: the client and the runtime's watcher work unchanged.

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, Config,
    api::{ListParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use skiff_apiserver::testing::LocalServer;

#[tokio::test]
async fn kube_client_lists_creates_and_watches() {
    let server = LocalServer::start().await.unwrap();
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_owned()), "{names:?}");

    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "one"}, "data": {"a": "b"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = stream.next().await {
            let cm = ev.unwrap();
            if cm.metadata.name.as_deref() == Some("one") {
                return cm;
            }
        }
        panic!("watch ended")
    })
    .await
    .expect("the watcher saw the new ConfigMap");
    assert_eq!(seen.data.unwrap()["a"], "b");
}
