//! The contract between a feed format and the connector runtime.
//!
//! A format module turns bytes into [`Framed`] items: either a record (the exact bytes of one
//! message plus its position) or a malformed span (its bytes plus the reason), never a panic and
//! never silently dropped bytes. Streaming formats implement [`StreamDecoder`] so the same code
//! frames a file replay, a tailed file and a TCP session.

use std::collections::BTreeMap;

/// One well-framed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Byte offset of the record's first byte in the (decompressed) source stream, or an item
    /// sequence number for document formats. Unique within one source stream.
    pub position: u64,
    /// The record's bytes exactly as they appear in the source (no delimiter conversion).
    pub bytes: Vec<u8>,
    /// The instrument symbol, when the format names it cheaply.
    pub symbol: Option<String>,
    /// Small facts needed to interpret the bytes later (CSV header line, FIX delimiter, ...).
    pub attributes: BTreeMap<String, String>,
}

/// A span of input that could not be framed as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub position: u64,
    pub bytes: Vec<u8>,
    /// Lower-case, specific reason, e.g. `bad checksum: declared 062, computed 061`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    Record(Frame),
    Malformed(Malformed),
}

impl Framed {
    pub fn position(&self) -> u64 {
        match self {
            Framed::Record(frame) => frame.position,
            Framed::Malformed(bad) => bad.position,
        }
    }
}

/// Incremental framing of a byte stream.
pub trait StreamDecoder: Send {
    /// `buf` holds the not-yet-consumed bytes of the stream, starting at absolute position `base`.
    /// Push every complete item found into `out` and return how many leading bytes of `buf` were
    /// consumed; the caller keeps the rest and calls again with more bytes appended.
    ///
    /// With `eof == true` no more bytes will come: everything must be consumed, and a trailing
    /// incomplete record is reported as [`Malformed`] (e.g. `truncated: ...`).
    fn decode(&mut self, buf: &[u8], base: u64, eof: bool, out: &mut Vec<Framed>) -> usize;
}
