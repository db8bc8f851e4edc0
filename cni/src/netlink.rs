//! A small synchronous rtnetlink client (netlink-packet-route over a blocking netlink-sys
//! socket): the plugin runs once per call and needs a dozen requests, so no async runtime.
//! A socket belongs to the network namespace it was created in, which is how the plugin
//! configures a pod's namespace without moving the process (see [`Netlink::in_netns`]).

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A netlink failure: the kernel's errno (when it sent one) and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: kernel said: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { what: String, errno: i32 },
    #[error("{what}: undecodable reply: {detail}")]
    Decode { what: String, detail: String },
}

impl NetlinkError {
    /// The kernel's errno, for callers that tolerate e.g. ENODEV or EEXIST.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io { source, .. } => source.raw_os_error(),
            Self::Decode { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// A MAC address.
pub type Mac = [u8; 6];

#[must_use]
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A link as this plugin cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub alias: Option<String>,
    pub kind: Option<String>,
}

/// A route (main table, IPv4) as returned by a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// One rtnetlink socket, bound to the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| NetlinkError::Io { what, source }
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("netlink socket"))?;
        socket.bind_auto().map_err(io("netlink bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io("netlink connect"))?;
        // Extended acks make the kernel's refusals name the offending attribute in dmesg-less
        // environments; failure to enable them is harmless.
        let _ = socket.set_ext_ack(true);
        Ok(Self { socket, seq: 0 })
    }

    /// A socket in the namespace at `netns`: a short-lived thread enters the namespace,
    /// opens the socket and exits, so the process itself never changes namespace.
    pub fn in_netns(netns: &Path) -> Result<Self> {
        let file = File::open(netns).map_err(|source| NetlinkError::Io {
            what: format!("opening netns {}", netns.display()),
            source,
        })?;
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| NetlinkError::Io {
                        what: format!("entering netns {}", netns.display()),
                        source: e.into(),
                    },
                )?;
                Self::new()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Sends one request and collects the replies until the ACK or the end of a dump.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        // Always ask for an ACK: a non-dump GET otherwise ends with its reply and nothing marks the end.
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Io {
                what: what.to_owned(),
                source,
            })?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| NetlinkError::Io {
                    what: what.to_owned(),
                    source,
                })?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| NetlinkError::Decode {
                        what: what.to_owned(),
                        detail: e.to_string(),
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(NetlinkError::Kernel {
                                what: what.to_owned(),
                                errno: -code.get(),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    fn link_from(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: None,
            mac: None,
            alias: None,
            kind: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Mtu(m) => link.mtu = Some(m),
                LinkAttribute::Address(a) => link.mac = a.try_into().ok(),
                LinkAttribute::IfAlias(a) => link.alias = Some(a),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// The link called `name`, or `None`.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(
            RouteNetlinkMessage::GetLink(msg),
            0,
            &format!("looking up {name}"),
        ) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(Self::link_from(m)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc_enodev()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "listing links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(Self::link_from(m)),
                _ => None,
            })
            .collect())
    }

    /// Creates a veth pair: `host` here, `peer` directly inside the namespace `peer_netns`
    /// (so its name never collides with this namespace's interfaces), both with fixed MACs.
    pub fn add_veth(
        &mut self,
        host: &VethEnd<'_>,
        peer: &VethEnd<'_>,
        peer_netns: &File,
        mtu: u32,
        alias: &str,
    ) -> Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = vec![
            LinkAttribute::IfName(peer.name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(peer.mac.to_vec()),
            LinkAttribute::NetNsFd(peer_netns.as_raw_fd()),
        ];
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(host.name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(host.mac.to_vec()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
            &format!("creating veth {} / {}", host.name, peer.name),
        )?;
        // IFLA_IFALIAS is only honoured on changes of an existing link, not on creation.
        let mut set = LinkMessage::default();
        set.attributes = vec![
            LinkAttribute::IfName(host.name.to_owned()),
            LinkAttribute::IfAlias(alias.to_owned()),
        ];
        self.request(
            RouteNetlinkMessage::SetLink(set),
            NLM_F_ACK,
            &format!("setting alias of {}", host.name),
        )?;
        Ok(())
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
            &format!("setting link {index} up"),
        )?;
        Ok(())
    }

    /// Deletes a link; `false` when there was none (callers doing cleanup tolerate that).
    pub fn del_link(&mut self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
            &format!("deleting {name}"),
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc_enodev()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `ip/prefix` to a link.
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
            &format!("adding address {ip}/{prefix}"),
        )?;
        Ok(())
    }

    /// The IPv4 addresses of a link.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(msg),
            NLM_F_DUMP,
            "listing addresses",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(m) if m.header.index == index => {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => {
                            Some((*ip, m.header.prefix_len))
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) a main-table IPv4 route: `dst/prefix` out of `oif`, via `gateway`
    /// when given, else scope link.
    pub fn add_route(
        &mut self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
    ) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        msg.header.kind = RouteType::Unicast;
        if prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        if let Some(gw) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
            &format!("adding route {dst}/{prefix}"),
        )?;
        Ok(())
    }

    /// The main table's IPv4 routes.
    pub fn routes(&mut self) -> Result<Vec<Route4>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetRoute(msg),
            NLM_F_DUMP,
            "listing routes",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(m)
                    if m.header.table == RouteHeader::RT_TABLE_MAIN =>
                {
                    let mut route = Route4 {
                        dst: Ipv4Addr::UNSPECIFIED,
                        prefix: m.header.destination_prefix_length,
                        gateway: None,
                        oif: None,
                    };
                    for a in m.attributes {
                        match a {
                            RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = ip,
                            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => {
                                route.gateway = Some(ip);
                            }
                            RouteAttribute::Oif(i) => route.oif = Some(i),
                            _ => {}
                        }
                    }
                    Some(route)
                }
                _ => None,
            })
            .collect())
    }

    /// A permanent neighbour entry: `ip` is at `mac` on link `index`, never resolved by ARP.
    pub fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: &Mac) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
            NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        ];
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
            &format!("adding neighbour {ip}"),
        )?;
        Ok(())
    }

    /// The permanent IPv4 neighbour entries of link `index`.
    pub fn permanent_neighbours(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, Mac)>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetNeighbour(msg),
            NLM_F_DUMP,
            "listing neighbours",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewNeighbour(m)
                    if m.header.ifindex == index && m.header.state == NeighbourState::Permanent =>
                {
                    let ip = m.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    let mac = m.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(l) => Mac::try_from(l.as_slice()).ok(),
                        _ => None,
                    })?;
                    Some((ip, mac))
                }
                _ => None,
            })
            .collect())
    }
}

/// One end of a veth pair to create.
#[derive(Debug, Clone, Copy)]
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub mac: Mac,
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}
