//! Pod volumes, as the kubelet sets them up: each volume is a directory under
//! `ROOT/pods/UID/volumes/kubernetes.io~KIND/NAME` (or the host path itself for hostPath),
//! bind-mounted into containers by the runtime through CRI mounts. API-backed volumes
//! (configMap, secret, downwardAPI, projected) are written with the atomic writer and
//! rewritten on each sync when their content changed; secret and projected volumes and
//! emptyDir `medium: Memory` are tmpfs mounts. A deleted pod's directory goes once its
//! containers are gone; nothing outside it is ever removed.

pub mod atomic;
pub mod payload;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs, io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount, Volume, VolumeMount},
};
use kube::{Api, api::PostParams};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tracing::{debug, warn};

use self::{
    atomic::{Payload, WriteError},
    payload::{Capacity, DEFAULT_MODE, Data, Fetched, Keyed},
};
use crate::{pod::spec::expand, runtime::cri};

/// Where the service account's token, CA and namespace appear in containers.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The projected volume the kubelet adds for the service account when the API server did not
/// add one (upstream's admission names it `kube-api-access-XXXXX`).
pub const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access-kubelet";
/// Upstream's token lifetime for the service account volume (an hour and a bit, so tokens of
/// a pod are told apart from others).
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3607;
const TOKEN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Tokens are refreshed after 80% of their lifetime, or after a day at most (upstream).
const MAX_TOKEN_AGE_SECONDS: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{kind} \"{name}\" not found")]
    Missing { kind: &'static str, name: String },
    #[error("{kind} {namespace}/{name} references non-existent key {key}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("reading {kind} {name}: {source}")]
    Api {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("requesting a token for service account {name}: {source}")]
    Token {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "requesting a token for service account {name}: no answer in time (does the API server issue tokens?)"
    )]
    TokenTimeout { name: String },
    #[error("the TokenRequest for service account {name} came back without a token")]
    NoToken { name: String },
    #[error("invalid file mode {mode:#o}: must be between 0 and 0777")]
    Mode { mode: i32 },
    #[error("duplicate path {path:?}")]
    DuplicatePath { path: String },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("unsupported fieldPath {0}")]
    FieldPath(String),
    #[error("hostPath type check failed: {path} is not {expected}")]
    HostPathType {
        path: String,
        expected: &'static str,
    },
    #[error("invalid hostPath {path:?}: {reason}")]
    HostPath { path: String, reason: String },
    #[error("unsupported volume type {kind}")]
    Unsupported { kind: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting tmpfs at {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    SetUp {
        volume: String,
        #[source]
        source: Box<VolumeError>,
    },
    #[error("volumeMount {mount:?}: no volume {mount:?} in the pod")]
    NoSuchVolume { mount: String },
    #[error("volumeMount {mount:?}: {reason}")]
    BadMount { mount: String, reason: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let path = path.to_owned();
    move |source| VolumeError::Io { op, path, source }
}

/// A service account token as the TokenRequest API issued it.
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What a token is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    pub namespace: String,
    pub service_account: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Where volume contents come from: the API (a map in tests).
pub trait Sources: Send + Sync {
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Data>, VolumeError>> + Send;
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Data>, VolumeError>> + Send;
    /// A token bound to the pod (TokenRequest with boundObjectRef kind Pod).
    fn token(&self, key: &TokenKey) -> impl Future<Output = Result<Token, VolumeError>> + Send;
}

impl Sources for kube::Client {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<Data>, VolumeError> {
        let api: Api<ConfigMap> = Api::namespaced(self.clone(), namespace);
        let cm = api.get_opt(name).await.map_err(|source| VolumeError::Api {
            kind: "configmap",
            name: name.to_owned(),
            source,
        })?;
        Ok(cm.map(|cm| {
            let mut out: Data = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            out.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            out
        }))
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Data>, VolumeError> {
        let api: Api<Secret> = Api::namespaced(self.clone(), namespace);
        let s = api.get_opt(name).await.map_err(|source| VolumeError::Api {
            kind: "secret",
            name: name.to_owned(),
            source,
        })?;
        Ok(s.map(|s| {
            let mut out: Data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            out.extend(
                s.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            out
        }))
    }

    async fn token(&self, key: &TokenKey) -> Result<Token, VolumeError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.clone(), &key.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: key.audience.iter().cloned().collect(),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(key.pod_name.clone()),
                    uid: Some(key.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        // The client retries a 503 for minutes (a server that issues no tokens answers so):
        // the pod gets a clear error instead of a stuck sync.
        let answer = tokio::time::timeout(
            TOKEN_REQUEST_TIMEOUT,
            api.create_token_request(&key.service_account, &PostParams::default(), &request),
        )
        .await
        .map_err(|_| VolumeError::TokenTimeout {
            name: key.service_account.clone(),
        })?
        .map_err(|source| VolumeError::Token {
            name: key.service_account.clone(),
            source,
        })?;
        let status = answer.status.ok_or_else(|| VolumeError::NoToken {
            name: key.service_account.clone(),
        })?;
        Ok(Token {
            token: status.token,
            expires_at: status.expiration_timestamp.0.as_second(),
        })
    }
}

/// One volume, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub host_path: PathBuf,
    /// API-backed volumes are always mounted read-only (upstream's rule).
    pub read_only: bool,
    /// subPaths may be created in it (emptyDir, hostPath).
    pub writable_dirs: bool,
}

/// The pod's volumes by name.
pub type PodVolumes = HashMap<String, Prepared>;

struct CachedToken {
    token: Token,
    issued_at: i64,
}

/// Per-pod volume state: the tokens fetched (refreshed at 80% of their lifetime).
#[derive(Default)]
pub struct Volumes {
    tokens: HashMap<TokenKey, CachedToken>,
}

/// Where a pod's volumes go and what the node offers.
pub struct Context<'a> {
    pub root_dir: &'a Path,
    pub pod: &'a Pod,
    pub capacity: Capacity,
    /// Back secret and projected volumes and `medium: Memory` emptyDirs with tmpfs.
    pub tmpfs: bool,
    /// The cluster CA (PEM) for the service account volume's `ca.crt` when no
    /// kube-root-ca.crt ConfigMap provides it.
    pub cluster_ca: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
}

/// `ROOT/pods/UID`, or `None` for a uid that is not one path element.
pub fn pod_dir(root: &Path, uid: &str) -> Option<PathBuf> {
    let single = !uid.is_empty() && uid != "." && uid != ".." && !uid.contains('/');
    single.then(|| root.join("pods").join(uid))
}

fn kind_dir(kind: &str) -> String {
    format!("kubernetes.io~{kind}")
}

impl Volumes {
    /// Sets up (or refreshes) every volume of the pod; the first failure is returned, after
    /// the other volumes were refreshed all the same.
    pub async fn setup(
        &mut self,
        sources: &impl Sources,
        ctx: &Context<'_>,
    ) -> Result<PodVolumes, VolumeError> {
        let pod = ctx.pod;
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let base = pod_dir(ctx.root_dir, uid)
            .ok_or_else(|| VolumeError::FieldPath(format!("pod uid {uid:?}")))?
            .join("volumes");
        let mut out = PodVolumes::new();
        let mut first_error = None;
        let mut live_tokens = HashSet::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            match self
                .setup_one(sources, ctx, &base, v, &mut live_tokens)
                .await
            {
                Ok(p) => {
                    out.insert(v.name.clone(), p);
                }
                Err(e) => {
                    first_error.get_or_insert(VolumeError::SetUp {
                        volume: v.name.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }
        self.tokens.retain(|k, _| live_tokens.contains(k));
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn setup_one(
        &mut self,
        sources: &impl Sources,
        ctx: &Context<'_>,
        base: &Path,
        v: &Volume,
        live_tokens: &mut HashSet<TokenKey>,
    ) -> Result<Prepared, VolumeError> {
        let pod = ctx.pod;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        atomic::validate_path(&v.name).map_err(|_| VolumeError::Unsupported {
            kind: format!("(bad volume name {:?})", v.name),
        })?;
        let api_volume = |kind: &str| Prepared {
            host_path: base.join(kind_dir(kind)).join(&v.name),
            read_only: true,
            writable_dirs: false,
        };
        if let Some(e) = &v.empty_dir {
            let dir = base.join(kind_dir("empty-dir")).join(&v.name);
            let memory = match e.medium.as_deref() {
                None | Some("") => false,
                Some("Memory") => true,
                Some(other) => {
                    return Err(VolumeError::Unsupported {
                        kind: format!("emptyDir medium {other}"),
                    });
                }
            };
            let size = e
                .size_limit
                .as_ref()
                .map(|q| {
                    payload_quantity(&q.0).ok_or_else(|| VolumeError::Unsupported {
                        kind: format!("emptyDir sizeLimit {:?}", q.0),
                    })
                })
                .transpose()?;
            make_dir(&dir, memory && ctx.tmpfs, size, 0o777)?;
            return Ok(Prepared {
                host_path: dir,
                read_only: false,
                writable_dirs: true,
            });
        }
        if let Some(h) = &v.host_path {
            host_path(&h.path, h.type_.as_deref().unwrap_or_default())?;
            return Ok(Prepared {
                host_path: PathBuf::from(&h.path),
                read_only: false,
                writable_dirs: true,
            });
        }
        let mut files = Payload::new();
        let (prepared, tmpfs) = if let Some(c) = &v.config_map {
            let data = sources.config_map(namespace, &c.name).await?;
            payload::keyed(
                &mut files,
                &Keyed {
                    kind: "configmap",
                    namespace,
                    name: &c.name,
                    items: c.items.as_deref(),
                    optional: c.optional.unwrap_or(false),
                },
                data,
                c.default_mode.unwrap_or(DEFAULT_MODE),
            )?;
            (api_volume("configmap"), false)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = sources.secret(namespace, &name).await?;
            payload::keyed(
                &mut files,
                &Keyed {
                    kind: "secret",
                    namespace,
                    name: &name,
                    items: s.items.as_deref(),
                    optional: s.optional.unwrap_or(false),
                },
                data,
                s.default_mode.unwrap_or(DEFAULT_MODE),
            )?;
            (api_volume("secret"), true)
        } else if let Some(d) = &v.downward_api {
            payload::downward(
                &mut files,
                pod,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode.unwrap_or(DEFAULT_MODE),
                ctx.capacity,
            )?;
            (api_volume("downward-api"), false)
        } else if let Some(p) = &v.projected {
            let mut objects = BTreeMap::new();
            let mut tokens = BTreeMap::new();
            for (i, s) in p.sources.iter().flatten().enumerate() {
                if let Some(c) = &s.config_map {
                    let data = match sources.config_map(namespace, &c.name).await {
                        // The node authorizer lets a kubelet read only what pod specs name,
                        // and its own service account volume is in no spec: its (optional)
                        // kube-root-ca.crt counts as absent then.
                        Err(VolumeError::Api {
                            source: kube::Error::Api(s),
                            ..
                        }) if s.code == 403 && v.name == SERVICE_ACCOUNT_VOLUME => None,
                        r => r?,
                    };
                    objects.insert(("configmap", c.name.clone()), data);
                } else if let Some(c) = &s.secret {
                    let data = sources.secret(namespace, &c.name).await?;
                    objects.insert(("secret", c.name.clone()), data);
                } else if let Some(t) = &s.service_account_token {
                    let key = TokenKey {
                        namespace: namespace.to_owned(),
                        service_account: service_account(pod).to_owned(),
                        audience: t.audience.clone().filter(|a| !a.is_empty()),
                        expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                        pod_name: pod.metadata.name.clone().unwrap_or_default(),
                        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                    };
                    live_tokens.insert(key.clone());
                    tokens.insert(i, self.token(sources, key, ctx.now).await?);
                }
            }
            payload::projected(
                &mut files,
                pod,
                p,
                &Fetched {
                    objects: &objects,
                    tokens: &tokens,
                },
                ctx.capacity,
            )?;
            (api_volume("projected"), true)
        } else {
            return Err(VolumeError::Unsupported {
                kind: volume_kind(v),
            });
        };
        if v.name == SERVICE_ACCOUNT_VOLUME
            && let Some(ca) = ctx.cluster_ca
        {
            // Without a kube-root-ca.crt ConfigMap, the CA the kubelet was given.
            files
                .entry("ca.crt".to_owned())
                .or_insert_with(|| atomic::FileProjection {
                    data: ca.as_bytes().to_vec(),
                    mode: 0o644,
                });
        }
        atomic::validate_payload(&files)?;
        make_dir(&prepared.host_path, tmpfs && ctx.tmpfs, None, 0o755)?;
        if atomic::write(&prepared.host_path, &files)? {
            debug!(volume = %v.name, files = files.len(), "volume written");
        }
        Ok(prepared)
    }

    /// The cached token for `key`, or a new one once 80% of its lifetime has passed.
    async fn token(
        &mut self,
        sources: &impl Sources,
        key: TokenKey,
        now: i64,
    ) -> Result<String, VolumeError> {
        if let Some(c) = self.tokens.get(&key)
            && !needs_refresh(c.issued_at, c.token.expires_at, now)
        {
            return Ok(c.token.token.clone());
        }
        let token = sources.token(&key).await?;
        let out = token.token.clone();
        self.tokens.insert(
            key,
            CachedToken {
                token,
                issued_at: now,
            },
        );
        Ok(out)
    }

    /// Seconds until the first cached token needs a refresh.
    pub fn next_refresh(&self, now: i64) -> Option<i64> {
        self.tokens
            .values()
            .map(|c| refresh_at(c.issued_at, c.token.expires_at) - now)
            .min()
            .map(|s| s.max(0))
    }
}

fn refresh_at(issued_at: i64, expires_at: i64) -> i64 {
    let lifetime = (expires_at - issued_at).max(0);
    (issued_at + lifetime * 4 / 5).min(issued_at + MAX_TOKEN_AGE_SECONDS)
}

/// Whether a token issued at `issued_at` that expires at `expires_at` is due for renewal.
pub fn needs_refresh(issued_at: i64, expires_at: i64, now: i64) -> bool {
    now >= refresh_at(issued_at, expires_at)
}

fn payload_quantity(s: &str) -> Option<u64> {
    crate::pod::spec::parse_quantity(s).map(|v| v.ceil() as u64)
}

/// The pod's service account (`default` when unset).
pub fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// The name of a volume's source type (`persistentVolumeClaim`, ...), for the error.
fn volume_kind(v: &Volume) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "(none)".to_owned())
}

/// The directory of a volume, with a tmpfs mounted on it when `tmpfs` (once).
fn make_dir(dir: &Path, tmpfs: bool, size: Option<u64>, mode: u32) -> Result<(), VolumeError> {
    let fresh = !dir.exists();
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    if tmpfs && !is_mount_point(dir) {
        let options = size.map(|s| format!("size={s}"));
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            options.as_deref(),
        )
        .map_err(|source| VolumeError::Mount {
            path: dir.to_owned(),
            source,
        })?;
        set_mode(dir, mode)?;
    } else if fresh {
        set_mode(dir, mode)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let exact = dir.display().to_string();
    let prefix = format!("{exact}/");
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| *m == exact || m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

fn is_mount_point(dir: &Path) -> bool {
    let exact = dir.display().to_string();
    mounts_under(dir).contains(&exact)
}

/// Checks (or creates) a hostPath per its `type`; an empty type checks nothing.
pub fn host_path(path: &str, kind: &str) -> Result<(), VolumeError> {
    if !path.starts_with('/') {
        return Err(VolumeError::HostPath {
            path: path.to_owned(),
            reason: "must be an absolute path".into(),
        });
    }
    if path.split('/').any(|e| e == "..") {
        return Err(VolumeError::HostPath {
            path: path.to_owned(),
            reason: "must not contain '..'".into(),
        });
    }
    let p = Path::new(path);
    let meta = fs::metadata(p);
    let check = |ok: fn(&fs::Metadata) -> bool, expected: &'static str| match &meta {
        Ok(m) if ok(m) => Ok(()),
        _ => Err(VolumeError::HostPathType {
            path: path.to_owned(),
            expected,
        }),
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                fs::create_dir_all(p).map_err(io_err("creating", p))?;
                set_mode(p, 0o755)?;
                return Ok(());
            }
            check(fs::Metadata::is_dir, "a directory")
        }
        "Directory" => check(fs::Metadata::is_dir, "a directory"),
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
                }
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p)
                    .map_err(io_err("creating", p))?;
                set_mode(p, 0o644)?;
                return Ok(());
            }
            check(fs::Metadata::is_file, "a file")
        }
        "File" => check(fs::Metadata::is_file, "a file"),
        "Socket" => check(|m| m.file_type().is_socket(), "a socket file"),
        "CharDevice" => check(|m| m.file_type().is_char_device(), "a character device"),
        "BlockDevice" => check(|m| m.file_type().is_block_device(), "a block device"),
        other => Err(VolumeError::HostPath {
            path: path.to_owned(),
            reason: format!("unknown hostPath type {other:?}"),
        }),
    }
}

