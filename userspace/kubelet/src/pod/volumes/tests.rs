use std::sync::Mutex;

use super::*;

/// ConfigMaps and Secrets from maps; tokens numbered by request.
#[derive(Default)]
struct Fake {
    config_maps: Mutex<BTreeMap<String, Data>>,
    secrets: BTreeMap<String, Data>,
    issued: Mutex<Vec<TokenKey>>,
}

impl Sources for Fake {
    async fn config_map(&self, _: &str, name: &str) -> Result<Option<Data>, VolumeError> {
        Ok(self.config_maps.lock().unwrap().get(name).cloned())
    }
    async fn secret(&self, _: &str, name: &str) -> Result<Option<Data>, VolumeError> {
        Ok(self.secrets.get(name).cloned())
    }
    async fn token(&self, key: &TokenKey) -> Result<Token, VolumeError> {
        let mut issued = self.issued.lock().unwrap();
        issued.push(key.clone());
        Ok(Token {
            token: format!("token-{}", issued.len()),
            expires_at: 1000 + key.expiration_seconds,
        })
    }
}

struct Root(PathBuf);
impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
fn root(name: &str) -> Root {
    let d = std::env::temp_dir().join(format!(
        "skiff-volumes-{name}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    fs::create_dir_all(&d).unwrap();
    Root(d)
}

fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "p", "namespace": "ns", "uid": "u-1", "labels": { "app": "web" } },
        "spec": {
            "volumes": volumes,
            "containers": [{ "name": "c", "volumeMounts": mounts }],
        },
    }))
    .unwrap()
}

