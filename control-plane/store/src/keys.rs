//! Key checks and byte ranges shared by the backends.

use crate::StoreError;

/// Keys are non-empty: etcd rejects an empty key, and an empty key could not be told apart
/// from "no start_after" in a list.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "keys must not be empty",
        });
    }
    Ok(())
}

/// The smallest byte string greater than every string that starts with `prefix`.
///
/// Keys are UTF-8 and a UTF-8 string never contains the byte 0xFF, so bumping the last byte of
/// a (UTF-8) prefix never overflows, and `[0xFF]` sorts after every key when the prefix is
/// empty.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.split_last() {
        Some((&last, head)) if last < 0xFF => {
            let mut end = head.to_vec();
            end.push(last + 1);
            end
        }
        // Only reachable with a non-UTF-8 byte prefix (an etcd key prefix could be one): drop
        // trailing 0xFF bytes and bump the byte before them.
        Some((_, head)) => {
            if head.is_empty() {
                vec![0xFF]
            } else {
                prefix_end(head)
            }
        }
        None => vec![0xFF],
    }
}

/// The inclusive lower bound of a list: the prefix itself, or the smallest byte string after
/// `start_after` (it with a NUL byte appended) when that is larger.
pub(crate) fn list_start(prefix: &[u8], start_after: Option<&[u8]>) -> Vec<u8> {
    match start_after {
        Some(after) if after >= prefix => {
            let mut start = after.to_vec();
            start.push(0);
            start
        }
        _ => prefix.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b""), vec![0xFF]);
        assert_eq!(prefix_end(&[b'a', 0xFF]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xFF, 0xFF]), vec![0xFF]);
        // Every key under the prefix sorts below the end, including multi-byte characters.
        let end = prefix_end("/ns/".as_bytes());
        for key in ["/ns/", "/ns/\u{10FFFF}", "/ns/\u{0}", "/ns/zzz"] {
            assert!(key.as_bytes() < end.as_slice(), "{key:?}");
        }
        assert!("/ns0".as_bytes() >= end.as_slice());
    }

    #[test]
    fn list_start_is_exclusive_of_start_after() {
        assert_eq!(list_start(b"/a/", None), b"/a/".to_vec());
        assert_eq!(list_start(b"/a/", Some(b"/a/x")), b"/a/x\0".to_vec());
        // A start_after before the prefix does not widen the range.
        assert_eq!(list_start(b"/b/", Some(b"/a/x")), b"/b/".to_vec());
        assert!(b"/a/x\0".as_slice() > b"/a/x".as_slice());
        assert!(b"/a/x\0".as_slice() <= b"/a/x\0\0".as_slice());
    }

    #[test]
    fn empty_keys_are_rejected() {
        assert!(matches!(check_key(""), Err(StoreError::InvalidKey { .. })));
        assert!(check_key("/a").is_ok());
    }
}
