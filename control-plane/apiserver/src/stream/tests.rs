//! End to end: a tokio-tungstenite client drives the translation against a fake SPDY
//! remotecommand server built from this module's framing in the server role.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex},
    task::JoinHandle,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Bytes, Message, protocol::Role},
};

use super::{
    ExecStreams, StreamError,
    spdy::{FLAG_FIN, Frame, FrameReader, FrameWriter, Headers, RST_CANCEL},
    websocket_accept, websocket_to_spdy_exec, websocket_tunnel,
};

type Client = WebSocketStream<DuplexStream>;

const EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

/// What the fake server saw.
#[derive(Debug, Default)]
struct Seen {
    /// (stream id, streamtype) in SYN_STREAM order.
    streams: Vec<(u32, String)>,
    stdin_fin: bool,
}

/// A remotecommand v4 server as containerd's streaming server behaves: accepts every stream,
/// echoes stdin to stdout (and to stderr with a prefix), reports resizes on stdout, and ends the
/// exec when stdin closes (Success) or stdin says "exit" (exit code 3): status on the error
/// stream, then every stream reset and the connection closed.
async fn fake_exec_server(io: DuplexStream) -> Seen {
    let (r, w) = tokio::io::split(io);
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w).unwrap();
    let mut seen = Seen::default();
    let id_of = |seen: &Seen, kind: &str| {
        seen.streams
            .iter()
            .find(|(_, k)| k == kind)
            .map(|(id, _)| *id)
    };
    // Ask for a ping reply before anything else, as kubelets with ping periods do.
    writer.write_frame(&Frame::Ping { id: 2 }).await.unwrap();
    let mut ponged = false;
    loop {
        let Some(frame) = reader.read_frame().await.unwrap() else {
            break;
        };
        let status = match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let kind = headers.get("streamtype").unwrap_or_default().to_owned();
                seen.streams.push((stream_id, kind));
                writer
                    .write_frame(&Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Headers::new(),
                    })
                    .await
                    .unwrap();
                None
            }
            Frame::Ping { id: 2 } => {
                ponged = true;
                None
            }
            Frame::Ping { id } => {
                // The translator's own keepalive: echo it, as spdystream does.
                assert_eq!(id % 2, 1, "a client's ping id is odd");
                writer.write_frame(&Frame::Ping { id }).await.unwrap();
                None
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } if Some(stream_id) == id_of(&seen, "stdin") => {
                if !data.is_empty() {
                    if let Some(out) = id_of(&seen, "stdout") {
                        writer.write_frame(&data_frame(out, &data)).await.unwrap();
                    }
                    if let Some(err) = id_of(&seen, "stderr") {
                        let msg = [b"stderr:".as_slice(), &data].concat();
                        writer.write_frame(&data_frame(err, &msg)).await.unwrap();
                    }
                }
                if flags & FLAG_FIN != 0 {
                    seen.stdin_fin = true;
                    Some(br#"{"metadata":{},"status":"Success"}"#.as_slice())
                } else if data == b"exit" {
                    Some(EXIT_3.as_bytes())
                } else {
                    None
                }
            }
            Frame::Data {
                stream_id, data, ..
            } if Some(stream_id) == id_of(&seen, "resize") => {
                let size: serde_json::Value = serde_json::from_slice(&data).unwrap();
                let msg = format!("resize {}x{}", size["Width"], size["Height"]);
                let out = id_of(&seen, "stdout").unwrap();
                writer
                    .write_frame(&data_frame(out, msg.as_bytes()))
                    .await
                    .unwrap();
                None
            }
            Frame::GoAway { .. } => break,
            other => panic!("unexpected frame {other:?}"),
        };
        if let Some(status) = status {
            let error = id_of(&seen, "error").unwrap();
            writer
                .write_frame(&data_frame(error, status))
                .await
                .unwrap();
            for (stream_id, _) in &seen.streams {
                writer
                    .write_frame(&Frame::RstStream {
                        stream_id: *stream_id,
                        status: RST_CANCEL,
                    })
                    .await
                    .unwrap();
            }
            writer.shutdown().await.unwrap();
            break;
        }
    }
    assert!(ponged, "the translator answers pings");
    seen
}

