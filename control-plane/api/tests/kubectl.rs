//! The real kubectl against a throwaway HTTP/1.1 server on 127.0.0.1 that serves discovery
//! (legacy), the OpenAPI v3 documents of `skiff_api::openapi`, and objects patched with
//! `skiff_api::patch` / `skiff_api::apply`. Checks that `explain`, `create -f`, `apply -f`
//! (client-side, whose strategic merge patch kubectl computes from our v3 schemas),
//! `apply --server-side`, `set image`, `rollout restart`, `label`, `annotate`, `edit` and
//! `cordon` work and print no warnings.
//!
//! Skips (loudly) when /usr/bin/kubectl is missing.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::{Value, json};
use skiff_api::{apply, openapi, patch, registry};

const KUBECTL: &str = "/usr/bin/kubectl";

/// One request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: String,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    seen: Vec<Seen>,
    next_rv: u64,
}

struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let handle = thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || serve(conn, &st, port));
            }
        });
        Self {
            port,
            state,
            stop,
            handle: Some(handle),
        }
    }

    fn object(&self, key: &str) -> Value {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("no object {key}"))
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut content_length = 0;
    let mut content_type = String::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "content-type" => value.trim().clone_into(&mut content_type),
                _ => {}
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        content_type,
        body,
    })
}

fn serve(conn: TcpStream, state: &Mutex<State>, port: u16) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        let (code, body, extra) = handle(&req, state, port);
        let reason = match code {
            200 => "OK",
            201 => "Created",
            304 => "Not Modified",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Error",
        };
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            bytes.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn status(
    code: u16,
    reason: &str,
    message: &str,
    causes: Option<Value>,
) -> (u16, Option<Value>, String) {
    let mut s = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message":message,"reason":reason,"code":code});
    if let Some(c) = causes {
        s["details"] = json!({ "causes": c });
    }
    (code, Some(s), String::new())
}

