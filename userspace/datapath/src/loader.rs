//! Loading the embedded eBPF objects, attaching their programs and pinning everything, so the
//! programs keep working after the loader exits and a restarted loader adopts them.
//!
//! Layout of a bpffs directory (default `/sys/fs/bpf/skiff`):
//! `maps/<NAME>` for every map, `links/<attach point>` for every attached program.

use std::{
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{
        CgroupSock, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType,
        links::{CgroupAttachMode, FdLink, LinkError, PinnedLink},
    },
};
use serde::Serialize;
use skiff_ebpf_common::{
    DEFAULT_AFFINITY_MAX, DEFAULT_BACKENDS_MAX, DEFAULT_CT_MAX, DEFAULT_MAGLEV_MAX,
    DEFAULT_SERVICES_MAX, DEFAULT_SOCK_REVNAT_MAX, MAP_AFFINITY4, MAP_BACKENDS4, MAP_CONFIG,
    MAP_CT4, MAP_MAGLEV4, MAP_SERVICES4, MAP_SOCK_REVNAT4, NodeConfig4,
};

use crate::pinned::maps_dir;

static SOCK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff-sock"));
static TC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skiff-tc"));

/// Loads `prog` (once), attaches it to the cgroup directory `cgroup` and pins its link at `pin`.
/// A macro, not a function: aya's socket-address and socket programs are different types with
/// the same methods.
macro_rules! attach_pinned {
    ($prog:expr, $cgroup:expr, $name:expr, $pin:expr) => {{
        let (prog, name) = ($prog, $name);
        if prog.fd().is_err() {
            prog.load().map_err(prog_err("loading", name))?;
        }
        let id = prog
            .attach($cgroup, CgroupAttachMode::Single)
            .map_err(prog_err("attaching", name))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(prog_err("taking link of", name))?
            .try_into()
            .map_err(|source| LoadError::Link {
                program: name,
                source,
            })?;
        pin_link(link, $pin)?;
    }};
}

/// The socket LB programs and the names of their pinned links.
const SOCK_PROGRAMS: [(&str, &str); 4] = [
    ("skiff_connect4", "cgroup-connect4"),
    ("skiff_sendmsg4", "cgroup-sendmsg4"),
    ("skiff_recvmsg4", "cgroup-recvmsg4"),
    ("skiff_getpeername4", "cgroup-getpeername4"),
];
/// Removes a released socket's reverse translation; attached beside the four above.
const SOCK_RELEASE: (&str, &str) = ("skiff_sock_release4", "cgroup-sock-release4");
const PROG_TC_INGRESS: &str = "skiff_tc_ingress";
const PROG_TC_EGRESS: &str = "skiff_tc_egress";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this binary was built without its eBPF objects (AYA_BUILD_SKIP or clippy); \
         rebuild with a plain `cargo build` after `cargo xtask setup`"
    )]
    NotBuilt,
    #[error("loading the {object} eBPF object (maps pinned under {pins}): {source}")]
    Load {
        object: &'static str,
        pins: PathBuf,
        // Boxed: aya's error types are hundreds of bytes, and every Result here carries them.
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("{action} program {program}: {source}")]
    Program {
        action: &'static str,
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("pinning link {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "link of {program} cannot be pinned (kernel older than 6.6 attaches tc without links): {source}"
    )]
    Link {
        program: &'static str,
        #[source]
        source: LinkError,
    },
    #[error("writing the node configuration map: {source}")]
    Config {
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where to pin and how big to make the maps. Sizes apply only when a map is created: an
/// existing pinned map is adopted as it is, never resized (that would drop every flow in it).
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// bpffs directory for maps and links.
    pub bpffs: PathBuf,
    /// Capacity of the service map (records plus backend slots).
    pub services_max: u32,
    /// Capacity of the backend map.
    pub backends_max: u32,
    /// Capacity of the conntrack map (two entries per north-south flow).
    pub ct_max: u32,
    /// Capacity of the session-affinity map.
    pub affinity_max: u32,
    /// Capacity of the socket reverse-translation map (one entry per translated socket).
    pub sock_revnat_max: u32,
    /// Capacity of the Maglev map (table size times two banks per Maglev service).
    pub maglev_max: u32,
    /// The node address NodePort flows to backends elsewhere are SNATed to; `None` never
    /// SNATs (replies must then find their way back through this node on their own).
    pub snat_ipv4: Option<Ipv4Addr>,
    /// SNAT source ports, inclusive. The default stays above Linux's ephemeral port range
    /// (32768-60999) so SNATed flows never collide with the node's own connections.
    pub nat_ports: (u16, u16),
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            bpffs: PathBuf::from("/sys/fs/bpf/skiff"),
            services_max: DEFAULT_SERVICES_MAX,
            backends_max: DEFAULT_BACKENDS_MAX,
            ct_max: DEFAULT_CT_MAX,
            affinity_max: DEFAULT_AFFINITY_MAX,
            sock_revnat_max: DEFAULT_SOCK_REVNAT_MAX,
            maglev_max: DEFAULT_MAGLEV_MAX,
            snat_ipv4: None,
            nat_ports: (61_000, 65_535),
        }
    }
}

