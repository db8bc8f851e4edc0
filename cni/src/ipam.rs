//! skiff's IPAM: host-local-like allocation from the node's pod CIDR, one file per address
//! under `dataDir/<network>/`, serialized across concurrent plugin processes by a file lock.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, Code, Result};

/// An IPv4 network in CIDR notation; the address is normalized to the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// `None` when the prefix is longer than 32.
    #[must_use]
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix)),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    #[must_use]
    pub fn network(self) -> Ipv4Addr {
        self.addr
    }

    #[must_use]
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    #[must_use]
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !Self::mask_of(self.prefix))
    }

    #[must_use]
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.addr)
    }

    /// A pool needs room for a reserved gateway and at least one pod besides network and
    /// broadcast addresses.
    pub fn check_pool(self) -> Result<()> {
        if self.prefix > 30 {
            return Err(CniError::new(
                Code::InvalidConfig,
                "subnet too small",
                format!("{self}: a pod subnet needs a prefix of /30 or shorter"),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad IPv4 address: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("{s:?}: bad prefix: {e}"))?;
        Self::new(addr, prefix).ok_or_else(|| format!("{s:?}: prefix longer than 32"))
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Who holds an address: the attachment (container, ifname) and the host veth made for it,
/// so GC can remove the veth of an attachment it finds stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub host_veth: String,
}

/// One persisted allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub owner: Owner,
}

const LOCK_FILE: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip";

/// The allocations of one network.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Holds the store's exclusive lock until dropped (closing the file releases the flock).
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _file: File,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> CniError {
    CniError::new(
        Code::Io,
        "IPAM state",
        format!("{what} {}: {e}", path.display()),
    )
}

impl Store {
    /// `data_dir/<network>`, created if missing. `network` must already be validated.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(Self { dir })
    }

    /// Takes the network's lock; every read-modify-write of the pool happens under it.
    pub fn lock(&self) -> Result<Locked<'_>> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("opening", &path, e))?;
        file.lock().map_err(|e| io_err("locking", &path, e))?;
        Ok(Locked {
            store: self,
            _file: file,
        })
    }
}

