//! `cargo xtask codegen protobuf`: writes skiff-api's protobuf field table.
//!
//! Kubernetes publishes its protobuf schema only as `.proto` files, and the prost crate k8s-pb
//! ships only the Rust generated from them (no `.proto`, no descriptors). Its structs still
//! carry everything the wire needs (`#[prost(string, optional, tag = "1")]`), so this parses
//! them with syn. prost snake_cases the field names (`podIP` -> `pod_ip`), so the JSON names
//! come from k8s-openapi, whose serde impls match on the exact names (`"podIP" =>
//! Field::Key_pod_ip`). The output is a plain Rust table: skiff-api decodes at run time
//! without either crate.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use go_types::GoField;
use syn::{
    Attribute, Expr, ExprLit, Fields, GenericArgument, ImplItem, Item, Lit, Meta, Pat,
    PathArguments, Token, Type, punctuated::Punctuated, visit::Visit,
};

mod go_types;

/// The kubectl whose Go types say which fields are pointers and which `omitempty` (see
/// go_types.rs); the machine image ships it.
pub const DEFAULT_GO_BINARY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

const K8S_PB: &str = "k8s-pb";
const K8S_OPENAPI: &str = "k8s-openapi";
/// The k8s-openapi module tree whose names are used; it matches the workspace's `v1_33` feature.
const OPENAPI_VERSION: &str = "v1_33";
const OUTPUT: &str = "control-plane/api/src/protobuf/table.rs";
const REGISTRY: &str = "control-plane/api/src/registry.rs";

/// (apiVersion, kind, message) of subresource request kinds: `kubectl create token` posts a
/// TokenRequest, `kubectl scale` may post a Scale, `kubectl drain` an Eviction.
const SUBRESOURCE_KINDS: &[(&str, &str, &str)] = &[
    (
        "authentication.k8s.io/v1",
        "TokenRequest",
        "api/authentication/v1/TokenRequest",
    ),
    ("autoscaling/v1", "Scale", "api/autoscaling/v1/Scale"),
    ("policy/v1", "Eviction", "api/policy/v1/Eviction"),
    ("v1", "Binding", "api/core/v1/Binding"),
];

/// Packages decoded besides the registry's groups: the shared apimachinery types every object
/// embeds, and groups that kubectl's typed `create` commands post although skiff does not list
/// them yet (`kubectl create priorityclass`).
const EXTRA_PACKAGES: &[&str] = &[
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/runtime",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/api/resource",
    "api/scheduling/v1",
];

/// Messages whose JSON form is not an object of their fields (Go types with custom
/// MarshalJSON). The runtime decoder has one routine per variant.
const SPECIAL: &[(&str, &str)] = &[
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1", "FieldsV1"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Verbs", "StringList"),
    ("k8s.io.apimachinery.pkg.api.resource.Quantity", "Quantity"),
    (
        "k8s.io.apimachinery.pkg.api.resource.QuantityValue",
        "Quantity",
    ),
    (
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
    (
        "k8s.io.apimachinery.pkg.runtime.RawExtension",
        "RawExtension",
    ),
    ("k8s.io.api.authentication.v1.ExtraValue", "StringList"),
    ("k8s.io.api.authorization.v1.ExtraValue", "StringList"),
    ("k8s.io.api.certificates.v1.ExtraValue", "StringList"),
];