/// What an attach call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attachment {
    /// The program was attached and its link pinned now.
    Attached,
    /// A pinned link was already there and was left running untouched.
    Adopted,
}

/// The loaded objects. Dropping this leaves everything pinned in place.
pub struct Datapath {
    config: DatapathConfig,
    sock: Ebpf,
    tc: Ebpf,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads both objects, creating the maps under `config.bpffs` or adopting the pinned ones.
    pub fn load(config: DatapathConfig) -> Result<Self, LoadError> {
        if SOCK_OBJECT.is_empty() || TC_OBJECT.is_empty() {
            return Err(LoadError::NotBuilt);
        }
        let maps = maps_dir(&config.bpffs);
        for dir in [&maps, &links_dir(&config.bpffs)] {
            fs::create_dir_all(dir).map_err(|source| LoadError::Io {
                what: "creating bpffs directory (is its parent on a bpf filesystem?)",
                path: dir.clone(),
                source,
            })?;
        }
        let load = |object: &'static str, bytes: &[u8]| {
            EbpfLoader::new()
                .default_map_pin_directory(&maps)
                .map_max_entries(MAP_SERVICES4, config.services_max)
                .map_max_entries(MAP_BACKENDS4, config.backends_max)
                .map_max_entries(MAP_CT4, config.ct_max)
                .map_max_entries(MAP_AFFINITY4, config.affinity_max)
                .map_max_entries(MAP_SOCK_REVNAT4, config.sock_revnat_max)
                .map_max_entries(MAP_MAGLEV4, config.maglev_max)
                .load(bytes)
                .map_err(|source| LoadError::Load {
                    object,
                    pins: maps.clone(),
                    source: Box::new(source),
                })
        };
        let sock = load("skiff-sock", SOCK_OBJECT)?;
        let mut tc = load("skiff-tc", TC_OBJECT)?;
        let node = NodeConfig4 {
            snat_addr: config
                .snat_ipv4
                .map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
            nat_port_min: config.nat_ports.0,
            nat_port_max: config.nat_ports.1,
            flags: 0,
        };
        let map = tc
            .map_mut(MAP_CONFIG)
            .ok_or(LoadError::MissingMap(MAP_CONFIG))?;
        let mut array: Array<&mut MapData, NodeConfig4> =
            Array::try_from(map).map_err(|source| LoadError::Config { source })?;
        array
            .set(0, node, 0)
            .map_err(|source| LoadError::Config { source })?;
        Ok(Self { config, sock, tc })
    }

    #[must_use]
    pub const fn config(&self) -> &DatapathConfig {
        &self.config
    }

    /// Attaches the socket load balancer (connect4, sendmsg4, recvmsg4, getpeername4, and
    /// sock_release for its reverse entries) to a cgroup v2 directory: every process in it (and
    /// in its descendants) gets service addresses translated. `Adopted` when all were attached
    /// already.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<Attachment, LoadError> {
        let open_cgroup = || {
            fs::File::open(cgroup).map_err(|source| LoadError::Io {
                what: "opening cgroup",
                path: cgroup.to_owned(),
                source,
            })
        };
        let mut result = Attachment::Adopted;
        for (name, link) in SOCK_PROGRAMS {
            let pin = links_dir(&self.config.bpffs).join(link);
            if adopt(&pin) {
                continue;
            }
            let prog: &mut CgroupSockAddr = program(&mut self.sock, name)?;
            attach_pinned!(prog, open_cgroup()?, name, &pin);
            result = Attachment::Attached;
        }
        // A datapath attached by an older skiff has no release program: it is added, and the
        // four above stay as they are.
        let (name, link) = SOCK_RELEASE;
        let pin = links_dir(&self.config.bpffs).join(link);
        if !adopt(&pin) {
            let prog: &mut CgroupSock = program(&mut self.sock, name)?;
            attach_pinned!(prog, open_cgroup()?, name, &pin);
            result = Attachment::Attached;
        }
        Ok(result)
    }

    /// Attaches the tc program to the ingress of `iface`, an interface of the calling thread's
    /// network namespace.
    pub fn attach_tc(&mut self, iface: &str) -> Result<Attachment, LoadError> {
        let ingress =
            self.attach_tc_program(iface, PROG_TC_INGRESS, TcAttachType::Ingress, "ingress")?;
        // Replies from this node's own backends leave through egress, where they get the
        // frontend's address back.
        let egress =
            self.attach_tc_program(iface, PROG_TC_EGRESS, TcAttachType::Egress, "egress")?;
        Ok(match (ingress, egress) {
            (Attachment::Adopted, Attachment::Adopted) => Attachment::Adopted,
            _ => Attachment::Attached,
        })
    }

    fn attach_tc_program(
        &mut self,
        iface: &str,
        name: &'static str,
        kind: TcAttachType,
        direction: &str,
    ) -> Result<Attachment, LoadError> {
        let pin = links_dir(&self.config.bpffs).join(format!("tc-{direction}-{iface}"));
        if adopt(&pin) {
            return Ok(Attachment::Adopted);
        }
        let prog: &mut SchedClassifier = program(&mut self.tc, name)?;
        let err = |action| prog_err(action, name);
        if prog.fd().is_err() {
            prog.load().map_err(err("loading"))?;
        }
        let id = prog.attach(iface, kind).map_err(err("attaching"))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(err("taking link of"))?
            .try_into()
            .map_err(|source| LoadError::Link {
                program: name,
                source,
            })?;
        pin_link(link, &pin)?;
        Ok(Attachment::Attached)
    }
}

