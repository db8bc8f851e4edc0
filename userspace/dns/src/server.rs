//! The hickory request handler and the UDP/TCP listeners.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use hickory_server::{
    Server,
    net::runtime::Time,
    proto::{
        op::{
            Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
        },
        rr::{DNSClass, Name, Record, RecordType},
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::net::{TcpListener, UdpSocket};

use crate::{
    cache::DnsCache,
    config::DnsConfig,
    error::DnsError,
    forward::Forwarder,
    resolvconf::ResolvConf,
    resolve::{self, Answer, Outcome, Zone},
};

/// Idle TCP connections are closed after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// The EDNS payload size we advertise (the DNS flag day 2020 recommendation).
const EDNS_PAYLOAD: u16 = 1232;

/// Answers the cluster zone from the cache and forwards everything else.
pub(crate) struct Handler {
    zone: Zone,
    cache: DnsCache,
    forwarder: Forwarder,
    /// Ids of the queries this server makes itself (ExternalName targets).
    next_id: AtomicU16,
}

/// The records of one response.
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Handler {
    pub(crate) fn new(zone: Zone, cache: DnsCache, forwarder: Forwarder) -> Self {
        Self {
            zone,
            cache,
            forwarder,
            next_id: AtomicU16::new(1),
        }
    }

    async fn reply(&self, request: &Request) -> Reply {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let empty = |metadata: Metadata, code| {
            let mut metadata = metadata;
            metadata.response_code = code;
            Reply {
                metadata,
                answers: Vec::new(),
                authorities: Vec::new(),
                additionals: Vec::new(),
            }
        };
        if request.metadata.op_code != OpCode::Query {
            return empty(metadata, ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return empty(metadata, ResponseCode::FormErr);
        };
        let qname: Name = info.query.original().name().clone();
        let qtype = info.query.query_type();
        let outcome = if info.query.query_class() == DNSClass::IN {
            let state = self.cache.read();
            resolve::resolve(&self.zone, &state, &qname, qtype)
        } else {
            Outcome::Forward
        };
        match outcome {
            Outcome::NotSynced => empty(metadata, ResponseCode::ServFail),
            Outcome::Forward => match self
                .forwarder
                .forward(
                    info.query.original(),
                    request.as_slice(),
                    request.metadata.id,
                )
                .await
            {
                Ok(upstream) => Reply {
                    metadata: {
                        let mut m = upstream.metadata;
                        m.id = request.metadata.id;
                        m
                    },
                    answers: upstream.answers,
                    authorities: upstream.authorities,
                    additionals: upstream.additionals,
                },
                Err(e) => {
                    tracing::warn!(name = %qname, %qtype, error = %e, "forwarding failed");
                    empty(metadata, ResponseCode::ServFail)
                }
            },
            Outcome::Local(answer) => {
                let Answer {
                    rcode,
                    mut answers,
                    authorities,
                    additionals,
                    chase,
                } = answer;
                metadata.authoritative = true;
                metadata.response_code = rcode;
                if let Some(target) = chase {
                    self.chase(target, qtype, &mut answers, &mut metadata).await;
                }
                Reply {
                    metadata,
                    answers,
                    authorities,
                    additionals,
                }
            }
        }
    }

    /// Resolves an ExternalName target upstream and appends its records after the CNAME, as
    /// CoreDNS does, so stub resolvers that do not follow CNAMEs still get addresses.
    async fn chase(
        &self,
        target: Name,
        qtype: RecordType,
        answers: &mut Vec<Record>,
        metadata: &mut Metadata,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut query = Message::query();
        query.metadata.id = id;
        query.metadata.recursion_desired = true;
        let question = Query::query(target.clone(), qtype);
        query.add_query(question.clone());
        let Ok(raw) = query.to_vec() else {
            return;
        };
        match self.forwarder.forward(&question, &raw, id).await {
            Ok(upstream) => {
                if upstream.metadata.response_code != ResponseCode::NoError {
                    metadata.response_code = upstream.metadata.response_code;
                }
                answers.extend(upstream.answers);
            }
            Err(e) => {
                tracing::debug!(%target, error = %e, "resolving an ExternalName target failed");
            }
        }
    }
}

impl RequestHandler for Handler {
    // The desugared form of hickory's #[async_trait] signature, so this crate needs no
    // async-trait dependency of its own.
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        mut response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let reply = self.reply(request).await;
            let response_edns = request.edns.as_ref().map(|_| {
                let mut edns = Edns::new();
                edns.set_max_payload(EDNS_PAYLOAD);
                edns
            });
            let mut builder = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = &response_edns {
                builder.edns(edns);
            }
            let metadata = reply.metadata;
            let response = builder.build(
                metadata,
                reply.answers.iter(),
                reply.authorities.iter(),
                std::iter::empty(),
                reply.additionals.iter(),
            );
            match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(e) => {
                    tracing::debug!(error = %e, "sending a DNS response failed");
                    let mut failed =
                        Metadata::new(metadata.id, MessageType::Response, metadata.op_code);
                    failed.response_code = ResponseCode::ServFail;
                    ResponseInfo::from(Header {
                        metadata: failed,
                        counts: HeaderCounts::default(),
                    })
                }
            }
        })
    }
}