pub fn protobuf(root: &Path, go_binary: &Path) -> anyhow::Result<()> {
    let output = generate(root, go_binary)?;
    let path = root.join(OUTPUT);
    fs::write(&path, output).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The table's source text.
fn generate(root: &Path, go_binary: &Path) -> anyhow::Result<String> {
    let sources = crate_sources(root)?;
    let pb_src = sources
        .get(K8S_PB)
        .context("k8s-pb is not in the dependency graph (skiff-api dev-depends on it)")?
        .join("src");
    let openapi_src = sources
        .get(K8S_OPENAPI)
        .context("k8s-openapi is not in the dependency graph")?
        .join("src")
        .join(OPENAPI_VERSION);

    let mut wanted: BTreeSet<String> = registry_packages(&root.join(REGISTRY))?;
    wanted.extend(EXTRA_PACKAGES.iter().map(|p| (*p).to_owned()));

    // Parse the wanted packages and, transitively, every package their messages refer to.
    let mut model = Model::default();
    let mut queue: Vec<String> = wanted.into_iter().collect();
    while let Some(package) = queue.pop() {
        if model.packages.contains(&package) {
            continue;
        }
        parse_package(&pb_src, &package, &mut model)?;
        model.packages.insert(package);
        for message in model.messages.values() {
            for field in &message.fields {
                if let Some(target) = field.message_type() {
                    let (package, _) = target.rsplit_once('/').context("type path")?;
                    if !model.packages.contains(package) && !queue.iter().any(|q| q == package) {
                        queue.push(package.to_owned());
                    }
                }
            }
        }
    }

    // Kinds that are request bodies of subresources rather than stored resources: k8s-openapi
    // does not mark them as resources, but kubectl posts them as protobuf all the same.
    for (api_version, kind, message) in SUBRESOURCE_KINDS {
        if model.messages.contains_key(*message) {
            model.kinds.insert(
                ((*api_version).to_owned(), (*kind).to_owned()),
                (*message).to_owned(),
            );
        }
    }

    let mut names = OpenApiNames::default();
    for package in &model.packages {
        names.load(&openapi_src.join(package))?;
    }

    let go = go_types::structs(go_binary)
        .with_context(|| format!("reading Go types from {}", go_binary.display()))?;
    let zero_rules = zero_rules(&model, &go);

    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let provenance = Provenance {
        pb: file_name(pb_src.parent().context("k8s-pb dir")?),
        openapi: file_name(
            openapi_src
                .parent()
                .and_then(Path::parent)
                .context("k8s-openapi dir")?,
        ),
        go: file_name(go_binary),
    };
    eprintln!(
        "{} messages in {} packages, {} kinds",
        model.messages.len(),
        model.packages.len(),
        model.kinds.len()
    );
    render(&model, &names, &zero_rules, &provenance)
}

/// Source directories of the dependencies, from `cargo metadata`.
fn crate_sources(root: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    let mut out = BTreeMap::new();
    for package in metadata["packages"]
        .as_array()
        .context("metadata packages")?
    {
        let name = package["name"].as_str().unwrap_or_default();
        if name == K8S_PB || name == K8S_OPENAPI {
            let manifest = package["manifest_path"].as_str().context("manifest_path")?;
            let dir = Path::new(manifest).parent().context("manifest dir")?;
            if out.insert(name.to_owned(), dir.to_owned()).is_some() {
                bail!("two versions of {name} in the dependency graph");
            }
        }
    }
    Ok(out)
}

/// The k8s-pb packages (`api/apps/v1`) of the groups in skiff's resource registry, read from
/// its `res("group", "version", "Kind", ...)` rows.
fn registry_packages(path: &Path) -> anyhow::Result<BTreeSet<String>> {
    struct Rows(BTreeSet<(String, String)>);
    impl<'ast> Visit<'ast> for Rows {
        fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
            if let Expr::Path(p) = &*call.func
                && p.path.is_ident("res")
            {
                let strings: Vec<String> = call
                    .args
                    .iter()
                    .take(2)
                    .filter_map(|a| match a {
                        Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) => Some(s.value()),
                        _ => None,
                    })
                    .collect();
                if let [group, version] = strings.as_slice() {
                    self.0.insert((group.clone(), version.clone()));
                }
            }
            syn::visit::visit_expr_call(self, call);
        }
    }
    let file = parse(path)?;
    let mut rows = Rows(BTreeSet::new());
    rows.visit_file(&file);
    ensure!(!rows.0.is_empty(), "no res(..) rows in {}", path.display());
    Ok(rows
        .0
        .into_iter()
        .map(|(group, version)| {
            // Go packages are named after the group's first label: "" is core,
            // rbac.authorization.k8s.io is rbac, discovery.k8s.io is discovery.
            let module = if group.is_empty() {
                "core"
            } else {
                group.split('.').next().unwrap_or_default()
            };
            format!("api/{module}/{version}")
        })
        .collect())
}

fn parse(path: &Path) -> anyhow::Result<syn::File> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))
}