impl Datapath {
    /// Runs the tc program once on `packet` (an Ethernet frame) through BPF_PROG_TEST_RUN,
    /// against the live maps, without attaching anything.
    pub fn test_run_tc(&mut self, packet: &[u8]) -> Result<crate::TestRun, LoadError> {
        let prog: &mut SchedClassifier = program(&mut self.tc, PROG_TC_INGRESS)?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err("loading", PROG_TC_INGRESS))?;
        }
        let fd = prog.fd().map_err(prog_err("finding", PROG_TC_INGRESS))?;
        crate::test_run::run(fd, packet).map_err(|source| LoadError::Io {
            what: "BPF_PROG_TEST_RUN of",
            path: PathBuf::from(PROG_TC_INGRESS),
            source,
        })
    }
}

/// The pinned links of a bpffs directory, by attach point name.
pub fn attachments(bpffs: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(links_dir(bpffs))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Detaches every program and removes every map pinned under `bpffs`, then the directory.
/// Programs stop acting once their last link is gone. Returns the pins removed.
pub fn detach_all(bpffs: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    for dir in [links_dir(bpffs), maps_dir(bpffs)] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(LoadError::Io {
                    what: "listing",
                    path: dir,
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| LoadError::Io {
                what: "removing pin",
                path: path.clone(),
                source,
            })?;
            removed.push(path);
        }
        remove_dir_if_present(&dir)?;
    }
    remove_dir_if_present(bpffs)?;
    Ok(removed)
}

fn remove_dir_if_present(dir: &Path) -> Result<(), LoadError> {
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LoadError::Io {
            what: "removing directory",
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

/// A pinned link that still opens is a program attached by an earlier run: keep it.
fn adopt(pin: &Path) -> bool {
    PinnedLink::from_pin(pin).is_ok()
}

fn pin_link(link: FdLink, pin: &Path) -> Result<(), LoadError> {
    // A stale pin (e.g. of a link whose interface is gone) would make pinning fail.
    let _ = fs::remove_file(pin);
    link.pin(pin).map_err(|source| LoadError::Pin {
        path: pin.to_owned(),
        source,
    })?;
    Ok(())
}

fn prog_err(action: &'static str, program: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |source| LoadError::Program {
        action,
        program,
        source: Box::new(source),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(prog_err("finding", name))
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup/unified` on hybrid hosts (these
/// machines), `/sys/fs/cgroup` on pure v2 hosts. `None` when there is none.
#[must_use]
pub fn cgroup2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.subtree_control").exists())
}
