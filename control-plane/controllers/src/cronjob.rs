//! The cronjob controller: makes a Job named NAME-<scheduled minute in unix minutes> at each
//! scheduled time (standard 5-field cron, `@hourly` and friends, optional `spec.timeZone`), with
//! concurrencyPolicy Allow/Forbid/Replace, startingDeadlineSeconds, suspend and the job history
//! limits; status carries active, lastScheduleTime and lastSuccessfulTime.
//!
//! The schedule parser is our own (upstream's robfig/cron semantics, including "day-of-month OR
//! day-of-week when both are restricted"): a few hundred lines are simpler to keep right than a
//! dependency, and time zones come from jiff, which the workspace already has.
//!
//! What to do at a given moment is decided by [`due`], a pure function of the CronJob and `now`,
//! so the clock is injectable in tests; a missed schedule (lastScheduleTime in the past) is
//! caught up at once, as upstream does.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        batch::v1::{CronJob, Job},
        core::v1::ObjectReference,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{
        SignedDuration, Timestamp, ToSpan as _,
        civil::{Date, DateTime},
        tz::TimeZone,
    },
};
use kube::{
    Api, Resource as _, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{ControllerError, Ctx, events::EventType, pods};

const COMPONENT: &str = "cronjob-controller";
const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this get a warning (upstream's limit).
const TOO_MANY_MISSED: usize = 100;

/// A schedule that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expected exactly 5 fields, found {0}: {1:?}")]
    FieldCount(usize, String),
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    #[error("invalid {field} field {value:?}: {why}")]
    Field {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// One parsed cron field: bit n set means value n matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    /// Written as `*` or `?` (matters for the day-of-month/day-of-week rule).
    star: bool,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A cron schedule in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
    tz: TimeZone,
}

impl Schedule {
    /// Parses `spec` (5 fields or a descriptor such as `@hourly`, optionally prefixed with
    /// `CRON_TZ=Zone` or `TZ=Zone`) in `tz` (UTC when None).
    pub fn parse(spec: &str, tz: Option<&str>) -> Result<Self, ScheduleError> {
        let mut spec = spec.trim();
        let mut zone = tz.map(str::to_owned);
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (name, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                zone = Some(name.to_owned());
                spec = rest.trim();
            }
        }
        let tz = match zone.as_deref() {
            None | Some("") => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.into()))?,
        };
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(ScheduleError::Descriptor(s.into())),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(ScheduleError::FieldCount(fields.len(), spec.into()));
        };
        Ok(Self {
            minute: parse_field(minute, &MINUTE)?,
            hour: parse_field(hour, &HOUR)?,
            dom: parse_field(dom, &DOM)?,
            month: parse_field(month, &MONTH)?,
            dow: parse_field(dow, &DOW)?,
            tz,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.dom.bits & (1 << date.day()) != 0;
        let dow = self.dow.bits & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom.star || self.dow.star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, if any within five years.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(self.tz.clone()).date();
        for offset in 0..(366 * 5) {
            let date = start.checked_add(offset.days()).ok()?;
            if self.month.bits & (1 << date.month()) == 0 || !self.day_matches(date) {
                continue;
            }
            for hour in 0..24i8 {
                if self.hour.bits & (1 << hour) == 0 {
                    continue;
                }
                for minute in 0..60i8 {
                    if self.minute.bits & (1 << minute) == 0 {
                        continue;
                    }
                    let dt =
                        DateTime::new(date.year(), date.month(), date.day(), hour, minute, 0, 0)
                            .ok()?;
                    // In a DST gap the time moves forward, in a fold the first one counts.
                    let Ok(at) = self.tz.to_timestamp(dt) else {
                        continue;
                    };
                    if at > after {
                        return Some(at);
                    }
                }
            }
        }
        None
    }

    /// The latest scheduled time in (earliest, now] and how many there were (a lower bound
    /// once over [`TOO_MANY_MISSED`]).
    pub fn most_recent(&self, earliest: Timestamp, now: Timestamp) -> (Option<Timestamp>, usize) {
        // Look back in growing windows so a schedule missed for months stays cheap.
        for days in [1i64, 3, 63, 800, 2000] {
            let window_start = now
                .checked_sub(SignedDuration::from_hours(24 * days))
                .unwrap_or(earliest);
            let from = window_start.max(earliest);
            let mut latest = None;
            let mut count = 0;
            let mut t = from;
            while let Some(next) = self.next_after(t).filter(|n| *n <= now) {
                latest = Some(next);
                count += 1;
                t = next;
            }
            if latest.is_some() || from == earliest {
                return (latest, count);
            }
        }
        (None, 0)
    }
}

