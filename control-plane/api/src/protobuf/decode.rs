//! The protobuf wire format read into JSON by the field table.
//!
//! Every read is bounds-checked against the enclosing message and errors carry the offset
//! from the start of the body, so no input can panic the decoder; nesting is capped so a
//! hostile body cannot overflow the stack.

use std::{collections::BTreeMap, ops::Range};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Map, Number, Value};

use super::{
    Problem, ProtobufError,
    schema::{self, Field, Label, Message, Special, Ty},
};

/// Deeper than any Kubernetes object (a pod template in a job template in a cron job is ~10).
const MAX_DEPTH: usize = 64;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

const ENVELOPE: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";

/// The `runtime.Unknown` envelope; `raw` is a range of the body.
pub(super) struct Envelope {
    pub api_version: String,
    pub kind: String,
    pub raw: Range<usize>,
    pub content_encoding: String,
}

/// A cursor over one message: `pos..end` of `body`.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    end: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8], range: Range<usize>, message: &'static str) -> Self {
        Self {
            body,
            pos: range.start,
            // Ranges come from length prefixes already checked against their parent; clamping
            // keeps a bad one an error rather than an out-of-bounds slice.
            end: range.end.min(body.len()),
            message,
        }
    }

    fn error(&self, offset: usize, problem: Problem) -> ProtobufError {
        ProtobufError::Malformed {
            offset,
            message: self.message,
            problem,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.end
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let start = self.pos;
        let mut value = 0_u64;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.body[..self.end].get(self.pos) else {
                return Err(self.error(start, Problem::Truncated));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(start, Problem::VarintTooLong))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtobufError> {
        let start = self.pos;
        let bytes = self
            .body
            .get(start..start.saturating_add(N))
            .filter(|_| start + N <= self.end)
            .ok_or_else(|| self.error(start, Problem::Truncated))?;
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A length-delimited payload, as a range of the body.
    fn len_delimited(&mut self) -> Result<Range<usize>, ProtobufError> {
        let start = self.pos;
        let len = self.varint()?;
        let begin = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| begin.checked_add(l))
            .filter(|&e| e <= self.end)
            .ok_or_else(|| self.error(start, Problem::Truncated))?;
        self.pos = end;
        Ok(begin..end)
    }

    /// The next field's number, wire type and the offset of its key.
    fn key(&mut self) -> Result<(u32, u8, usize), ProtobufError> {
        let at = self.pos;
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        let number = u32::try_from(key >> 3).unwrap_or(u32::MAX);
        if number == 0 {
            return Err(self.error(at, Problem::FieldZero));
        }
        Ok((number, wire, at))
    }

    /// Skips a field this schema does not know (one added in a newer Kubernetes version):
    /// protobuf is forward compatible by design.
    fn skip(
        &mut self,
        number: u32,
        wire: u8,
        at: usize,
        depth: usize,
    ) -> Result<(), ProtobufError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed::<8>().map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.fixed::<4>().map(drop),
            START_GROUP => {
                if depth >= MAX_DEPTH {
                    return Err(self.error(at, Problem::TooDeep(MAX_DEPTH)));
                }
                loop {
                    if self.done() {
                        return Err(self.error(at, Problem::Truncated));
                    }
                    let (inner, inner_wire, inner_at) = self.key()?;
                    if inner_wire == END_GROUP {
                        if inner == number {
                            return Ok(());
                        }
                        return Err(self.error(inner_at, Problem::UnmatchedEndGroup));
                    }
                    self.skip(inner, inner_wire, inner_at, depth + 1)?;
                }
            }
            END_GROUP => Err(self.error(at, Problem::UnmatchedEndGroup)),
            other => Err(self.error(at, Problem::BadWireType(other))),
        }
    }

    fn expect_wire(
        &self,
        field: u32,
        found: u8,
        expected: u8,
        at: usize,
    ) -> Result<(), ProtobufError> {
        if found == expected {
            Ok(())
        } else {
            Err(self.error(
                at,
                Problem::WireType {
                    field,
                    found,
                    expected,
                },
            ))
        }
    }

    fn string(&mut self, field: u32) -> Result<String, ProtobufError> {
        let range = self.len_delimited()?;
        let start = range.start;
        String::from_utf8(self.body[range].to_vec())
            .map_err(|_| self.error(start, Problem::Utf8 { field }))
    }
}

