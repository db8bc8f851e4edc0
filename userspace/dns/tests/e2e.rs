//! End to end: skiff's in-process API server, Services and EndpointSlices created through kube,
//! the DNS watching it and serving on 127.0.0.1, queried over UDP and TCP; names outside the
//! cluster go to a fake upstream on 127.0.0.1 (nothing leaves loopback).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hickory_server::proto::{
    op::{Edns, Message, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use skiff_apiserver::testing::LocalServer;
use skiff_dns::{DnsCache, DnsConfig, DnsServer, PodRecords};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
    time::timeout,
};

const STEP: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Tcp,
}

async fn query(server: SocketAddr, name: &str, qtype: RecordType, transport: Transport) -> Message {
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = true;
    msg.add_query(hickory_server::proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        qtype,
    ));
    let raw = msg.to_vec().unwrap();
    let reply = match transport {
        Transport::Udp => timeout(STEP, async {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(&raw, server).await.unwrap();
            let mut buf = vec![0; 65535];
            let (len, _) = socket.recv_from(&mut buf).await.unwrap();
            buf.truncate(len);
            buf
        })
        .await
        .expect("UDP answer in time"),
        Transport::Tcp => timeout(STEP, async {
            let mut stream = TcpStream::connect(server).await.unwrap();
            let mut out = u16::try_from(raw.len()).unwrap().to_be_bytes().to_vec();
            out.extend_from_slice(&raw);
            stream.write_all(&out).await.unwrap();
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0; usize::from(len)];
            stream.read_exact(&mut buf).await.unwrap();
            buf
        })
        .await
        .expect("TCP answer in time"),
    };
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, msg.metadata.id);
    reply
}

fn rand_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn addrs(msg: &Message) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Polls until `check` holds for the answer (watch events take a moment), failing after 10 s.
async fn eventually(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    transport: Transport,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = query(server, name, qtype, transport).await;
        if check(&reply) {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {qtype} never matched; last: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fake upstream on 127.0.0.1: `upstream.test.` A 192.0.2.1, `ext.test.` A 192.0.2.10,
/// `big.test.` 100 A records (truncated over UDP without EDNS), everything else NXDOMAIN.
struct FakeUpstream {
    addr: SocketAddr,
    /// Queries received (UDP and TCP).
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn upstream_answer(raw: &[u8], udp: bool) -> Vec<u8> {
    let request = Message::from_vec(raw).unwrap();
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_available = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.add_queries(request.queries.clone());
    let q = &request.queries[0];
    let name = q.name().to_ascii().to_ascii_lowercase();
    let a = |ip: Ipv4Addr| Record::from_rdata(q.name().clone(), 60, RData::A(A(ip)));
    match (name.as_str(), q.query_type()) {
        ("upstream.test.", RecordType::A) => {
            reply.add_answer(a(Ipv4Addr::new(192, 0, 2, 1)));
        }
        ("ext.test.", RecordType::A) => {
            reply.add_answer(a(Ipv4Addr::new(192, 0, 2, 10)));
        }
        ("big.test.", RecordType::A) => {
            for i in 0..100 {
                reply.add_answer(a(Ipv4Addr::new(192, 0, 2, i)));
            }
        }
        ("upstream.test." | "ext.test." | "big.test.", _) => {}
        _ => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    let bytes = reply.to_vec().unwrap();
    if udp && request.edns.is_none() && bytes.len() > 512 {
        let mut truncated = Message::response(request.metadata.id, request.metadata.op_code);
        truncated.metadata.truncation = true;
        truncated.add_queries(request.queries);
        return truncated.to_vec().unwrap();
    }
    bytes
}

async fn fake_upstream() -> FakeUpstream {
    // The same port for UDP and TCP: an ephemeral UDP port may be taken on the TCP side (by
    // any outgoing connection), so try again until both binds succeed.
    let mut attempt = 0;
    let (udp, addr, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        match TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, addr, tcp),
            Err(e) => {
                attempt += 1;
                assert!(attempt < 20, "no port free for both UDP and TCP: {e}");
            }
        }
    };
    let queries = Arc::new(AtomicUsize::new(0));
    let udp_count = Arc::clone(&queries);
    let tcp_count = Arc::clone(&queries);
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0; 65535];
        loop {
            let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                return;
            };
            udp_count.fetch_add(1, Ordering::SeqCst);
            let reply = upstream_answer(&buf[..len], true);
            let _ = udp.send_to(&reply, from).await;
        }
    });
    let tcp_task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = tcp.accept().await else {
                return;
            };
            tcp_count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(len) = stream.read_u16().await else {
                    return;
                };
                let mut buf = vec![0; usize::from(len)];
                if stream.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let reply = upstream_answer(&buf, false);
                let mut out = u16::try_from(reply.len()).unwrap().to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                let _ = stream.write_all(&out).await;
            });
        }
    });
    FakeUpstream {
        addr,
        queries,
        tasks: vec![udp_task, tcp_task],
    }
}

