//! Taking a node's pods down for good, for whoever owns the node's lifetime (`skiff up`'s
//! sandbox, tests): runc puts pod cgroups at the same path in every hierarchy on hybrid
//! machines, and containerd leaves mounts (root filesystems, shm, network namespace files)
//! under its state directory.

use std::{fs, path::Path, time::Duration};

use nix::{
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Kills every process in `/sys/fs/cgroup/*/NAME` and below and removes those directories,
/// deepest first. `name` is the path below each hierarchy's root.
pub fn remove_cgroup_trees(name: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let root = h.path().join(name.trim_start_matches('/'));
        if !root.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            for _ in 0..100 {
                if fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Lazily unmounts everything mounted under `dir`, deepest first; returns the mount points it
/// could not unmount.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
        .into_iter()
        .filter(|m| umount2(m.as_str(), MntFlags::MNT_DETACH).is_err())
        .collect()
}