/// The CRI mounts of `container`: each volumeMount's volume (or its subPath), read-only when
/// asked or when the volume is API-backed. `envs` expand `subPathExpr`.
pub fn container_mounts(
    container: &Container,
    volumes: &PodVolumes,
    envs: &[(String, String)],
    privileged: bool,
) -> Result<Vec<cri::Mount>, VolumeError> {
    let vars: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let bad = |reason: String| VolumeError::BadMount {
            mount: m.name.clone(),
            reason,
        };
        let volume = volumes
            .get(&m.name)
            .ok_or_else(|| VolumeError::NoSuchVolume {
                mount: m.name.clone(),
            })?;
        if m.mount_path.is_empty() {
            return Err(bad("mountPath must not be empty".into()));
        }
        if !seen.insert(m.mount_path.trim_end_matches('/').to_owned()) {
            return Err(bad(format!("mountPath {:?} is used twice", m.mount_path)));
        }
        let sub = sub_path(m, &vars).map_err(bad)?;
        let host = match sub {
            None => volume.host_path.clone(),
            Some(sub) => resolve_sub_path(volume, &sub).map_err(bad)?,
        };
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("" | "None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") if privileged => cri::MountPropagation::PropagationBidirectional,
            Some("Bidirectional") => {
                return Err(bad(
                    "Bidirectional mount propagation needs a privileged container".into(),
                ));
            }
            Some(other) => return Err(bad(format!("unknown mountPropagation {other:?}"))),
        };
        out.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false) || volume.read_only,
            selinux_relabel: false,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// The mount's subPath (or expanded subPathExpr), checked: relative, no `..`.