fn data_frame(stream_id: u32, data: &[u8]) -> Frame {
    Frame::Data {
        stream_id,
        flags: 0,
        data: data.to_vec(),
    }
}

struct Harness {
    client: Client,
    translator: JoinHandle<Result<(), StreamError>>,
    server: JoinHandle<Seen>,
}

async fn start_exec(protocol: &'static str, streams: ExecStreams) -> Harness {
    let (client_end, server_end) = duplex(64 << 10);
    let (kubelet_end, fake_end) = duplex(64 << 10);
    let server = tokio::spawn(fake_exec_server(fake_end));
    let translator = tokio::spawn(websocket_to_spdy_exec(
        server_end,
        protocol,
        kubelet_end,
        streams,
    ));
    let client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
    Harness {
        client,
        translator,
        server,
    }
}

async fn send(client: &mut Client, channel: u8, payload: &[u8]) {
    let msg = [&[channel], payload].concat();
    client
        .send(Message::Binary(Bytes::from(msg)))
        .await
        .unwrap();
}

/// The next data message as (channel, payload); `None` once the server closed.
async fn recv(client: &mut Client) -> Option<(u8, Vec<u8>)> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("timed out waiting for the translator");
        match msg {
            Some(Ok(Message::Binary(data))) => return Some((data[0], data[1..].to_vec())),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                assert_eq!(code, Some(1000), "a normal close");
                // tungstenite sends its close reply on the next read, as a real client would.
                let _ = client.next().await;
                return None;
            }
            None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn finish(h: Harness) -> (Result<(), StreamError>, Seen) {
    let res = tokio::time::timeout(Duration::from_secs(10), h.translator)
        .await
        .unwrap()
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), h.server)
        .await
        .unwrap()
        .unwrap();
    (res, seen)
}

#[tokio::test]
async fn v5_exec_streams_output_and_ends_on_stdin_close() {
    let mut h = start_exec(
        "v5.channel.k8s.io",
        ExecStreams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        },
    )
    .await;
    send(&mut h.client, 0, b"hello").await;
    assert_eq!(recv(&mut h.client).await, Some((1, b"hello".to_vec())));
    assert_eq!(
        recv(&mut h.client).await,
        Some((2, b"stderr:hello".to_vec()))
    );
    // Junk the translator ignores: an empty message, an unknown channel, a resize without tty,
    // a CLOSE of a channel that is not stdin, a CLOSE without its channel byte.
    h.client.send(Message::Binary(Bytes::new())).await.unwrap();
    send(&mut h.client, 9, b"x").await;
    send(&mut h.client, 4, br#"{"Width":1,"Height":1}"#).await;
    send(&mut h.client, 255, &[1]).await;
    send(&mut h.client, 255, &[]).await;
    send(&mut h.client, 0, b"again").await;
    assert_eq!(recv(&mut h.client).await, Some((1, b"again".to_vec())));
    assert_eq!(
        recv(&mut h.client).await,
        Some((2, b"stderr:again".to_vec()))
    );
    // v5's CLOSE of stdin half-closes the SPDY stdin stream; the exec ends.
    send(&mut h.client, 255, &[0]).await;
    let (channel, status) = recv(&mut h.client).await.unwrap();
    assert_eq!(channel, 3);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["status"], "Success");
    assert_eq!(recv(&mut h.client).await, None);
    let (res, seen) = finish(h).await;
    res.unwrap();
    assert!(seen.stdin_fin);
    let streams: Vec<(u32, &str)> = seen
        .streams
        .iter()
        .map(|(id, k)| (*id, k.as_str()))
        .collect();
    assert_eq!(
        streams,
        [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")],
        "error stream first, odd ids, lower-case streamtype header"
    );
}