#[derive(Default)]
struct Model {
    packages: BTreeSet<String>,
    /// Keyed by `package/Name` (`api/core/v1/Pod`).
    messages: BTreeMap<String, Message>,
    /// (apiVersion, kind) -> message key.
    kinds: BTreeMap<(String, String), String>,
}

struct Message {
    fields: Vec<PbField>,
}

struct PbField {
    rust_name: String,
    tag: u32,
    label: Label,
    ty: PbType,
    doc: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Optional,
    Repeated,
    Map,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PbType {
    Scalar(&'static str),
    /// `package/Name` of the message.
    Message(String),
}

impl PbField {
    fn message_type(&self) -> Option<&str> {
        match &self.ty {
            PbType::Message(m) => Some(m),
            PbType::Scalar(_) => None,
        }
    }
}

fn parse_package(src: &Path, package: &str, model: &mut Model) -> anyhow::Result<()> {
    let path = src.join(package).join("mod.rs");
    let file = parse(&path)?;
    for item in &file.items {
        match item {
            Item::Struct(s) if derives_prost_message(&s.attrs) => {
                let name = s.ident.to_string();
                let fields = match &s.fields {
                    Fields::Named(named) => named
                        .named
                        .iter()
                        .map(|f| parse_field(package, f))
                        .collect::<anyhow::Result<Vec<_>>>()
                        .with_context(|| format!("message {package}/{name}"))?,
                    Fields::Unit => Vec::new(),
                    Fields::Unnamed(_) => bail!("{package}/{name}: tuple message"),
                };
                model
                    .messages
                    .insert(format!("{package}/{name}"), Message { fields });
            }
            Item::Impl(imp) => {
                let is_resource = imp
                    .trait_
                    .as_ref()
                    .and_then(|(_, p, _)| p.segments.last())
                    .is_some_and(|s| s.ident == "Resource");
                let Type::Path(self_ty) = &*imp.self_ty else {
                    continue;
                };
                if !is_resource {
                    continue;
                }
                let name = self_ty
                    .path
                    .segments
                    .last()
                    .context("impl type")?
                    .ident
                    .to_string();
                let mut consts = BTreeMap::new();
                for item in &imp.items {
                    if let ImplItem::Const(c) = item
                        && let Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) = &c.expr
                    {
                        consts.insert(c.ident.to_string(), s.value());
                    }
                }
                if let (Some(api_version), Some(kind)) =
                    (consts.remove("API_VERSION"), consts.remove("KIND"))
                {
                    model
                        .kinds
                        .insert((api_version, kind), format!("{package}/{name}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn derives_prost_message(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().contains("prost :: Message"))
    })
}

fn doc_of(attrs: &[Attribute]) -> String {
    let mut doc = String::new();
    for attr in attrs {
        if let Meta::NameValue(nv) = &attr.meta
            && nv.path.is_ident("doc")
            && let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
        {
            doc.push_str(s.value().trim());
            doc.push('\n');
        }
    }
    doc
}

fn parse_field(package: &str, field: &syn::Field) -> anyhow::Result<PbField> {
    let rust_name = field
        .ident
        .as_ref()
        .context("unnamed field")?
        .to_string()
        .trim_start_matches("r#")
        .to_owned();
    let attr = field
        .attrs
        .iter()
        .find(|a| a.path().is_ident("prost"))
        .with_context(|| format!("{rust_name}: no #[prost(..)]"))?;
    let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    let (mut tag, mut label, mut ty) = (None, Label::Optional, None);
    let string_value = |nv: &syn::MetaNameValue| -> anyhow::Result<String> {
        match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok(s.value()),
            _ => bail!("{rust_name}: expected a string in #[prost(..)]"),
        }
    };
    for meta in &metas {
        match meta {
            Meta::Path(p) => {
                let word = p.get_ident().context("prost attribute word")?.to_string();
                match word.as_str() {
                    "optional" | "required" | "boxed" => {}
                    "repeated" => label = Label::Repeated,
                    "message" => ty = Some(PbType::Message(message_path(package, &field.ty)?)),
                    other => ty = Some(PbType::Scalar(scalar(other)?)),
                }
            }
            Meta::NameValue(nv) => {
                let key = nv
                    .path
                    .get_ident()
                    .context("prost attribute key")?
                    .to_string();
                match key.as_str() {
                    "tag" => tag = Some(string_value(nv)?.parse::<u32>()?),
                    // Packed or not, the decoder accepts both encodings.
                    "packed" => {}
                    // `bytes = "vec"` picks the Rust type only.
                    "bytes" => ty = Some(PbType::Scalar("Bytes")),
                    "btree_map" | "hash_map" => {
                        label = Label::Map;
                        let spec = string_value(nv)?;
                        let (k, v) = spec.split_once(',').context("map spec")?;
                        ensure!(k.trim() == "string", "{rust_name}: map key {k}");
                        ty = Some(match v.trim() {
                            "message" => PbType::Message(message_path(package, &field.ty)?),
                            other => PbType::Scalar(scalar(other)?),
                        });
                    }
                    other => bail!("{rust_name}: unknown prost attribute {other}"),
                }
            }
            Meta::List(_) => bail!("{rust_name}: unexpected prost attribute (oneof/enumeration?)"),
        }
    }
    Ok(PbField {
        tag: tag.with_context(|| format!("{rust_name}: no tag"))?,
        ty: ty.with_context(|| format!("{rust_name}: no type"))?,
        label,
        doc: doc_of(&field.attrs),
        rust_name,
    })
}

/// The decoder's scalar variant for a prost scalar type word.
fn scalar(word: &str) -> anyhow::Result<&'static str> {
    Ok(match word {
        "bool" => "Bool",
        "int32" => "Int32",
        "int64" => "Int64",
        "double" => "Double",
        "string" => "String",
        "bytes" => "Bytes",
        // Kubernetes uses no other scalar types; one would need a decoder routine first.
        other => bail!("protobuf scalar type {other} has no decoder support in skiff-api"),
    })
}

/// `package/Name` of the message inside a field type (`Option<T>`, `Vec<T>`, `Option<Box<T>>`,
/// `BTreeMap<String, T>`), resolving prost's relative `super::` paths.
fn message_path(package: &str, ty: &Type) -> anyhow::Result<String> {
    let Type::Path(tp) = ty else {
        bail!("unexpected field type");
    };
    let last = tp.path.segments.last().context("empty type path")?;
    let wrapper = last.ident.to_string();
    if matches!(
        wrapper.as_str(),
        "Option" | "Vec" | "Box" | "BTreeMap" | "HashMap"
    ) {
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            bail!("{wrapper} without type arguments");
        };
        let inner = args
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .next_back()
            .context("no type argument")?;
        return message_path(package, inner);
    }
    let mut module: Vec<&str> = package.split('/').collect();
    let segments: Vec<String> = tp
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let (name, prefix) = segments.split_last().context("type path")?;
    for segment in prefix {
        match segment.as_str() {
            "super" => {
                module.pop().context("super:: above the crate root")?;
            }
            "crate" => module.clear(),
            other => module.push(other),
        }
    }
    Ok(format!("{}/{name}", module.join("/")))
}

/// JSON field names of the k8s-openapi types, from their serde `Deserialize` impls.
#[derive(Default)]
struct OpenApiNames {
    /// `package/foldedname` -> rust field name -> JSON name.
    types: BTreeMap<String, BTreeMap<String, String>>,
}

impl OpenApiNames {
    /// The JSON names of the k8s-openapi type for a k8s-pb message key.
    fn get(&self, key: &str) -> Option<&BTreeMap<String, String>> {
        let (package, name) = key.rsplit_once('/')?;
        self.types.get(&format!("{package}/{}", fold(name)))
    }

    fn load(&mut self, dir: &Path) -> anyhow::Result<()> {
        let Ok(entries) = fs::read_dir(dir) else {
            // Packages k8s-openapi leaves out (runtime, util/intstr) keep prost's names.
            return Ok(());
        };
        let package = dir
            .components()
            .rev()
            .take_while(|c| c.as_os_str() != OPENAPI_VERSION)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        for path in files {
            let file = parse(&path)?;
            for item in &file.items {
                let Item::Impl(imp) = item else { continue };
                let is_deserialize = imp
                    .trait_
                    .as_ref()
                    .and_then(|(_, p, _)| p.segments.last())
                    .is_some_and(|s| s.ident == "Deserialize");
                let Type::Path(self_ty) = &*imp.self_ty else {
                    continue;
                };
                if !is_deserialize {
                    continue;
                }
                let name = self_ty
                    .path
                    .segments
                    .last()
                    .context("impl type")?
                    .ident
                    .to_string();
                let mut arms = Arms(BTreeMap::new());
                arms.visit_item_impl(imp);
                // k8s-pb spells some initialisms differently (HttpGetAction for
                // HTTPGetAction), so types are matched case-insensitively.
                if !arms.0.is_empty()
                    && self
                        .types
                        .insert(format!("{package}/{}", fold(&name)), arms.0)
                        .is_some()
                {
                    bail!("{package}: two k8s-openapi types named {name} up to case");
                }
            }
        }
        Ok(())
    }
}

/// `"podIP" => Field::Key_pod_ip` match arms: rust name -> JSON name.
struct Arms(BTreeMap<String, String>);

impl<'ast> Visit<'ast> for Arms {
    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if let Pat::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) = &arm.pat
            && let Expr::Path(p) = &*arm.body
            && let Some(last) = p.path.segments.last()
            && let Some(rust) = last.ident.to_string().strip_prefix("Key_")
        {
            self.0.insert(rust.to_owned(), s.value());
        }
        syn::visit::visit_arm(self, arm);
    }
}

