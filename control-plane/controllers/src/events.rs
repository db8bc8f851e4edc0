//! Events as `kubectl describe` shows them: core/v1 Events about an object, a repeat of the same
//! event counted on the existing one instead of piling up new objects (like client-go's recorder).

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{debug, warn};

/// Normal or Warning, as Kubernetes spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    component: &'static str,
    kind: EventType,
    reason: String,
    message: String,
}

/// How many distinct events are remembered for counting repeats; beyond it the memory is
/// dropped (a repeat then starts a new Event, which is only cosmetic).
const REMEMBERED: usize = 4096;

/// Posts Events; never fails the caller (an event that cannot be written is logged).
pub struct Recorder {
    client: Client,
    /// (Event namespace, Event name, count) of each event recently written.
    seen: Mutex<HashMap<Key, (String, String, i32)>>,
}

impl Recorder {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event about `object` from `component` (e.g. "deployment-controller").
    pub async fn publish<K>(
        &self,
        component: &'static str,
        object: &K,
        kind: EventType,
        reason: &str,
        message: &str,
    ) where
        K: Resource<DynamicType = ()>,
    {
        self.publish_ref(component, &object.object_ref(&()), kind, reason, message)
            .await;
    }

    /// As [`Recorder::publish`], for an object known only by its reference.
    pub async fn publish_ref(
        &self,
        component: &'static str,
        involved: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let key = Key {
            uid: involved.uid.clone().unwrap_or_default(),
            component,
            kind,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        let now = Timestamp::now();
        let repeat = self.lock().get(&key).cloned();
        if let Some((namespace, name, count)) = repeat {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({"count": count + 1, "lastTimestamp": Time(now)});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.lock().insert(key, (namespace, name, count + 1));
                    return;
                }
                Err(e) => {
                    debug!(error = %e, event = %name, "updating a repeated event; writing a new one");
                }
            }
        }
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let name = format!(
            "{}.{:x}",
            involved.name.as_deref().unwrap_or("unknown"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: involved.clone(),
            type_: Some(kind.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            source: Some(EventSource {
                component: Some(component.to_owned()),
                host: None,
            }),
            reporting_component: Some(component.to_owned()),
            reporting_instance: Some(component.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_owned()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut seen = self.lock();
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(key, (namespace, name, 1));
            }
            Err(e) => warn!(error = %e, reason, "writing an event"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (String, String, i32)>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep using it.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
