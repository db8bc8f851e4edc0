//! Fills a `DnsCache` from the API server with kube-runtime watchers.

use std::fmt::Debug;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt as _, watcher},
};
use serde::de::DeserializeOwned;

use crate::{cache::DnsCache, config::PodRecords, error::DnsError};

/// Watches Services and EndpointSlices (and Pods when `pod_records` is Verified) in all
/// namespaces and keeps `cache` in step. Relists replace the cache's contents atomically on
/// `InitDone`; errors are retried with kube's default backoff. Runs until the task is dropped.
pub async fn watch(
    client: Client,
    cache: DnsCache,
    pod_records: PodRecords,
) -> Result<(), DnsError> {
    let services = {
        let (apply, delete, replace) = (cache.clone(), cache.clone(), cache.clone());
        watch_kind::<Service>(
            client.clone(),
            "Service",
            move |s| apply.apply_service(s),
            move |s| delete.delete_service(s),
            move |all| replace.replace_services(all),
        )
    };
    let slices = {
        let (apply, delete, replace) = (cache.clone(), cache.clone(), cache.clone());
        watch_kind::<EndpointSlice>(
            client.clone(),
            "EndpointSlice",
            move |s| apply.apply_endpoint_slice(s),
            move |s| delete.delete_endpoint_slice(s),
            move |all| replace.replace_endpoint_slices(all),
        )
    };
    let pods = async {
        if pod_records != PodRecords::Verified {
            return std::future::pending().await;
        }
        let apply = cache.clone();
        let delete = cache.clone();
        let replace = cache.clone();
        watch_kind::<Pod>(
            client.clone(),
            "Pod",
            move |p| apply.apply_pod(p),
            move |p| delete.delete_pod(p),
            move |all| replace.replace_pods(all),
        )
        .await
    };
    tokio::try_join!(services, slices, pods).map(|_| ())
}

async fn watch_kind<K>(
    client: Client,
    kind: &'static str,
    apply: impl Fn(&K),
    delete: impl Fn(&K),
    replace: impl Fn(&[K]),
) -> Result<(), DnsError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api: Api<K> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .into_stream()
        .boxed();
    // Objects of a (re)list, swapped in at once so a relist never shows a half-empty cache.
    let mut buffer: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(obj)) => apply(&obj),
            Ok(watcher::Event::Delete(obj)) => delete(&obj),
            Ok(watcher::Event::Init) => buffer.clear(),
            Ok(watcher::Event::InitApply(obj)) => buffer.push(obj),
            Ok(watcher::Event::InitDone) => {
                replace(&buffer);
                tracing::debug!(kind, count = buffer.len(), "DNS cache listed");
                buffer = Vec::new();
            }
            Err(e) => tracing::warn!(kind, error = %e, "DNS watch failed; retrying"),
        }
    }
    Err(DnsError::WatchEnded { kind })
}