struct Dns {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start_dns(client: Client, upstream: SocketAddr) -> Dns {
    let cache = DnsCache::new();
    let watch = {
        let cache = cache.clone();
        tokio::spawn(async move {
            if let Err(e) = skiff_dns::watch(client, cache, PodRecords::Insecure).await {
                panic!("DNS watch ended: {e}");
            }
        })
    };
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DnsConfig::default()
    };
    let server = DnsServer::bind_with_upstreams(&config, cache, vec![upstream])
        .await
        .unwrap();
    let addr = server.local_addr();
    let serve = tokio::spawn(async move {
        server.run().await.unwrap();
    });
    Dns {
        addr,
        tasks: vec![watch, serve],
    }
}

fn svc(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn slice(
    name: &str,
    service: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

#[tokio::test]
async fn cluster_dns_end_to_end() {
    let server = LocalServer::start().await.unwrap();
    let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let upstream = fake_upstream().await;
    let pp = PostParams::default();

    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "db"}})).unwrap(),
        )
        .await
        .unwrap();
    let default_svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let db_svcs: Api<Service> = Api::namespaced(client.clone(), "db");
    let db_slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "db");
    let web = default_svcs
        .create(
            &pp,
            &svc(
                "web",
                json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            ),
        )
        .await
        .unwrap();
    let web_ip: IpAddr = web.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    db_svcs
        .create(
            &pp,
            &svc(
                "pg",
                json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
            ),
        )
        .await
        .unwrap();
    db_slices
        .create(
            &pp,
            &slice(
                "pg-1",
                "pg",
                json!([
                    {"addresses": ["10.244.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.6"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": false}},
                ]),
                json!([{"name": "pg", "port": 5433, "protocol": "TCP"}]),
            ),
        )
        .await
        .unwrap();
    default_svcs
        .create(
            &pp,
            &svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "ext.test"}),
            ),
        )
        .await
        .unwrap();

    let dns = start_dns(client.clone(), upstream.addr).await;

    for transport in [Transport::Udp, Transport::Tcp] {
        // A for a ClusterIP Service (the first query also waits for the initial list).
        let a = eventually(
            dns.addr,
            "web.default.svc.cluster.local.",
            RecordType::A,
            transport,
            |m| m.metadata.response_code == ResponseCode::NoError,
        )
        .await;
        assert_eq!(addrs(&a), [web_ip], "{transport:?}");
        assert!(a.metadata.authoritative);
        assert_eq!(a.answers[0].ttl, 5);

        // AAAA of an IPv4-only Service: empty NOERROR with the SOA.
        let aaaa = query(
            dns.addr,
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
            transport,
        )
        .await;
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert!(matches!(aaaa.authorities[0].data, RData::SOA(_)));

        // Headless: the ready endpoints; an endpoint by hostname.
        let headless = query(
            dns.addr,
            "pg.db.svc.cluster.local.",
            RecordType::A,
            transport,
        )
        .await;
        assert_eq!(
            addrs(&headless),
            [
                "10.244.0.5".parse::<IpAddr>().unwrap(),
                "10.244.0.6".parse().unwrap()
            ]
        );
        let host = query(
            dns.addr,
            "pg-0.pg.db.svc.cluster.local.",
            RecordType::A,
            transport,
        )
        .await;
        assert_eq!(addrs(&host), ["10.244.0.5".parse::<IpAddr>().unwrap()]);

        // SRV for a named port, ClusterIP and headless.
        let srv = query(
            dns.addr,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            transport,
        )
        .await;
        assert!(
            matches!(&srv.answers[..], [r] if matches!(&r.data, RData::SRV(s) if s.port == 80 && s.target.to_ascii() == "web.default.svc.cluster.local.")),
            "{srv:?}"
        );
        assert_eq!(srv.additionals.len(), 1);
        let srv = query(
            dns.addr,
            "_pg._tcp.pg.db.svc.cluster.local.",
            RecordType::SRV,
            transport,
        )
        .await;
        let mut targets: Vec<_> = srv
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                (5433, "10-244-0-6.pg.db.svc.cluster.local.".to_owned()),
                (5433, "pg-0.pg.db.svc.cluster.local.".to_owned())
            ]
        );

        // PTR for the ClusterIP and for a headless endpoint.
        let IpAddr::V4(v4) = web_ip else {
            panic!("IPv4 ClusterIP expected")
        };
        let [a1, b1, c1, d1] = v4.octets();
        let ptr = query(
            dns.addr,
            &format!("{d1}.{c1}.{b1}.{a1}.in-addr.arpa."),
            RecordType::PTR,
            transport,
        )
        .await;
        assert!(
            matches!(&ptr.answers[..], [r] if matches!(&r.data, RData::PTR(p) if p.0.to_ascii() == "web.default.svc.cluster.local.")),
            "{ptr:?}"
        );
        let ptr = query(
            dns.addr,
            "5.0.244.10.in-addr.arpa.",
            RecordType::PTR,
            transport,
        )
        .await;
        assert!(
            matches!(&ptr.answers[..], [r] if matches!(&r.data, RData::PTR(p) if p.0.to_ascii() == "pg-0.pg.db.svc.cluster.local."))
        );

        // ExternalName: the CNAME, then the target's address from upstream.
        let ext = query(
            dns.addr,
            "ext.default.svc.cluster.local.",
            RecordType::A,
            transport,
        )
        .await;
        assert!(
            matches!(&ext.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "ext.test."),
            "{ext:?}"
        );
        assert_eq!(addrs(&ext), ["192.0.2.10".parse::<IpAddr>().unwrap()]);

        // NXDOMAIN inside the zone, with the SOA.
        let nx = query(
            dns.addr,
            "nope.default.svc.cluster.local.",
            RecordType::A,
            transport,
        )
        .await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(nx.authorities[0].data, RData::SOA(_)));

        // Pod records.
        let pod = query(
            dns.addr,
            "10-244-3-4.default.pod.cluster.local.",
            RecordType::A,
            transport,
        )
        .await;
        assert_eq!(addrs(&pod), ["10.244.3.4".parse::<IpAddr>().unwrap()]);

        // Forwarded: answers and NXDOMAIN come back from the upstream as it sent them.
        let fwd = query(dns.addr, "upstream.test.", RecordType::A, transport).await;
        assert_eq!(addrs(&fwd), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert!(!fwd.metadata.authoritative);
        assert!((55..=60).contains(&fwd.answers[0].ttl), "{fwd:?}");
        let fwd_nx = query(dns.addr, "missing.test.", RecordType::A, transport).await;
        assert_eq!(fwd_nx.metadata.response_code, ResponseCode::NXDomain);
        // An unknown reverse name falls through to upstream too.
        let fwd_ptr = query(
            dns.addr,
            "9.9.9.10.in-addr.arpa.",
            RecordType::PTR,
            transport,
        )
        .await;
        assert_eq!(fwd_ptr.metadata.response_code, ResponseCode::NXDomain);
        assert!(!fwd_ptr.metadata.authoritative);
    }

    // Upstream answers are cached for their TTL (counted down); NXDOMAIN without an SOA is not.
    let before = upstream.queries.load(Ordering::SeqCst);
    for transport in [Transport::Udp, Transport::Tcp, Transport::Udp] {
        let fwd = query(dns.addr, "upstream.test.", RecordType::A, transport).await;
        assert_eq!(addrs(&fwd), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    }
    assert_eq!(upstream.queries.load(Ordering::SeqCst), before);
    query(dns.addr, "missing.test.", RecordType::A, Transport::Udp).await;
    assert_eq!(upstream.queries.load(Ordering::SeqCst), before + 1);

    // A large upstream answer: truncated over UDP, so the forwarder retries over TCP; our UDP
    // client without EDNS sees TC and gets all of it over TCP.
    let udp_big = query(dns.addr, "big.test.", RecordType::A, Transport::Udp).await;
    assert!(udp_big.metadata.truncation);
    let tcp_big = query(dns.addr, "big.test.", RecordType::A, Transport::Tcp).await;
    assert_eq!(tcp_big.answers.len(), 100);

    // Changes reach the answers: a new Service, a changed slice, a deleted Service.
    default_svcs
        .create(&pp, &svc("late", json!({"ports": [{"port": 81}]})))
        .await
        .unwrap();
    eventually(
        dns.addr,
        "late.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
        |m| addrs(m).len() == 1,
    )
    .await;
    db_slices
        .patch(
            "pg-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["10.244.0.8"], "conditions": {"ready": true}}]})),
        )
        .await
        .unwrap();
    eventually(
        dns.addr,
        "pg.db.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
        |m| addrs(m) == ["10.244.0.8".parse::<IpAddr>().unwrap()],
    )
    .await;
    default_svcs
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        dns.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Tcp,
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    )
    .await;

    drop(dns);
    drop(upstream);
}

