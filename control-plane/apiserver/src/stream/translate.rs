//! The two translations: WebSocket channel protocol <-> SPDY remotecommand v4 (exec/attach), and
//! WebSocket binary messages <-> raw bytes (port-forward's tunneled SPDY).

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Bytes, Message,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tracing::debug;

use super::{
    ExecStreams, StreamError,
    spdy::{FLAG_FIN, Frame, FrameReader, FrameWriter, Headers, MAX_DATA_LEN, RST_REFUSED_STREAM},
};

const CHANNEL_STDIN: u8 = 0;
const CHANNEL_STDOUT: u8 = 1;
const CHANNEL_STDERR: u8 = 2;
const CHANNEL_ERROR: u8 = 3;
const CHANNEL_RESIZE: u8 = 4;
/// v5.channel.k8s.io: `[255, channel]` half-closes that channel (only stdin means anything).
const CHANNEL_CLOSE: u8 = 255;

/// kubectl's stdin chunks are 32 KiB; a message this large is already unusual.
const EXEC_MAX_MESSAGE: usize = 1 << 20;
/// Tunneled SPDY writes are at most one frame: a 24-bit DATA payload plus its head.
const TUNNEL_MAX_MESSAGE: usize = MAX_DATA_LEN + 64;
const TUNNEL_READ_CHUNK: usize = 32 << 10;
/// The status on the error stream is one metav1.Status.
const MAX_STATUS: usize = 64 << 10;
/// Upstream's translator pings the kubelet this often, keeping idle sessions alive.
const PING_PERIOD: Duration = Duration::from_secs(5);
/// client-go waits this long for each SYN_REPLY.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing handshakes and the SPDY teardown may take once one side is done.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Frames received while the streams are still being created are replayed afterwards; this
/// bounds them (an early status is the only data expected then).
const MAX_PENDING_FRAMES: usize = 64;
const MAX_PENDING_BYTES: usize = MAX_STATUS;

const SUCCESS_STATUS: &[u8] = br#"{"metadata":{},"status":"Success"}"#;

fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// A metav1.Status for a translation failure, as upstream's StreamTranslatorProxy reports it.
fn failure_status(err: &StreamError) -> Vec<u8> {
    let message = err.to_string();
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }))
    .unwrap_or_else(|_| b"{}".to_vec())
}

/// Whether a websocket read error only means the client went away.
fn client_gone(e: &tungstenite::Error) -> bool {
    matches!(
        e,
        tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Io(_)
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            )
    )
}

/// The SPDY stream ids of one exec session.
#[derive(Debug, Default)]
struct ExecIds {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

/// Translates a WebSocket exec/attach session (`client`, already upgraded with `protocol`, one
/// of [`super::EXEC_WS_PROTOCOLS`]) into remotecommand v4 over the SPDY connection `kubelet`
/// (already upgraded), as upstream's StreamTranslatorProxy does.
///
/// The apiserver is the SPDY client: it opens the error stream, then stdin, stdout, stderr and
/// resize as requested, each after the previous one is accepted. Output goes to the client
/// with its channel byte; when the exec ends, the status from the error stream (or a Success
/// status, when the kubelet sent none) goes on channel 3 and the WebSocket closes normally.
/// When the client leaves first, stdin is half-closed and the SPDY session is ended.
pub async fn websocket_to_spdy_exec<C, K>(
    client: C,
    protocol: &str,
    kubelet: K,
    streams: ExecStreams,
) -> Result<(), StreamError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    K: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let close_signal = match protocol {
        "v5.channel.k8s.io" => true,
        "v4.channel.k8s.io" => false,
        other => return Err(StreamError::UnsupportedProtocol(other.to_owned())),
    };
    let ws =
        WebSocketStream::from_raw_socket(client, Role::Server, Some(ws_config(EXEC_MAX_MESSAGE)))
            .await;
    let (mut ws_tx, mut ws_rx) = ws.split();

    let (kr, kw) = tokio::io::split(kubelet);
    let mut reader = FrameReader::new(BufReader::new(kr));
    let writer = FrameWriter::new(kw)?;
    // Two queues into the one writer: stream traffic (bounded, so a slow kubelet slows the
    // client down) and control replies (pings), which go first and are dropped when full
    // rather than ever blocking the reading side.
    let (data_tx, data_rx) = mpsc::channel::<Frame>(8);
    let (ctrl_tx, ctrl_rx) = mpsc::channel::<Frame>(8);
    let write_task = tokio::spawn(write_loop(writer, data_rx, ctrl_rx));

