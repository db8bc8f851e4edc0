//! The official Python Kubernetes client (from PyPI, installed by `cargo xtask setup`) against
//! `skiff server`: create, list with a selector, watch, patch.

mod common;

use common::ControlPlane;

#[test]
fn python_client_creates_lists_watches_and_patches() {
    let python = std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
        .join(".cache/skiff/python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let cp = ControlPlane::start(32);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/client.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&cp.kubeconfig)
        .output()
        .expect("running the Python client");
    assert!(
        out.status.success(),
        "python client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
