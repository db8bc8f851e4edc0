//! BPF_MAP_{LOOKUP,UPDATE,DELETE}_BATCH (Linux 5.6): many map elements per bpf() call. aya
//! 0.14 does not wrap them. A dump of a 512k-entry conntrack map takes two syscalls per entry
//! through get_next_key + lookup and a few hundred in batches; a Maglev table of 1,009 slots is
//! one update instead of 1,009. Callers fall back to one call per element where the kernel
//! refuses the command ([`BatchError::Unsupported`]).

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// The kernel-internal ENOTSUPP, returned for map types without batch operations.
const ENOTSUPP: i32 = 524;
/// Keys per delete call (the count field is a u32).
const DELETE_CHUNK: usize = 1 << 20;
/// Elements per lookup call: 4,096 conntrack entries are about 256 KiB of buffers.
const LOOKUP_CHUNK: usize = 4096;

#[derive(Debug)]
pub(crate) enum BatchError {
    /// The kernel has no batch operations for this map (or none at all): nothing was done.
    Unsupported,
    /// The call failed; the elements before the failing one were applied, in order.
    Failed(io::Error),
}

impl BatchError {
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Self::Unsupported => io::Error::from_raw_os_error(ENOTSUPP),
            Self::Failed(error) => error,
        }
    }
}

/// Calls bpf(cmd) with `attr`; returns the errno on failure. The kernel updates `attr.count`
/// to the number of elements it processed, also when it fails.
fn call(cmd: libc::c_long, attr: &mut BatchAttr) -> Result<(), i32> {
    #[expect(
        unsafe_code,
        reason = "aya 0.14 has no wrapper for the batch map commands"
    )]
    // SAFETY: `attr` is a fully initialised bpf_attr prefix of the size passed. Every pointer in
    // it was set by the callers below to a live buffer of at least `count` keys or values (and
    // a batch token of TOKEN_LEN bytes) that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

fn map_fd(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// Whether an errno on a batch call that did nothing means "no batch operations here".
fn unsupported(errno: i32) -> bool {
    matches!(errno, libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
}

/// The batch token is the position of the next bucket for hash maps (a u32) and the last key
/// for arrays; 64 bytes hold either for every key skiff uses.
const TOKEN_LEN: usize = 64;

/// Calls `each` on every entry of the map, a chunk at a time. A map changing meanwhile gives
/// each entry at most once (hash maps are walked bucket by bucket), as iteration would.
pub(crate) fn lookup_each<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    mut each: impl FnMut(K, V),
) -> Result<(), BatchError> {
    let mut chunk = LOOKUP_CHUNK;
    let mut keys: Vec<MaybeUninit<K>> = Vec::new();
    let mut values: Vec<MaybeUninit<V>> = Vec::new();
    let mut token_in = [0_u8; TOKEN_LEN];
    let mut token_out = [0_u8; TOKEN_LEN];
    let mut first = true;
    let mut seen = 0;
    loop {
        keys.resize_with(chunk, MaybeUninit::uninit);
        values.resize_with(chunk, MaybeUninit::uninit);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: map_fd(fd),
            ..BatchAttr::default()
        };
        let requested = attr.count;
        let result = call(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // A count left as it was on an error means the kernel refused the call before reading.
        let got = match result {
            Err(errno) if errno != libc::ENOENT && attr.count == requested => 0,
            _ => (attr.count as usize).min(chunk),
        };
        for (key, value) in keys.iter().zip(&values).take(got) {
            // SAFETY: the kernel wrote the first `got` keys and values; any bit pattern is a
            // valid `Pod`.
            #[expect(unsafe_code, reason = "reading what the kernel wrote")]
            let (key, value) = unsafe { (key.assume_init_read(), value.assume_init_read()) };
            each(key, value);
        }
        seen += got;
        match result {
            Ok(()) => {}
            // The end of the map (the last chunk may still have had entries).
            Err(libc::ENOENT) => return Ok(()),
            // One bucket holds more entries than fit: retry it with more room.
            Err(libc::ENOSPC) if got == 0 && chunk < 1 << 20 => {
                chunk *= 2;
                continue;
            }
            Err(errno) if first && seen == 0 && unsupported(errno) => {
                return Err(BatchError::Unsupported);
            }
            Err(errno) => return Err(BatchError::Failed(io::Error::from_raw_os_error(errno))),
        }
        token_in = token_out;
        first = false;
    }
}

/// The error of an update or delete call that asked for `requested` elements and got `errno`
/// (`earlier`: earlier calls of the same batch did work). The kernel writes the count of
/// elements it processed once it has started on them; a count left as it was means it refused
/// the command as a whole.
fn failed(errno: i32, requested: u32, count: u32, earlier: bool) -> Result<(), BatchError> {
    if count == requested && !earlier && unsupported(errno) {
        return Err(BatchError::Unsupported);
    }
    Err(BatchError::Failed(io::Error::from_raw_os_error(errno)))
}

/// Creates or replaces every entry, in order (BPF_ANY per element); stops at the first failure.
pub(crate) fn update<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    entries: &[(K, V)],
) -> Result<(), BatchError> {
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(keys.len())
            .map_err(|_| BatchError::Failed(io::ErrorKind::InvalidInput.into()))?,
        map_fd: map_fd(fd),
        ..BatchAttr::default()
    };
    let requested = attr.count;
    match call(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(()) => Ok(()),
        Err(errno) => failed(errno, requested, attr.count, false),
    }
}