fn sub_path(m: &VolumeMount, vars: &HashMap<&str, &str>) -> Result<Option<String>, String> {
    let sub = match (
        m.sub_path.as_deref().filter(|s| !s.is_empty()),
        m.sub_path_expr.as_deref().filter(|s| !s.is_empty()),
    ) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err("subPath and subPathExpr are mutually exclusive".into()),
        (Some(s), None) => s.to_owned(),
        (None, Some(e)) => expand(e, vars),
    };
    if sub.starts_with('/') {
        return Err(format!("subPath {sub:?} must be a relative path"));
    }
    if sub.split('/').any(|e| e == "..") {
        return Err(format!("subPath {sub:?} must not contain '..'"));
    }
    Ok(Some(sub))
}

/// The host path of a subPath: created in emptyDir and hostPath volumes when missing, then
/// resolved (symlinks followed, as upstream bind-mounts the target) and kept inside the
/// volume.
fn resolve_sub_path(volume: &Prepared, sub: &str) -> Result<PathBuf, String> {
    let path = volume.host_path.join(sub);
    if fs::symlink_metadata(&path).is_err() {
        if !volume.writable_dirs {
            return Err(format!("subPath {sub:?} does not exist in the volume"));
        }
        fs::create_dir_all(&path).map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o777));
    }
    let root = fs::canonicalize(&volume.host_path)
        .map_err(|e| format!("resolving {}: {e}", volume.host_path.display()))?;
    let real = fs::canonicalize(&path).map_err(|e| format!("resolving subPath {sub:?}: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!("subPath {sub:?} resolves outside its volume"));
    }
    Ok(real)
}