    let mut pending = VecDeque::new();
    let ids = match open_streams(&mut reader, &data_tx, &ctrl_tx, streams, &mut pending).await {
        Ok(ids) => ids,
        Err(e) => {
            let _ = send_status_and_close(&mut ws_tx, failure_status(&e)).await;
            drop((data_tx, ctrl_tx));
            finish_writer(write_task).await;
            return Err(e);
        }
    };

    let stdin_open = AtomicBool::new(ids.stdin.is_some());
    let result = {
        let downstream = async {
            let res = kubelet_to_client(&mut reader, &mut ws_tx, &ctrl_tx, &ids, pending).await;
            let status = match &res {
                Ok(status) if status.is_empty() => SUCCESS_STATUS.to_vec(),
                Ok(status) => status.clone(),
                Err(e) => failure_status(e),
            };
            let _ = send_status_and_close(&mut ws_tx, status).await;
            res.map(drop)
        };
        let upstream = client_to_kubelet(&mut ws_rx, &data_tx, &ids, close_signal, &stdin_open);
        tokio::pin!(downstream, upstream);
        tokio::select! {
            res = &mut downstream => {
                // Let the client answer our close frame, so it sees a clean closing handshake.
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut upstream).await;
                res
            }
            res = &mut upstream => res,
        }
    };

    // Whoever ended first, the session is over: half-close stdin (a shell then exits), say
    // GOAWAY, and close the connection.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if let Some(id) = ids.stdin
            && stdin_open.swap(false, Ordering::SeqCst)
        {
            data_tx.send(fin(id)).await?;
        }
        data_tx
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            })
            .await
    })
    .await;
    drop((data_tx, ctrl_tx));
    finish_writer(write_task).await;
    result
}

fn fin(stream_id: u32) -> Frame {
    Frame::Data {
        stream_id,
        flags: FLAG_FIN,
        data: Vec::new(),
    }
}

async fn finish_writer(task: tokio::task::JoinHandle<Result<(), super::spdy::SpdyError>>) {
    let abort = task.abort_handle();
    match tokio::time::timeout(CLOSE_GRACE, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => debug!(error = %e, "spdy writer ended with an error"),
        Ok(Err(e)) => debug!(error = %e, "spdy writer task failed"),
        Err(_) => abort.abort(),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut data_rx: mpsc::Receiver<Frame>,
    mut ctrl_rx: mpsc::Receiver<Frame>,
) -> Result<(), super::spdy::SpdyError> {
    let (mut data_open, mut ctrl_open) = (true, true);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_PERIOD, PING_PERIOD);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A client's pings have odd ids; spdystream echoes them and we ignore the echoes.
    let mut ping_id = 1u32;
    loop {
        let frame = tokio::select! {
            biased;
            f = ctrl_rx.recv(), if ctrl_open => match f {
                Some(f) => f,
                None => { ctrl_open = false; continue; }
            },
            f = data_rx.recv(), if data_open => match f {
                Some(f) => f,
                None => { data_open = false; continue; }
            },
            _ = ping.tick(), if data_open => {
                let id = ping_id;
                ping_id = if ping_id >= 0x7fff_fffd { 1 } else { ping_id + 2 };
                Frame::Ping { id }
            }
            else => break,
        };
        writer.write_frame(&frame).await?;
    }
    writer.shutdown().await
}

fn reply_ping(ctrl_tx: &mpsc::Sender<Frame>, id: u32) {
    // Odd ids are our own pings' replies (we send none); even ids are the server's to echo.
    if id.is_multiple_of(2) && ctrl_tx.try_send(Frame::Ping { id }).is_err() {
        debug!(id, "dropping a spdy ping reply: writer busy");
    }
}

fn refuse(ctrl_tx: &mpsc::Sender<Frame>, stream_id: u32) {
    // The server has no business opening streams in remotecommand.
    let _ = ctrl_tx.try_send(Frame::RstStream {
        stream_id,
        status: RST_REFUSED_STREAM,
    });
}