fn parse_field(text: &str, b: &Bounds) -> Result<Field, ScheduleError> {
    let err = |why: String| ScheduleError::Field {
        field: b.name,
        value: text.to_owned(),
        why,
    };
    let value = |s: &str| -> Result<u32, ScheduleError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = b.names.iter().position(|n| *n == lower) {
            return Ok(b.min + u32::try_from(i).unwrap_or(0));
        }
        let v: u32 = s
            .parse()
            .map_err(|_| err(format!("{s:?} is not a number")))?;
        if v < b.min || v > b.max {
            return Err(err(format!("{v} is out of range {}-{}", b.min, b.max)));
        }
        Ok(v)
    };
    let mut field = Field {
        bits: 0,
        star: false,
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| err(format!("bad step {s:?}")))?;
                if step == 0 {
                    return Err(err("step must be positive".into()));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            field.star = true;
            (b.min, b.max)
        } else if let Some((lo, hi)) = range.split_once('-') {
            (value(lo)?, value(hi)?)
        } else {
            let v = value(range)?;
            // "5/15" means from 5 to the end, every 15.
            (v, if step.is_some() { b.max } else { v })
        };
        if lo > hi {
            return Err(err(format!("range start {lo} is beyond its end {hi}")));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            field.bits |= 1 << v;
            v += step;
        }
    }
    Ok(field)
}

/// What a CronJob should do at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The scheduled time to start a job for now, if one is due.
    pub scheduled: Option<Timestamp>,
    /// That time is past `startingDeadlineSeconds`: it is missed, not run.
    pub too_late: bool,
    /// Scheduled times between the last one handled and now.
    pub missed: usize,
    /// The next scheduled time after now (to wake up for).
    pub next: Option<Timestamp>,
}

/// Decides from the schedule, the last time handled (lastScheduleTime or the creation time) and
/// startingDeadlineSeconds.
pub fn due(
    schedule: &Schedule,
    last: Timestamp,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> Due {
    let earliest = match starting_deadline {
        Some(d) => last.max(now - SignedDuration::from_secs(d)),
        None => last,
    };
    let (scheduled, missed) = schedule.most_recent(earliest, now);
    let too_late = match (scheduled, starting_deadline) {
        (Some(t), Some(d)) => t + SignedDuration::from_secs(d) < now,
        _ => false,
    };
    Due {
        scheduled,
        too_late,
        missed,
        next: schedule.next_after(now),
    }
}

/// The Job name upstream gives a run: NAME-<scheduled time in unix minutes>.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            debug!(error = %e, "cronjob reconcile");
        }
    })
    .await;
}

fn error_policy(_cj: Arc<CronJob>, err: &ControllerError, _ctx: Arc<Ctx>) -> Action {
    warn!(error = %err, "cronjob reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// The job's finishing condition type (Complete or Failed), if it finished.
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"].into_iter().find(|t| {
        conditions
            .iter()
            .any(|c| c.type_ == *t && c.status == "True")
    })
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