/// Reads the `runtime.Unknown` envelope at `range` of the body (after the magic).
pub(super) fn envelope(body: &[u8], range: Range<usize>) -> Result<Envelope, ProtobufError> {
    let mut r = Reader::new(body, range, ENVELOPE);
    let mut out = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: 0..0,
        content_encoding: String::new(),
    };
    while !r.done() {
        let (number, wire, at) = r.key()?;
        match number {
            1 => {
                r.expect_wire(number, wire, LEN, at)?;
                let range = r.len_delimited()?;
                let mut t = Reader::new(body, range, TYPE_META);
                while !t.done() {
                    let (n, w, a) = t.key()?;
                    match n {
                        1 | 2 => {
                            t.expect_wire(n, w, LEN, a)?;
                            let s = t.string(n)?;
                            if n == 1 {
                                out.api_version = s;
                            } else {
                                out.kind = s;
                            }
                        }
                        _ => t.skip(n, w, a, 0)?,
                    }
                }
            }
            2 => {
                r.expect_wire(number, wire, LEN, at)?;
                out.raw = r.len_delimited()?;
            }
            3 => {
                r.expect_wire(number, wire, LEN, at)?;
                out.content_encoding = r.string(number)?;
            }
            // contentType (4) is always empty for protobuf-in-protobuf; others are unknown.
            _ => r.skip(number, wire, at, 0)?,
        }
    }
    Ok(out)
}

/// Decodes `range` of `body` as message `id`, `depth` levels into the request.
pub(super) fn message(
    body: &[u8],
    range: Range<usize>,
    id: u16,
    depth: usize,
) -> Result<Value, ProtobufError> {
    decode_message(body, range, id, depth)
}

fn decode_message(
    body: &[u8],
    range: Range<usize>,
    id: u16,
    depth: usize,
) -> Result<Value, ProtobufError> {
    let msg = schema::message(id);
    let mut r = Reader::new(body, range.clone(), msg.name);
    if depth >= MAX_DEPTH {
        return Err(r.error(range.start, Problem::TooDeep(MAX_DEPTH)));
    }
    if let Some(kind) = msg.special {
        return special(&mut r, msg, kind, depth);
    }
    let mut object = Map::new();
    // Lists and maps collect across occurrences (a list's elements are separate fields).
    let mut lists: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    let mut maps: BTreeMap<&'static str, Map<String, Value>> = BTreeMap::new();
    while !r.done() {
        let (number, wire, at) = r.key()?;
        let Some(field) = msg.field(number) else {
            r.skip(number, wire, at, depth)?;
            continue;
        };
        match field.label {
            Label::Optional => {
                // Proto semantics: the last occurrence of a singular field wins.
                match single(&mut r, field, wire, at, depth)? {
                    Value::Object(inner) if field.inline => object.extend(inner),
                    value => {
                        object.insert(field.json.to_owned(), value);
                    }
                }
            }
            Label::Repeated => {
                repeated(
                    &mut r,
                    field,
                    wire,
                    at,
                    depth,
                    lists.entry(field.json).or_default(),
                )?;
            }
            Label::Map => {
                r.expect_wire(number, wire, LEN, at)?;
                let entry = r.len_delimited()?;
                let (key, value) = map_entry(body, entry, msg, field, depth)?;
                maps.entry(field.json).or_default().insert(key, value);
            }
        }
    }
    for (name, list) in lists {
        object.insert(name.to_owned(), Value::Array(list));
    }
    for (name, map) in maps {
        object.insert(name.to_owned(), Value::Object(map));
    }
    // Go writes non-pointer fields even when unset; its JSON leaves the zero ones out when
    // they are `omitempty`, and shows a nil list or map that is not `omitempty` as `null`.
    for field in msg.fields {
        match field.label {
            Label::Optional if !field.keep_zero && is_zero(object.get(field.json), field.ty) => {
                object.remove(field.json);
            }
            Label::Repeated | Label::Map if field.keep_zero => {
                object.entry(field.json).or_insert(Value::Null);
            }
            _ => {}
        }
    }
    Ok(Value::Object(object))
}

