//! SPDY/3 framing as moby/spdystream (the kubelet's and containerd's streaming library) speaks it:
//! control frames, DATA frames, and name/value header blocks compressed with zlib and the
//! SPDY/3 preset dictionary, one compression context per direction for the whole session.
//!
//! spdystream implements no flow control: WINDOW_UPDATE and SETTINGS are read and ignored.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) const VERSION: u16 = 3;
/// FLAG_FIN on DATA frames and on SYN_STREAM / SYN_REPLY / HEADERS.
pub(crate) const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
#[cfg(test)]
pub(crate) const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here (SPDY/3 §2.4.2).
pub(crate) const RST_REFUSED_STREAM: u32 = 3;
#[cfg(test)]
pub(crate) const RST_CANCEL: u32 = 5;

/// DATA frame lengths are 24 bits.
pub(crate) const MAX_DATA_LEN: usize = 0x00ff_ffff;
/// Control frames carry a few short headers in this protocol; anything near this is an attack
/// or garbage.
const MAX_CONTROL_LEN: usize = 1 << 20;
/// Bound on a decompressed header block (a zlib bomb stops here).
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Adler-32 of [`DICTIONARY`], as it appears in the zlib header of every SPDY/3 header stream.
pub(crate) const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): a list of
/// length-prefixed common header names and values, then a run of common value fragments.
pub(crate) static DICTIONARY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate",
        "max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dict = Vec::with_capacity(1423);
    for word in WORDS {
        let len = u32::try_from(word.len()).unwrap_or(u32::MAX);
        dict.extend_from_slice(&len.to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
});

/// Why a SPDY frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy connection closed in the middle of a frame")]
    Truncated,
    #[error("unsupported SPDY version {0} (want 3)")]
    Version(u16),
    #[error("spdy control frame of {len} bytes exceeds the {max}-byte bound")]
    ControlTooLarge { len: usize, max: usize },
    #[error("spdy DATA frame of {0} bytes exceeds the 24-bit length")]
    DataTooLarge(usize),
    #[error("malformed spdy {frame} frame: {reason}")]
    Malformed {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("spdy header block: {0}")]
    HeaderBlock(&'static str),
    #[error("spdy header compression: {0}")]
    Zlib(String),
}

fn malformed(frame: &'static str, reason: &'static str) -> SpdyError {
    SpdyError::Malformed { frame, reason }
}

/// A name/value header block in wire order. Names are lower-case (SPDY/3 requires it; Go's
/// `http.Header` canonicalises them again on the far side); a value holding several values
/// joins them with NUL, as spdystream does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The first value of `name` (case-insensitive).
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A SPDY/3 frame, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 3 bits, 0 = highest.
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this version does not define; SPDY/3 says ignore it.
    Unknown {
        frame_type: u16,
    },
}

