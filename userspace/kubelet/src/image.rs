//! Images without a registry: a busybox-static image built locally (the pod sandbox's "pause"
//! image on machines that cannot pull, and test images), and archives imported into
//! containerd's `k8s.io` namespace, where the CRI finds them (`skiff image load`).
//!
//! Built with Debian's umoci and skopeo from /bin/busybox (busybox-static), which `cargo xtask
//! setup` installs; imported with containerd's `ctr`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// What went wrong making or importing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("running {program}: {source} (is it installed? `cargo xtask setup` installs it)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} failed: {stderr}")]
    Failed {
        program: String,
        args: String,
        stderr: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn run(program: &str, args: &[&str]) -> Result<Vec<u8>, ImageError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ImageError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(ImageError::Failed {
            program: program.to_owned(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Builds an OCI archive `WORK/NAME.tar` of a busybox-static image tagged `reference`, whose
/// entrypoint is `entrypoint` (a shell when empty), and returns its path.
pub fn build_busybox(
    work: &Path,
    name: &str,
    reference: &str,
    entrypoint: &[&str],
) -> Result<PathBuf, ImageError> {
    let layout = work.join(format!("oci-{name}"));
    let bundle = work.join(format!("bundle-{name}"));
    for dir in [&layout, &bundle] {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io("removing", dir))?;
        }
    }
    let image = format!("{}:1", layout.display());
    let l = layout.display().to_string();
    let b = bundle.display().to_string();
    run("umoci", &["init", "--layout", &l])?;
    run("umoci", &["new", "--image", &image])?;
    run("umoci", &["unpack", "--image", &image, &b])?;
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        let dir = rootfs.join(d);
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    }
    let busybox = rootfs.join("bin/busybox");
    fs::copy("/bin/busybox", &busybox).map_err(io("copying /bin/busybox to", &busybox))?;
    let applets = run("/bin/busybox", &["--list"])?;
    for applet in String::from_utf8_lossy(&applets).lines() {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io("linking", &link))?;
        }
    }
    for (file, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
    ] {
        let path = rootfs.join(file);
        fs::write(&path, text).map_err(io("writing", &path))?;
    }
    run("umoci", &["repack", "--image", &image, &b])?;
    let entry: Vec<String> = entrypoint
        .iter()
        .map(|e| format!("--config.entrypoint={e}"))
        .collect();
    let mut config = vec![
        "config",
        "--image",
        &image,
        "--config.env",
        "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ];
    if entrypoint.is_empty() {
        config.push("--config.cmd=/bin/sh");
    } else {
        config.extend(entry.iter().map(String::as_str));
    }
    run("umoci", &config)?;
    run("umoci", &["gc", "--layout", &l])?;
    let archive = work.join(format!("{name}.tar"));
    if archive.exists() {
        fs::remove_file(&archive).map_err(io("removing", &archive))?;
    }
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{image}"),
            &format!("oci-archive:{}:{reference}", archive.display()),
        ],
    )?;
    fs::remove_dir_all(&bundle).map_err(io("removing", &bundle))?;
    fs::remove_dir_all(&layout).map_err(io("removing", &layout))?;
    Ok(archive)
}

/// Imports an OCI or docker archive into the containerd at `socket`, for the CRI.
pub fn import(socket: &Path, archive: &Path) -> Result<(), ImageError> {
    run(
        "ctr",
        &[
            "--address",
            &socket.display().to_string(),
            "-n",
            "k8s.io",
            "images",
            "import",
            &archive.display().to_string(),
        ],
    )?;
    Ok(())
}

/// Whether the containerd at `socket` has the image `reference` (in the CRI's namespace).
pub fn present(socket: &Path, reference: &str) -> Result<bool, ImageError> {
    let out = run(
        "ctr",
        &[
            "--address",
            &socket.display().to_string(),
            "-n",
            "k8s.io",
            "images",
            "ls",
            "-q",
        ],
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .any(|l| l.trim() == reference))
}
