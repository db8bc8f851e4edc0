//! Building and reading Ethernet/IPv4/TCP/UDP frames for packet-level tests of the datapath,
//! with real checksums, so a test can tell a correct rewrite from a broken one.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
const ETH_HLEN: usize = 14;

/// The Internet checksum (RFC 1071) of `data`, starting from the partial sum `sum`.
#[must_use]
pub fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto),
        len as u16,
    ]
    .iter()
    .map(|w| u32::from(*w))
    .sum()
}

/// A frame: Ethernet header, IPv4 header (TTL 64), then `l4` (whose checksum field is filled
/// in here unless `udp_no_checksum`).
fn frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    mut l4: Vec<u8>,
    udp_no_checksum: bool,
) -> Vec<u8> {
    let csum_at = if proto == TCP { 16 } else { 6 };
    if !(proto == UDP && udp_no_checksum) {
        let sum = checksum(&l4, pseudo_sum(src, dst, proto, l4.len()));
        // 0 means "no checksum" for UDP; the all-ones form stands for it.
        let sum = if sum == 0 && proto == UDP {
            0xffff
        } else {
            sum
        };
        l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut out = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    out.extend(ip);
    out.extend(l4);
    out
}

/// A TCP segment with `flags` and no payload.
#[must_use]
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
    let mut l4 = vec![0_u8; 20];
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    l4[4..8].copy_from_slice(&1000_u32.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64240_u16.to_be_bytes());
    frame(*src.ip(), *dst.ip(), TCP, l4, false)
}

/// A UDP datagram carrying `payload`; `checksum` false sends it without a checksum.
#[must_use]
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], checksum: bool) -> Vec<u8> {
    let mut l4 = vec![0_u8; 8];
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    frame(*src.ip(), *dst.ip(), UDP, l4, !checksum)
}

/// Marks a frame as a non-first fragment (offset 8 bytes), as the datapath must leave alone.
pub fn make_later_fragment(frame: &mut [u8]) {
    frame[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&1_u16.to_be_bytes());
    frame[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
    let sum = checksum(&frame[ETH_HLEN..ETH_HLEN + 20], 0);
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
}

/// What a test checks in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: u8,
    pub ttl: u8,
    pub ip_checksum_ok: bool,
    /// `None` for a UDP datagram without checksum.
    pub l4_checksum_ok: Option<bool>,
}

/// Reads an Ethernet/IPv4/TCP-or-UDP frame; `None` when it is anything else or truncated.
#[must_use]
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    let ip = frame.get(ETH_HLEN..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = ip.get(ihl..total)?;
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let csum_at = match proto {
        TCP if l4.len() >= 20 => 16,
        UDP if l4.len() >= 8 => 6,
        _ => return None,
    };
    let l4_checksum_ok = if proto == UDP && port(csum_at) == 0 {
        None
    } else {
        Some(checksum(l4, pseudo_sum(src, dst, proto, l4.len())) == 0)
    };
    Some(Parsed {
        src: SocketAddrV4::new(src, port(0)),
        dst: SocketAddrV4::new(dst, port(2)),
        proto,
        ttl: ip[8],
        ip_checksum_ok: checksum(&ip[..ihl], 0) == 0,
        l4_checksum_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_parse_back_with_valid_checksums() {
        let a = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 2), 40000);
        let b = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 1), 30080);
        let p = parse(&tcp(a, b, SYN)).unwrap();
        assert_eq!((p.src, p.dst, p.proto, p.ttl), (a, b, TCP, 64));
        assert!(p.ip_checksum_ok);
        assert_eq!(p.l4_checksum_ok, Some(true));
        let u = parse(&udp(a, b, b"hello", true)).unwrap();
        assert_eq!(u.l4_checksum_ok, Some(true));
        assert_eq!(
            parse(&udp(a, b, b"hi", false)).unwrap().l4_checksum_ok,
            None
        );
        let mut broken = tcp(a, b, SYN);
        broken[ETH_HLEN + 20 + 4] ^= 1;
        assert_eq!(parse(&broken).unwrap().l4_checksum_ok, Some(false));
        assert!(parse(&broken[..30]).is_none());
    }
}