fn wake_at(next: Option<Timestamp>, now: Timestamp) -> Action {
    match next {
        Some(t) => {
            let ms = (t.as_millisecond() - now.as_millisecond()).max(0) + 100;
            Action::requeue(Duration::from_millis(u64::try_from(ms).unwrap_or(100)))
        }
        None => Action::await_change(),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one pass over the cronjob's state, in upstream's order"
)]
async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let old_status = cj.status.clone().unwrap_or_default();

    let mut owned: Vec<Job> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| pods::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    owned.sort_by_key(|j| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or_else(|| j.metadata.creation_timestamp.clone())
            .map(|t| t.0)
    });

    // Jobs seen finishing since the last pass.
    let was_active: Vec<String> = old_status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    let mut last_successful = old_status.last_successful_time.clone();
    for job in &owned {
        let Some(how) = finished(job) else { continue };
        if how == "Complete"
            && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone())
            && last_successful.as_ref().is_none_or(|t| t.0 < done.0)
        {
            last_successful = Some(done);
        }
        if was_active.contains(&job.name_any()) {
            ctx.events
                .publish(
                    COMPONENT,
                    cj.as_ref(),
                    EventType::Normal,
                    "SawCompletedJob",
                    &format!("Saw completed job: {}, condition: {how}", job.name_any()),
                )
                .await;
        }
    }

    // History limits: the oldest finished jobs beyond them go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = owned.iter().filter(|j| finished(j) == Some(kind)).collect();
        let excess = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        for job in done.into_iter().take(excess) {
            delete_job(&ctx, &jobs, &cj, job).await?;
        }
    }

    let mut active: Vec<Job> = owned
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let mut last_schedule = old_status.last_schedule_time.clone();
    let mut action = Action::await_change();

    let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref());
    match schedule {
        Err(e) => {
            let (reason, message) = match &e {
                ScheduleError::TimeZone(_) => ("UnknownTimeZone", format!("invalid timeZone: {e}")),
                _ => (
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                ),
            };
            ctx.events
                .publish(COMPONENT, cj.as_ref(), EventType::Warning, reason, &message)
                .await;
        }
        Ok(_) if spec.suspend == Some(true) => {}
        Ok(schedule) => {
            let last = last_schedule
                .as_ref()
                .or(cj.metadata.creation_timestamp.as_ref())
                .map_or(now, |t| t.0);
            let d = due(&schedule, last, spec.starting_deadline_seconds, now);
            action = wake_at(d.next, now);
            if d.missed > TOO_MANY_MISSED {
                ctx.events
                    .publish(
                        COMPONENT,
                        cj.as_ref(),
                        EventType::Warning,
                        "TooManyMissedTimes",
                        &format!(
                            "too many missed start times: {}. Set or decrease \
                             .spec.startingDeadlineSeconds or check clock skew",
                            d.missed
                        ),
                    )
                    .await;
            }
            if let Some(t) = d.scheduled {
                let job_name = job_name(&name, t);
                let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                if d.too_late {
                    ctx.events
                        .publish(
                            COMPONENT,
                            cj.as_ref(),
                            EventType::Warning,
                            "MissSchedule",
                            &format!("Missed scheduled time to start a job: {t}"),
                        )
                        .await;
                } else if owned.iter().any(|j| j.name_any() == job_name) {
                    // Already made (our status write was lost, or we raced ourselves).
                    last_schedule = Some(Time(t));
                } else if policy == "Forbid" && !active.is_empty() {
                    ctx.events
                        .publish(
                            COMPONENT,
                            cj.as_ref(),
                            EventType::Normal,
                            "JobAlreadyActive",
                            "Not starting job because prior execution is running and concurrency policy is Forbid",
                        )
                        .await;
                } else {
                    if policy == "Replace" {
                        for job in std::mem::take(&mut active) {
                            delete_job(&ctx, &jobs, &cj, &job).await?;
                        }
                    }
                    let job = new_job(&cj, &job_name, t, &schedule.tz);
                    match jobs.create(&PostParams::default(), &job).await {
                        Ok(created) => {
                            ctx.events
                                .publish(
                                    COMPONENT,
                                    cj.as_ref(),
                                    EventType::Normal,
                                    "SuccessfulCreate",
                                    &format!("Created job {job_name}"),
                                )
                                .await;
                            active.push(created);
                            last_schedule = Some(Time(t));
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            last_schedule = Some(Time(t));
                        }
                        Err(e) => {
                            ctx.events
                                .publish(
                                    COMPONENT,
                                    cj.as_ref(),
                                    EventType::Warning,
                                    "FailedCreate",
                                    &format!("Error creating job: {e}"),
                                )
                                .await;
                            return Err(e.into());
                        }
                    }
                }
            }
        }
    }

    let active_refs: Vec<ObjectReference> = active.iter().map(job_ref).collect();
    let changed = old_status.active.clone().unwrap_or_default() != active_refs
        || old_status.last_schedule_time != last_schedule
        || old_status.last_successful_time != last_successful;
    if changed {
        let body = json!({"status": {
            "active": if active_refs.is_empty() { serde_json::Value::Null } else { json!(active_refs) },
            "lastScheduleTime": last_schedule,
            "lastSuccessfulTime": last_successful,
        }});
        cronjobs
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    Ok(action)
}

