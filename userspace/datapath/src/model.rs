//! The datapath's vocabulary in userspace terms (addresses, ports, enums), and its mapping to
//! the kernel ABI in skiff-ebpf-common.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    str::FromStr,
};

use serde::Serialize;
use skiff_ebpf_common::{
    ALG_MAGLEV, ALG_RANDOM, BACKEND_ACTIVE, BACKEND_QUARANTINED, BACKEND_TERMINATING, Lb4Key,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL, SVC_FLAG_CLUSTER_IP,
    SVC_FLAG_EXTERNAL_IP, SVC_FLAG_LOAD_BALANCER, SVC_FLAG_LOCAL_ONLY, SVC_FLAG_NODE_PORT,
    SVC_FLAG_TWO_SCOPES,
};

/// A frontend or backend string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub input: String,
    pub reason: &'static str,
}

impl ParseError {
    fn new(what: &'static str, input: &str, reason: &'static str) -> Self {
        Self {
            what,
            input: input.to_owned(),
            reason,
        }
    }
}

/// An L4 protocol a service can be exposed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IANA protocol number the kernel programs use.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
            Self::Sctp => PROTO_SCTP,
        }
    }

    #[must_use]
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            PROTO_SCTP => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

impl FromStr for Protocol {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            _ => Err(ParseError::new("protocol", s, "expected tcp, udp or sctp")),
        }
    }
}

/// Which traffic a frontend entry serves (the two scopes of externalTrafficPolicy and
/// internalTrafficPolicy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    External,
    Internal,
}

/// Where a service listens: address, port, protocol and scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Frontend {
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub scope: Scope,
}

impl Frontend {
    #[must_use]
    pub const fn new(address: Ipv4Addr, port: u16, protocol: Protocol) -> Self {
        Self {
            address,
            port,
            protocol,
            scope: Scope::External,
        }
    }

    /// The key of this frontend's service record (slot 0).
    #[must_use]
    pub fn key(&self) -> Lb4Key {
        Lb4Key::service(
            u32::from_ne_bytes(self.address.octets()),
            self.port.to_be(),
            self.protocol.number(),
            match self.scope {
                Scope::External => SCOPE_EXTERNAL,
                Scope::Internal => SCOPE_INTERNAL,
            },
        )
    }

    /// The frontend a service-record key describes; `None` for a key no writer of ours makes.
    #[must_use]
    pub fn from_key(key: &Lb4Key) -> Option<Self> {
        Some(Self {
            address: Ipv4Addr::from(key.address.to_ne_bytes()),
            port: u16::from_be(key.port),
            protocol: Protocol::from_number(key.proto)?,
            scope: match key.scope {
                SCOPE_EXTERNAL => Scope::External,
                SCOPE_INTERNAL => Scope::Internal,
                _ => return None,
            },
        })
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.address, self.port, self.protocol)?;
        if self.scope == Scope::Internal {
            f.write_str(" (internal)")?;
        }
        Ok(())
    }
}

impl FromStr for Frontend {
    type Err = ParseError;

    /// `VIP:PORT[/PROTO]`, protocol TCP when left out.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, protocol) = match s.split_once('/') {
            Some((addr, proto)) => (addr, proto.parse()?),
            None => (s, Protocol::Tcp),
        };
        let addr: SocketAddrV4 = addr
            .parse()
            .map_err(|_| ParseError::new("frontend", s, "expected IPv4:PORT[/tcp|udp|sctp]"))?;
        if addr.port() == 0 {
            return Err(ParseError::new(
                "frontend",
                s,
                "port 0 is not a service port",
            ));
        }
        Ok(Self::new(*addr.ip(), addr.port(), protocol))
    }
}

/// What kind of address a frontend is, as Kubernetes distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub enum ServiceKind {
    #[default]
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

impl ServiceKind {
    pub(crate) const fn flag(self) -> u16 {
        match self {
            Self::ClusterIp => SVC_FLAG_CLUSTER_IP,
            Self::NodePort => SVC_FLAG_NODE_PORT,
            Self::ExternalIp => SVC_FLAG_EXTERNAL_IP,
            Self::LoadBalancer => SVC_FLAG_LOAD_BALANCER,
        }
    }

    pub(crate) const fn from_flags(flags: u16) -> Self {
        if flags & SVC_FLAG_NODE_PORT != 0 {
            Self::NodePort
        } else if flags & SVC_FLAG_LOAD_BALANCER != 0 {
            Self::LoadBalancer
        } else if flags & SVC_FLAG_EXTERNAL_IP != 0 {
            Self::ExternalIp
        } else {
            Self::ClusterIp
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::ExternalIp => "ExternalIP",
            Self::LoadBalancer => "LoadBalancer",
        })
    }
}

impl FromStr for ServiceKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "clusterip" => Ok(Self::ClusterIp),
            "nodeport" => Ok(Self::NodePort),
            "externalip" => Ok(Self::ExternalIp),
            "loadbalancer" => Ok(Self::LoadBalancer),
            _ => Err(ParseError::new(
                "service type",
                s,
                "expected clusterip, nodeport, externalip or loadbalancer",
            )),
        }
    }
}