async fn open_streams<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    data_tx: &mpsc::Sender<Frame>,
    ctrl_tx: &mpsc::Sender<Frame>,
    streams: ExecStreams,
    pending: &mut VecDeque<Frame>,
) -> Result<ExecIds, StreamError> {
    let mut kinds = vec!["error"];
    if streams.stdin {
        kinds.push("stdin");
    }
    if streams.stdout {
        kinds.push("stdout");
    }
    if streams.stderr && !streams.tty {
        kinds.push("stderr");
    }
    if streams.tty {
        kinds.push("resize");
    }
    let mut ids = ExecIds::default();
    for (id, kind) in (1u32..).step_by(2).zip(kinds) {
        let syn = Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new().with("streamType", kind),
        };
        data_tx
            .send(syn)
            .await
            .map_err(|_| StreamError::WriterGone)?;
        tokio::time::timeout(
            REPLY_TIMEOUT,
            wait_reply(reader, ctrl_tx, id, kind, pending),
        )
        .await
        .map_err(|_| StreamError::ReplyTimeout {
            stream: kind,
            secs: REPLY_TIMEOUT.as_secs(),
        })??;
        match kind {
            "error" => ids.error = id,
            "stdin" => ids.stdin = Some(id),
            "stdout" => ids.stdout = Some(id),
            "stderr" => ids.stderr = Some(id),
            _ => ids.resize = Some(id),
        }
    }
    Ok(ids)
}

async fn wait_reply<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    ctrl_tx: &mpsc::Sender<Frame>,
    id: u32,
    kind: &'static str,
    pending: &mut VecDeque<Frame>,
) -> Result<(), StreamError> {
    loop {
        match reader.read_frame().await? {
            None | Some(Frame::GoAway { .. }) => {
                return Err(StreamError::KubeletClosed { stream: kind });
            }
            Some(Frame::SynReply { stream_id, .. }) if stream_id == id => return Ok(()),
            Some(Frame::RstStream { stream_id, status }) if stream_id == id => {
                return Err(StreamError::StreamRefused {
                    stream: kind,
                    status,
                });
            }
            Some(Frame::Ping { id }) => reply_ping(ctrl_tx, id),
            Some(Frame::SynStream { stream_id, .. }) => refuse(ctrl_tx, stream_id),
            // E.g. an early status on the error stream: keep it for the main loop.
            Some(frame @ (Frame::Data { .. } | Frame::RstStream { .. })) => {
                let bytes: usize = pending
                    .iter()
                    .chain(std::iter::once(&frame))
                    .map(|f| match f {
                        Frame::Data { data, .. } => data.len(),
                        _ => 0,
                    })
                    .sum();
                if pending.len() >= MAX_PENDING_FRAMES || bytes > MAX_PENDING_BYTES {
                    return Err(StreamError::Spdy(super::spdy::SpdyError::Malformed {
                        frame: "DATA",
                        reason: "too many frames before the streams were set up",
                    }));
                }
                pending.push_back(frame);
            }
            Some(_) => {}
        }
    }
}

