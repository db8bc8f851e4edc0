//! Forwarding of names outside the cluster zone to the node's upstream resolvers: the query
//! goes out as the client sent it (UDP, then TCP when the answer is truncated) and the reply
//! comes back with its response code and sections intact.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use hickory_server::proto::{
    op::{Message, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::{Instant, timeout},
};

/// Largest DNS message over UDP we accept from upstream (EDNS allows up to 64 KiB).
const MAX_UDP: usize = 65_535;
/// Upstream answers are kept at most this long, as CoreDNS' default Corefile (`cache 30`):
/// with ndots:5 search paths a pod asks the same outside names again and again.
const MAX_CACHE_TTL: u32 = 30;
/// Bound on cached answers, so the agent's memory stays small.
const MAX_CACHE_ENTRIES: usize = 4096;

type CacheKey = (Name, RecordType, DNSClass);

struct Cached {
    reply: Message,
    stored: Instant,
    expires: Instant,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("upstream {server}: {source}")]
    Io {
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("upstream {server} did not answer in time")]
    Timeout { server: SocketAddr },
    #[error("upstream {server} sent an unreadable answer: {reason}")]
    BadAnswer { server: SocketAddr, reason: String },
}

pub(crate) struct Forwarder {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<HashMap<CacheKey, Cached>>,
}

impl Forwarder {
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self {
            servers,
            timeout,
            cache: Mutex::default(),
        }
    }

    /// The answer to `query`: from the cache while its TTL lasts (TTLs counted down), else from
    /// upstream (`raw` is the encoded query, `id` its id), then cached.
    pub async fn forward(
        &self,
        query: &Query,
        raw: &[u8],
        id: u16,
    ) -> Result<Message, ForwardError> {
        let key = (
            query.name().to_lowercase(),
            query.query_type(),
            query.query_class(),
        );
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let reply = self.ask_upstream(raw, id).await?;
        self.store(key, &reply);
        Ok(reply)
    }

    fn cached(&self, key: &CacheKey) -> Option<Message> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let entry = cache.get(key)?;
        if entry.expires <= now {
            cache.remove(key);
            return None;
        }
        let elapsed = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut reply = entry.reply.clone();
        for record in reply
            .answers
            .iter_mut()
            .chain(reply.authorities.iter_mut())
            .chain(reply.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        Some(reply)
    }

    fn store(&self, key: CacheKey, reply: &Message) {
        let Some(ttl) = cache_ttl(reply) else {
            return;
        };
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                // Rare and cheap to refill: simpler than an LRU.
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                reply: reply.clone(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    /// Sends the encoded query `raw` (whose id is `id`) to each upstream in turn until one
    /// answers with something other than SERVFAIL/REFUSED (as the libc resolver moves on).
    async fn ask_upstream(&self, raw: &[u8], id: u16) -> Result<Message, ForwardError> {
        let mut last = Err(ForwardError::NoUpstream);
        for &server in &self.servers {
            let reply = match self.udp(server, raw, id).await {
                Ok(reply) if reply.metadata.truncation => self.tcp(server, raw, id).await,
                other => other,
            };
            match reply {
                Ok(reply)
                    if !matches!(
                        reply.metadata.response_code,
                        ResponseCode::ServFail | ResponseCode::Refused
                    ) =>
                {
                    return Ok(reply);
                }
                other => {
                    if let Err(e) = &other {
                        tracing::debug!(error = %e, "upstream failed, trying the next one");
                    }
                    last = other;
                }
            }
        }
        last
    }

    async fn udp(&self, server: SocketAddr, raw: &[u8], id: u16) -> Result<Message, ForwardError> {
        let io_err = |source| ForwardError::Io { server, source };
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io_err)?;
        socket.connect(server).await.map_err(io_err)?;
        socket.send(raw).await.map_err(io_err)?;
        let mut buf = vec![0; MAX_UDP];
        let deadline = Instant::now() + self.timeout;
        loop {
            let len = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| ForwardError::Timeout { server })?
                .map_err(io_err)?;
            // A stray or spoofed datagram with another id is dropped, not taken as the answer.
            if let Ok(reply) = Message::from_vec(&buf[..len])
                && reply.metadata.id == id
            {
                return Ok(reply);
            }
        }
    }

    async fn tcp(&self, server: SocketAddr, raw: &[u8], id: u16) -> Result<Message, ForwardError> {
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            let len = u16::try_from(raw.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
            let mut out = Vec::with_capacity(raw.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(raw);
            stream.write_all(&out).await?;
            let len = stream.read_u16().await?;
            let mut buf = vec![0; usize::from(len)];
            stream.read_exact(&mut buf).await?;
            Ok::<_, io::Error>(buf)
        };
        let buf = timeout(self.timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout { server })?
            .map_err(|source| ForwardError::Io { server, source })?;
        let reply = Message::from_vec(&buf).map_err(|e| ForwardError::BadAnswer {
            server,
            reason: e.to_string(),
        })?;
        if reply.metadata.id != id {
            return Err(ForwardError::BadAnswer {
                server,
                reason: format!("id {} instead of {id}", reply.metadata.id),
            });
        }
        Ok(reply)
    }
}

/// How long an upstream answer may be cached: positive answers by their smallest TTL, negative
/// ones (NXDOMAIN, NODATA) by the SOA (RFC 2308); never longer than `MAX_CACHE_TTL`. `None` for
/// errors and for negative answers without an SOA.
fn cache_ttl(reply: &Message) -> Option<u32> {
    let code = reply.metadata.response_code;
    if reply.metadata.truncation || !matches!(code, ResponseCode::NoError | ResponseCode::NXDomain)
    {
        return None;
    }
    let ttl = if code == ResponseCode::NoError && !reply.answers.is_empty() {
        reply.answers.iter().map(|r| r.ttl).min()
    } else {
        reply
            .authorities
            .iter()
            .filter_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .min()
    }?;
    (ttl > 0).then_some(ttl.min(MAX_CACHE_TTL))
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::rr::{
        Record,
        rdata::{A, SOA},
    };

    use super::*;

    fn reply(code: ResponseCode) -> Message {
        let mut m = Message::response(1, hickory_server::proto::op::OpCode::Query);
        m.metadata.response_code = code;
        m
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(Name::root(), ttl, RData::A(A::new(192, 0, 2, 1)))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, minimum);
        Record::from_rdata(Name::root(), ttl, RData::SOA(soa))
    }

    #[test]
    fn cache_ttl_follows_rfc2308_and_the_cap() {
        let mut ok = reply(ResponseCode::NoError);
        ok.add_answer(a(20)).add_answer(a(7));
        assert_eq!(cache_ttl(&ok), Some(7));
        let mut long = reply(ResponseCode::NoError);
        long.add_answer(a(3600));
        assert_eq!(cache_ttl(&long), Some(MAX_CACHE_TTL));
        let mut nx = reply(ResponseCode::NXDomain);
        nx.add_authority(soa(900, 12));
        assert_eq!(cache_ttl(&nx), Some(12));
        assert_eq!(cache_ttl(&reply(ResponseCode::NXDomain)), None);
        let mut fail = reply(ResponseCode::ServFail);
        fail.add_answer(a(20));
        assert_eq!(cache_ttl(&fail), None);
        let mut zero = reply(ResponseCode::NoError);
        zero.add_answer(a(0));
        assert_eq!(cache_ttl(&zero), None);
        let mut truncated = ok.clone();
        truncated.metadata.truncation = true;
        assert_eq!(cache_ttl(&truncated), None);
    }
}