fn ctx<'a>(root: &'a Root, pod: &'a Pod, now: i64) -> Context<'a> {
    Context {
        root_dir: &root.0,
        pod,
        capacity: Capacity {
            cpus: 2.0,
            memory_bytes: 1 << 30,
        },
        tmpfs: false,
        cluster_ca: None,
        now,
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test]
async fn each_volume_type_is_laid_out_and_mounted() {
    let r = root("types");
    let host = r.0.join("host-dir");
    let fake = Fake {
        config_maps: Mutex::new(BTreeMap::from([(
            "cm".into(),
            Data::from([("k".into(), b"v1".to_vec())]),
        )])),
        secrets: BTreeMap::from([("s".into(), Data::from([("pw".into(), b"hunter2".to_vec())]))]),
        ..Default::default()
    };
    let p = pod(
        serde_json::json!([
            { "name": "scratch", "emptyDir": {} },
            { "name": "host", "hostPath": { "path": host.display().to_string(), "type": "DirectoryOrCreate" } },
            { "name": "cfg", "configMap": { "name": "cm", "defaultMode": 0o640 } },
            { "name": "sec", "secret": { "secretName": "s", "items": [{ "key": "pw", "path": "creds/password", "mode": 0o400 }] } },
            { "name": "info", "downwardAPI": { "items": [{ "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } }] } },
            { "name": "all", "projected": { "sources": [
                { "serviceAccountToken": { "path": "token", "audience": "vault", "expirationSeconds": 1000 } },
                { "configMap": { "name": "cm" } },
                { "downwardAPI": { "items": [{ "path": "ns", "fieldRef": { "fieldPath": "metadata.namespace" } }] } },
            ] } },
        ]),
        serde_json::json!([
            { "name": "scratch", "mountPath": "/scratch" },
            { "name": "host", "mountPath": "/host", "readOnly": true },
            { "name": "cfg", "mountPath": "/etc/cfg" },
            { "name": "cfg", "mountPath": "/etc/k", "subPath": "k" },
            { "name": "sec", "mountPath": "/secret" },
            { "name": "info", "mountPath": "/info" },
            { "name": "all", "mountPath": "/all" },
        ]),
    );
    let mut volumes = Volumes::default();
    let prepared = volumes.setup(&fake, &ctx(&r, &p, 1000)).await.unwrap();
    let base = r.0.join("pods/u-1/volumes");
    assert!(base.join("kubernetes.io~empty-dir/scratch").is_dir());
    assert!(host.is_dir(), "DirectoryOrCreate made the host directory");
    let cfg = base.join("kubernetes.io~configmap/cfg");
    assert_eq!(read(&cfg.join("k")), "v1");
    assert_eq!(
        fs::metadata(cfg.join("k")).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let sec = base.join("kubernetes.io~secret/sec");
    assert_eq!(read(&sec.join("creds/password")), "hunter2");
    assert_eq!(
        read(&base.join("kubernetes.io~downward-api/info/labels")),
        "app=\"web\""
    );
    let all = base.join("kubernetes.io~projected/all");
    assert_eq!(read(&all.join("token")), "token-1");
    assert_eq!(read(&all.join("k")), "v1");
    assert_eq!(read(&all.join("ns")), "ns");
    let issued = fake.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].audience.as_deref(), Some("vault"));
    assert_eq!(
        (issued[0].pod_name.as_str(), issued[0].pod_uid.as_str()),
        ("p", "u-1")
    );
    assert_eq!(issued[0].service_account, "default");

    let c = &p.spec.as_ref().unwrap().containers[0];
    let mounts = container_mounts(c, &prepared, &[], false).unwrap();
    let by_path: HashMap<&str, &cri::Mount> = mounts
        .iter()
        .map(|m| (m.container_path.as_str(), m))
        .collect();
    assert_eq!(mounts.len(), 7);
    assert!(!by_path["/scratch"].readonly);
    assert_eq!(by_path["/host"].host_path, host.display().to_string());
    assert!(by_path["/host"].readonly, "readOnly asked");
    assert!(by_path["/etc/cfg"].readonly, "API volumes are read-only");
    assert_eq!(by_path["/etc/cfg"].host_path, cfg.display().to_string());
    // A subPath of an atomic-writer volume is the resolved file (not updated later).
    let k = &by_path["/etc/k"].host_path;
    assert!(k.contains("/..20"), "{k}");
    assert!(
        mounts.iter().all(|m| !m.selinux_relabel
            && m.propagation == cri::MountPropagation::PropagationPrivate as i32)
    );

    // A second sync with the same content rewrites nothing and asks no new token.
    let data_link = fs::read_link(cfg.join(atomic::DATA_DIR)).unwrap();
    volumes.setup(&fake, &ctx(&r, &p, 1100)).await.unwrap();
    assert_eq!(
        fs::read_link(cfg.join(atomic::DATA_DIR)).unwrap(),
        data_link
    );
    assert_eq!(fake.issued.lock().unwrap().len(), 1);
    // An update reaches the files; at 80% of the token's life a new one is asked.
    fake.config_maps
        .lock()
        .unwrap()
        .insert("cm".into(), Data::from([("k".into(), b"v2".to_vec())]));
    volumes
        .setup(&fake, &ctx(&r, &p, 1000 + 800))
        .await
        .unwrap();
    assert_eq!(read(&cfg.join("k")), "v2");
    assert_eq!(read(&all.join("k")), "v2");
    assert_eq!(read(&all.join("token")), "token-2");
    // The fake's new token expires at 2000: refreshed again at 80% of its 200 s.
    assert_eq!(volumes.next_refresh(1800), Some(160));

    // Removal takes the pod's directory and leaves the hostPath alone.
    fs::write(host.join("keep"), "x").unwrap();
    remove_pod_dir(&r.0, "u-1").unwrap();
    assert!(!r.0.join("pods/u-1").exists());
    assert_eq!(read(&host.join("keep")), "x");
    assert!(remove_pod_dir(&r.0, "..").is_err());
    assert!(remove_pod_dir(&r.0, "a/b").is_err());
}

#[tokio::test]
async fn missing_sources_and_bad_input_are_clear_errors() {
    let r = root("errors");
    let fake = Fake::default();
    let setup = async |volumes: serde_json::Value| {
        let p = pod(volumes, serde_json::json!([]));
        Volumes::default()
            .setup(&fake, &ctx(&r, &p, 0))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        setup(serde_json::json!([{ "name": "cfg", "configMap": { "name": "absent" } }])).await,
        Err("MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found".into())
    );
    // Optional: an empty volume.
    setup(
        serde_json::json!([{ "name": "cfg", "configMap": { "name": "absent", "optional": true } }]),
    )
    .await
    .unwrap();
    let err = setup(serde_json::json!([{ "name": "s", "secret": { "secretName": "absent" } }]))
        .await
        .unwrap_err();
    assert!(err.contains("secret \"absent\" not found"), "{err}");
    let err = setup(serde_json::json!([{ "name": "d", "downwardAPI": {
        "items": [{ "path": "../x", "fieldRef": { "fieldPath": "metadata.name" } }] } }]))
    .await
    .unwrap_err();
    assert!(err.contains("must not"), "{err}");
    let err = setup(
        serde_json::json!([{ "name": "d", "downwardAPI": { "defaultMode": 0o7777,
        "items": [{ "path": "x", "fieldRef": { "fieldPath": "metadata.name" } }] } }]),
    )
    .await
    .unwrap_err();
    assert!(err.contains("invalid file mode"), "{err}");
    let err = setup(
        serde_json::json!([{ "name": "d", "downwardAPI": { "items": [
        { "path": "x", "fieldRef": { "fieldPath": "metadata.name" } },
        { "path": "x", "fieldRef": { "fieldPath": "metadata.uid" } },
    ] } }]),
    )
    .await
    .unwrap_err();
    assert!(err.contains("duplicate path"), "{err}");
    let err = setup(
        serde_json::json!([{ "name": "pvc", "persistentVolumeClaim": { "claimName": "x" } }]),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("unsupported volume type persistentVolumeClaim"),
        "{err}"
    );
    // hostPath type checks.
    let file = r.0.join("a-file");
    fs::write(&file, "x").unwrap();
    let f = file.display().to_string();
    let err =
        setup(serde_json::json!([{ "name": "h", "hostPath": { "path": f, "type": "Directory" } }]))
            .await
            .unwrap_err();
    assert!(
        err.contains(&format!(
            "hostPath type check failed: {f} is not a directory"
        )),
        "{err}"
    );
    for (kind, ok) in [
        ("File", true),
        ("", true),
        ("Socket", false),
        ("CharDevice", false),
        ("BlockDevice", false),
        ("Bogus", false),
    ] {
        assert_eq!(host_path(&f, kind).is_ok(), ok, "{kind}");
    }
    assert!(host_path("/dev/null", "CharDevice").is_ok());
    assert!(host_path("relative", "").is_err());
    let created = r.0.join("made/file");
    host_path(&created.display().to_string(), "FileOrCreate").unwrap();
    assert!(created.is_file());
    assert!(host_path(&r.0.join("missing").display().to_string(), "Directory").is_err());
}

#[test]
fn volume_mounts_are_checked() {
    let dir = root("mounts");
    let volumes = PodVolumes::from([
        (
            "data".into(),
            Prepared {
                host_path: dir.0.clone(),
                read_only: false,
                writable_dirs: true,
            },
        ),
        (
            "api".into(),
            Prepared {
                host_path: dir.0.join("api"),
                read_only: true,
                writable_dirs: false,
            },
        ),
    ]);
    fs::create_dir_all(dir.0.join("api")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.0.join("api/escape")).unwrap();
    let mounts = |m: serde_json::Value| {
        let c: Container =
            serde_json::from_value(serde_json::json!({ "name": "c", "volumeMounts": m })).unwrap();
        container_mounts(&c, &volumes, &[("POD".into(), "p1".into())], false)
            .map_err(|e| e.to_string())
    };
    let err = mounts(serde_json::json!([{ "name": "nope", "mountPath": "/x" }])).unwrap_err();
    assert_eq!(err, "volumeMount \"nope\": no volume \"nope\" in the pod");
    for sub in ["../x", "/abs", "a/../../b"] {
        let err =
            mounts(serde_json::json!([{ "name": "data", "mountPath": "/x", "subPath": sub }]))
                .unwrap_err();
        assert!(err.contains("subPath"), "{sub}: {err}");
    }
    // A symlink leading out of the volume is refused.
    let err =
        mounts(serde_json::json!([{ "name": "api", "mountPath": "/x", "subPath": "escape" }]))
            .unwrap_err();
    assert!(err.contains("outside"), "{err}");
    let err =
        mounts(serde_json::json!([{ "name": "api", "mountPath": "/x", "subPath": "absent" }]))
            .unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let err = mounts(serde_json::json!([
        { "name": "data", "mountPath": "/x" },
        { "name": "api", "mountPath": "/x/" },
    ]))
    .unwrap_err();
    assert!(err.contains("used twice"), "{err}");
    let err = mounts(serde_json::json!([{ "name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional" }]))
        .unwrap_err();
    assert!(err.contains("privileged"), "{err}");
    // subPathExpr expands from the environment and is created in an emptyDir-like volume.
    let ok = mounts(serde_json::json!([
        { "name": "data", "mountPath": "/logs", "subPathExpr": "logs/$(POD)", "mountPropagation": "HostToContainer" },
    ]))
    .unwrap();
    assert!(dir.0.join("logs/p1").is_dir());
    assert!(ok[0].host_path.ends_with("/logs/p1"));
    assert_eq!(
        ok[0].propagation,
        cri::MountPropagation::PropagationHostToContainer as i32
    );
}

#[test]
fn the_service_account_volume_is_added_unless_present_or_disabled() {
    let p = pod(serde_json::json!([]), serde_json::json!([]));
    let with = with_service_account(&p, true).unwrap();
    let spec = with.spec.unwrap();
    let v = &spec.volumes.as_ref().unwrap()[0];
    assert_eq!(v.name, SERVICE_ACCOUNT_VOLUME);
    let sources = v.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert_eq!(
        sources[0].service_account_token.as_ref().unwrap().path,
        "token"
    );
    assert_eq!(
        sources[1].config_map.as_ref().unwrap().name,
        "kube-root-ca.crt"
    );
    let m = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(m.mount_path, SERVICE_ACCOUNT_MOUNT);
    assert_eq!(m.read_only, Some(true));
    assert!(with_service_account(&p, false).is_none());
    let injected = pod(
        serde_json::json!([{ "name": "kube-api-access-abcde", "projected": { "sources": [] } }]),
        serde_json::json!([]),
    );
    assert!(with_service_account(&injected, true).is_none());
}

/// A kubelet whose node identity may not read kube-root-ca.crt (its own volume is in no pod
/// spec, so the node authorizer refuses).
struct Forbidden;

impl Sources for Forbidden {
    async fn config_map(&self, _: &str, name: &str) -> Result<Option<Data>, VolumeError> {
        Err(VolumeError::Api {
            kind: "configmap",
            name: name.to_owned(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("forbidden", "Forbidden").with_code(403),
            )),
        })
    }
    async fn secret(&self, _: &str, _: &str) -> Result<Option<Data>, VolumeError> {
        Ok(None)
    }
    async fn token(&self, _: &TokenKey) -> Result<Token, VolumeError> {
        Ok(Token {
            token: "t".into(),
            expires_at: 4000,
        })
    }
}

#[tokio::test]
async fn the_service_account_volume_takes_the_given_ca_when_the_configmap_is_unreadable() {
    let r = root("sa");
    let p = with_service_account(&pod(serde_json::json!([]), serde_json::json!([])), true).unwrap();
    let mut c = ctx(&r, &p, 0);
    c.cluster_ca = Some("PEM");
    let prepared = Volumes::default().setup(&Forbidden, &c).await.unwrap();
    let dir = &prepared[SERVICE_ACCOUNT_VOLUME].host_path;
    assert_eq!(read(&dir.join("ca.crt")), "PEM");
    assert_eq!(read(&dir.join("token")), "t");
    assert_eq!(read(&dir.join("namespace")), "ns");
    // A user's volume gets no such leniency.
    let p = pod(
        serde_json::json!([{ "name": "cfg", "configMap": { "name": "x", "optional": true } }]),
        serde_json::json!([]),
    );
    let err = Volumes::default()
        .setup(&Forbidden, &ctx(&r, &p, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
}

#[test]
fn tokens_refresh_at_80_percent_or_after_a_day() {
    assert!(!needs_refresh(0, 3600, 2879));
    assert!(needs_refresh(0, 3600, 2880));
    assert!(!needs_refresh(0, 7 * 86_400, 86_399));
    assert!(needs_refresh(0, 7 * 86_400, 86_400));
}