/// The pod as the kubelet mounts it: with the service account volume (token, ca.crt,
/// namespace at [`SERVICE_ACCOUNT_MOUNT`]) added to the pod and every container when the
/// token is automounted and the API server did not add it already (a `kube-api-access-`
/// volume or a container mounting that path).
pub fn with_service_account(pod: &Pod, automount: bool) -> Option<Pod> {
    let spec = pod.spec.as_ref()?;
    let has_volume = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name.starts_with("kube-api-access-"));
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mounted = containers.clone().any(|c| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT)
    });
    if !automount || has_volume || mounted {
        return None;
    }
    let mut pod = pod.clone();
    let spec = pod.spec.as_mut()?;
    let volume: Volume = serde_json::from_value(serde_json::json!({
        "name": SERVICE_ACCOUNT_VOLUME,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                { "serviceAccountToken": { "expirationSeconds": SERVICE_ACCOUNT_TOKEN_SECONDS, "path": "token" } },
                // Optional here, unlike upstream's admission: nothing publishes
                // kube-root-ca.crt in every cluster yet, and its absence must not hold pods.
                { "configMap": { "name": "kube-root-ca.crt", "optional": true, "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
            ],
        },
    }))
    .ok()?;
    spec.volumes.get_or_insert_with(Vec::new).push(volume);
    let mount = VolumeMount {
        name: SERVICE_ACCOUNT_VOLUME.into(),
        mount_path: SERVICE_ACCOUNT_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    };
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount.clone());
    }
    Some(pod)
}