/// Deletes every key; keys that are not there are skipped, as a single delete of a missing key
/// is no error for the callers.
pub(crate) fn delete<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    let mut at = 0;
    while at < keys.len() {
        let rest = &keys[at..keys.len().min(at + DELETE_CHUNK)];
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: u32::try_from(rest.len()).unwrap_or(u32::MAX),
            map_fd: map_fd(fd),
            ..BatchAttr::default()
        };
        let requested = attr.count;
        match call(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => at += rest.len(),
            // The kernel stops at a missing key and says how many it deleted: step over it.
            Err(libc::ENOENT) if attr.count < requested => at += attr.count as usize + 1,
            Err(errno) => return failed(errno, requested, attr.count, at > 0),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const HASH: u32 = 1;
    const ARRAY: u32 = 2;
    const LRU_HASH: u32 = 9;

    /// The head of `union bpf_attr` for BPF_MAP_CREATE.
    #[repr(C)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    /// A fresh, unpinned map: gone when the fd closes, so nothing is left behind.
    fn create(map_type: u32, key_size: usize, value_size: usize, max_entries: u32) -> OwnedFd {
        let mut attr = CreateAttr {
            map_type,
            key_size: key_size as u32,
            value_size: value_size as u32,
            max_entries,
            map_flags: 0,
        };
        #[expect(
            unsafe_code,
            reason = "creating a map for the test without an object file"
        )]
        // SAFETY: a valid bpf_attr prefix of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                &raw mut attr,
                size_of::<CreateAttr>(),
            )
        };
        assert!(
            fd >= 0,
            "BPF_MAP_CREATE failed: {} (these tests need root, as `cargo xtask test` runs them)",
            io::Error::last_os_error()
        );
        #[expect(unsafe_code, reason = "taking ownership of the fd bpf() returned")]
        // SAFETY: a new fd nothing else owns.
        unsafe {
            OwnedFd::from_raw_fd(fd as i32)
        }
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Key {
        a: u32,
        b: u16,
        c: u16,
    }
    // SAFETY: plain integers without padding.
    #[expect(unsafe_code, reason = "Pod is an unsafe marker trait")]
    unsafe impl Pod for Key {}

    fn key(n: u32) -> Key {
        Key {
            a: n,
            b: (n % 7) as u16,
            c: 3,
        }
    }

    fn lookup_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> Result<Vec<(K, V)>, BatchError> {
        let mut out = Vec::new();
        lookup_each(fd, |k, v| out.push((k, v)))?;
        Ok(out)
    }

    fn sorted<K: Ord, V: Ord>(mut v: Vec<(K, V)>) -> Vec<(K, V)> {
        v.sort();
        v
    }

    #[test]
    fn a_hash_map_is_written_read_and_emptied_in_batches() {
        for map_type in [HASH, LRU_HASH] {
            let map = create(map_type, size_of::<Key>(), 8, 20_000);
            let fd = map.as_fd();
            assert!(lookup_all::<Key, u64>(fd).unwrap().is_empty());

            // More than one lookup chunk, so the batch token is carried between calls.
            let entries: Vec<(Key, u64)> =
                (0..10_000).map(|n| (key(n), u64::from(n) * 3)).collect();
            update(fd, &entries).unwrap();
            assert_eq!(
                sorted(lookup_all::<Key, u64>(fd).unwrap()),
                sorted(entries.clone())
            );

            // Replacing values in place.
            let replaced: Vec<(Key, u64)> = (0..100).map(|n| (key(n), 7)).collect();
            update(fd, &replaced).unwrap();
            let all = lookup_all::<Key, u64>(fd).unwrap();
            assert_eq!(all.len(), 10_000);
            assert_eq!(all.iter().filter(|(_, v)| *v == 7).count(), 100);

            // Deleting even keys, with keys that were never there in between: skipped.
            let doomed: Vec<Key> = (0..12_000).filter(|n| n % 2 == 0).map(key).collect();
            delete(fd, &doomed).unwrap();
            let left = lookup_all::<Key, u64>(fd).unwrap();
            assert_eq!(left.len(), 5_000, "map type {map_type}");
            assert!(left.iter().all(|(k, _)| k.a % 2 == 1));

            let mut count = 0;
            lookup_each::<Key, u64>(fd, |_, _| count += 1).unwrap();
            assert_eq!(count, 5_000);
        }
    }

    #[test]
    fn a_full_map_stops_the_batch_at_the_first_refused_element() {
        let map = create(HASH, size_of::<Key>(), 8, 10);
        let fd = map.as_fd();
        let entries: Vec<(Key, u64)> = (0..15).map(|n| (key(n), 1)).collect();
        match update(fd, &entries) {
            Err(BatchError::Failed(error)) => {
                assert_eq!(error.raw_os_error(), Some(libc::E2BIG));
            }
            other => panic!("expected E2BIG, got {other:?}"),
        }
        // Exactly the first ten, in order, were applied.
        let keys: Vec<u32> = sorted(lookup_all::<Key, u64>(fd).unwrap())
            .into_iter()
            .map(|(k, _)| k.a)
            .collect();
        assert_eq!(keys, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn arrays_are_read_in_batches_too() {
        let map = create(ARRAY, 4, 8, 100);
        let fd = map.as_fd();
        let entries: Vec<(u32, u64)> = (0..100).map(|n| (n, u64::from(n) + 1)).collect();
        update(fd, &entries).unwrap();
        assert_eq!(sorted(lookup_all::<u32, u64>(fd).unwrap()), entries);
    }

    #[test]
    fn nothing_to_write_or_delete_makes_no_call() {
        let map = create(HASH, 4, 4, 4);
        update::<u32, u32>(map.as_fd(), &[]).unwrap();
        delete::<u32>(map.as_fd(), &[]).unwrap();
    }
}