fn is_zero(value: Option<&Value>, ty: Ty) -> bool {
    match (value, ty) {
        (Some(Value::Bool(b)), Ty::Bool) => !b,
        (Some(Value::Number(n)), Ty::Int32 | Ty::Int64 | Ty::Double) => {
            n.as_i64() == Some(0) || n.as_f64() == Some(0.0)
        }
        (Some(Value::String(s)), Ty::String | Ty::Bytes) => s.is_empty(),
        _ => false,
    }
}

/// One singular value of `field`.
fn single(
    r: &mut Reader<'_>,
    field: &Field,
    wire: u8,
    at: usize,
    depth: usize,
) -> Result<Value, ProtobufError> {
    match field.ty {
        Ty::Bool | Ty::Int32 | Ty::Int64 => {
            r.expect_wire(field.number, wire, VARINT, at)?;
            Ok(varint_value(r.varint()?, field.ty))
        }
        Ty::Double => {
            r.expect_wire(field.number, wire, FIXED64, at)?;
            let value = f64::from_le_bytes(r.fixed::<8>()?);
            Number::from_f64(value).map(Value::Number).ok_or_else(|| {
                r.error(
                    at,
                    Problem::NotFinite {
                        field: field.number,
                    },
                )
            })
        }
        Ty::String => {
            r.expect_wire(field.number, wire, LEN, at)?;
            r.string(field.number).map(Value::String)
        }
        Ty::Bytes => {
            r.expect_wire(field.number, wire, LEN, at)?;
            let range = r.len_delimited()?;
            Ok(Value::String(STANDARD.encode(&r.body[range])))
        }
        Ty::Message(id) => {
            r.expect_wire(field.number, wire, LEN, at)?;
            let range = r.len_delimited()?;
            decode_message(r.body, range, id, depth + 1)
        }
    }
}

/// One occurrence of a repeated field: an element, or a packed run of varints.
fn repeated(
    r: &mut Reader<'_>,
    field: &Field,
    wire: u8,
    at: usize,
    depth: usize,
    list: &mut Vec<Value>,
) -> Result<(), ProtobufError> {
    let packable = matches!(field.ty, Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double);
    if packable && wire == LEN {
        // Kubernetes' proto2 schemas write lists unpacked; packed is accepted as well.
        let range = r.len_delimited()?;
        let mut packed = Reader::new(r.body, range, r.message);
        while !packed.done() {
            let value = if field.ty == Ty::Double {
                let value = f64::from_le_bytes(packed.fixed::<8>()?);
                Number::from_f64(value).map(Value::Number).ok_or_else(|| {
                    packed.error(
                        at,
                        Problem::NotFinite {
                            field: field.number,
                        },
                    )
                })?
            } else {
                varint_value(packed.varint()?, field.ty)
            };
            list.push(value);
        }
        return Ok(());
    }
    list.push(single(r, field, wire, at, depth)?);
    Ok(())
}

fn varint_value(raw: u64, ty: Ty) -> Value {
    match ty {
        Ty::Bool => Value::Bool(raw != 0),
        // Negative int32s are sign-extended to ten bytes; the low 32 bits are the value.
        Ty::Int32 => Value::from(raw as u32 as i32),
        _ => Value::from(raw as i64),
    }
}

/// A map entry message: `key = 1` (always a string in Kubernetes), `value = 2`.
fn map_entry(
    body: &[u8],
    range: Range<usize>,
    msg: &'static Message,
    field: &Field,
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let mut r = Reader::new(body, range, msg.name);
    let mut key = String::new();
    let mut value = None;
    // The value field of the entry has the map field's type.
    let value_field = Field {
        number: 2,
        json: field.json,
        ty: field.ty,
        label: Label::Optional,
        keep_zero: true,
        inline: false,
    };
    while !r.done() {
        let (number, wire, at) = r.key()?;
        match number {
            1 => {
                r.expect_wire(number, wire, LEN, at)?;
                key = r.string(number)?;
            }
            2 => value = Some(single(&mut r, &value_field, wire, at, depth)?),
            _ => r.skip(number, wire, at, depth)?,
        }
    }
    // An entry without a value holds the type's zero value.
    let value = match value {
        Some(v) => v,
        None => match field.ty {
            Ty::String | Ty::Bytes => Value::String(String::new()),
            Ty::Bool => Value::Bool(false),
            Ty::Int32 | Ty::Int64 | Ty::Double => Value::from(0),
            Ty::Message(id) => decode_message(body, 0..0, id, depth + 1)?,
        },
    };
    Ok((key, value))
}

