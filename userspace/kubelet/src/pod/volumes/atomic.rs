//! Upstream's atomic writer: a volume's files live in a timestamped directory (`..2026_..`),
//! `..data` is a symlink to the current one and each user-visible top-level path is a symlink
//! through `..data`. An update writes a new timestamped directory and swaps `..data` with one
//! `rename`, so a reader sees either the old set of files or the new one, never a mix.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
};

/// The symlink to the current timestamped directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A volume's files by relative path.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid path {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
    #[error("{path:?} conflicts with {other:?} (one is a directory of the other)")]
    Conflict { path: String, other: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_owned();
    move |source| WriteError::Io { op, path, source }
}

/// Checks a relative file path of a volume (an item's `path`): not empty, not absolute, no
/// `..` element, not starting with `..` (those names are the writer's own).
pub fn validate_path(path: &str) -> Result<(), WriteError> {
    let bad = |reason| {
        Err(WriteError::Path {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.len() > 4096 {
        return bad("must be at most 4096 characters");
    }
    if path.starts_with('/') {
        return bad("must be a relative path");
    }
    if path.starts_with("..") {
        return bad("must not start with '..'");
    }
    if path.contains('\0') {
        return bad("must not contain a NUL byte");
    }
    for element in path.split('/') {
        match element {
            ".." => return bad("must not contain '..'"),
            "" | "." => return bad("must not contain empty or '.' elements"),
            e if e.len() > 255 => return bad("an element is longer than 255 characters"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks every path and that no file is also another's directory (`a` and `a/b`).
pub fn validate_payload(payload: &Payload) -> Result<(), WriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    for path in payload.keys() {
        let mut prefix = String::new();
        for element in path.split('/') {
            if !prefix.is_empty() {
                if payload.contains_key(&prefix) {
                    return Err(WriteError::Conflict {
                        path: path.clone(),
                        other: prefix,
                    });
                }
                prefix.push('/');
            }
            prefix.push_str(element);
        }
    }
    Ok(())
}

/// Writes `payload` into `dir` atomically; returns whether anything changed (an unchanged
/// payload rewrites nothing).
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, WriteError> {
    validate_payload(payload)?;
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let data_link = dir.join(DATA_DIR);
    let old = fs::read_link(&data_link).ok();
    if let Some(old) = &old
        && read_tree(&dir.join(old)).ok().as_ref() == Some(payload)
    {
        return Ok(false);
    }
    let ts_name = timestamped_dir(dir)?;
    let ts_dir = dir.join(&ts_name);
    for (path, file) in payload {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        fs::write(&target, &file.data).map_err(io_err("writing", &target))?;
        // Set after writing: the umask would have trimmed the mode given at creation.
        fs::set_permissions(&target, fs::Permissions::from_mode(file.mode))
            .map_err(io_err("setting the mode of", &target))?;
    }
    let top: BTreeSet<&str> = payload.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &top {
        let visible = dir.join(name);
        match fs::symlink_metadata(&visible) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => {
                return Err(WriteError::Io {
                    op: "replacing",
                    path: visible,
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "not a symlink"),
                });
            }
            Err(_) => symlink(Path::new(DATA_DIR).join(name), &visible)
                .map_err(io_err("linking", &visible))?,
        }
    }
    let tmp_link = dir.join(DATA_DIR_TMP);
    let _ = fs::remove_file(&tmp_link);
    symlink(&ts_name, &tmp_link).map_err(io_err("linking", &tmp_link))?;
    fs::rename(&tmp_link, &data_link).map_err(io_err("swapping", &data_link))?;
    // The old files go after the swap: a reader holding the old tree sees it whole. Leftovers
    // of an interrupted write (other `..` directories) go too.
    for entry in fs::read_dir(dir).map_err(io_err("reading", dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if name.starts_with("..") {
            if kind.is_dir() && name != ts_name {
                fs::remove_dir_all(entry.path()).map_err(io_err("removing", &entry.path()))?;
            }
        } else if kind.is_symlink() && !top.contains(name.as_str()) {
            fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
        }
    }
    Ok(true)
}

/// A new, empty `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN` directory in `dir`; returns its name.
fn timestamped_dir(dir: &Path) -> Result<String, WriteError> {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let base = format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.subsec_nanosecond()
    );
    let mut last = None;
    for n in 0u32..1000 {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}{n}")
        };
        let path = dir.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(e) => return Err(io_err("creating", &path)(e)),
        }
    }
    let (path, e) = last.unwrap_or_else(|| (dir.to_owned(), io::ErrorKind::AlreadyExists.into()));
    Err(io_err("creating", &path)(e))
}

/// The files under `root` as a payload (to compare with the next one).
fn read_tree(root: &Path) -> io::Result<Payload> {
    let mut out = Payload::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                stack.push((entry.path(), rel));
            } else {
                out.insert(
                    rel,
                    FileProjection {
                        data: fs::read(entry.path())?,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: s.as_bytes().to_vec(),
            mode,
        }
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "skiff-atomic-{name}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn layout_is_timestamped_dir_data_link_and_visible_links() {
        let d = tempdir("layout");
        let payload = Payload::from([
            ("a".into(), file("1", 0o644)),
            ("sub/b".into(), file("2", 0o400)),
        ]);
        assert!(write(&d.0, &payload).unwrap());
        let target = fs::read_link(d.0.join(DATA_DIR)).unwrap();
        let target = target.to_string_lossy();
        assert!(target.starts_with("..20"), "{target}");
        assert_eq!(fs::read_link(d.0.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(
            fs::read_link(d.0.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(fs::read_to_string(d.0.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(d.0.join("sub/b")).unwrap(), "2");
        let mode = |p: &str| fs::metadata(d.0.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("sub/b"), 0o400);
        // The same payload again changes nothing.
        assert!(!write(&d.0, &payload).unwrap());
        assert_eq!(
            fs::read_link(d.0.join(DATA_DIR)).unwrap().to_string_lossy(),
            target
        );
    }

    #[test]
    fn updates_swap_the_data_link_and_removed_keys_disappear() {
        let d = tempdir("update");
        write(
            &d.0,
            &Payload::from([
                ("keep".into(), file("old", 0o644)),
                ("gone".into(), file("x", 0o644)),
            ]),
        )
        .unwrap();
        let first = fs::read_link(d.0.join(DATA_DIR)).unwrap();
        // A reader holding the old file keeps its content.
        let mut held = fs::File::open(d.0.join("keep")).unwrap();
        let changed = write(
            &d.0,
            &Payload::from([
                ("keep".into(), file("new", 0o644)),
                ("added".into(), file("y", 0o600)),
            ]),
        )
        .unwrap();
        assert!(changed);
        let second = fs::read_link(d.0.join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!d.0.join(&first).exists(), "the old directory is removed");
        assert_eq!(fs::read_to_string(d.0.join("keep")).unwrap(), "new");
        assert_eq!(fs::read_to_string(d.0.join("added")).unwrap(), "y");
        assert!(fs::symlink_metadata(d.0.join("gone")).is_err());
        let mut old = String::new();
        io::Read::read_to_string(&mut held, &mut old).unwrap();
        assert_eq!(old, "old");
        // A mode change alone is a change.
        assert!(
            write(
                &d.0,
                &Payload::from([
                    ("keep".into(), file("new", 0o640)),
                    ("added".into(), file("y", 0o600)),
                ]),
            )
            .unwrap()
        );
        let names: BTreeSet<String> = fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains("..data") && names.contains("keep") && names.contains("added"));
    }

    #[test]
    fn paths_are_validated() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "..data",
            "a//b",
            "a/./b",
            "a/",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} passed");
        }
        for good in ["a", "a/b/c", "a..b", ".hidden", "x.y/z"] {
            validate_path(good).unwrap();
        }
        let conflicting = Payload::from([
            ("a".into(), file("1", 0o644)),
            ("a/b".into(), file("2", 0o644)),
        ]);
        assert!(matches!(
            validate_payload(&conflicting),
            Err(WriteError::Conflict { .. })
        ));
        let d = tempdir("bad");
        let escaping = Payload::from([("../../escape".into(), file("1", 0o644))]);
        assert!(write(&d.0, &escaping).is_err());
        assert!(
            fs::read_dir(&d.0).unwrap().next().is_none(),
            "nothing written"
        );
    }
}
