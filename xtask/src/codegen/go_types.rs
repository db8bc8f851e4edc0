//! The Go struct fields of Kubernetes API types, read from a kubectl binary.
//!
//! Whether a zero value on the protobuf wire shows in the JSON depends on the Go field: a
//! pointer (`Replicas *int32`) keeps an explicit zero, a non-pointer `omitempty` field drops
//! it. Neither k8s-pb nor k8s-openapi carries that, but every Go binary does, for reflection:
//! each struct type has an array of `{name *byte, typ *Type, offset uintptr}` fields whose
//! name data includes the struct tag (`json:"replicas,omitempty" protobuf:"varint,1,..."`),
//! and each `Type` has its kind at byte 23. kubectl links every k8s.io/api group, so its
//! binary holds them all.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context as _, ensure};

/// `abi.Type.Kind_` offset and the kinds that matter (Go 1.21+ layout, unchanged since).
const KIND_OFFSET: usize = 23;
const KIND_MASK: u8 = 0x1f;
const KIND_PTR: u8 = 22;
const STRUCT_FIELD_SIZE: usize = 24;

/// One protobuf-tagged field of a Go struct.
#[derive(Debug, Clone)]
pub struct GoField {
    pub number: u32,
    /// The proto field name from the `protobuf:"...,name=x"` tag.
    pub proto_name: String,
    pub omitempty: bool,
    pub pointer: bool,
}

/// The protobuf-tagged fields of every struct type in the binary.
pub fn structs(binary: &Path) -> anyhow::Result<Vec<Vec<GoField>>> {
    let data = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = Elf::parse(&data)?;
    let records = tagged_names(&data, &elf);
    ensure!(
        records.len() > 500,
        "{} holds only {} protobuf struct tags: not a kubectl binary?",
        binary.display(),
        records.len()
    );
    let field_at = |off: usize| -> Option<(u64, u8)> {
        let name = read_u64(&data, off)?;
        let typ = read_u64(&data, off + 8)?;
        let kind = *data.get(elf.offset(typ)? + KIND_OFFSET)? & KIND_MASK;
        Some((name, kind))
    };
    // Struct types hold their fields as a slice header {ptr, len, cap}; find the headers that
    // point at arrays of fields with protobuf tags.
    let mut arrays: HashMap<usize, usize> = HashMap::new();
    for &(_, off, size) in &elf.segments {
        let mut at = off;
        while at + 24 <= off + size {
            let (Some(ptr), Some(len), Some(cap)) = (
                read_u64(&data, at),
                read_u64(&data, at + 8),
                read_u64(&data, at + 16),
            ) else {
                break;
            };
            // The first field may be an untagged embedded TypeMeta; any tagged one will do.
            if len == cap
                && (1..=400).contains(&len)
                && let Some(start) = elf.offset(ptr)
                && !arrays.contains_key(&start)
                && field_at(start).is_some()
                && (0..usize::try_from(len).unwrap_or(0)).any(|i| {
                    field_at(start + i * STRUCT_FIELD_SIZE)
                        .is_some_and(|(name, _)| records.contains_key(&name))
                })
            {
                arrays.insert(start, usize::try_from(len).unwrap_or(0));
            }
            at += 8;
        }
    }
    let mut starts: Vec<usize> = arrays.keys().copied().collect();
    starts.sort_unstable();
    let mut out = Vec::new();
    for start in starts {
        let len = arrays[&start];
        let mut fields = Vec::new();
        for i in 0..len {
            let Some((name, kind)) = field_at(start + i * STRUCT_FIELD_SIZE) else {
                break;
            };
            if let Some(tag) = records.get(&name)
                && let Some(field) = parse_tag(tag, kind == KIND_PTR)
            {
                fields.push(field);
            }
        }
        if !fields.is_empty() {
            out.push(fields);
        }
    }
    Ok(out)
}