fn discovery_resources(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in registry::resources_of(group, version) {
        out.push(
            json!({"name":r.plural,"singularName":r.singular,"namespaced":r.namespaced,
            "kind":r.kind,"verbs":r.verbs,"shortNames":r.short_names,"categories":r.categories}),
        );
        for s in r.subresources {
            let mut v = json!({"name":format!("{}/{}", r.plural, s.name),"singularName":"",
                "namespaced":r.namespaced,"kind":s.kind,"verbs":s.verbs});
            if (s.group, s.version) != (group, version) {
                v["group"] = s.group.into();
                v["version"] = s.version.into();
            }
            out.push(v);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":gv,"resources":out})
}

/// An object URL: /api/v1/namespaces/default/pods/p/status.
struct ObjectPath {
    group: String,
    version: String,
    resource: &'static registry::Resource,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_object_path(path: &str) -> Option<ObjectPath> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), (*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => ((*g).to_owned(), (*v).to_owned(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..]
            if registry::find(&group, &version, plural).is_some() =>
        {
            let rest: Vec<&str> = std::iter::once(*plural)
                .chain(rest.iter().copied())
                .collect();
            ((*ns).to_owned(), rest)
        }
        _ => (String::new(), rest.to_vec()),
    };
    let resource = registry::find(&group, &version, rest.first()?)?;
    Some(ObjectPath {
        group,
        version,
        resource,
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        subresource: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn handle(req: &Request, state: &Mutex<State>, port: u16) -> (u16, Option<Value>, String) {
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        method: req.method.clone(),
        path: format!("{}?{}", req.path, req.query),
        content_type: req.content_type.clone(),
        body: String::from_utf8_lossy(&req.body).into_owned(),
    });
    let ok = |v: Value| (200, Some(v), String::new());
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/version") => {
            return ok(
                json!({"major":"1","minor":"32","gitVersion":"v1.32.4","gitCommit":"0",
                "gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.23",
                "compiler":"gc","platform":"linux/amd64"}),
            );
        }
        ("GET", "/api") => {
            return ok(json!({"kind":"APIVersions","versions":["v1"],
                "serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":format!("127.0.0.1:{port}")}]}));
        }
        ("GET", "/apis") => {
            let groups: Vec<Value> = registry::groups()
                .into_iter()
                .filter(|g| !g.name.is_empty())
                .map(|g| {
                    let versions: Vec<Value> = g
                        .versions
                        .iter()
                        .map(|v| json!({"groupVersion":format!("{}/{v}", g.name),"version":v}))
                        .collect();
                    json!({"name":g.name,"versions":versions,"preferredVersion":versions[0]})
                })
                .collect();
            return ok(json!({"kind":"APIGroupList","apiVersion":"v1","groups":groups}));
        }
        ("GET", "/openapi/v3") => return ok(openapi::v3_index(openapi::content_hash)),
        ("GET", "/openapi/v2") => return status(404, "NotFound", "no v2", None),
        _ => {}
    }
    if let Some(gv) = req.path.strip_prefix("/openapi/v3/") {
        let (g, v) = match gv.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), (*v).to_owned()),
            ["apis", g, v] => ((*g).to_owned(), (*v).to_owned()),
            _ => return status(404, "NotFound", "no such document", None),
        };
        return match openapi::cached(&g, &v) {
            Some(doc) => (
                200,
                Some(doc.doc.clone()),
                format!(
                    "ETag: \"{}\"\r\nCache-Control: public, immutable\r\n",
                    doc.hash
                ),
            ),
            None => status(404, "NotFound", "no such document", None),
        };
    }
    if req.method == "GET" {
        let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["api", v] => return ok(discovery_resources("", v)),
            ["apis", g, v] => return ok(discovery_resources(g, v)),
            _ => {}
        }
    }
    let Some(ObjectPath {
        group,
        version,
        resource: r,
        namespace: ns,
        name,
        subresource: sub,
    }) = parse_object_path(&req.path)
    else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    if sub.is_some() {
        return status(404, "NotFound", "subresources are not served here", None);
    }
    let kind = (group.as_str(), version.as_str(), r.kind);
    let manager = query_param(&req.query, "fieldManager")
        .unwrap_or("")
        .to_owned();
    let key = |name: &str| format!("{}/{}/{ns}/{name}", r.group, r.plural);
    st.next_rv += 1;
    let rv = st.next_rv.to_string();
    match (req.method.as_str(), name) {
        ("GET", Some(name)) => match st.objects.get(&key(&name)) {
            Some(o) => ok(o.clone()),
            None => status(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", r.plural),
                None,
            ),
        },
        ("POST", None) => {
            let mut obj: Value = serde_json::from_slice(&req.body).unwrap();
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
            if st.objects.contains_key(&key(&name)) {
                return status(409, "AlreadyExists", "already exists", None);
            }
            obj["metadata"]["resourceVersion"] = rv.into();
            obj["metadata"]["uid"] = format!("uid-{name}").into();
            if r.namespaced {
                obj["metadata"]["namespace"] = ns.clone().into();
            }
            let obj = apply::record_update(None, &obj, &manager, apply::UPDATE);
            st.objects.insert(key(&name), obj.clone());
            (201, Some(obj), String::new())
        }
        ("PATCH", Some(name)) => {
            let live = st.objects.get(&key(&name)).cloned();
            let ct = req.content_type.split(';').next().unwrap_or("");
            let result = if ct == "application/apply-patch+yaml" {
                let force = query_param(&req.query, "force") == Some("true");
                let applied = match apply::parse_apply_body(&req.body) {
                    Ok(a) => a,
                    Err(e) => return status(400, "BadRequest", &e.to_string(), None),
                };
                match apply::server_side_apply(live.as_ref(), &applied, &manager, force, kind) {
                    Ok(o) => o,
                    Err(apply::ApplyError::Conflict { causes }) => {
                        let msg = apply::ApplyError::Conflict {
                            causes: causes.clone(),
                        }
                        .to_string();
                        let causes: Vec<Value> = causes
                            .iter()
                            .map(apply::ConflictCause::to_status_cause)
                            .collect();
                        return status(409, "Conflict", &msg, Some(json!(causes)));
                    }
                    Err(e) => return status(422, "Invalid", &e.to_string(), None),
                }
            } else {
                let Some(live) = live.clone() else {
                    return status(
                        404,
                        "NotFound",
                        &format!("{} \"{name}\" not found", r.plural),
                        None,
                    );
                };
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let patched = match ct {
                    "application/strategic-merge-patch+json" => {
                        patch::strategic_merge_patch(kind, &live, &body)
                    }
                    "application/merge-patch+json" => patch::merge_patch(&live, &body),
                    "application/json-patch+json" => patch::json_patch(&live, &body),
                    _ => return status(415, "UnsupportedMediaType", ct, None),
                };
                match patched {
                    Ok(p) => apply::record_update(Some(&live), &p, &manager, apply::UPDATE),
                    Err(e) => return status(422, "Invalid", &e.to_string(), None),
                }
            };
            let mut result = result;
            result["metadata"]["resourceVersion"] = rv.into();
            let created = live.is_none();
            st.objects.insert(key(&name), result.clone());
            (if created { 201 } else { 200 }, Some(result), String::new())
        }
        _ => status(405, "MethodNotAllowed", "not here", None),
    }
}