/// A bound, not yet running DNS server. Bind first (errors surface before anything runs),
/// then `run`.
pub struct DnsServer {
    server: Server<Handler>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Reads the upstream resolv.conf and binds UDP and TCP on `config.listen` (the same port
    /// for both; with port 0 a free port is picked).
    pub async fn bind(config: &DnsConfig, cache: DnsCache) -> Result<Self, DnsError> {
        let text = tokio::fs::read_to_string(&config.resolv_conf)
            .await
            .map_err(|source| DnsError::ResolvConf {
                path: config.resolv_conf.clone(),
                source,
            })?;
        let upstreams: Vec<SocketAddr> = ResolvConf::parse(&text)
            .nameserver_ips()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            // Forwarding to ourselves would loop until the timeout.
            .filter(|a| *a != config.listen)
            .collect();
        if upstreams.is_empty() {
            tracing::warn!(path = %config.resolv_conf.display(), "no upstream nameserver: names outside the cluster get SERVFAIL");
        }
        Self::bind_with_upstreams(config, cache, upstreams).await
    }

    /// As `bind`, with the upstream resolvers given instead of read from resolv.conf.
    pub async fn bind_with_upstreams(
        config: &DnsConfig,
        cache: DnsCache,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Self, DnsError> {
        let zone = Zone::new(&config.cluster_domain, config.ttl, config.pod_records)?;
        let forwarder = Forwarder::new(upstreams, config.upstream_timeout);
        let (udp, tcp) = bind_pair(config.listen).await?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Bind {
            proto: "udp",
            addr: config.listen,
            source,
        })?;
        let mut server = Server::new(Handler::new(zone, cache, forwarder));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(%local_addr, domain = %config.cluster_domain, "cluster DNS listening");
        Ok(Self { server, local_addr })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting and drains.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DnsError> {
        let token = self.server.shutdown_token().clone();
        tokio::select! {
            result = self.server.block_until_done() => {
                return result.map_err(|e| DnsError::Server(e.to_string()));
            }
            () = shutdown => token.cancel(),
        }
        self.server
            .block_until_done()
            .await
            .map_err(|e| DnsError::Server(e.to_string()))
    }

    /// Serves forever.
    pub async fn run(self) -> Result<(), DnsError> {
        self.run_until(std::future::pending()).await
    }
}

/// UDP and TCP on the same port; for port 0 the UDP port is reused for TCP, retried when
/// another process holds it on TCP.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "udp",
                addr,
                source,
            })?;
        let port = udp.local_addr().map_or(addr.port(), |a| a.port());
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => {
                last = Some(DnsError::Bind {
                    proto: "tcp",
                    addr: tcp_addr,
                    source,
                });
            }
        }
    }
    Err(last.unwrap_or(DnsError::Server("no bind attempt".to_owned())))
}
