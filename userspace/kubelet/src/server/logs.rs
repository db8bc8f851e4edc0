//! Container logs (`kubectl logs`): the runtime writes each container's output to a file in
//! the CRI format (`TIMESTAMP STREAM TAG CONTENT` per line, tag `P` for a partial line and `F`
//! for the end of one); this reads it back with the options upstream's kubelet takes, and with
//! `follow` keeps streaming until the container stops or the client goes away.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::{Response, StatusCode, body::Frame, header};
use jiff::Timestamp;
use tokio::{
    io::{AsyncReadExt as _, AsyncSeekExt as _},
    sync::mpsc,
};

use super::{Body, Ctx, find_containers, find_sandbox, text};
use crate::{Runtime, cri};

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The options of a log request (the kubelet's query parameters).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Parses a query string; `now` anchors `sinceSeconds`.
    pub fn parse(query: Option<&str>, now: Timestamp) -> Result<Self, String> {
        let mut o = Self::default();
        let flag = |v: &str| matches!(v, "1" | "true" | "True");
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let number = |what: &str| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("{what} must be a non-negative number, not {v:?}"))
            };
            match k.as_ref() {
                "follow" => o.follow = flag(&v),
                "previous" => o.previous = flag(&v),
                "timestamps" => o.timestamps = flag(&v),
                "tailLines" => {
                    o.tail_lines =
                        Some(usize::try_from(number("tailLines")?).unwrap_or(usize::MAX));
                }
                "limitBytes" => {
                    let n = number("limitBytes")?;
                    if n == 0 {
                        return Err("limitBytes must be greater than zero".into());
                    }
                    o.limit_bytes = u64::try_from(n).ok();
                }
                "sinceSeconds" => {
                    let n = number("sinceSeconds")?;
                    o.since = Some(
                        now.checked_sub(jiff::SignedDuration::from_secs(n))
                            .unwrap_or(Timestamp::MIN),
                    );
                }
                "sinceTime" => {
                    o.since = Some(v.parse().map_err(|e| {
                        format!("sinceTime must be an RFC 3339 time, not {v:?}: {e}")
                    })?);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// Turns CRI log lines into what the user sees: content only (with its timestamp when asked),
/// partial lines joined, lines before `since` dropped, output cut at `limit_bytes`.
#[derive(Debug)]
pub struct Formatter {
    timestamps: bool,
    since: Option<Timestamp>,
    remaining: Option<u64>,
    /// A line the runtime split (tag P): its first timestamp and the content so far.
    partial: Option<(String, String)>,
}

impl Formatter {
    pub fn new(o: &LogOptions) -> Self {
        Self {
            timestamps: o.timestamps,
            since: o.since,
            remaining: o.limit_bytes,
            partial: None,
        }
    }

    /// Whether `limit_bytes` has been reached.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// One CRI line (without its newline): the complete output line it finishes, if any.
    /// Malformed lines are passed through as content rather than lost.
    pub fn line(&mut self, raw: &str) -> Option<String> {
        let mut fields = raw.splitn(4, ' ');
        let (ts, _stream, tag, content) =
            match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some(ts), Some(stream), Some(tag), content) if ts.parse::<Timestamp>().is_ok() => {
                    (ts, stream, tag, content.unwrap_or_default())
                }
                _ => ("", "", "F", raw),
            };
        let (first_ts, mut text) = self
            .partial
            .take()
            .unwrap_or_else(|| (ts.to_owned(), String::new()));
        text.push_str(content);
        if tag == "P" {
            self.partial = Some((first_ts, text));
            return None;
        }
        if let (Some(since), Ok(at)) = (self.since, first_ts.parse::<Timestamp>())
            && at < since
        {
            return None;
        }
        let mut out = if self.timestamps && !first_ts.is_empty() {
            format!("{first_ts} {text}\n")
        } else {
            text + "\n"
        };
        if let Some(remaining) = self.remaining.as_mut() {
            let len = out.len() as u64;
            if len > *remaining {
                let mut cut = usize::try_from(*remaining).unwrap_or(0);
                while !out.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.truncate(cut);
            }
            *remaining -= (out.len() as u64).min(*remaining);
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The last `n` lines of `lines` (all of them without `n`).
pub fn tail(lines: Vec<String>, n: Option<usize>) -> Vec<String> {
    match n {
        Some(n) if n < lines.len() => lines[lines.len() - n..].to_vec(),
        _ => lines,
    }
}

pub async fn serve<R: Runtime>(
    ctx: &Ctx<R>,
    ns: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Response<Body> {
    let opts = match LogOptions::parse(query, Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let internal = |e: crate::RuntimeError| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let sandbox = match find_sandbox(ctx.runtime.as_ref(), ns, pod).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{pod} is not on this node"),
            );
        }
        Err(e) => return internal(e),
    };
    let containers = match find_containers(ctx.runtime.as_ref(), &sandbox, container).await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let chosen = if opts.previous {
        containers.get(1)
    } else {
        containers.first()
    };
    let Some(chosen) = chosen else {
        let message = if opts.previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            )
        };
        return text(StatusCode::BAD_REQUEST, message);
    };
    let status = match ctx.runtime.container_status(&chosen.id).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let uid = sandbox
        .labels
        .get(crate::pod::spec::LABEL_POD_UID)
        .map_or("", String::as_str);
    let path = log_file(&ctx.pod_log_dir, ns, pod, uid, &status.log_path);
    let running = status.state == cri::ContainerState::ContainerRunning as i32;
    let follow = opts.follow && running && !opts.previous;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let runtime = std::sync::Arc::clone(&ctx.runtime);
    let id = chosen.id.clone();
    tokio::spawn(async move {
        if let Err(e) = stream(&path, &opts, follow, runtime.as_ref(), &id, &tx).await {
            let _ = tx
                .send(Bytes::from(format!(
                    "error reading {}: {e}\n",
                    path.display()
                )))
                .await;
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), rx))
    }));
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Where a container's log file is: the runtime reports it absolute (containerd) or relative
/// to the pod's log directory (CRI's own convention).
fn log_file(dir: &Path, ns: &str, pod: &str, uid: &str, reported: &str) -> PathBuf {
    let reported = Path::new(reported);
    if reported.is_absolute() {
        reported.to_owned()
    } else {
        dir.join(format!("{ns}_{pod}_{uid}")).join(reported)
    }
}

