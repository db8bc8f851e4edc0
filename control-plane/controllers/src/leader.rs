//! Leader election over a coordination.k8s.io Lease, as client-go's leaderelection does it:
//! several servers run side by side and only the holder of the Lease runs the controllers.
//!
//! Expiry is judged by the local clock from when this candidate last *saw the record change*,
//! never by comparing the holder's renewTime with our own clock, so clock skew between servers
//! cannot make two leaders.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Who competes for which Lease, and the timing (client-go's defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops working (before others may take over).
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates retry.
    pub retry_period: Duration,
}

impl Election {
    pub fn new(name: &str, identity: &str) -> Self {
        Self::with_lease_duration(name, identity, Duration::from_secs(15))
    }

    /// Timings scaled from the lease duration the way client-go's defaults relate (2/3, 2/15).
    pub fn with_lease_duration(name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            namespace: "kube-system".to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }
}

/// What this candidate last saw of the Lease, and when.
struct Observed {
    record: (Option<String>, Option<MicroTime>),
    at: Instant,
}

/// Runs `work` whenever this candidate holds the Lease, forever: on losing it (or failing to
/// renew within the deadline) `work` is aborted and the candidate competes again.
pub async fn run_elected<F, Fut>(client: Client, election: Election, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut observed: Option<Observed> = None;
    loop {
        loop {
            match try_acquire_or_renew(&api, &election, &mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => debug!(error = %e, lease = %election.name, "acquiring the lease"),
            }
            tokio::time::sleep(election.retry_period).await;
        }
        info!(lease = %election.name, identity = %election.identity, "became the leader");
        let task = tokio::spawn(work());
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(election.retry_period).await;
            match try_acquire_or_renew(&api, &election, &mut observed).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    warn!(lease = %election.name, "another candidate holds the lease now");
                    break;
                }
                Err(e) => {
                    if renewed.elapsed() > election.renew_deadline {
                        warn!(error = %e, lease = %election.name, "could not renew the lease in time");
                        break;
                    }
                    debug!(error = %e, "renewing the lease; retrying");
                }
            }
        }
        task.abort();
        warn!(lease = %election.name, identity = %election.identity, "stopped leading");
    }
}

/// Takes the Lease if it is free or expired, renews it if it is ours. `Ok(true)` when we hold it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    election: &Election,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let duration_secs = i32::try_from(election.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&election.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(election.name.clone()),
                namespace: Some(election.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(election.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let record = (holder.clone(), spec.renew_time.clone());
    let ours = holder.as_deref() == Some(election.identity.as_str());
    if !ours {
        let changed = observed.as_ref().is_none_or(|o| o.record != record);
        if changed {
            *observed = Some(Observed {
                record,
                at: Instant::now(),
            });
        }
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(0),
        );
        let expired = observed.as_ref().is_some_and(|o| o.at.elapsed() > held_for);
        if holder.is_some() && !expired {
            return Ok(false);
        }
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(election.identity.clone());
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(now);
    // The resourceVersion in `lease` makes this a compare-and-swap: of two candidates taking an
    // expired lease at once, one gets 409.
    match api
        .replace(&election.name, &PostParams::default(), &lease)
        .await
    {
        Ok(written) => {
            if let Some(spec) = written.spec {
                *observed = Some(Observed {
                    record: (spec.holder_identity, spec.renew_time),
                    at: Instant::now(),
                });
            }
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