/// How a service picks the backend of a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Random,
    Maglev,
}

impl Algorithm {
    pub(crate) const fn number(self) -> u8 {
        match self {
            Self::Random => ALG_RANDOM,
            Self::Maglev => ALG_MAGLEV,
        }
    }

    pub(crate) const fn from_number(number: u8) -> Self {
        if number == ALG_MAGLEV {
            Self::Maglev
        } else {
            Self::Random
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Random => "random",
            Self::Maglev => "maglev",
        })
    }
}

impl FromStr for Algorithm {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "random" => Ok(Self::Random),
            "maglev" => Ok(Self::Maglev),
            _ => Err(ParseError::new("algorithm", s, "expected random or maglev")),
        }
    }
}

/// Whether a backend takes new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    #[default]
    Active,
    /// Keeps its established flows, gets no new ones.
    Terminating,
    /// Failed health checks: keeps established flows, gets no new ones.
    Quarantined,
}

impl BackendState {
    pub(crate) const fn number(self) -> u8 {
        match self {
            Self::Active => BACKEND_ACTIVE,
            Self::Terminating => BACKEND_TERMINATING,
            Self::Quarantined => BACKEND_QUARANTINED,
        }
    }

    pub(crate) const fn from_number(number: u8) -> Self {
        match number {
            BACKEND_TERMINATING => Self::Terminating,
            BACKEND_QUARANTINED => Self::Quarantined,
            _ => Self::Active,
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Terminating => "terminating",
            Self::Quarantined => "quarantined",
        })
    }
}

/// One backend of a service. Its protocol is the frontend's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Backend {
    pub address: SocketAddrV4,
    pub state: BackendState,
    /// Runs on this node (matters for traffic policy Local).
    pub local: bool,
}

impl Backend {
    #[must_use]
    pub const fn active(address: SocketAddrV4) -> Self {
        Self {
            address,
            state: BackendState::Active,
            local: false,
        }
    }
}

impl FromStr for Backend {
    type Err = ParseError;

    /// `IP:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let address: SocketAddrV4 = s
            .parse()
            .map_err(|_| ParseError::new("backend", s, "expected IPv4:PORT"))?;
        if address.port() == 0 {
            return Err(ParseError::new(
                "backend",
                s,
                "port 0 cannot be connected to",
            ));
        }
        Ok(Self::active(address))
    }
}

/// A frontend and everything the datapath needs to balance it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub frontend: Frontend,
    #[serde(rename = "type")]
    pub kind: ServiceKind,
    pub algorithm: Algorithm,
    /// sessionAffinity ClientIP timeout in seconds; 0 = none.
    pub affinity_timeout: u32,
    /// Only node-local backends serve this scope (traffic policy Local).
    pub local_only: bool,
    /// This is the `External` entry of a frontend that also has an `Internal` entry: traffic
    /// from inside the cluster (the socket LB) uses that one instead. Set when the two traffic
    /// policies pick different backends (e.g. externalTrafficPolicy=Local on a NodePort).
    pub two_scopes: bool,
    pub backends: Vec<Backend>,
}

impl Service {
    /// A ClusterIP service with random selection and no affinity.
    #[must_use]
    pub fn new(frontend: Frontend, backends: Vec<Backend>) -> Self {
        Self {
            frontend,
            kind: ServiceKind::ClusterIp,
            algorithm: Algorithm::Random,
            affinity_timeout: 0,
            local_only: false,
            two_scopes: false,
            backends,
        }
    }

    pub(crate) const fn flags(&self) -> u16 {
        let mut flags = self.kind.flag();
        if self.local_only {
            flags |= SVC_FLAG_LOCAL_ONLY;
        }
        if self.two_scopes {
            flags |= SVC_FLAG_TWO_SCOPES;
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_parses_and_round_trips_through_its_key() {
        let f: Frontend = "10.96.0.10:53/udp".parse().unwrap();
        assert_eq!(
            f,
            Frontend::new(Ipv4Addr::new(10, 96, 0, 10), 53, Protocol::Udp)
        );
        assert_eq!(f.to_string(), "10.96.0.10:53/UDP");
        let key = f.key();
        // Network byte order, as the kernel sees user_ip4/user_port.
        assert_eq!(key.address.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(key.port.to_ne_bytes(), [0, 53]);
        assert_eq!(Frontend::from_key(&key), Some(f));
        assert_eq!(
            "10.96.0.1:443".parse::<Frontend>().unwrap().protocol,
            Protocol::Tcp
        );
    }

    #[test]
    fn bad_frontends_and_backends_are_refused_with_the_reason() {
        for bad in [
            "10.96.0.1",
            "10.96.0.1:0",
            "10.96.0.1:80/icmp",
            "nohost:80",
            "[::1]:80",
        ] {
            assert!(bad.parse::<Frontend>().is_err(), "{bad} parsed");
        }
        let err = "10.0.0.1:0".parse::<Backend>().unwrap_err();
        assert_eq!(err.reason, "port 0 cannot be connected to");
        assert!("1.2.3.4:8080".parse::<Backend>().is_ok());
    }
}