/// How a field name compares across the two spellings: `podIP`, `pod_ip` -> `podip`.
fn fold(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Where a field's JSON name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameSource {
    /// k8s-openapi's serde impl: the exact name.
    OpenApi,
    /// The Go doc comment starts with the field's name (`podIP is ...`).
    Doc,
    /// Neither knows the field: lowerCamelCase of prost's name.
    Derived,
}

fn json_name(
    openapi: Option<&BTreeMap<String, String>>,
    field: &PbField,
) -> anyhow::Result<(String, NameSource)> {
    let folded = fold(&field.rust_name);
    if let Some(names) = openapi {
        let hits: Vec<&String> = names.values().filter(|json| fold(json) == folded).collect();
        match hits.as_slice() {
            [one] => return Ok(((*one).clone(), NameSource::OpenApi)),
            [] => {}
            many => bail!("{}: ambiguous JSON names {many:?}", field.rust_name),
        }
    }
    let first_word: String = field
        .doc
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    // A doc comment that starts with the Go field name (`Replicas is`) says nothing about the
    // JSON spelling; one that starts with the JSON name does (it begins lower case).
    if fold(&first_word) == folded && first_word.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Ok((first_word, NameSource::Doc));
    }
    let mut camel = String::new();
    let mut upper = false;
    for c in field.rust_name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            camel.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    Ok((camel, NameSource::Derived))
}

