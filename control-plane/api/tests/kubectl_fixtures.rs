//! Request bodies captured from the real kubectl 1.32 and 1.33 (see fixtures/README.md) decode
//! to the JSON the same kubectl prints for the same object (`--dry-run=client -o json`), or
//! that kubectl 1.31 sends as JSON for the commands without a dry run (`auth ...`).

use std::{fs, path::Path};

use serde_json::Value;
use skiff_api::protobuf::{MAGIC, decode_request};

fn check_version(dir: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .collect();
    names.sort();
    for pb in &names {
        let body = fs::read(pb).unwrap();
        assert!(body.starts_with(MAGIC), "{}", pb.display());
        let decoded = decode_request(&body).unwrap_or_else(|e| panic!("{}: {e}", pb.display()));
        let expected: Value =
            serde_json::from_slice(&fs::read(pb.with_extension("json")).unwrap()).unwrap();
        assert_eq!(
            decoded,
            expected,
            "{}:\ndecoded  {}\nexpected {}",
            pb.display(),
            decoded,
            expected
        );
    }
    names.len()
}

#[test]
fn kubectl_1_32_bodies_decode_to_kubectl_json() {
    assert_eq!(check_version("kubectl-1.32"), 17);
}

#[test]
fn kubectl_1_33_bodies_decode_to_kubectl_json() {
    assert_eq!(check_version("kubectl-1.33"), 17);
}