#[tokio::test]
async fn edns_query_and_unsynced_servfail() {
    // A cache nobody fills: in-zone names get SERVFAIL (not a cacheable NXDOMAIN), while
    // forwarding works; EDNS queries get EDNS answers.
    let upstream = fake_upstream().await;
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DnsConfig::default()
    };
    let server = DnsServer::bind_with_upstreams(&config, DnsCache::new(), vec![upstream.addr])
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server.run_until(async {
        let _ = stop_rx.await;
    }));
    let reply = query(
        addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);

    let mut msg = Message::query();
    msg.metadata.id = 7;
    msg.add_query(hickory_server::proto::op::Query::query(
        Name::from_ascii("big.test.").unwrap(),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&msg.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0; 65535];
    let (len, _) = timeout(STEP, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert!(reply.edns.is_some());
    // Our 1232-byte EDNS limit still truncates 100 records (1600+ bytes).
    assert!(reply.metadata.truncation);

    stop_tx.send(()).unwrap();
    timeout(STEP, serve)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bind_reads_resolv_conf_and_reports_errors() {
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        resolv_conf: "/nonexistent/skt-resolv.conf".into(),
        ..DnsConfig::default()
    };
    let err = DnsServer::bind(&config, DnsCache::new()).await.unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/skt-resolv.conf"),
        "{err}"
    );

    let bad_domain = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster_domain: "bad..domain".to_owned(),
        ..DnsConfig::default()
    };
    assert!(
        DnsServer::bind_with_upstreams(&bad_domain, DnsCache::new(), vec![])
            .await
            .is_err()
    );

    // Port taken: a clear bind error.
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let busy = DnsConfig {
        listen: taken.local_addr().unwrap(),
        ..DnsConfig::default()
    };
    let err = DnsServer::bind_with_upstreams(&busy, DnsCache::new(), vec![])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("binding DNS udp"), "{err}");
}