/// Whether a message field is a Go embedded struct (`json:",inline"`), whose fields JSON shows
/// in the parent: `Probe.handler` (ProbeHandler: `httpGet`, `exec`, ...), `Volume.volumeSource`,
/// the `LocalObjectReference` in key selectors. Protobuf keeps it a nested message; the sign is
/// that k8s-openapi's parent type has no field of that name but has most fields of the child
/// (not all: k8s-pb may know fields newer than the k8s-openapi version).
fn is_inline(model: &Model, parent: Option<&BTreeMap<String, String>>, field: &PbField) -> bool {
    let (Some(parent), Some(child), Label::Optional) = (parent, field.message_type(), field.label)
    else {
        return false;
    };
    let parent: BTreeSet<String> = parent.values().map(|json| fold(json)).collect();
    if parent.contains(&fold(&field.rust_name)) {
        return false;
    }
    let Some(message) = model.messages.get(child) else {
        return false;
    };
    let shared = message
        .fields
        .iter()
        .filter(|f| parent.contains(&fold(&f.rust_name)))
        .count();
    shared > 0 && shared * 2 > message.fields.len()
}

/// Whether a zero scalar read from the wire shows in the JSON, from the Go structs: message key
/// -> field number -> keep. A Go struct matches a message when its protobuf-tagged fields are a
/// subset of the message's (the binary's k8s.io/api may be older than k8s-pb's) covering at
/// least 80% of them; a field gets a rule only when every matching struct agrees (kubectl links
/// v1beta1/v1beta2 copies of some types too).
fn zero_rules(model: &Model, go: &[Vec<GoField>]) -> BTreeMap<String, BTreeMap<u32, bool>> {
    let shapes: Vec<BTreeSet<(u32, String)>> = go
        .iter()
        .map(|fields| {
            fields
                .iter()
                .map(|f| (f.number, fold(&f.proto_name)))
                .collect()
        })
        .collect();
    let mut out = BTreeMap::new();
    let (mut ruled, mut total) = (0, 0);
    for (key, message) in &model.messages {
        total += message.fields.len();
        let shape: BTreeSet<(u32, String)> = message
            .fields
            .iter()
            .map(|f| (f.tag, fold(&f.rust_name)))
            .collect();
        let fits: Vec<usize> = shapes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_subset(&shape))
            .map(|(i, _)| i)
            .collect();
        let Some(best) = fits.iter().map(|&i| shapes[i].len()).max() else {
            continue;
        };
        if best * 5 < shape.len() * 4 {
            continue;
        }
        let mut rules: BTreeMap<u32, Option<bool>> = BTreeMap::new();
        for &i in fits.iter().filter(|&&i| shapes[i].len() == best) {
            for field in &go[i] {
                let keep = field.pointer || !field.omitempty;
                let rule = rules.entry(field.number).or_insert(Some(keep));
                if *rule != Some(keep) {
                    *rule = None;
                }
            }
        }
        let rules: BTreeMap<u32, bool> = rules
            .into_iter()
            .filter_map(|(n, rule)| rule.map(|r| (n, r)))
            .collect();
        ruled += rules.len();
        out.insert(key.clone(), rules);
    }
    eprintln!("zero rules from Go types for {ruled} of {total} fields; the rest from doc comments");
    out
}