/// Sends the log's lines to `tx`; with `follow`, keeps reading as the file grows until the
/// container stops running or the receiver is gone.
async fn stream<R: Runtime>(
    path: &Path,
    opts: &LogOptions,
    follow: bool,
    runtime: &R,
    id: &str,
    tx: &mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        // Nothing written yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => {
            tokio::time::sleep(FOLLOW_POLL).await;
            tokio::fs::File::open(path).await?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut fmt = Formatter::new(opts);
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut carry = buf.split_off(complete);
    // The tail is over the whole existing log, so it is formatted before anything is sent.
    let mut lines = Vec::new();
    for raw in String::from_utf8_lossy(&buf).lines() {
        if let Some(out) = fmt.line(raw) {
            lines.push(out);
        }
    }
    let initial = tail(lines, opts.tail_lines).concat();
    if !initial.is_empty() && tx.send(Bytes::from(initial)).await.is_err() {
        return Ok(());
    }
    if !follow {
        return Ok(());
    }
    let mut position = file.stream_position().await?;
    let mut checked = tokio::time::Instant::now();
    loop {
        if fmt.done() || tx.is_closed() {
            return Ok(());
        }
        let mut chunk = Vec::new();
        file.seek(std::io::SeekFrom::Start(position)).await?;
        let n = file.read_to_end(&mut chunk).await?;
        position += n as u64;
        if n == 0 {
            // Stop once the container has exited and everything it wrote was sent.
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = tokio::time::Instant::now();
                let running = runtime
                    .container_status(id)
                    .await
                    .is_ok_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
                if !running {
                    return Ok(());
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            continue;
        }
        carry.extend_from_slice(&chunk);
        let complete = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let rest = carry.split_off(complete);
        let mut out = String::new();
        for raw in String::from_utf8_lossy(&carry).lines() {
            if let Some(line) = fmt.line(raw) {
                out.push_str(&line);
            }
        }
        carry = rest;
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn options_parse_and_bad_ones_are_explained() {
        let o = LogOptions::parse(
            Some("follow=true&tailLines=3&timestamps=1&limitBytes=10&previous=false"),
            now(),
        )
        .expect("valid");
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: false,
                tail_lines: Some(3),
                since: None,
                timestamps: true,
                limit_bytes: Some(10),
            }
        );
        let o = LogOptions::parse(Some("sinceSeconds=60"), now()).expect("valid");
        assert_eq!(o.since, Some("2026-11-27T11:59:00Z".parse().expect("time")));
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceTime=yesterday",
            "sinceSeconds=x",
        ] {
            let e = LogOptions::parse(Some(bad), now()).expect_err(bad);
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn cri_lines_become_user_lines() {
        let mut f = Formatter::new(&LogOptions::default());
        assert_eq!(
            f.line("2026-11-27T12:00:00.000000001Z stdout F hello world")
                .as_deref(),
            Some("hello world\n")
        );
        // A split line comes out whole, once.
        assert_eq!(f.line("2026-11-27T12:00:01Z stdout P hel"), None);
        assert_eq!(
            f.line("2026-11-27T12:00:02Z stdout F lo").as_deref(),
            Some("hello\n")
        );
        // An empty line is still a line.
        assert_eq!(
            f.line("2026-11-27T12:00:03Z stderr F ").as_deref(),
            Some("\n")
        );
        // Something that is not CRI format is passed through, not dropped.
        assert_eq!(f.line("garbage").as_deref(), Some("garbage\n"));
    }

    #[test]
    fn timestamps_since_and_limit() {
        let o = LogOptions {
            timestamps: true,
            since: Some("2026-11-27T12:00:01Z".parse().expect("time")),
            limit_bytes: Some(30),
            ..LogOptions::default()
        };
        let mut f = Formatter::new(&o);
        assert_eq!(f.line("2026-11-27T12:00:00Z stdout F old"), None);
        assert_eq!(
            f.line("2026-11-27T12:00:02Z stdout F new").as_deref(),
            Some("2026-11-27T12:00:02Z new\n")
        );
        // 25 bytes used, 5 left: the next line is cut there and the formatter is done.
        assert_eq!(
            f.line("2026-11-27T12:00:03Z stdout F more").as_deref(),
            Some("2026-")
        );
        assert!(f.done());
        assert_eq!(f.line("2026-11-27T12:00:04Z stdout F none"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let lines = |n: usize| (0..n).map(|i| format!("{i}\n")).collect::<Vec<_>>();
        assert_eq!(tail(lines(5), Some(2)), vec!["3\n", "4\n"]);
        assert_eq!(tail(lines(2), Some(5)).len(), 2);
        assert_eq!(tail(lines(3), Some(0)).len(), 0);
        assert_eq!(tail(lines(3), None).len(), 3);
    }

    #[test]
    fn log_files_are_found_absolute_or_relative() {
        let dir = Path::new("/var/log/pods");
        assert_eq!(
            log_file(dir, "ns", "p", "u1", "app/0.log"),
            Path::new("/var/log/pods/ns_p_u1/app/0.log")
        );
        assert_eq!(
            log_file(dir, "ns", "p", "u1", "/x/app/0.log"),
            Path::new("/x/app/0.log")
        );
    }
}