#[tokio::test]
async fn v4_tty_exec_resizes_and_passes_the_exit_status_through() {
    let mut h = start_exec(
        "v4.channel.k8s.io",
        ExecStreams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        },
    )
    .await;
    send(&mut h.client, 4, br#"{"Width":80,"Height":24}"#).await;
    assert_eq!(
        recv(&mut h.client).await,
        Some((1, b"resize 80x24".to_vec()))
    );
    // v4 has no CLOSE signal: a [255, 0] message is just an unknown channel.
    send(&mut h.client, 255, &[0]).await;
    send(&mut h.client, 0, b"exit").await;
    assert_eq!(recv(&mut h.client).await, Some((1, b"exit".to_vec())));
    assert_eq!(
        recv(&mut h.client).await,
        Some((3, EXIT_3.as_bytes().to_vec()))
    );
    assert_eq!(recv(&mut h.client).await, None);
    let (res, seen) = finish(h).await;
    res.unwrap();
    assert!(!seen.stdin_fin, "the CLOSE signal is v5 only");
    let kinds: Vec<&str> = seen.streams.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["error", "stdin", "stdout", "resize"],
        "no stderr with a tty"
    );
}

#[tokio::test]
async fn client_leaving_closes_the_spdy_session() {
    let mut h = start_exec(
        "v5.channel.k8s.io",
        ExecStreams {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: false,
        },
    )
    .await;
    send(&mut h.client, 0, b"hi").await;
    assert_eq!(recv(&mut h.client).await, Some((1, b"hi".to_vec())));
    h.client.close(None).await.unwrap();
    let (res, seen) = finish(h).await;
    res.unwrap();
    // stdin was half-closed on the way out (the fake then ends the exec, into a closed socket).
    assert!(seen.stdin_fin);
}

#[tokio::test]
async fn unsupported_protocol_is_refused() {
    let (a, _b) = duplex(1024);
    let (c, _d) = duplex(1024);
    let res = websocket_to_spdy_exec(a, "v3.channel.k8s.io", c, ExecStreams::default()).await;
    assert!(
        matches!(res, Err(StreamError::UnsupportedProtocol(_))),
        "{res:?}"
    );
}

/// Runs the translation against a kubelet that answers the first SYN_STREAM with `reply`;
/// returns the translation's result and the status the client got.
async fn exec_against(reply: Vec<u8>) -> (Result<(), StreamError>, serde_json::Value) {
    let (client_end, server_end) = duplex(64 << 10);
    let (kubelet_end, mut fake_end) = duplex(64 << 10);
    let fake = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let _ = fake_end.read(&mut buf).await.unwrap();
        fake_end.write_all(&reply).await.unwrap();
        // Hold the connection open: the translator must give up on its own.
        let _ = fake_end.read(&mut buf).await;
    });
    let streams = ExecStreams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let translator = tokio::spawn(websocket_to_spdy_exec(
        server_end,
        "v5.channel.k8s.io",
        kubelet_end,
        streams,
    ));
    let mut client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
    let (channel, status) = recv(&mut client).await.unwrap();
    assert_eq!(channel, 3);
    assert_eq!(recv(&mut client).await, None);
    drop(client);
    let res = tokio::time::timeout(Duration::from_secs(10), translator)
        .await
        .unwrap()
        .unwrap();
    fake.abort();
    (res, serde_json::from_slice(&status).unwrap())
}

#[tokio::test]
async fn malformed_spdy_from_the_kubelet_fails_the_exec_cleanly() {
    // A SPDY/2 SYN_REPLY.
    let (res, status) = exec_against(vec![
        0x80, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1,
    ])
    .await;
    assert!(matches!(res, Err(StreamError::Spdy(_))), "{res:?}");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], 500);
    // A SYN_REPLY whose header block is garbage.
    let (res, _) = exec_against(vec![
        0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 9, 9, 9, 9,
    ])
    .await;
    assert!(matches!(res, Err(StreamError::Spdy(_))), "{res:?}");
}

#[tokio::test]
async fn a_refused_stream_fails_the_exec() {
    let rst = vec![
        0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 0, 0, 0, 3,
    ];
    let (res, status) = exec_against(rst).await;
    assert!(
        matches!(
            res,
            Err(StreamError::StreamRefused {
                stream: "error",
                status: 3
            })
        ),
        "{res:?}"
    );
    assert!(
        status["message"].as_str().unwrap().contains("refused"),
        "{status}"
    );
}