/// Messages with a JSON form of their own. Their fields all have numbers 1 to 3.
fn special(
    r: &mut Reader<'_>,
    msg: &Message,
    kind: Special,
    depth: usize,
) -> Result<Value, ProtobufError> {
    let empty = r.done();
    let mut ints = [0_i64; 4];
    let mut strings: [Option<String>; 4] = Default::default();
    let mut bytes: Option<Range<usize>> = None;
    let mut items = Vec::new();
    while !r.done() {
        let (number, wire, at) = r.key()?;
        let (Some(field), Some(slot)) = (
            msg.field(number),
            usize::try_from(number).ok().filter(|&n| n < ints.len()),
        ) else {
            r.skip(number, wire, at, depth)?;
            continue;
        };
        match (field.ty, field.label) {
            (Ty::String, Label::Repeated) => {
                r.expect_wire(number, wire, LEN, at)?;
                items.push(Value::String(r.string(number)?));
            }
            (Ty::String, _) => {
                r.expect_wire(number, wire, LEN, at)?;
                strings[slot] = Some(r.string(number)?);
            }
            (Ty::Bytes, _) => {
                r.expect_wire(number, wire, LEN, at)?;
                bytes = Some(r.len_delimited()?);
            }
            (Ty::Int32 | Ty::Int64, _) => {
                r.expect_wire(number, wire, VARINT, at)?;
                ints[slot] = varint_value(r.varint()?, field.ty)
                    .as_i64()
                    .unwrap_or_default();
            }
            _ => r.skip(number, wire, at, depth)?,
        }
    }
    Ok(match kind {
        Special::Time | Special::MicroTime if empty => Value::Null,
        Special::Time => Value::String(rfc3339(ints[1], 0, false)),
        Special::MicroTime => Value::String(rfc3339(ints[1], ints[2], true)),
        Special::Duration => Value::String(go_duration(ints[1])),
        // Go's zero Quantity prints as "0".
        Special::Quantity => Value::String(
            strings[1]
                .take()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "0".into()),
        ),
        // Type 1 is a string; 0 (or absent) an int.
        Special::IntOrString if ints[1] == 1 => {
            Value::String(strings[3].take().unwrap_or_default())
        }
        Special::IntOrString => Value::from(ints[2]),
        Special::StringList if items.is_empty() => Value::Null,
        Special::StringList => Value::Array(items),
        Special::FieldsV1 | Special::RawExtension => match bytes.filter(|b| !b.is_empty()) {
            None => Value::Null,
            Some(range) => embedded(r.body, range, msg.name, depth)?,
        },
    })
}

/// Raw bytes holding an embedded object: JSON, or (from Go clients that re-encode) protobuf.
fn embedded(
    body: &[u8],
    range: Range<usize>,
    message: &'static str,
    depth: usize,
) -> Result<Value, ProtobufError> {
    let raw = &body[range.clone()];
    if raw.starts_with(super::MAGIC) {
        return super::decode_body(raw, depth + 1).map_err(|e| shift(e, range.start));
    }
    serde_json::from_slice(raw).map_err(|source| ProtobufError::EmbeddedJson {
        offset: range.start,
        message,
        source,
    })
}

/// Offsets of an error inside an embedded body, made relative to the outer body.
fn shift(error: ProtobufError, by: usize) -> ProtobufError {
    match error {
        ProtobufError::Malformed {
            offset,
            message,
            problem,
        } => ProtobufError::Malformed {
            offset: offset + by,
            message,
            problem,
        },
        ProtobufError::EmbeddedJson {
            offset,
            message,
            source,
        } => ProtobufError::EmbeddedJson {
            offset: offset + by,
            message,
            source,
        },
        other => other,
    }
}

/// `seconds` since the epoch (plus `nanos`) as RFC 3339 in UTC, the way metav1.Time (whole
/// seconds) and metav1.MicroTime (`.000000`) marshal.
pub(super) fn rfc3339(seconds: i64, nanos: i64, micros: bool) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if micros {
        let micro = nanos.clamp(0, 999_999_999) / 1000;
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micro:06}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub(super) fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |value: u64, unit: u64| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let s = format!("{rest:0digits$}");
            format!("{whole}.{}", s.trim_end_matches('0'))
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = n / 60_000_000_000 % 60;
    let seconds = frac(n % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}
