//! Errors of the DNS crate.

use std::{io, net::SocketAddr, path::PathBuf};

/// Everything that can go wrong starting or running the cluster DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configured cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The configured value.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The upstream resolv.conf could not be read.
    #[error("reading {path}")]
    ResolvConf {
        /// Path of the file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// A listening socket could not be bound.
    #[error("binding DNS {proto} on {addr}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: io::Error,
    },
    /// The hickory server stopped with an error.
    #[error("DNS server failed: {0}")]
    Server(String),
    /// A watch on the API server ended.
    #[error("watching {kind} ended")]
    WatchEnded {
        /// The kind whose watch stopped.
        kind: &'static str,
    },
}