struct Kubectl {
    dir: PathBuf,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(port: u16, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("skiff-kubectl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n"
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .envs(env.iter().copied())
            .env("HOME", &self.dir)
            .output()
            .unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed without printing anything on stderr.
    fn clean(&self, args: &[&str]) -> String {
        self.clean_env(args, &[])
    }

    fn clean_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(
            out.ok && out.stderr.trim().is_empty(),
            "kubectl {args:?} failed or warned:\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kubectl_present() -> bool {
    if Path::new(KUBECTL).exists() {
        return true;
    }
    eprintln!("SKIPPED: {KUBECTL} is missing; the kubectl compatibility checks did not run");
    false
}

const DEPLOYMENT_V1: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        env:
        - name: A
          value: \"1\"
        - name: B
          value: \"2\"
        ports:
        - containerPort: 80
        - containerPort: 443
";

const DEPLOYMENT_V2: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.26
        env:
        - name: A
          value: \"1\"
        ports:
        - containerPort: 80
";

const DEPLOYMENT_KEY: &str = "apps/deployments/default/web";

#[test]
fn kubectl_explain_reads_our_openapi_v3() {
    if !kubectl_present() {
        return;
    }
    let server = Server::start();
    let k = Kubectl::new(server.port, "explain");
    let pods = k.clean(&["explain", "pods"]);
    assert!(pods.contains("KIND:") && pods.contains("Pod"), "{pods}");
    assert!(pods.contains("spec\t<PodSpec>"), "{pods}");
    let template = k.clean(&["explain", "deployment.spec.template", "--recursive"]);
    assert!(
        template.contains("containers\t<[]Container> -required-"),
        "{template}"
    );
    assert!(
        template.contains("containerPort\t<integer> -required-"),
        "{template}"
    );
    // Every served kind, at every served version.
    for r in registry::RESOURCES.iter().filter(|r| r.is_stored()) {
        let out = k.clean(&["explain", r.plural, "--api-version", &r.api_version()]);
        assert!(out.contains(&format!("KIND:       {}", r.kind)), "{out}");
    }
    let field = k.clean(&["explain", "deployment.spec.strategy.type"]);
    assert!(field.contains("FIELD: type <string>"), "{field}");
    // explain fetched the v3 index and the apps/v1 document by its hashed URL, never v2.
    let seen = server.take_seen();
    assert!(
        !seen.iter().any(|s| s.path.starts_with("/openapi/v2")),
        "{seen:#?}"
    );
    let apps = openapi::cached("apps", "v1").unwrap();
    assert!(
        seen.iter().any(|s| s
            .path
            .starts_with(&format!("/openapi/v3/apis/apps/v1?hash={}", apps.hash))),
        "{seen:#?}"
    );
}

#[test]
fn kubectl_create_apply_edit_and_friends() {
    if !kubectl_present() {
        return;
    }
    let server = Server::start();
    let k = Kubectl::new(server.port, "apply");
    let v1 = k.file("v1.yaml", DEPLOYMENT_V1);
    let v2 = k.file("v2.yaml", DEPLOYMENT_V2);
    let v1 = v1.to_str().unwrap();
    let v2 = v2.to_str().unwrap();

    // Client dry runs need the OpenAPI (validation) but no server-side object.
    let out = k.clean(&["create", "-f", v1, "--dry-run=client", "-o", "yaml"]);
    assert!(out.contains("name: web"), "{out}");
    let out = k.clean(&["apply", "-f", v1, "--dry-run=client", "-o", "yaml"]);
    assert!(
        out.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{out}"
    );

    // apply #1 creates (POST with strict field validation).
    let out = k.clean(&["apply", "-f", v1]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let seen = server.take_seen();
    let post = seen.iter().find(|s| s.method == "POST").expect("a POST");
    assert!(
        post.path.contains("fieldManager=kubectl-client-side-apply"),
        "{post:?}"
    );
    assert!(post.path.contains("fieldValidation=Strict"), "{post:?}");

    // apply #2: kubectl computes a strategic merge patch from our v3 schema.
    let out = k.clean(&["apply", "-f", v2]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let seen = server.take_seen();
    // The patch came from our v3 schema: no fallback to /openapi/v2 (kubectl tries it when
    // the v3 document lacks the schema or the PATCH operation's content types).
    assert!(
        !seen.iter().any(|s| s.path.starts_with("/openapi/v2")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.path.starts_with("/openapi/v3/apis/apps/v1?hash=")),
        "{seen:#?}"
    );
    let patch = seen.iter().find(|s| s.method == "PATCH").expect("a PATCH");
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    let body: Value = serde_json::from_str(&patch.body).unwrap();
    let spec = &body["spec"]["template"]["spec"];
    assert_eq!(
        spec["$setElementOrder/containers"],
        json!([{"name":"nginx"}]),
        "{body}"
    );
    let c = &spec["containers"][0];
    assert_eq!(c["env"], json!([{"$patch":"delete","name":"B"}]), "{body}");
    assert_eq!(
        c["ports"],
        json!([{"$patch":"delete","containerPort":443}]),
        "{body}"
    );
    let d = server.object(DEPLOYMENT_KEY);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.26");
    assert_eq!(c["env"], json!([{"name":"A","value":"1"}]));
    assert_eq!(c["ports"], json!([{"containerPort":80}]));

    // set image
    k.clean(&["set", "image", "deployment/web", "nginx=nginx:1.27"]);
    let seen = server.take_seen();
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert!(
        patch.body.contains("$setElementOrder/containers"),
        "{patch:?}"
    );
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert_eq!(
        server.object(DEPLOYMENT_KEY)["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );

    // rollout restart
    k.clean(&["rollout", "restart", "deployment/web"]);
    let d = server.object(DEPLOYMENT_KEY);
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );

    // label, annotate (merge patches)
    k.clean(&["label", "deployment", "web", "env=prod"]);
    k.clean(&["annotate", "deployment", "web", "owner=team-a"]);
    let seen = server.take_seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "PATCH" && s.content_type == "application/merge-patch+json")
    );
    let d = server.object(DEPLOYMENT_KEY);
    assert_eq!(d["metadata"]["labels"]["env"], "prod");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");

    // edit: replicas 2 -> 4 and a new label, through a scripted editor.
    let editor = k.file(
        "editor.py",
        "import sys\np = sys.argv[-1]\ns = open(p).read()\ns = s.replace('replicas: 2', 'replicas: 4', 1)\ns = s.replace('  labels:\\n', '  labels:\\n    tier: frontend\\n', 1)\nopen(p, 'w').write(s)\n",
    );
    let editor_cmd = format!("python3 {}", editor.display());
    k.clean_env(&["edit", "deployment/web"], &[("KUBE_EDITOR", &editor_cmd)]);
    let seen = server.take_seen();
    let patch = seen
        .iter()
        .find(|s| s.method == "PATCH")
        .expect("edit patches");
    assert!(
        patch.path.contains("fieldManager=kubectl-edit"),
        "{patch:?}"
    );
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    let d = server.object(DEPLOYMENT_KEY);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert!(
        d["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["manager"] == "kubectl-edit"),
        "{d}"
    );

    // Server-side apply conflicts with the client-side apply's fields unless forced.
    let v3 = k.file(
        "v3.yaml",
        &DEPLOYMENT_V2.replace("replicas: 2", "replicas: 5"),
    );
    let v3 = v3.to_str().unwrap();
    let out = k.run(&["apply", "--server-side", "-f", v3], &[]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("conflict with \"kubectl-edit\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(".spec.replicas"), "{}", out.stderr);
    let out = k.clean(&["apply", "--server-side", "--force-conflicts", "-f", v3]);
    assert!(out.contains("serverside-applied"), "{out}");
    let d = server.object(DEPLOYMENT_KEY);
    assert_eq!(d["spec"]["replicas"], 5);
    let ssa = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
        .cloned()
        .unwrap_or_else(|| panic!("{d}"));
    assert!(
        ssa["fieldsV1"].pointer("/f:spec/f:replicas").is_some(),
        "{ssa}"
    );
}

#[test]
fn kubectl_cordon_patches_the_node() {
    if !kubectl_present() {
        return;
    }
    let server = Server::start();
    let k = Kubectl::new(server.port, "cordon");
    let node = k.file(
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  podCIDR: 10.0.0.0/24\n",
    );
    let out = k.clean(&["create", "-f", node.to_str().unwrap()]);
    assert!(out.contains("node/n1 created"), "{out}");
    let out = k.clean(&["cordon", "n1"]);
    assert!(out.contains("node/n1 cordoned"), "{out}");
    assert_eq!(server.object("/nodes//n1")["spec"]["unschedulable"], true);
    let out = k.clean(&["uncordon", "n1"]);
    assert!(out.contains("node/n1 uncordoned"), "{out}");
    assert!(
        server.object("/nodes//n1")["spec"]
            .get("unschedulable")
            .is_none()
    );
}

#[test]
#[ignore = "dev helper: serves on 127.0.0.1 for manual kubectl runs (see the port on stderr)"]
fn serve_for_manual_checks() {
    let server = Server::start();
    eprintln!("serving on 127.0.0.1:{} for 90 s", server.port);
    thread::sleep(Duration::from_secs(90));
}