/// Whether a zero value read from the wire must show in the JSON, for fields the Go types do
/// not cover (newer than the kubectl binary).
///
/// Go's protobuf marshalling writes every non-pointer field, zero or not, so a zero on the wire
/// is usually just an unset field; Go's JSON then leaves it out if the field is `omitempty`.
/// Kubernetes marks those fields `+optional`, and gives a pointer (`*int32`, where an explicit
/// zero differs from unset) a doc comment saying so. Fields without `+optional` are
/// non-`omitempty` (`containerPort`, `status.allowed`) or pointers: both keep their zero.
fn keeps_zero(field: &PbField) -> bool {
    // A nil list or map shows as `null` only for non-omitempty Go fields; unknown here, so
    // leave it out (as most list fields are omitempty).
    if field.label != Label::Optional {
        return false;
    }
    let optional = field.doc.lines().any(|l| l.trim() == "+optional");
    let pointer = field.doc.contains("pointer");
    !optional || pointer
}

/// What the table was generated from, for its header.
struct Provenance {
    pb: String,
    openapi: String,
    go: String,
}

fn render(
    model: &Model,
    names: &OpenApiNames,
    zero_rules: &BTreeMap<String, BTreeMap<u32, bool>>,
    sources: &Provenance,
) -> anyhow::Result<String> {
    let proto_name = |key: &str| format!("k8s.io.{}", key.replace('/', ".").replace('_', "-"));
    // The runtime binary-searches MESSAGES by proto name.
    let mut order: Vec<(String, &String, &Message)> = model
        .messages
        .iter()
        .map(|(key, message)| (proto_name(key), key, message))
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let index: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (_, key, _))| (key.as_str(), i))
        .collect();
    let special: BTreeMap<&str, &str> = SPECIAL.iter().copied().collect();
    // Embedded structs k8s-openapi has no type for (VolumeSource) take their names from the
    // type they are embedded in (Volume).
    let mut hints: BTreeMap<&str, &BTreeMap<String, String>> = BTreeMap::new();
    for (key, message) in &model.messages {
        let Some(parent) = names.get(key) else {
            continue;
        };
        for field in &message.fields {
            if let Some(child) = field.message_type()
                && is_inline(model, Some(parent), field)
                && names.get(child).is_none()
            {
                hints.insert(child, parent);
            }
        }
    }

    let mut out = String::new();
    writeln!(
        out,
        "// @generated by `cargo xtask codegen protobuf`; do not edit.\n\
         //\n\
         // The Kubernetes protobuf messages skiff decodes: fields from the prost structs of\n\
         // {}, JSON names from {} ({OPENAPI_VERSION}), zero rules\n\
         // from the Go types in {}.\n\
         // Messages are sorted by proto name; `Ty::Message(i)` is an index into MESSAGES.\n\
         // Fields are sorted by number.\n\n\
         use super::schema::{{Field, Label::*, Message, Special, Ty::*}};\n",
        sources.pb, sources.openapi, sources.go
    )?;
    let mut unconfirmed = Vec::new();
    writeln!(out, "pub(super) static MESSAGES: &[Message] = &[")?;
    for (name, key, message) in &order {
        let special = special.get(name.as_str()).copied();
        let openapi = names.get(key).or_else(|| hints.get(key.as_str()).copied());
        let name = name.clone();
        let mut fields: Vec<&PbField> = message.fields.iter().collect();
        fields.sort_by_key(|f| f.tag);
        writeln!(
            out,
            "    // {}\n    Message {{ name: {name:?}, special: {}, fields: &[",
            index[key.as_str()],
            special.map_or_else(|| "None".to_owned(), |s| format!("Some(Special::{s})"))
        )?;
        let mut seen = BTreeSet::new();
        for field in fields {
            ensure!(seen.insert(field.tag), "{key}: tag {} twice", field.tag);
            let inline = is_inline(model, openapi, field);
            let (json, source) = if inline {
                (String::new(), NameSource::OpenApi)
            } else {
                json_name(openapi, field)?
            };
            if source != NameSource::OpenApi && special.is_none() {
                unconfirmed.push((name.clone(), field.tag, json.clone()));
            }
            let ty = match &field.ty {
                PbType::Scalar(s) => (*s).to_owned(),
                PbType::Message(m) => format!(
                    "Message({})",
                    index
                        .get(m.as_str())
                        .with_context(|| format!("{key}: unknown message {m}"))?
                ),
            };
            let label = match field.label {
                Label::Optional => "Optional",
                Label::Repeated => "Repeated",
                Label::Map => "Map",
            };
            writeln!(
                out,
                "        Field {{ number: {}, json: {json:?}, ty: {ty}, label: {label}, keep_zero: {}, inline: {inline} }},",
                field.tag,
                zero_rules
                    .get(key.as_str())
                    .and_then(|rules| rules.get(&field.tag))
                    .copied()
                    .unwrap_or_else(|| keeps_zero(field))
            )?;
        }
        writeln!(out, "    ] }},")?;
    }
    writeln!(out, "];\n")?;

    writeln!(
        out,
        "/// (apiVersion, kind) -> index into MESSAGES, sorted.\n\
         pub(super) static KINDS: &[(&str, &str, u16)] = &["
    )?;
    for ((api_version, kind), key) in &model.kinds {
        if let Some(i) = index.get(key.as_str()) {
            writeln!(out, "    ({api_version:?}, {kind:?}, {i}),")?;
        }
    }
    writeln!(out, "];\n")?;

    writeln!(
        out,
        "/// Fields whose JSON name k8s-openapi did not confirm (taken from the Go doc comment or\n\
         /// camel-cased): (message, field number, JSON name).\n\
         #[cfg(test)]\n\
         pub(super) static UNCONFIRMED_NAMES: &[(&str, u32, &str)] = &["
    )?;
    for (message, tag, json) in &unconfirmed {
        writeln!(out, "    ({message:?}, {tag}, {json:?}),")?;
    }
    writeln!(out, "];")?;
    ensure!(
        model.messages.len() < usize::from(u16::MAX),
        "message index overflows u16"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_across_spellings() {
        assert_eq!(fold("podIP"), fold("pod_ip"));
        assert_eq!(fold("clusterIPs"), fold("cluster_ips"));
        assert_eq!(fold("HTTPGetAction"), fold("HttpGetAction"));
        assert_ne!(fold("hostIPC"), fold("host_ip"));
    }

    fn field(rust_name: &str, doc: &str) -> PbField {
        PbField {
            rust_name: rust_name.into(),
            tag: 1,
            label: Label::Optional,
            ty: PbType::Scalar("String"),
            doc: doc.into(),
        }
    }

    #[test]
    fn json_names_prefer_k8s_openapi_then_the_doc_comment() {
        let openapi: BTreeMap<String, String> = [("pod_ip".into(), "podIP".into())].into();
        assert_eq!(
            json_name(Some(&openapi), &field("pod_ip", "")).unwrap(),
            ("podIP".into(), NameSource::OpenApi)
        );
        assert_eq!(
            json_name(None, &field("host_ips", "hostIPs holds the IP addresses\n")).unwrap(),
            ("hostIPs".into(), NameSource::Doc)
        );
        // A doc comment naming the Go field says nothing about the JSON spelling.
        assert_eq!(
            json_name(None, &field("pod_ip", "PodIP is the address\n")).unwrap(),
            ("podIp".into(), NameSource::Derived)
        );
    }

    #[test]
    fn doc_comments_decide_zero_rules_the_go_types_do_not_cover() {
        assert!(keeps_zero(&field("name", "Name of the container.\n")));
        assert!(!keeps_zero(&field(
            "host_ip",
            "What host IP to bind to.\n+optional\n"
        )));
        assert!(keeps_zero(&field(
            "replicas",
            "This is a pointer to distinguish between explicit zero and not specified.\n+optional\n"
        )));
    }

    #[test]
    fn prost_paths_resolve_relative_to_their_package() {
        let ty: Type = syn::parse_str(
            "::core::option::Option<super::super::super::apimachinery::pkg::apis::meta::v1::ObjectMeta>",
        )
        .unwrap();
        assert_eq!(
            message_path("api/core/v1", &ty).unwrap(),
            "apimachinery/pkg/apis/meta/v1/ObjectMeta"
        );
        let ty: Type = syn::parse_str(
            "::prost::alloc::collections::BTreeMap<::prost::alloc::string::String, \
             super::super::super::apimachinery::pkg::api::resource::Quantity>",
        )
        .unwrap();
        assert_eq!(
            message_path("api/core/v1", &ty).unwrap(),
            "apimachinery/pkg/api/resource/Quantity"
        );
        let ty: Type = syn::parse_str("::prost::alloc::vec::Vec<Container>").unwrap();
        assert_eq!(
            message_path("api/core/v1", &ty).unwrap(),
            "api/core/v1/Container"
        );
    }

    #[test]
    fn prost_attributes_give_number_label_and_type() {
        let item: syn::ItemStruct = syn::parse_str(
            r#"struct S {
                /// +optional
                #[prost(int32, repeated, packed = "false", tag = "3")]
                pub values: Vec<i32>,
                #[prost(btree_map = "string, bytes", tag = "2")]
                pub binary_data: BTreeMap<String, Vec<u8>>,
                #[prost(message, optional, boxed, tag = "7")]
                pub r#type: Option<Box<Foo>>,
            }"#,
        )
        .unwrap();
        let fields: Vec<PbField> = item
            .fields
            .iter()
            .map(|f| parse_field("api/core/v1", f).unwrap())
            .collect();
        assert_eq!((fields[0].tag, fields[0].label), (3, Label::Repeated));
        assert!(fields[0].ty == PbType::Scalar("Int32"));
        assert_eq!(fields[0].doc, "+optional\n");
        assert_eq!((fields[1].tag, fields[1].label), (2, Label::Map));
        assert!(fields[1].ty == PbType::Scalar("Bytes"));
        assert_eq!(fields[2].rust_name, "type");
        assert!(fields[2].ty == PbType::Message("api/core/v1/Foo".into()));
    }

    /// The committed table is what the generator writes today. Needs the kubectl binary the
    /// machine image ships; says so and passes where it is missing.
    #[test]
    fn the_committed_table_is_up_to_date() {
        let go_binary = Path::new(DEFAULT_GO_BINARY);
        if !go_binary.exists() {
            eprintln!("skipped: {DEFAULT_GO_BINARY} is not on this machine");
            return;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let fresh = generate(root, go_binary).unwrap();
        let committed = fs::read_to_string(root.join(OUTPUT)).unwrap();
        assert!(
            fresh == committed,
            "{OUTPUT} is stale: run `cargo xtask codegen protobuf`"
        );
    }
}