fn read_u64(data: &[u8], off: usize) -> Option<u64> {
    let bytes = data.get(off..off + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

struct Elf {
    /// PT_LOAD segments: (vaddr, file offset, file size).
    segments: Vec<(u64, usize, usize)>,
}

impl Elf {
    fn parse(data: &[u8]) -> anyhow::Result<Self> {
        ensure!(
            data.get(..6) == Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]),
            "not a 64-bit little-endian ELF file"
        );
        let u16_at = |off: usize| {
            data.get(off..off + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let phoff = read_u64(data, 0x20).context("ELF header")?;
        let phentsize = usize::from(u16_at(0x36).context("ELF header")?);
        let phnum = usize::from(u16_at(0x38).context("ELF header")?);
        let mut segments = Vec::new();
        for i in 0..phnum {
            let ph = usize::try_from(phoff)? + i * phentsize;
            let p_type = data.get(ph..ph + 4).context("program header")?;
            if p_type == [1, 0, 0, 0] {
                let offset = read_u64(data, ph + 8).context("program header")?;
                let vaddr = read_u64(data, ph + 16).context("program header")?;
                let filesz = read_u64(data, ph + 32).context("program header")?;
                segments.push((vaddr, usize::try_from(offset)?, usize::try_from(filesz)?));
            }
        }
        Ok(Self { segments })
    }

    fn offset(&self, vaddr: u64) -> Option<usize> {
        self.segments.iter().find_map(|&(v, off, size)| {
            let delta = usize::try_from(vaddr.checked_sub(v)?).ok()?;
            (delta < size).then_some(off + delta)
        })
    }

    fn vaddr(&self, offset: usize) -> Option<u64> {
        self.segments.iter().find_map(|&(v, off, size)| {
            (off..off + size)
                .contains(&offset)
                .then(|| v + (offset - off) as u64)
        })
    }
}

/// Go `abi.Name` records whose tag has a protobuf key: vaddr -> tag.
///
/// A name is `flags, varint len, name, varint taglen, tag` with flags bit 0 "exported" and
/// bit 1 "has tag"; they are found from the `protobuf:"` text inside the tag.
fn tagged_names(data: &[u8], elf: &Elf) -> HashMap<u64, String> {
    const NEEDLE: &[u8] = b"protobuf:\"";
    let mut out = HashMap::new();
    let mut from = 0;
    while let Some(found) = find(&data[from..], NEEDLE) {
        let at = from + found;
        from = at + NEEDLE.len();
        for start in (at.saturating_sub(400)..at.saturating_sub(2)).rev() {
            if let Some(tag) = name_record(data, start, at)
                && let Some(vaddr) = elf.vaddr(start)
            {
                out.insert(vaddr, tag);
                break;
            }
        }
    }
    out
}

/// The tag of a name record starting at `start` whose tag contains offset `inside`.
fn name_record(data: &[u8], start: usize, inside: usize) -> Option<String> {
    let flags = *data.get(start)?;
    if flags & 0x03 != 0x03 || flags & 0xf0 != 0 {
        return None;
    }
    let len = usize::from(*data.get(start + 1)?);
    if len == 0 || len >= 0x80 {
        return None;
    }
    let name = data.get(start + 2..start + 2 + len)?;
    if !name[0].is_ascii_uppercase()
        || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        return None;
    }
    let mut at = start + 2 + len;
    let mut tag_len = usize::from(*data.get(at)?);
    at += 1;
    if tag_len & 0x80 != 0 {
        tag_len = (tag_len & 0x7f) | (usize::from(*data.get(at)?) << 7);
        at += 1;
    }
    if !(at..at + tag_len).contains(&inside) {
        return None;
    }
    let tag = data.get(at..at + tag_len)?;
    if !tag.iter().all(|c| (0x20..0x7f).contains(c)) {
        return None;
    }
    String::from_utf8(tag.to_vec()).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas"` -> a field.
fn parse_tag(tag: &str, pointer: bool) -> Option<GoField> {
    let value = |key: &str| -> Option<&str> {
        let start = tag.find(&format!("{key}:\""))? + key.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(&tag[start..end])
    };
    let protobuf = value("protobuf")?;
    let mut parts = protobuf.split(',');
    let _wire = parts.next()?;
    let number = parts.next()?.parse().ok()?;
    let proto_name = parts.find_map(|p| p.strip_prefix("name="))?.to_owned();
    let omitempty = value("json").is_some_and(|j| j.split(',').any(|o| o == "omitempty"));
    Some(GoField {
        number,
        proto_name,
        omitempty,
        pointer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_tags_say_omitempty_and_the_proto_field() {
        let f = parse_tag(
            r#"json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas""#,
            true,
        )
        .unwrap();
        assert_eq!((f.number, f.proto_name.as_str()), (1, "replicas"));
        assert!(f.omitempty && f.pointer);
        let f = parse_tag(
            r#"json:"ports,omitempty" patchStrategy:"merge" patchMergeKey:"containerPort" protobuf:"bytes,6,rep,name=ports""#,
            false,
        )
        .unwrap();
        assert_eq!((f.number, f.proto_name.as_str()), (6, "ports"));
        let f = parse_tag(
            r#"json:"allowed" protobuf:"varint,1,opt,name=allowed""#,
            false,
        )
        .unwrap();
        assert!(!f.omitempty);
        assert!(parse_tag(r#"json:",inline""#, false).is_none());
    }

    #[test]
    fn name_records_are_found_by_their_tag() {
        // flags (exported | has tag), len, "Replicas", tag len, tag.
        let tag = br#"json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas""#;
        let mut data = vec![0xff, 0x03, 8];
        data.extend(b"Replicas");
        data.push(u8::try_from(tag.len()).unwrap());
        data.extend(tag);
        let inside = data.len() - 10;
        assert_eq!(name_record(&data, 1, inside).unwrap().as_bytes(), tag);
        assert!(name_record(&data, 0, inside).is_none());
        assert!(name_record(&data, 1, 2).is_none());
    }
}
