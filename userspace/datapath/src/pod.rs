//! Pod networking on a node: the `skiff-pod` tc program on each pod's host-side veth, and the
//! endpoint map it reads, both driven by skiff-cni (one short-lived process per ADD/DEL).
//!
//! The program is attached through a clsact qdisc and a cls_bpf filter rather than a TCX link:
//! that attachment lives exactly as long as the veth, so a deleted pod leaves no pinned link
//! behind for anyone to clean up.
//!
//! # Minimum kernel version
//! 5.10 (`bpf_redirect_peer`).

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, MapError},
    programs::{SchedClassifier, TcAttachType, tc},
};
use skiff_ebpf_common::{Endpoint4, MAP_ENDPOINTS4};

use crate::{LoadError, pinned::maps_dir};

static POD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff-pod"));
const PROG_POD_INGRESS: &str = "skiff_pod_ingress";

/// A local pod as the datapath knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodEndpoint {
    pub ip: Ipv4Addr,
    /// Index of the host-side veth.
    pub ifindex: u32,
    pub pod_mac: [u8; 6],
    pub host_mac: [u8; 6],
}

fn key(ip: Ipv4Addr) -> u32 {
    // Network byte order, as the program loads it from the packet.
    u32::from_ne_bytes(ip.octets())
}

/// The `skiff-pod` program, ready to attach, and its endpoint map pinned under `<bpffs>/maps`.
///
/// Loading the object (ELF and BTF parsing, the verifier) is what makes an ADD slow, so the
/// first load pins the program under `<bpffs>/progs/` with a hash of the object in its name;
/// later plugin runs attach the pinned program, and a new plugin build loads its own.
pub struct PodDatapath {
    prog: Prog,
    bpffs: PathBuf,
}

enum Prog {
    Pinned(Box<SchedClassifier>),
    /// The program lives in (and is dropped with) its object.
    Loaded(Ebpf),
}

/// FNV-1a of the embedded object: the pinned program's identity.
fn object_id() -> u64 {
    POD_OBJECT.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl PodDatapath {
    /// The pinned program when there is one for this build, else loads the object (creating
    /// the endpoint map or adopting the pinned one) and pins its program.
    pub fn load(bpffs: &Path) -> Result<Self, LoadError> {
        if POD_OBJECT.is_empty() {
            return Err(LoadError::NotBuilt);
        }
        let progs = bpffs.join("progs");
        let pin = progs.join(format!("{PROG_POD_INGRESS}-{:016x}", object_id()));
        if let Ok(prog) = SchedClassifier::from_pin(&pin)
            && maps_dir(bpffs).join(MAP_ENDPOINTS4).exists()
        {
            return Ok(Self {
                prog: Prog::Pinned(Box::new(prog)),
                bpffs: bpffs.to_owned(),
            });
        }
        let maps = maps_dir(bpffs);
        for dir in [&maps, &progs] {
            fs::create_dir_all(dir).map_err(|source| LoadError::Io {
                what: "creating bpffs directory (is its parent on a bpf filesystem?)",
                path: dir.clone(),
                source,
            })?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps)
            .load(POD_OBJECT)
            .map_err(|source| LoadError::Load {
                object: "skiff-pod",
                pins: maps.clone(),
                source: Box::new(source),
            })?;
        let prog = program(&mut ebpf)?;
        prog.load().map_err(|e| prog_err("loading", e))?;
        // Two first ADDs may race here; the loser's pin fails with EEXIST and it simply uses
        // its own copy of the program this once.
        if let Err(e) = prog.pin(&pin) {
            let exists = matches!(&e, aya::pin::PinError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST));
            if !exists {
                return Err(LoadError::Pin {
                    path: pin,
                    source: e,
                });
            }
        }
        Ok(Self {
            prog: Prog::Loaded(ebpf),
            bpffs: bpffs.to_owned(),
        })
    }

    /// Attaches the program to the ingress of `iface` (the calling thread's namespace). The
    /// filter stays after this process exits and goes away with the interface.
    pub fn attach(&mut self, iface: &str) -> Result<(), LoadError> {
        // EEXIST is fine: the qdisc is per interface and may be there from a retried ADD.
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
            if !exists {
                return Err(prog_err("adding clsact for", e.into()));
            }
        }
        let prog = match &mut self.prog {
            Prog::Pinned(prog) => prog,
            Prog::Loaded(ebpf) => program(ebpf)?,
        };
        let id = prog
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                tc::TcAttachOptions::Netlink(tc::NlOptions::default()),
            )
            .map_err(|e| prog_err("attaching", e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| prog_err("taking link of", e))?;
        // Dropping the link would detach it; the filter must outlive this process.
        std::mem::forget(link);
        Ok(())
    }

    /// The pinned endpoint map.
    pub fn endpoints(&self) -> Result<EndpointMap, EndpointError> {
        EndpointMap::open(&self.bpffs)?.ok_or_else(|| EndpointError::Missing {
            path: maps_dir(&self.bpffs).join(MAP_ENDPOINTS4),
        })
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    ebpf.program_mut(PROG_POD_INGRESS)
        .ok_or(LoadError::MissingProgram(PROG_POD_INGRESS))?
        .try_into()
        .map_err(|e| prog_err("finding", e))
}