impl Locked<'_> {
    /// Every allocation, in address order. Unparseable files are skipped, not fatal: a torn
    /// write must not wedge the whole node's pod networking.
    pub fn list(&self) -> Result<Vec<Allocation>> {
        let dir = &self.store.dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err("reading", dir, e))? {
            let entry = entry.map_err(|e| io_err("reading", dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Ok(text) = fs::read(entry.path()) else {
                continue;
            };
            if let Ok(owner) = serde_json::from_slice::<Owner>(&text) {
                out.push(Allocation { ip, owner });
            }
        }
        out.sort_by_key(|a| a.ip);
        Ok(out)
    }

    /// The address held by (container, ifname), if any.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        Ok(self
            .list()?
            .into_iter()
            .find(|a| a.owner.container_id == container_id && a.owner.ifname == ifname))
    }

    /// Hands out the next free address after the last one handed out (so a just-released
    /// address is not reused at once), skipping the network, broadcast and `reserved`
    /// addresses. An attachment that already holds an address gets the same one back.
    pub fn allocate(
        &self,
        subnet: Ipv4Net,
        reserved: &[Ipv4Addr],
        owner: &Owner,
    ) -> Result<Ipv4Addr> {
        if let Some(existing) = self.find(&owner.container_id, &owner.ifname)? {
            return Ok(existing.ip);
        }
        let first = u32::from(subnet.network()) + 1;
        let last = u32::from(subnet.broadcast()) - 1;
        let size = last - first + 1;
        let last_path = self.store.dir.join(LAST_RESERVED);
        let start = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip))
            .map_or(first, |ip| if ip == last { first } else { ip + 1 });
        let body = serde_json::to_vec(owner).unwrap_or_default();
        for i in 0..size {
            let ip = Ipv4Addr::from(first + (start - first + i) % size);
            if reserved.contains(&ip) {
                continue;
            }
            let path = self.store.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(&body)
                        .and_then(|()| f.sync_data())
                        .map_err(|e| io_err("writing", &path, e))?;
                    // Only a hint for the next search: failing to record it must not fail (and
                    // so leak) an allocation that is already on disk.
                    let _ = fs::write(&last_path, ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", &path, e)),
            }
        }
        Err(CniError::new(
            Code::PoolExhausted,
            "no free pod address",
            format!(
                "all {} usable addresses of {subnet} are allocated (state in {})",
                size as usize - reserved.iter().filter(|r| subnet.contains(**r)).count(),
                self.store.dir.display()
            ),
        ))
    }

    /// Frees what (container, ifname) holds; `None` when it held nothing (DEL is idempotent).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        let Some(found) = self.find(container_id, ifname)? else {
            return Ok(None);
        };
        self.remove(found.ip)?;
        Ok(Some(found))
    }

    /// Frees one address.
    pub fn remove(&self, ip: Ipv4Addr) -> Result<()> {
        let path = self.store.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::Arc, thread};

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("skiff-cni-ipam-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn owner(c: &str) -> Owner {
        Owner {
            container_id: c.into(),
            ifname: "eth0".into(),
            host_veth: format!("v{c}"),
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_math() {
        let n = net("10.244.1.77/24");
        assert_eq!(n.to_string(), "10.244.1.0/24");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert!(n.contains(Ipv4Addr::new(10, 244, 1, 9)));
        assert!(!n.contains(Ipv4Addr::new(10, 244, 2, 9)));
        assert_eq!(net("0.0.0.0/0").broadcast(), Ipv4Addr::BROADCAST);
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Net>().is_err());
        assert!(net("10.0.0.0/30").check_pool().is_ok());
        assert_eq!(
            net("10.0.0.0/31").check_pool().unwrap_err().code,
            Code::InvalidConfig
        );
    }

    #[test]
    fn allocates_skips_reserved_reuses_and_exhausts() {
        let tmp = TempDir::new("basic");
        let store = Store::open(&tmp.0, "net").unwrap();
        let lock = store.lock().unwrap();
        let subnet = net("10.1.0.0/29"); // .1-.6 usable
        let gw = [Ipv4Addr::new(10, 1, 0, 1)];
        let a = lock.allocate(subnet, &gw, &owner("a")).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(
            lock.allocate(subnet, &gw, &owner("a")).unwrap(),
            a,
            "same attachment, same address"
        );
        let mut got: Vec<_> = ["b", "c", "d", "e"]
            .iter()
            .map(|c| lock.allocate(subnet, &gw, &owner(c)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 1, 0, 6)));
        let err = lock.allocate(subnet, &gw, &owner("f")).unwrap_err();
        assert_eq!(err.code, Code::PoolExhausted);
        assert!(err.details.contains("all 5 usable addresses"), "{err}");
        // Release, and the freed address is handed out again only once the pool wraps.
        assert_eq!(
            lock.release("c", "eth0").unwrap().unwrap().owner,
            owner("c")
        );
        assert_eq!(lock.release("c", "eth0").unwrap(), None);
        let f = lock.allocate(subnet, &gw, &owner("f")).unwrap();
        assert_eq!(f, Ipv4Addr::new(10, 1, 0, 4));
        assert_eq!(lock.list().unwrap().len(), 5);
        assert_eq!(lock.find("f", "eth0").unwrap().unwrap().ip, f);
        assert_eq!(lock.find("f", "eth1").unwrap(), None);
    }

    #[test]
    fn round_robin_does_not_reuse_a_released_address_at_once() {
        let tmp = TempDir::new("rr");
        let store = Store::open(&tmp.0, "net").unwrap();
        let lock = store.lock().unwrap();
        let subnet = net("10.1.0.0/24");
        let a = lock.allocate(subnet, &[], &owner("a")).unwrap();
        lock.release("a", "eth0").unwrap();
        let b = lock.allocate(subnet, &[], &owner("b")).unwrap();
        assert_ne!(a, b);
        assert_eq!(u32::from(b), u32::from(a) + 1);
    }

    #[test]
    fn hundred_concurrent_allocations_are_distinct() {
        let tmp = TempDir::new("par");
        let dir = Arc::new(tmp.0.clone());
        let subnet = net("10.2.0.0/24");
        let threads: Vec<_> = (0..100)
            .map(|i| {
                let dir = Arc::clone(&dir);
                thread::spawn(move || {
                    // Each thread opens its own store and lock file, like separate processes.
                    let store = Store::open(&dir, "net").unwrap();
                    let lock = store.lock().unwrap();
                    lock.allocate(
                        subnet,
                        &[Ipv4Addr::new(10, 2, 0, 1)],
                        &owner(&format!("c{i}")),
                    )
                    .unwrap()
                })
            })
            .collect();
        let ips: HashSet<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(ips.len(), 100);
        assert!(!ips.contains(&Ipv4Addr::new(10, 2, 0, 1)));
        let store = Store::open(&tmp.0, "net").unwrap();
        assert_eq!(store.lock().unwrap().list().unwrap().len(), 100);
    }

    #[test]
    fn garbage_files_are_ignored() {
        let tmp = TempDir::new("garbage");
        let store = Store::open(&tmp.0, "net").unwrap();
        fs::write(tmp.0.join("net/10.3.0.2"), b"{torn").unwrap();
        fs::write(tmp.0.join("net/README"), b"hi").unwrap();
        let lock = store.lock().unwrap();
        assert!(lock.list().unwrap().is_empty());
        // The torn file still occupies its address (it might belong to a live pod).
        let ip = lock
            .allocate(
                net("10.3.0.0/24"),
                &[Ipv4Addr::new(10, 3, 0, 1)],
                &owner("a"),
            )
            .unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 3, 0, 3));
    }
}