fn new_job(cj: &CronJob, name: &str, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_ANNOTATION.to_owned(),
        scheduled.to_zoned(tz.clone()).timestamp().to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: cj.meta().namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![pods::controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn delete_job(
    ctx: &Ctx,
    api: &Api<Job>,
    cj: &CronJob,
    job: &Job,
) -> Result<(), ControllerError> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let name = job.name_any();
    ctx.delete_recorded(
        COMPONENT,
        api,
        &name,
        &dp,
        cj,
        &format!("Deleted job {name}"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        Schedule::parse(spec, None)
            .unwrap()
            .next_after(ts(after))
            .unwrap()
            .to_string()
    }

    #[test]
    fn parses_fields_ranges_steps_lists_and_names() {
        assert_eq!(
            next("* * * * *", "2024-05-01T10:00:30Z"),
            "2024-05-01T10:01:00Z"
        );
        assert_eq!(
            next("* * * * *", "2024-05-01T10:01:00Z"),
            "2024-05-01T10:02:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-05-01T10:01:00Z"),
            "2024-05-01T10:15:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2024-05-01T10:26:00Z"),
            "2024-05-01T10:45:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2024-05-01T13:00:00Z"),
            "2024-05-01T17:00:00Z"
        );
        assert_eq!(
            next("30 2 * * MON-fri", "2024-05-03T03:00:00Z"),
            "2024-05-06T02:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan,Jul *", "2024-02-01T00:00:00Z"),
            "2024-07-01T00:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next("1,2,3 0 * * ?", "2024-05-01T00:02:00Z"),
            "2024-05-01T00:03:00Z"
        );
    }

    #[test]
    fn descriptors_expand() {
        assert_eq!(
            next("@hourly", "2024-05-01T10:00:00Z"),
            "2024-05-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2024-05-01T10:00:00Z"),
            "2024-05-02T00:00:00Z"
        );
        assert_eq!(
            next("@midnight", "2024-05-01T10:00:00Z"),
            "2024-05-02T00:00:00Z"
        );
        // 2024-05-05 is a Sunday.
        assert_eq!(
            next("@weekly", "2024-05-01T10:00:00Z"),
            "2024-05-05T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2024-05-01T10:00:00Z"),
            "2024-06-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-05-01T10:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@annually", "2024-05-01T10:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_set() {
        // The 13th or any Friday (2024-05-03 is a Friday).
        assert_eq!(
            next("0 0 13 * 5", "2024-05-01T00:00:00Z"),
            "2024-05-03T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2024-05-10T00:00:00Z"),
            "2024-05-13T00:00:00Z"
        );
        // A star in one of them means both must match.
        assert_eq!(
            next("0 0 */1 * 5", "2024-05-01T00:00:00Z"),
            "2024-05-03T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_errors_not_panics() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "@every 1h",
            "@reboot",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            Schedule::parse("* * * * *", Some("Mars/Olympus")),
            Err(ScheduleError::TimeZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let berlin = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
        // CEST is UTC+2 in summer, CET UTC+1 in winter.
        assert_eq!(
            berlin
                .next_after(ts("2024-07-01T00:00:00Z"))
                .unwrap()
                .to_string(),
            "2024-07-01T07:00:00Z"
        );
        assert_eq!(
            berlin
                .next_after(ts("2024-01-01T00:00:00Z"))
                .unwrap()
                .to_string(),
            "2024-01-01T08:00:00Z"
        );
        let prefixed = Schedule::parse("CRON_TZ=Europe/Berlin 0 9 * * *", None).unwrap();
        assert_eq!(prefixed, berlin);
    }

    #[test]
    fn due_runs_the_latest_missed_time_with_an_injected_clock() {
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        let created = ts("2024-05-01T10:00:20Z");
        // Not due yet within the first minute.
        let d = due(&every_minute, created, None, ts("2024-05-01T10:00:50Z"));
        assert_eq!(d.scheduled, None);
        assert_eq!(d.next, Some(ts("2024-05-01T10:01:00Z")));
        // Three minutes later: three were missed, the latest is run.
        let now = ts("2024-05-01T10:03:10Z");
        let d = due(&every_minute, created, None, now);
        assert_eq!(d.scheduled, Some(ts("2024-05-01T10:03:00Z")));
        assert_eq!(d.missed, 3);
        assert!(!d.too_late);
        assert_eq!(job_name("backup", d.scheduled.unwrap()), "backup-28575963");
        // Once handled, nothing until the next minute.
        let d = due(&every_minute, ts("2024-05-01T10:03:00Z"), None, now);
        assert_eq!(d.scheduled, None);
        // A deadline shorter than the delay: missed, not run.
        let hourly = Schedule::parse("@hourly", None).unwrap();
        let d = due(
            &hourly,
            ts("2024-05-01T09:30:00Z"),
            Some(60),
            ts("2024-05-01T10:05:00Z"),
        );
        assert_eq!(d.scheduled, None, "outside the deadline window");
        let d = due(
            &hourly,
            ts("2024-05-01T09:30:00Z"),
            Some(600),
            ts("2024-05-01T10:05:00Z"),
        );
        assert_eq!(d.scheduled, Some(ts("2024-05-01T10:00:00Z")));
        // Months of misses stay cheap and are counted as too many.
        let d = due(&every_minute, ts("2024-01-01T00:00:00Z"), None, now);
        assert_eq!(d.scheduled, Some(ts("2024-05-01T10:03:00Z")));
        assert!(d.missed > TOO_MANY_MISSED);
    }
}