/// The compressing half of a session's header context (one per direction).
pub struct HeaderCompressor {
    z: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Result<Self, SpdyError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&DICTIONARY)
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Self { z })
    }

    /// Compresses one serialized header block and sync-flushes it, so the peer can decode it
    /// from this frame's bytes alone (spdystream checks that a block consumes exactly the
    /// frame's payload).
    fn compress(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let mut consumed = 0usize;
        loop {
            out.reserve(block.len() - consumed + 64);
            let before = self.z.total_in();
            self.z
                .compress_vec(&block[consumed..], out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            consumed += usize::try_from(self.z.total_in() - before).unwrap_or(usize::MAX);
            // zlib's contract: the flush is complete once it returns with output space left.
            if consumed >= block.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// The decompressing half of a session's header context.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut consumed = 0usize;
        loop {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlock(
                    "decompressed header block too large",
                ));
            }
            let room = (MAX_HEADER_BLOCK - out.len()).min(4096);
            out.reserve(room);
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let res = self
                .z
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += usize::try_from(self.z.total_in() - in_before).unwrap_or(usize::MAX);
            let progressed = self.z.total_in() != in_before || out.len() != out_before;
            match res {
                Ok(Status::StreamEnd) => {
                    // The peer ended its zlib stream; later blocks would fail. Accept this one.
                    return if consumed < input.len() {
                        Err(SpdyError::HeaderBlock(
                            "bytes after the end of the zlib stream",
                        ))
                    } else {
                        Ok(out)
                    };
                }
                Ok(Status::Ok | Status::BufError) => {
                    if consumed >= input.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if !progressed {
                        return Err(SpdyError::HeaderBlock("zlib made no progress"));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.z
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                    }
                    Some(_) => return Err(SpdyError::HeaderBlock("unknown zlib dictionary")),
                    None => return Err(SpdyError::Zlib(e.to_string())),
                },
            }
        }
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn len_u32(len: usize) -> Result<u32, SpdyError> {
    u32::try_from(len).map_err(|_| SpdyError::HeaderBlock("header name or value too long"))
}

/// The uncompressed SPDY/3 name/value block: a 32-bit pair count, then per pair a 32-bit
/// length and the lower-cased name, a 32-bit length and the value.
pub(crate) fn serialize_header_block(headers: &Headers) -> Result<Vec<u8>, SpdyError> {
    let mut block = Vec::with_capacity(64);
    put_u32(&mut block, len_u32(headers.0.len())?);
    for (name, value) in &headers.0 {
        put_u32(&mut block, len_u32(name.len())?);
        block.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        put_u32(&mut block, len_u32(value.len())?);
        block.extend_from_slice(value.as_bytes());
    }
    Ok(block)
}

/// A bounds-checked big-endian reader over a frame payload.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Result<u32, SpdyError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u8(&mut self) -> Result<u8, SpdyError> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SpdyError> {
        if self.buf.len() < n {
            return Err(malformed(self.what, "payload too short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

pub(crate) fn parse_header_block(block: &[u8]) -> Result<Headers, SpdyError> {
    let mut c = Cursor {
        buf: block,
        what: "header block",
    };
    let count = c.u32()?;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not an allocation hint.
    if usize::try_from(count).unwrap_or(usize::MAX) > block.len() / 8 {
        return Err(SpdyError::HeaderBlock("pair count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = c.u32()? as usize;
        let name = c.take(name_len)?;
        let value_len = c.u32()? as usize;
        let value = c.take(value_len)?;
        if name.is_empty() {
            return Err(SpdyError::HeaderBlock("empty header name"));
        }
        headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    if !c.buf.is_empty() {
        return Err(SpdyError::HeaderBlock("trailing bytes after the last pair"));
    }
    Ok(Headers(headers))
}

fn control_header(
    out: &mut Vec<u8>,
    frame_type: u16,
    flags: u8,
    len: usize,
) -> Result<(), SpdyError> {
    if len > MAX_DATA_LEN {
        return Err(SpdyError::ControlTooLarge {
            len,
            max: MAX_DATA_LEN,
        });
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    put_u32(out, (u32::from(flags) << 24) | len as u32);
    Ok(())
}

/// Serializes `frame` onto `out`, compressing its header block (if any) with `comp`.
pub fn encode(
    frame: &Frame,
    comp: &mut HeaderCompressor,
    out: &mut Vec<u8>,
) -> Result<(), SpdyError> {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            flags,
            headers,
        } => {
            let mut block = Vec::new();
            comp.compress(&serialize_header_block(headers)?, &mut block)?;
            control_header(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
            put_u32(out, stream_id & 0x7fff_ffff);
            put_u32(out, associated_to & 0x7fff_ffff);
            out.push((priority & 0x07) << 5);
            out.push(*slot);
            out.extend_from_slice(&block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let mut block = Vec::new();
            comp.compress(&serialize_header_block(headers)?, &mut block)?;
            control_header(out, frame_type, *flags, 4 + block.len())?;
            put_u32(out, stream_id & 0x7fff_ffff);
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_header(out, TYPE_RST_STREAM, 0, 8)?;
            put_u32(out, stream_id & 0x7fff_ffff);
            put_u32(out, *status);
        }
        Frame::Settings { flags, entries } => {
            control_header(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len())?;
            put_u32(out, len_u32(entries.len())?);
            for e in entries {
                put_u32(out, (u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                put_u32(out, e.value);
            }
        }
        Frame::Ping { id } => {
            control_header(out, TYPE_PING, 0, 4)?;
            put_u32(out, *id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control_header(out, TYPE_GOAWAY, 0, 8)?;
            put_u32(out, last_good_stream_id & 0x7fff_ffff);
            put_u32(out, *status);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_header(out, TYPE_WINDOW_UPDATE, 0, 8)?;
            put_u32(out, stream_id & 0x7fff_ffff);
            put_u32(out, delta & 0x7fff_ffff);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() > MAX_DATA_LEN {
                return Err(SpdyError::DataTooLarge(data.len()));
            }
            put_u32(out, stream_id & 0x7fff_ffff);
            put_u32(out, (u32::from(*flags) << 24) | data.len() as u32);
            out.extend_from_slice(data);
        }
        Frame::Unknown { frame_type } => {
            control_header(out, *frame_type, 0, 0)?;
        }
    }
    Ok(())
}

/// Parses a control frame from its 8-byte head and its payload. Header blocks always go through
/// `decomp`, also for frames the caller will ignore, or the session's zlib context would drift.
pub fn parse_control(
    head: [u8; 8],
    payload: &[u8],
    decomp: &mut HeaderDecompressor,
) -> Result<Frame, SpdyError> {
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let frame_type = u16::from_be_bytes([head[2], head[3]]);
    let flags = head[4];
    let nonzero = |id: u32, what: &'static str| {
        if id == 0 {
            Err(malformed(what, "stream id 0"))
        } else {
            Ok(id)
        }
    };
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            let mut c = Cursor {
                buf: payload,
                what: "SYN_STREAM",
            };
            let stream_id = nonzero(c.u32()? & 0x7fff_ffff, "SYN_STREAM")?;
            let associated_to = c.u32()? & 0x7fff_ffff;
            let priority = c.u8()? >> 5;
            let slot = c.u8()?;
            let headers = parse_header_block(&decomp.decompress(c.buf)?)?;
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            let what = if frame_type == TYPE_SYN_REPLY {
                "SYN_REPLY"
            } else {
                "HEADERS"
            };
            let mut c = Cursor { buf: payload, what };
            let stream_id = nonzero(c.u32()? & 0x7fff_ffff, what)?;
            let headers = parse_header_block(&decomp.decompress(c.buf)?)?;
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM | TYPE_GOAWAY | TYPE_WINDOW_UPDATE => {
            let what = match frame_type {
                TYPE_RST_STREAM => "RST_STREAM",
                TYPE_GOAWAY => "GOAWAY",
                _ => "WINDOW_UPDATE",
            };
            if payload.len() != 8 {
                return Err(malformed(what, "length is not 8"));
            }
            let mut c = Cursor { buf: payload, what };
            let id = c.u32()? & 0x7fff_ffff;
            let value = c.u32()?;
            match frame_type {
                TYPE_RST_STREAM => Frame::RstStream {
                    stream_id: nonzero(id, what)?,
                    status: value,
                },
                TYPE_GOAWAY => Frame::GoAway {
                    last_good_stream_id: id,
                    status: value,
                },
                _ => Frame::WindowUpdate {
                    stream_id: id,
                    delta: value & 0x7fff_ffff,
                },
            }
        }
        TYPE_SETTINGS => {
            let mut c = Cursor {
                buf: payload,
                what: "SETTINGS",
            };
            let count = c.u32()? as usize;
            if c.buf.len() != count.saturating_mul(8) {
                return Err(malformed(
                    "SETTINGS",
                    "length does not match the entry count",
                ));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let flag_id = c.u32()?;
                let value = c.u32()?;
                entries.push(Setting {
                    flags: (flag_id >> 24) as u8,
                    id: flag_id & 0x00ff_ffff,
                    value,
                });
            }
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            if payload.len() != 4 {
                return Err(malformed("PING", "length is not 4"));
            }
            Frame::Ping {
                id: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
            }
        }
        other => Frame::Unknown { frame_type: other },
    };
    Ok(frame)
}

/// Reads frames from one side of a session.
pub struct FrameReader<R> {
    r: R,
    decomp: HeaderDecompressor,
    control: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        Self {
            r,
            decomp: HeaderDecompressor::new(),
            control: Vec::new(),
        }
    }

    /// The next frame, or `None` when the peer closed the connection between frames.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            let n = self.r.read(&mut head[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(SpdyError::Truncated)
                };
            }
            got += n;
        }
        let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            // Allocated per frame: the payload moves on without a copy, and memory is bounded
            // by the 24-bit length.
            let mut data = vec![0u8; len];
            self.read_payload(&mut data).await?;
            if stream_id == 0 {
                return Err(malformed("DATA", "stream id 0"));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                flags: head[4],
                data,
            }));
        }
        if len > MAX_CONTROL_LEN {
            return Err(SpdyError::ControlTooLarge {
                len,
                max: MAX_CONTROL_LEN,
            });
        }
        let mut payload = std::mem::take(&mut self.control);
        payload.resize(len, 0);
        self.read_payload(&mut payload).await?;
        let frame = parse_control(head, &payload, &mut self.decomp);
        self.control = payload;
        frame.map(Some)
    }

    async fn read_payload(&mut self, buf: &mut [u8]) -> Result<(), SpdyError> {
        match self.r.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(SpdyError::Truncated),
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes frames to one side of a session.
pub struct FrameWriter<W> {
    w: W,
    comp: HeaderCompressor,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Result<Self, SpdyError> {
        Ok(Self {
            w,
            comp: HeaderCompressor::new()?,
            buf: Vec::new(),
        })
    }

    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), SpdyError> {
        self.buf.clear();
        encode(frame, &mut self.comp, &mut self.buf)?;
        self.w.write_all(&self.buf).await?;
        self.w.flush().await?;
        if self.buf.capacity() > 64 << 10 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Bytes that are not a frame this writer would make (tests of malformed input).
    #[cfg(test)]
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SpdyError> {
        self.w.write_all(bytes).await?;
        self.w.flush().await?;
        Ok(())
    }

    pub async fn shutdown(&mut self) -> Result<(), SpdyError> {
        self.w.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: &Frame) -> Frame {
        let mut comp = HeaderCompressor::new().unwrap();
        let mut out = Vec::new();
        encode(frame, &mut comp, &mut out).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = FrameReader::new(&out[..]);
            let got = reader.read_frame().await.unwrap().unwrap();
            assert!(
                reader.read_frame().await.unwrap().is_none(),
                "one frame, nothing left"
            );
            got
        })
    }

    #[test]
    fn dictionary_matches_the_spec() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(&DICTIONARY), DICTIONARY_ID);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn every_frame_type_round_trips() {
        // Not lower-cased on purpose: the encoder lower-cases names, as spdystream does.
        let headers = Headers(vec![
            ("streamType".into(), "stdout".into()),
            ("port".into(), "8080\08081".into()),
        ]);
        let lowered = Headers::new()
            .with("streamtype", "stdout")
            .with("port", "8080\08081");
        let frames = [
            Frame::SynStream {
                stream_id: 5,
                associated_to: 3,
                priority: 7,
                slot: 2,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: headers.clone(),
            },
            Frame::SynReply {
                stream_id: 5,
                flags: FLAG_FIN,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 7,
                flags: 0,
                headers: headers.clone(),
            },
            Frame::RstStream {
                stream_id: 9,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good_stream_id: 11,
                status: 1,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Vec::new(),
            },
            Frame::Unknown { frame_type: 0x0b },
        ];
        for frame in &frames {
            let got = round_trip(frame);
            let want = match frame.clone() {
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    ..
                } => Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers: lowered.clone(),
                },
                Frame::Headers {
                    stream_id, flags, ..
                } => Frame::Headers {
                    stream_id,
                    flags,
                    headers: lowered.clone(),
                },
                other => other,
            };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn one_compression_context_spans_the_session() {
        let mut comp = HeaderCompressor::new().unwrap();
        let mut decomp = HeaderDecompressor::new();
        let mut sizes = Vec::new();
        for (i, kind) in ["error", "stdin", "stdout", "stderr", "resize", "stdout"]
            .iter()
            .enumerate()
        {
            let frame = Frame::SynStream {
                stream_id: 2 * u32::try_from(i).unwrap() + 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new().with("streamtype", kind),
            };
            let mut out = Vec::new();
            encode(&frame, &mut comp, &mut out).unwrap();
            sizes.push(out.len());
            let head: [u8; 8] = out[..8].try_into().unwrap();
            assert_eq!(parse_control(head, &out[8..], &mut decomp).unwrap(), frame);
        }
        // The repeated block compresses against the history: later frames are smaller than
        // the first, which carries the zlib header.
        assert!(sizes[5] < sizes[0], "{sizes:?}");
    }

    /// The wire layout of spdystream's first SYN_STREAM of `kubectl exec` (stream 1, streamtype
    /// error), built from the SPDY/3 spec: everything except the compressed bytes is fixed.
    #[test]
    fn syn_stream_layout_matches_spdystream() {
        let headers = Headers::new().with("streamType", "error");
        assert_eq!(
            serialize_header_block(&headers).unwrap(),
            b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"
        );
        let frame = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers,
        };
        let mut comp = HeaderCompressor::new().unwrap();
        let mut out = Vec::new();
        encode(&frame, &mut comp, &mut out).unwrap();
        let len = out.len() - 8;
        assert_eq!(
            &out[..4],
            &[0x80, 0x03, 0x00, 0x01],
            "control bit, version 3, SYN_STREAM"
        );
        assert_eq!(out[4], 0, "flags");
        assert_eq!(&out[5..8], &u32::try_from(len).unwrap().to_be_bytes()[1..]);
        assert_eq!(
            &out[8..18],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            "id 1, assoc 0, pri 0, slot 0"
        );
        // A zlib stream with FDICT set and the SPDY/3 dictionary id, ending in a sync flush.
        assert_eq!(out[18] & 0x0f, 8, "deflate");
        assert_eq!(
            u16::from_be_bytes([out[18], out[19]]) % 31,
            0,
            "zlib header check bits"
        );
        assert_ne!(out[19] & 0x20, 0, "FDICT");
        assert_eq!(&out[20..24], &DICTIONARY_ID.to_be_bytes());
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }

    /// A SYN_STREAM written by an independent SPDY/3.1 implementation (the C# `Spdy` library's
    /// unit tests, built to talk to the kubelet's port-forward): unidirectional, stream 123,
    /// associated to 524, priority 2, `host: test\0test2` and a user-agent.
    #[test]
    fn decodes_an_external_syn_stream() {
        let bytes: &[u8] = &[
            0x80, 0x03, 0x00, 0x01, 0x02, 0x00, 0x00, 0x73, 0x00, 0x00, 0x00, 0x7B, 0x00, 0x00,
            0x02, 0x0C, 0x40, 0x00, 0x78, 0xBB, 0xE3, 0xC6, 0xA7, 0xC2, 0x02, 0xE5, 0x0E, 0xA4,
            0xF2, 0x80, 0xAB, 0x04, 0x18, 0x49, 0x0C, 0x20, 0xC2, 0x08, 0x23, 0x1B, 0x84, 0xF9,
            0xE6, 0x57, 0x65, 0xE6, 0xE4, 0x24, 0xEA, 0x9B, 0xEA, 0x19, 0x28, 0x68, 0xF8, 0x26,
            0x26, 0x67, 0xE6, 0x95, 0xE4, 0x17, 0x67, 0x58, 0x83, 0xA3, 0x29, 0x07, 0x18, 0xBA,
            0xC9, 0x0A, 0xFE, 0xC1, 0x0A, 0x11, 0x0A, 0x86, 0x06, 0x7A, 0x96, 0xD6, 0x0A, 0x45,
            0x65, 0x56, 0x0A, 0xA6, 0x06, 0x7A, 0x06, 0x9A, 0x0A, 0xEE, 0xA9, 0xC9, 0xD9, 0xF9,
            0x0A, 0xFA, 0x0A, 0xC0, 0x24, 0x0A, 0x4E, 0xAA, 0x0A, 0x6E, 0xC0, 0xC2, 0x28, 0x2D,
            0xBF, 0x02, 0x28, 0x04, 0x52, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF,
        ];
        let head: [u8; 8] = bytes[..8].try_into().unwrap();
        let frame = parse_control(head, &bytes[8..], &mut HeaderDecompressor::new()).unwrap();
        let ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.9; rv: 50.0) Gecko / 20100101 Firefox / 50.0";
        assert_eq!(
            frame,
            Frame::SynStream {
                stream_id: 123,
                associated_to: 524,
                priority: 2,
                slot: 0,
                flags: FLAG_UNIDIRECTIONAL,
                headers: Headers(vec![
                    ("host".into(), "test\0test2".into()),
                    ("user-agent".into(), ua.into()),
                ]),
            }
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The first three SYN_STREAMs of a `kubectl exec -i` as spdystream writes them: client-go's
    /// `headers.Set("streamType", ...)`, lower-cased, compressed by Go's compress/zlib at
    /// BestCompression with the dictionary and flushed per frame, one context for all three
    /// (generated with Go 1.19's standard library driving spdystream's write path).
    #[test]
    fn decodes_syn_streams_written_by_go() {
        let frames = [
            "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff",
            "800300010000001700000003000000000000c22e555c92929907000000ffff",
            "800300010000001900000005000000000000c22ac5565c92925f5a02000000ffff",
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| unhex(f)).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut reader = FrameReader::new(&wire[..]);
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
            let frame = rt.block_on(reader.read_frame()).unwrap().unwrap();
            assert_eq!(
                frame,
                Frame::SynStream {
                    stream_id: id,
                    associated_to: 0,
                    priority: 0,
                    slot: 0,
                    flags: 0,
                    headers: Headers::new().with("streamtype", kind),
                }
            );
        }
        assert!(rt.block_on(reader.read_frame()).unwrap().is_none());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cases: &[&[u8]] = &[
            // SPDY/2 control frame.
            &[0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1],
            // PING with a 3-byte payload.
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0, 0, 1],
            // RST_STREAM for stream 0.
            &[
                0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 5,
            ],
            // SYN_REPLY whose header block is not zlib.
            &[
                0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 1, 2, 3, 4,
            ],
            // SYN_STREAM shorter than its fixed fields.
            &[0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1],
            // SETTINGS claiming 1000 entries in 4 bytes.
            &[
                0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0, 0, 0x03, 0xe8,
            ],
            // A control frame claiming 16 MiB.
            &[0x80, 0x03, 0x00, 0x08, 0x00, 0xff, 0xff, 0xff],
            // DATA on stream 0.
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'x'],
            // A frame cut short.
            &[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x09, b'x'],
            &[0x80, 0x03, 0x00],
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let res = rt.block_on(FrameReader::new(*bytes).read_frame());
            assert!(res.is_err(), "case {i}: {res:?}");
        }
        // A valid zlib stream whose header block lies about its pair count.
        let mut comp = HeaderCompressor::new().unwrap();
        let mut block = Vec::new();
        comp.compress(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1], &mut block)
            .unwrap();
        let mut frame = vec![0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00];
        frame.push(u8::try_from(4 + block.len()).unwrap());
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend_from_slice(&block);
        let res = rt.block_on(FrameReader::new(&frame[..]).read_frame());
        assert!(matches!(res, Err(SpdyError::HeaderBlock(_))), "{res:?}");
    }

    #[test]
    fn a_zlib_bomb_is_bounded() {
        let mut comp = HeaderCompressor::new().unwrap();
        let mut block = Vec::new();
        comp.compress(&vec![b'a'; 4 << 20], &mut block).unwrap();
        assert!(block.len() < MAX_CONTROL_LEN);
        let res = HeaderDecompressor::new().decompress(&block);
        assert!(matches!(res, Err(SpdyError::HeaderBlock(_))), "{res:?}");
    }
}