/// Removes `ROOT/pods/UID` (its tmpfs mounts first). Call only once the pod's containers are
/// gone. Nothing outside that directory is touched: symlinks are removed, not followed, and
/// hostPath volumes are never under it.
pub fn remove_pod_dir(root: &Path, uid: &str) -> Result<(), VolumeError> {
    let Some(dir) = pod_dir(root, uid) else {
        return Err(VolumeError::FieldPath(format!("pod uid {uid:?}")));
    };
    if fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    for m in mounts_under(&dir) {
        umount2(m.as_str(), MntFlags::MNT_DETACH).map_err(|source| VolumeError::Mount {
            path: PathBuf::from(&m),
            source,
        })?;
    }
    fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))
}

/// Removes the directories of pods not in `keep` (deleted while the kubelet was down).
pub fn remove_orphaned_dirs(root: &Path, keep: &HashSet<String>) {
    let Ok(entries) = fs::read_dir(root.join("pods")) else {
        return;
    };
    for e in entries.flatten() {
        let uid = e.file_name().to_string_lossy().into_owned();
        if keep.contains(&uid) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Err(e) = remove_pod_dir(root, &uid) {
            warn!(pod_uid = %uid, error = %e, "removing an orphaned pod directory");
        }
    }
}

#[cfg(test)]
mod tests;