#[tokio::test]
async fn tunnel_carries_bytes_both_ways_and_closes_with_the_kubelet() {
    let (client_end, server_end) = duplex(64 << 10);
    let (kubelet_end, mut fake) = duplex(64 << 10);
    let translator = tokio::spawn(websocket_tunnel(server_end, kubelet_end));
    let mut client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;

    client
        .send(Message::Binary(Bytes::from_static(b"\x80\x03\x00\x01")))
        .await
        .unwrap();
    client
        .send(Message::Binary(Bytes::from_static(b"spdy")))
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    fake.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        &buf, b"\x80\x03\x00\x01spdy",
        "payloads only, no channel byte"
    );

    fake.write_all(b"reply").await.unwrap();
    let msg = client.next().await.unwrap().unwrap();
    assert_eq!(msg, Message::Binary(Bytes::from_static(b"reply")));

    // The kubelet hangs up: the client gets a normal close.
    drop(fake);
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("want a close, got {other:?}"),
    }
    let _ = client.next().await;
    tokio::time::timeout(Duration::from_secs(10), translator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tunnel_closes_the_kubelet_side_when_the_client_leaves() {
    let (client_end, server_end) = duplex(64 << 10);
    let (kubelet_end, mut fake) = duplex(64 << 10);
    let translator = tokio::spawn(websocket_tunnel(server_end, kubelet_end));
    let mut client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
    client
        .send(Message::Binary(Bytes::from_static(b"abc")))
        .await
        .unwrap();
    client.close(None).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), fake.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"abc", "the bytes, then EOF");
    tokio::time::timeout(Duration::from_secs(10), translator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn websocket_accept_is_rfc_6455() {
    // RFC 6455 §1.3's example.
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

/// A kubelet that accepts every stream; once the fourth is accepted it sends `after`, then keeps
/// reading (recording pings) until the connection ends.
async fn scripted_kubelet(io: DuplexStream, after: Vec<u8>) -> Vec<u32> {
    let (r, w) = tokio::io::split(io);
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w).unwrap();
    let mut accepted = 0;
    let mut pings = Vec::new();
    while let Ok(Some(frame)) = reader.read_frame().await {
        match frame {
            Frame::SynStream { stream_id, .. } => {
                let reply = Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Headers::new(),
                };
                writer.write_frame(&reply).await.unwrap();
                accepted += 1;
                if accepted == 4 && !after.is_empty() {
                    writer.write_raw(&after).await.unwrap();
                }
            }
            Frame::Ping { id } => pings.push(id),
            _ => {}
        }
    }
    pings
}

#[tokio::test]
async fn a_malformed_frame_mid_session_ends_the_exec_with_a_failure() {
    let (client_end, server_end) = duplex(64 << 10);
    let (kubelet_end, fake_end) = duplex(64 << 10);
    // A DATA frame on stdout, then a control frame with an undefined version.
    let mut after = vec![0, 0, 0, 5, 0, 0, 0, 2, b'o', b'k'];
    after.extend_from_slice(&[0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
    let fake = tokio::spawn(scripted_kubelet(fake_end, after));
    let streams = ExecStreams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let translator = tokio::spawn(websocket_to_spdy_exec(
        server_end,
        "v5.channel.k8s.io",
        kubelet_end,
        streams,
    ));
    let mut client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
    assert_eq!(recv(&mut client).await, Some((1, b"ok".to_vec())));
    let (channel, status) = recv(&mut client).await.unwrap();
    assert_eq!(channel, 3);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["status"], "Failure");
    assert!(
        status["message"].as_str().unwrap().contains("version 7"),
        "{status}"
    );
    assert_eq!(recv(&mut client).await, None);
    let res = tokio::time::timeout(Duration::from_secs(10), translator)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(res, Err(StreamError::Spdy(_))), "{res:?}");
    tokio::time::timeout(Duration::from_secs(10), fake)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_kept_alive_with_pings() {
    let (client_end, server_end) = duplex(64 << 10);
    let (kubelet_end, fake_end) = duplex(64 << 10);
    let fake = tokio::spawn(scripted_kubelet(fake_end, Vec::new()));
    let streams = ExecStreams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let translator = tokio::spawn(websocket_to_spdy_exec(
        server_end,
        "v5.channel.k8s.io",
        kubelet_end,
        streams,
    ));
    let mut client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    client.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), translator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let pings = tokio::time::timeout(Duration::from_secs(30), fake)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pings, [1, 3, 5], "a ping every 5s, odd ids");
}