fn prog_err(action: &'static str, e: aya::programs::ProgramError) -> LoadError {
    LoadError::Program {
        action,
        program: PROG_POD_INGRESS,
        source: Box::new(e),
    }
}

/// Typed access to the pinned endpoint map.
pub struct EndpointMap {
    map: HashMap<MapData, u32, Endpoint4>,
}

/// Failures reading or writing the endpoint map.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{} is missing", path.display())]
    Missing { path: PathBuf },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("{action} endpoint {ip}: {source}")]
    Update {
        action: &'static str,
        ip: Ipv4Addr,
        #[source]
        source: MapError,
    },
}

impl EndpointMap {
    /// The map pinned under `bpffs`; `None` when no pod was ever wired with the datapath.
    pub fn open(bpffs: &Path) -> Result<Option<Self>, EndpointError> {
        let path = maps_dir(bpffs).join(MAP_ENDPOINTS4);
        if !path.exists() {
            return Ok(None);
        }
        let open = |source| EndpointError::Open {
            path: path.clone(),
            source,
        };
        let data = MapData::from_pin(&path).map_err(open)?;
        let map = HashMap::try_from(Map::HashMap(data)).map_err(open)?;
        Ok(Some(Self { map }))
    }

    pub fn insert(&mut self, ep: &PodEndpoint) -> Result<(), EndpointError> {
        let value = Endpoint4 {
            ifindex: ep.ifindex,
            pod_mac: ep.pod_mac,
            host_mac: ep.host_mac,
        };
        self.map
            .insert(key(ep.ip), value, 0)
            .map_err(|source| EndpointError::Update {
                action: "inserting",
                ip: ep.ip,
                source,
            })
    }

    /// Removes an endpoint; `false` when there was none.
    pub fn remove(&mut self, ip: Ipv4Addr) -> Result<bool, EndpointError> {
        match self.map.remove(&key(ip)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(source) => Err(EndpointError::Update {
                action: "removing",
                ip,
                source,
            }),
        }
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<PodEndpoint> {
        self.map.get(&key(ip), 0).ok().map(|v| PodEndpoint {
            ip,
            ifindex: v.ifindex,
            pod_mac: v.pod_mac,
            host_mac: v.host_mac,
        })
    }

    /// Every endpoint (for GC and inspection).
    pub fn list(&self) -> Vec<PodEndpoint> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| PodEndpoint {
                ip: Ipv4Addr::from(k.to_ne_bytes()),
                ifindex: v.ifindex,
                pod_mac: v.pod_mac,
                host_mac: v.host_mac,
            })
            .collect()
    }
}