/// Forwards the kubelet's stdout/stderr to the client until the exec is over (the error,
/// stdout and stderr streams are all closed, or the connection ended); returns the status
/// the error stream carried.
async fn kubelet_to_client<R, S>(
    reader: &mut FrameReader<R>,
    ws_tx: &mut S,
    ctrl_tx: &mpsc::Sender<Frame>,
    ids: &ExecIds,
    mut pending: VecDeque<Frame>,
) -> Result<Vec<u8>, StreamError>
where
    R: AsyncRead + Unpin,
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut status = Vec::new();
    let mut open: Vec<u32> = [Some(ids.error), ids.stdout, ids.stderr]
        .into_iter()
        .flatten()
        .collect();
    while !open.is_empty() {
        let frame = match pending.pop_front() {
            Some(frame) => frame,
            None => match reader.read_frame().await? {
                Some(frame) => frame,
                None => break,
            },
        };
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let channel = if stream_id == ids.error {
                    if status.len() + data.len() > MAX_STATUS {
                        return Err(StreamError::StatusTooLarge(MAX_STATUS));
                    }
                    status.extend_from_slice(&data);
                    None
                } else if Some(stream_id) == ids.stdout {
                    Some(CHANNEL_STDOUT)
                } else if Some(stream_id) == ids.stderr {
                    Some(CHANNEL_STDERR)
                } else {
                    None
                };
                if let Some(channel) = channel
                    && !data.is_empty()
                {
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(channel);
                    msg.extend_from_slice(&data);
                    ws_tx.send(Message::Binary(Bytes::from(msg))).await?;
                }
                if flags & FLAG_FIN != 0 {
                    open.retain(|&id| id != stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => open.retain(|&id| id != stream_id),
            Frame::Ping { id } => reply_ping(ctrl_tx, id),
            Frame::SynStream { stream_id, .. } => refuse(ctrl_tx, stream_id),
            // GOAWAY only stops new streams; open ones finish and the connection then ends.
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::GoAway { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    Ok(status)
}

async fn send_status_and_close<S>(ws_tx: &mut S, status: Vec<u8>) -> Result<(), tungstenite::Error>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut msg = Vec::with_capacity(status.len() + 1);
    msg.push(CHANNEL_ERROR);
    msg.extend_from_slice(&status);
    ws_tx.send(Message::Binary(Bytes::from(msg))).await?;
    ws_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await
}

/// Forwards the client's stdin and resize messages until the client closes.
async fn client_to_kubelet<S>(
    ws_rx: &mut S,
    data_tx: &mpsc::Sender<Frame>,
    ids: &ExecIds,
    close_signal: bool,
    stdin_open: &AtomicBool,
) -> Result<(), StreamError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    while let Some(msg) = ws_rx.next().await {
        let data = match msg {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Close(_)) => break,
            // Text is for the base64 protocols, which are not offered; pings are answered by
            // tungstenite itself.
            Ok(_) => continue,
            Err(e) if client_gone(&e) => break,
            Err(e) => return Err(e.into()),
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        let frame = match channel {
            CHANNEL_STDIN if !payload.is_empty() && stdin_open.load(Ordering::SeqCst) => {
                ids.stdin.map(|stream_id| Frame::Data {
                    stream_id,
                    flags: 0,
                    data: payload.to_vec(),
                })
            }
            CHANNEL_RESIZE if !payload.is_empty() => ids.resize.map(|stream_id| Frame::Data {
                stream_id,
                flags: 0,
                data: payload.to_vec(),
            }),
            CHANNEL_CLOSE if close_signal && payload == [CHANNEL_STDIN] => ids
                .stdin
                .filter(|_| stdin_open.swap(false, Ordering::SeqCst))
                .map(fin),
            _ => {
                debug!(channel, len = payload.len(), "ignoring a websocket message");
                None
            }
        };
        if let Some(frame) = frame {
            data_tx
                .send(frame)
                .await
                .map_err(|_| StreamError::WriterGone)?;
        }
    }
    Ok(())
}

/// Carries port-forward's tunneled SPDY: each binary message from the client goes to the
/// kubelet as raw bytes, bytes from the kubelet go back as binary messages. Either side closing
/// closes the other.
pub async fn websocket_tunnel<C, K>(client: C, kubelet: K) -> Result<(), StreamError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    K: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws =
        WebSocketStream::from_raw_socket(client, Role::Server, Some(ws_config(TUNNEL_MAX_MESSAGE)))
            .await;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut kr, mut kw) = tokio::io::split(kubelet);

    let result = {
        let upstream = async {
            while let Some(msg) = ws_rx.next().await {
                match msg {
                    Ok(Message::Binary(data)) => {
                        kw.write_all(&data).await?;
                        kw.flush().await?;
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(Message::Text(_)) => return Err(StreamError::TextMessage),
                    Ok(_) => {}
                    Err(e) if client_gone(&e) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        };
        let downstream = async {
            let mut buf = vec![0u8; TUNNEL_READ_CHUNK];
            let res = loop {
                let n = match kr.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) => break Err(StreamError::KubeletIo(e)),
                };
                if let Err(e) = ws_tx
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                {
                    break Err(e.into());
                }
            };
            let _ = ws_tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                })))
                .await;
            res
        };
        tokio::pin!(upstream, downstream);
        tokio::select! {
            res = &mut upstream => res,
            res = &mut downstream => {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut upstream).await;
                res
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, kw.shutdown()).await;
    result
}
