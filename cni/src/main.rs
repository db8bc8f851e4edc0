//! skiff-cni: the CNI plugin binary the container runtime executes per the CNI spec.
//!
//! The verb and attachment come from `CNI_*` environment variables, the network config from
//! stdin; the result (or the spec's error body) goes to stdout, diagnostics to stderr.

use std::{
    io::{Read as _, Write as _},
    process::ExitCode,
};

use skiff_cni::{Env, config};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // The error body carries the config's version when it is one we speak.
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| config::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| config::LATEST_VERSION.to_owned());
    let outcome = read
        .map_err(|e| skiff_cni::CniError::new(skiff_cni::Code::Io, "reading stdin", e))
        .and_then(|_| Env::from_vars(|k| std::env::var(k).ok()))
        .and_then(|env| skiff_cni::run(&env, &stdin));
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(output) => {
            if let Some(v) = output {
                let _ = writeln!(stdout, "{v}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("skiff-cni: {e}");
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
