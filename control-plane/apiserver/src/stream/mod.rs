//! Stream protocol translation for exec/attach/port-forward: kubectl speaks WebSocket
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`, or SPDY tunneled in binary messages), while the
//! kubelet (relaying containerd's streaming server) speaks SPDY/3.1 with remotecommand v4.
//!
//! ```text
//!  kubectl ──WebSocket [channel][payload]──▶ websocket_to_spdy_exec ──SPDY streams (error, stdin,
//!          ◀── stdout/stderr/status, close ──                        ◀── stdout, stderr, resize)──▶ kubelet
//!  kubectl ──WebSocket binary = SPDY bytes──▶ websocket_tunnel ──raw SPDY bytes──▶ kubelet
//! ```

pub mod spdy;
#[cfg(test)]
mod tests;
mod translate;

use tokio_tungstenite::tungstenite;
pub use translate::{websocket_to_spdy_exec, websocket_tunnel};

/// The streams an exec/attach request asked for (`stdin`, `stdout`, `stderr`, `tty` query
/// parameters). With `tty` there is no stderr stream (the terminal merges it into stdout) and
/// there is a resize stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The exec/attach WebSocket subprotocols this translation serves, in preference order.
pub const EXEC_WS_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// kubectl's port-forward over WebSocket: SPDY/3.1 bytes in binary messages.
pub const PORTFORWARD_WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The `Sec-WebSocket-Accept` value answering a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    tungstenite::handshake::derive_accept_key(key.trim().as_bytes())
}

/// Why a translated stream ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("unsupported WebSocket subprotocol {0:?} (want one of {EXEC_WS_PROTOCOLS:?})")]
    UnsupportedProtocol(String),
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
    #[error("client websocket: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),
    #[error("kubelet connection: {0}")]
    KubeletIo(#[from] std::io::Error),
    #[error("the kubelet refused the {stream} stream (RST_STREAM status {status})")]
    StreamRefused { stream: &'static str, status: u32 },
    #[error("the kubelet did not accept the {stream} stream within {secs}s")]
    ReplyTimeout { stream: &'static str, secs: u64 },
    #[error("the kubelet closed the connection before the {stream} stream was accepted")]
    KubeletClosed { stream: &'static str },
    #[error("the kubelet's connection writer stopped")]
    WriterGone,
    #[error("the exec status on the error stream exceeds {0} bytes")]
    StatusTooLarge(usize),
    #[error("the client sent a text message on a binary-only tunnel")]
    TextMessage,
}

impl From<tungstenite::Error> for StreamError {
    fn from(e: tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}
