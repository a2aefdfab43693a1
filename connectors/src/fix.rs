//! FIX tag=value framing: the `fix` source settings, a [`StreamDecoder`] that cuts FIX messages
//! out of session logs and drop-copy streams, and [`field`] to read one tag of a framed message.
//!
//! Real logs are messy: messages are SOH-, `|`- or `^A`-delimited, carry log prefixes and junk
//! lines, sometimes lack the final delimiter, and sometimes are cut off or have wrong BodyLength
//! or CheckSum. Each message is framed by its own header and `10=` trailer, so one bad message
//! never costs its neighbours; text between messages is noise and is skipped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::framing::{Frame, Framed, Malformed, StreamDecoder};
use crate::ConnectorError;

/// BeginString prefix shared by `FIX.4.x` and `FIXT.1.1`.
const START: &[u8] = b"8=FIX";

/// A message still without its trailer after this many bytes is given up on, so a stream of
/// garbage after an `8=FIX` cannot make the caller buffer without bound.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Settings of a `fix` source.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixSettings {
    /// Replay (and with `follow`, tail) this file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Accept drop-copy TCP sessions on this address, e.g. "127.0.0.1:9878".
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub follow: bool,
}

impl FixSettings {
    /// Checks the settings; `prefix` is the dotted path of this source's table, used to name the
    /// bad key in the error.
    pub fn validate(&self, prefix: &str) -> crate::Result<()> {
        match (&self.file, &self.listen) {
            (Some(_), Some(_)) => Err(ConnectorError::config(
                format!("{prefix}.listen"),
                "set either `file` (replay a FIX log) or `listen` (accept drop-copy sessions), not both",
            )),
            (None, None) => Err(ConnectorError::config(
                format!("{prefix}.file"),
                "set `file` to replay a FIX log, or `listen` (e.g. \"127.0.0.1:9878\") to accept drop-copy sessions",
            )),
            (Some(file), None) => {
                if file.as_os_str().is_empty() {
                    return Err(ConnectorError::config(
                        format!("{prefix}.file"),
                        "is empty; give the path of the FIX log to replay",
                    ));
                }
                Ok(())
            }
            (None, Some(listen)) => {
                if listen.parse::<SocketAddr>().is_err() {
                    return Err(ConnectorError::config(
                        format!("{prefix}.listen"),
                        format!(
                            "`{listen}` is not a socket address; use a numeric ip and port, e.g. \"127.0.0.1:9878\" or \"[::1]:9878\""
                        ),
                    ));
                }
                if self.follow {
                    return Err(ConnectorError::config(
                        format!("{prefix}.follow"),
                        "only applies to `file` (tail the log); remove it when using `listen`",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Field delimiter of one message, as found right after its BeginString value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimiter {
    Soh,
    Pipe,
    CaretA,
}

impl Delimiter {
    fn bytes(self) -> &'static [u8] {
        match self {
            Delimiter::Soh => b"\x01",
            Delimiter::Pipe => b"|",
            Delimiter::CaretA => b"^A",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Delimiter::Soh => "soh",
            Delimiter::Pipe => "pipe",
            Delimiter::CaretA => "caret_a",
        }
    }
}

/// Incremental FIX framer; see the module documentation for the rules.
#[derive(Debug, Default)]
pub struct FixDecoder {
    /// Last byte consumed so far: an `8=FIX` at the start of the next buffer only begins a
    /// message if this byte allows it, so chunk boundaries cannot change the result.
    prev: Option<u8>,
}

impl FixDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamDecoder for FixDecoder {
    fn decode(&mut self, buf: &[u8], base: u64, eof: bool, out: &mut Vec<Framed>) -> usize {
        let mut pos = 0;
        loop {
            // Bytes before a message start are log prefixes, newlines and junk lines: they are
            // not FIX data, so they are skipped rather than reported.
            let Some(start) = find_start(buf, pos, self.prev) else {
                // Keep a tail that may be the beginning of a split `8=FIX`.
                let keep = if eof { 0 } else { START.len() - 1 };
                pos = buf.len().saturating_sub(keep).max(pos);
                break;
            };
            match frame_at(buf, start, base, eof) {
                Step::NeedMore => {
                    pos = start;
                    break;
                }
                Step::Done { item, end } => {
                    out.push(item);
                    pos = end;
                }
            }
        }
        if let Some(last) = pos.checked_sub(1).and_then(|i| buf.get(i)) {
            self.prev = Some(*last);
        }
        pos
    }
}

/// Value of the first occurrence of `tag` in a framed message (delimiter-aware), e.g. tag 55
/// Symbol. The delimiter is detected from the BeginString field; SOH is assumed otherwise.
pub fn field(message: &[u8], tag: u32) -> Option<&[u8]> {
    let delimiter = detect_delimiter(message).unwrap_or(Delimiter::Soh);
    field_with(message, delimiter, tag)
}

fn detect_delimiter(message: &[u8]) -> Option<Delimiter> {
    let value = message.strip_prefix(b"8=")?;
    let len = value
        .iter()
        .position(|b| !is_begin_string_byte(*b))
        .unwrap_or(value.len());
    match value.get(len..)? {
        [0x01, ..] => Some(Delimiter::Soh),
        [b'|', ..] => Some(Delimiter::Pipe),
        [b'^', b'A', ..] => Some(Delimiter::CaretA),
        _ => None,
    }
}

fn field_with(message: &[u8], delimiter: Delimiter, tag: u32) -> Option<&[u8]> {
    let d = delimiter.bytes();
    let mut rest = message;
    loop {
        let (current, next) = match find(rest, d) {
            Some(i) => (rest.get(..i)?, rest.get(i + d.len()..)),
            None => (rest, None),
        };
        if let Some(eq) = current.iter().position(|b| *b == b'=') {
            if parse_tag(current.get(..eq)?) == Some(tag) {
                return current.get(eq + 1..);
            }
        }
        rest = next?;
    }
}

fn parse_tag(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        } else {
            None
        }
    })
}

fn is_begin_string_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// First `8=FIX` at or after `from` that is not glued to a preceding tag value or word (a glued
/// one is data, e.g. `58=8=FIX` or `x8=FIX`). `prev` is the byte before `buf[0]`.
fn find_start(buf: &[u8], from: usize, prev: Option<u8>) -> Option<usize> {
    let mut at = from;
    loop {
        let i = at.checked_add(find(buf.get(at..)?, START)?)?;
        let before = match i.checked_sub(1) {
            Some(j) => buf.get(j).copied(),
            None => prev,
        };
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'=') {
            return Some(i);
        }
        at = i.checked_add(1)?;
    }
}

enum Step {
    NeedMore,
    Done { item: Framed, end: usize },
}

/// Frames the message starting at `buf[start]`.
fn frame_at(buf: &[u8], start: usize, base: u64, eof: bool) -> Step {
    let capped = buf.len().saturating_sub(start) >= MAX_MESSAGE_BYTES;
    let window_end = if capped {
        start.saturating_add(MAX_MESSAGE_BYTES)
    } else {
        buf.len()
    };
    let window = buf.get(..window_end).unwrap_or(buf);
    let next = find_start(window, start.saturating_add(1), None);
    let limit = next.unwrap_or(window_end);
    let Some(msg) = buf.get(start..limit) else {
        return Step::NeedMore;
    };
    // Until the next message start, the size cap or EOF is seen, more bytes may still belong to
    // this message.
    let open = next.is_none() && !capped && !eof;
    let input_ends = next.is_none() && !capped && eof;
    let position = base.saturating_add(start as u64);

    match parse(msg, open, input_ends) {
        Outcome::NeedMore => Step::NeedMore,
        Outcome::Record {
            end,
            delimiter,
            begin_string_end,
        } => {
            let bytes = msg.get(..end).unwrap_or(msg).to_vec();
            let mut attributes = BTreeMap::new();
            attributes.insert("delimiter".to_owned(), delimiter.name().to_owned());
            attributes.insert(
                "begin_string".to_owned(),
                lossy(msg.get(2..begin_string_end).unwrap_or_default()),
            );
            if let Some(msg_type) = field_with(&bytes, delimiter, 35) {
                attributes.insert("msg_type".to_owned(), lossy(msg_type));
            }
            let symbol = field_with(&bytes, delimiter, 55).map(lossy);
            Step::Done {
                item: Framed::Record(Frame {
                    position,
                    bytes,
                    symbol,
                    attributes,
                }),
                end: start.saturating_add(end),
            }
        }
        Outcome::Bad { end, reason } => Step::Done {
            item: Framed::Malformed(Malformed {
                position,
                bytes: msg.get(..end).unwrap_or(msg).to_vec(),
                reason,
            }),
            end: start.saturating_add(end),
        },
        Outcome::Unframed { reason } => {
            let boundary = if next.is_some() {
                "the next message".to_owned()
            } else if capped {
                format!("{MAX_MESSAGE_BYTES} bytes")
            } else {
                "end of input".to_owned()
            };
            // The newline that ends a cut-off log line is not part of the message.
            let kept = msg
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(msg.len(), |i| i.saturating_add(1));
            Step::Done {
                item: Framed::Malformed(Malformed {
                    position,
                    bytes: msg.get(..kept).unwrap_or(msg).to_vec(),
                    reason: reason.replace("{boundary}", &boundary),
                }),
                end: limit,
            }
        }
    }
}

enum Outcome {
    NeedMore,
    /// A well-framed message of `end` bytes.
    Record {
        end: usize,
        delimiter: Delimiter,
        begin_string_end: usize,
    },
    /// A message whose extent is known (its trailer was found) but which fails a check.
    Bad {
        end: usize,
        reason: String,
    },
    /// No trailer: the message runs to the next start, the size cap or EOF. `{boundary}` in
    /// the reason names which.
    Unframed {
        reason: String,
    },
}

enum Trailer {
    NeedMore,
    Invalid,
    End(usize),
}

/// Frames `msg`, which starts with `8=FIX` and ends at the next message start (or the end of
/// what is known). `open`: more bytes may follow `msg`; `input_ends`: `msg` ends the input.
fn parse(msg: &[u8], open: bool, input_ends: bool) -> Outcome {
    let unframed = |reason: String| {
        if open {
            Outcome::NeedMore
        } else {
            Outcome::Unframed { reason }
        }
    };
    let cut_off = || unframed("truncated: header cut off before {boundary}".to_owned());

    let Some(value_len) = msg
        .get(2..)
        .and_then(|value| value.iter().position(|b| !is_begin_string_byte(*b)))
    else {
        return cut_off();
    };
    let begin_string_end = value_len.saturating_add(2);
    let delimiter = match msg.get(begin_string_end..).unwrap_or_default() {
        [0x01, ..] => Delimiter::Soh,
        [b'|', ..] => Delimiter::Pipe,
        [b'^', b'A', ..] => Delimiter::CaretA,
        [b'^'] => return cut_off(),
        _ => {
            let shown = lossy(msg.get(2..begin_string_end).unwrap_or_default());
            return unframed(format!(
                "bad header: begin string `{shown}` is not followed by a field delimiter"
            ));
        }
    };
    let d = delimiter.bytes();

    let length_field = begin_string_end.saturating_add(d.len());
    let rest = msg.get(length_field..).unwrap_or_default();
    if !rest.starts_with(b"9=") {
        if b"9=".starts_with(rest) {
            return cut_off();
        }
        return unframed("bad header: begin string is not followed by body length (9=)".to_owned());
    }
    let digits_start = length_field.saturating_add(2);
    let digits = msg.get(digits_start..).unwrap_or_default();
    let n_digits = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    let after_digits = digits_start.saturating_add(n_digits);
    let after = msg.get(after_digits..).unwrap_or_default();
    if after.is_empty() || (delimiter == Delimiter::CaretA && after == b"^") {
        return cut_off();
    }
    let declared = match digits.get(..n_digits).and_then(parse_length) {
        Some(declared) if after.starts_with(d) => declared,
        _ => {
            let shown: Vec<u8> = digits
                .iter()
                .take_while(|b| !d.starts_with(&[**b]))
                .take(20)
                .copied()
                .collect();
            return unframed(format!(
                "bad header: body length `{}` is not a number followed by the delimiter",
                lossy(&shown)
            ));
        }
    };
    let body_start = after_digits.saturating_add(d.len());

    let mut pattern = d.to_vec();
    pattern.extend_from_slice(b"10=");
    // Searching from the delimiter after `9=N` lets an empty body (`9=0`) be framed too.
    let mut from = after_digits;
    let mut first: Option<Found> = None;
    while let Some(offset) = msg.get(from..).and_then(|tail| find(tail, &pattern)) {
        let at = from.saturating_add(offset);
        from = at.saturating_add(1);
        let value_start = at.saturating_add(pattern.len());
        let end = match trailer_end(msg, value_start, delimiter, open, input_ends) {
            Trailer::NeedMore => return Outcome::NeedMore,
            Trailer::Invalid => continue,
            Trailer::End(end) => end,
        };
        let body = msg
            .get(body_start..at.saturating_add(d.len()))
            .unwrap_or_default();
        let (actual, _) = soh_equivalent(body, delimiter);
        let trailer = Found { at, end, actual };
        if actual == declared {
            // BodyLength is authoritative, so a `<delim>10=` inside a data field is skipped.
            return check(msg, delimiter, declared, begin_string_end, trailer);
        }
        let first = *first.get_or_insert(trailer);
        // Later trailers only make the body longer, so none can match any more.
        if actual > declared {
            return check(msg, delimiter, declared, begin_string_end, first);
        }
    }
    match first {
        _ if open => Outcome::NeedMore,
        Some(first) => check(msg, delimiter, declared, begin_string_end, first),
        None => unframed("truncated: no checksum trailer (10=) before {boundary}".to_owned()),
    }
}

/// A complete `<delim>10=NNN` trailer of a message.
#[derive(Clone, Copy)]
struct Found {
    /// Index of the delimiter before `10=`.
    at: usize,
    /// End of the trailer (after its delimiter, if present).
    end: usize,
    /// Body length measured up to this trailer.
    actual: usize,
}

/// Verifies CheckSum, then BodyLength, of the message ending with `trailer`. CheckSum goes
/// first: when both are wrong the content was edited after the fact, and that is the finding.
fn check(
    msg: &[u8],
    delimiter: Delimiter,
    declared: usize,
    begin_string_end: usize,
    trailer: Found,
) -> Outcome {
    let through_delimiter = trailer.at.saturating_add(delimiter.bytes().len());
    let (_, sum) = soh_equivalent(msg.get(..through_delimiter).unwrap_or_default(), delimiter);
    let value_start = through_delimiter.saturating_add(3);
    let declared_sum = msg
        .get(value_start..value_start.saturating_add(3))
        .unwrap_or_default();
    let length_note = if trailer.actual == declared {
        String::new()
    } else {
        format!(
            " (body length also wrong: declared {declared}, actual {})",
            trailer.actual
        )
    };
    if parse_length(declared_sum) != Some(usize::from(sum)) {
        return Outcome::Bad {
            end: trailer.end,
            reason: format!(
                "bad checksum: declared {}, computed {sum:03}{length_note}",
                lossy(declared_sum)
            ),
        };
    }
    if trailer.actual != declared {
        return Outcome::Bad {
            end: trailer.end,
            reason: format!(
                "bad body length: declared {declared}, actual {}",
                trailer.actual
            ),
        };
    }
    Outcome::Record {
        end: trailer.end,
        delimiter,
        begin_string_end,
    }
}

/// End of the `10=NNN` trailer whose value starts at `msg[value_start]`.
fn trailer_end(
    msg: &[u8],
    value_start: usize,
    delimiter: Delimiter,
    open: bool,
    input_ends: bool,
) -> Trailer {
    let incomplete = if open {
        Trailer::NeedMore
    } else {
        Trailer::Invalid
    };
    for i in 0..3 {
        match msg.get(value_start.saturating_add(i)) {
            None => return incomplete,
            Some(b) if b.is_ascii_digit() => {}
            Some(_) => return Trailer::Invalid,
        }
    }
    let value_end = value_start.saturating_add(3);
    let rest = msg.get(value_end..).unwrap_or_default();
    let d = delimiter.bytes();
    if rest.starts_with(d) {
        return Trailer::End(value_end.saturating_add(d.len()));
    }
    // The last message of a log often lacks its final delimiter.
    match rest {
        [] | [b'^'] if open => Trailer::NeedMore,
        [] | [b'^'] if input_ends => Trailer::End(value_end),
        [b'\r' | b'\n' | b' ' | b'\t', ..] => Trailer::End(value_end),
        _ => Trailer::Invalid,
    }
}

fn parse_length(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}

/// (length, byte sum mod 256) of `bytes` with every delimiter counted as one SOH byte: that is
/// what BodyLength and CheckSum meant before a logger rewrote SOH as `|` or `^A`.
fn soh_equivalent(bytes: &[u8], delimiter: Delimiter) -> (usize, u8) {
    // Each delimiter (read left to right, never overlapping) counts as one SOH byte: the
    // length loses `len - 1` per delimiter, the sum trades the delimiter's bytes for 0x01.
    let d = delimiter.bytes();
    let delimiters = memchr::memmem::find_iter(bytes, d).count();
    let byte_sum = |b: &[u8]| b.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    // Sums are modulo 256, so only the count modulo 256 matters.
    let times = (delimiters % 256) as u8;
    let sum = byte_sum(bytes)
        .wrapping_sub(byte_sum(d).wrapping_mul(times))
        .wrapping_add(times);
    let len = bytes.len() - delimiters * d.len().saturating_sub(1);
    (len, sum)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The byte-by-byte definition `soh_equivalent` computes in bulk.
    fn soh_equivalent_by_bytes(bytes: &[u8], d: &[u8]) -> (usize, u8) {
        let (mut len, mut sum, mut i) = (0usize, 0u8, 0usize);
        while i < bytes.len() {
            let (value, width) = if bytes[i..].starts_with(d) {
                (0x01, d.len())
            } else {
                (bytes[i], 1)
            };
            sum = sum.wrapping_add(value);
            len += 1;
            i += width;
        }
        (len, sum)
    }

    #[test]
    fn soh_equivalents_match_the_byte_by_byte_definition() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        };
        for delimiter in [Delimiter::Soh, Delimiter::Pipe, Delimiter::CaretA] {
            let d = delimiter.bytes();
            // 4,000 bytes hold more than 256 delimiters: the checksum's count wraps.
            for len in [0usize, 1, 2, 3, 17, 300, 1_000, 4_000] {
                // Few distinct bytes, so delimiters, overlaps (`^^A`) and runs are common.
                let bytes: Vec<u8> = (0..len)
                    .map(|_| [b'^', b'A', b'|', 0x01, b'8', b'='][usize::from(next()) % 6])
                    .collect();
                assert_eq!(
                    soh_equivalent(&bytes, delimiter),
                    soh_equivalent_by_bytes(&bytes, d),
                    "{delimiter:?} {bytes:?}"
                );
            }
        }
    }

    fn data(relative: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data")
            .join(relative);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn decode_whole(bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        let consumed = FixDecoder::new().decode(bytes, 0, true, &mut out);
        assert_eq!(consumed, bytes.len(), "eof must consume everything");
        out
    }

    /// Deterministic xorshift so chunk sizes and garbage are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Feeds `bytes` the way the runtime does: append a chunk, decode, drop what was consumed.
    fn decode_chunked(bytes: &[u8], seed: u64) -> Vec<Framed> {
        let mut rng = Rng(seed);
        let mut decoder = FixDecoder::new();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut base = 0u64;
        let mut fed = 0;
        while fed < bytes.len() {
            let size = (1 + rng.next() % 7) as usize;
            let end = (fed + size).min(bytes.len());
            pending.extend_from_slice(&bytes[fed..end]);
            fed = end;
            let consumed = decoder.decode(&pending, base, false, &mut out);
            assert!(consumed <= pending.len());
            pending.drain(..consumed);
            base += consumed as u64;
        }
        let consumed = decoder.decode(&pending, base, true, &mut out);
        assert_eq!(consumed, pending.len(), "eof must consume everything");
        out
    }

    fn class(item: &Framed) -> &'static str {
        match item {
            Framed::Record(_) => "valid",
            Framed::Malformed(bad) if bad.reason.starts_with("bad checksum:") => "bad_checksum",
            Framed::Malformed(bad) if bad.reason.starts_with("bad body length:") => {
                "bad_bodylength"
            }
            Framed::Malformed(bad) if bad.reason.starts_with("truncated:") => "truncated",
            Framed::Malformed(_) => "other",
        }
    }

    fn bytes_of(item: &Framed) -> &[u8] {
        match item {
            Framed::Record(frame) => &frame.bytes,
            Framed::Malformed(bad) => &bad.bytes,
        }
    }

    fn summary(items: &[Framed]) -> (BTreeMap<&'static str, usize>, BTreeMap<String, usize>) {
        let mut classes = BTreeMap::new();
        let mut types = BTreeMap::new();
        for item in items {
            *classes.entry(class(item)).or_insert(0) += 1;
            let msg_type = field(bytes_of(item), 35).map(lossy).unwrap_or_default();
            *types.entry(msg_type).or_insert(0) += 1;
        }
        (classes, types)
    }

    /// file, counts by outcome, counts by MsgType (35=).
    type Expected = (
        &'static str,
        &'static [(&'static str, usize)],
        &'static [(&'static str, usize)],
    );

    const SAMPLES: &[Expected] = &[
        (
            "fix/edge/fix42_caretA_delimited.log",
            &[("bad_checksum", 1), ("valid", 19)],
            &[("0", 6), ("8", 6), ("A", 4), ("D", 3), ("F", 1)],
        ),
        (
            "fix/fix41_banzai_exec_session.fix",
            &[("valid", 16)],
            &[("0", 2), ("3", 2), ("8", 5), ("A", 2), ("D", 3), ("F", 2)],
        ),
        (
            "fix/fix42_pipe_delimited.log",
            &[("bad_checksum", 1), ("valid", 19)],
            &[("0", 6), ("8", 6), ("A", 4), ("D", 3), ("F", 1)],
        ),
        (
            "fix/fixt11_order_session_store.fix",
            &[("valid", 65)],
            &[
                ("0", 18),
                ("1", 1),
                ("2", 1),
                ("5", 14),
                ("A", 16),
                ("D", 15),
            ],
        ),
        (
            "fix/jse_indices_fixt11_marketdata_part1.fix",
            &[("valid", 6944)],
            &[("0", 2522), ("X", 4422)],
        ),
        (
            "fix/log4fixj/FIX42-CoyTrade-BCExchange-PipeDelimeter.log",
            &[("valid", 1)],
            &[("D", 1)],
        ),
        (
            "fix/log4fixj/FIX42-CoyTrade-BCExchange-SenderAndTargetInSameLogFile.log",
            &[("valid", 6)],
            &[("5", 2), ("8", 1), ("A", 2), ("D", 1)],
        ),
        (
            "fix/log4fixj/FIX42-CoyTrade-BCExchange-TargetMessagePerLineNoExtraLoggingInfo.log",
            &[("valid", 6)],
            &[("0", 1), ("8", 5)],
        ),
        (
            "fix/log4fixj/FIX44-FXSpot-WithSubparties.log",
            &[("bad_bodylength", 1)],
            &[("AE", 1)],
        ),
        (
            "fix/malformed/derived_defects.fix",
            &[
                ("bad_bodylength", 3),
                ("bad_checksum", 3),
                ("truncated", 3),
                ("valid", 4),
            ],
            &[("0", 3), ("8", 5), ("D", 3), ("F", 2)],
        ),
        (
            "fix/malformed/qflv_small_badchecksums.log",
            &[("bad_checksum", 84)],
            &[("0", 24), ("8", 24), ("A", 16), ("D", 16), ("F", 4)],
        ),
    ];

    #[test]
    fn sample_counts_match_provenance() {
        for (file, classes, types) in SAMPLES {
            let items = decode_whole(&data(file));
            let (got_classes, got_types) = summary(&items);
            let want_classes: BTreeMap<&str, usize> = classes.iter().copied().collect();
            let want_types: BTreeMap<String, usize> =
                types.iter().map(|(t, n)| (t.to_string(), *n)).collect();
            assert_eq!(got_classes, want_classes, "{file}");
            assert_eq!(got_types, want_types, "{file}");
            let positions: Vec<u64> = items.iter().map(Framed::position).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{file}");
        }
    }

    #[test]
    fn sample_delimiters_are_detected() {
        for (file, want) in [
            ("fix/edge/fix42_caretA_delimited.log", "caret_a"),
            ("fix/fix42_pipe_delimited.log", "pipe"),
            ("fix/fixt11_order_session_store.fix", "soh"),
        ] {
            for item in decode_whole(&data(file)) {
                if let Framed::Record(frame) = item {
                    assert_eq!(frame.attributes["delimiter"], want, "{file}");
                }
            }
        }
    }

    #[test]
    fn derived_defects_match_manifest_row_by_row() {
        let items = decode_whole(&data("fix/malformed/derived_defects.fix"));
        let manifest = String::from_utf8(data("fix/malformed/derived_defects.manifest.csv"))
            .expect("manifest is utf-8");
        let rows: Vec<Vec<&str>> = manifest
            .lines()
            .skip(1)
            .filter(|line| !line.is_empty())
            .map(|line| line.split(',').collect())
            .collect();
        assert_eq!(rows.len(), items.len());
        for (row, item) in rows.iter().zip(&items) {
            let offset: u64 = row[1].parse().expect("byte_offset");
            assert_eq!(item.position(), offset, "row {}", row[0]);
            assert_eq!(class(item), row[2], "row {}: {item:?}", row[0]);
            assert_eq!(
                field(bytes_of(item), 35),
                Some(row[3].as_bytes()),
                "row {}",
                row[0]
            );
        }
    }

    #[test]
    fn chunk_boundaries_do_not_change_output() {
        for (i, (file, _, _)) in SAMPLES.iter().enumerate() {
            let bytes = data(file);
            let whole = decode_whole(&bytes);
            assert_eq!(
                decode_chunked(&bytes, 0x9E37_79B9_7F4A_7C15 ^ i as u64),
                whole,
                "{file}"
            );
        }
    }

    #[test]
    fn record_carries_exact_bytes_symbol_and_attributes() {
        let bytes = data("fix/fix42_pipe_delimited.log");
        let items = decode_whole(&bytes);
        let Framed::Record(order) = &items[1] else {
            panic!("second message should be valid: {:?}", items[1]);
        };
        let text = "8=FIX.4.2|9=113|35=D|34=2|49=CLIENT1|52=20040521-13:27:00.000|56=TW|11=1|21=1|38=100|40=1|54=1|55=DELL|59=0|60=20040521-13:27:00|10=199|";
        assert_eq!(order.bytes, text.as_bytes());
        let at = order.position as usize;
        assert_eq!(&bytes[at..at + order.bytes.len()], text.as_bytes());
        assert_eq!(order.symbol.as_deref(), Some("DELL"));
        assert_eq!(order.attributes["delimiter"], "pipe");
        assert_eq!(order.attributes["msg_type"], "D");
        assert_eq!(order.attributes["begin_string"], "FIX.4.2");

        // The junk-prefixed heartbeat and the one without a trailing delimiter are both framed.
        let last_two: Vec<&Framed> = items.iter().rev().take(3).collect();
        let Framed::Record(no_trailing) = last_two[1] else {
            panic!("{:?}", last_two[1]);
        };
        assert!(no_trailing.bytes.ends_with(b"|10=093"));
    }

    #[test]
    fn malformed_reasons_are_specific() {
        let items = decode_whole(&data("fix/log4fixj/FIX44-FXSpot-WithSubparties.log"));
        let [Framed::Malformed(bad)] = items.as_slice() else {
            panic!("{items:?}");
        };
        assert!(bad
            .reason
            .starts_with("bad body length: declared 404, actual "));
        assert!(bad.bytes.starts_with(b"8=FIX.4.4\x019=404"));
        assert!(bad.bytes.ends_with(b"\x0110=143\x01"));

        let items = decode_whole(&data("fix/fix42_pipe_delimited.log"));
        let reasons: Vec<&str> = items
            .iter()
            .filter_map(|item| match item {
                Framed::Malformed(bad) => Some(bad.reason.as_str()),
                Framed::Record(_) => None,
            })
            .collect();
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].starts_with("bad checksum: declared "),
            "{reasons:?}"
        );

        let items = decode_whole(b"junk\n8=FIX.4.2\x019=5\x0135=0\x01\n8=FIX.4.2|9=5|35=0|10=161|");
        assert_eq!(items.len(), 2);
        let Framed::Malformed(cut) = &items[0] else {
            panic!("{items:?}");
        };
        assert_eq!(cut.position, 5);
        assert_eq!(cut.bytes, b"8=FIX.4.2\x019=5\x0135=0\x01");
        assert_eq!(
            cut.reason,
            "truncated: no checksum trailer (10=) before the next message"
        );
        assert!(matches!(&items[1], Framed::Record(frame) if frame.position == 25));
    }

    #[test]
    fn incomplete_trailing_message_is_not_consumed_before_eof() {
        let message = b"8=FIX.4.2|9=5|35=0|10=161|";
        let mut input = b"2024-01-01 12:00:00 IN ".to_vec();
        input.extend_from_slice(message);
        for cut in 23..input.len() {
            let mut decoder = FixDecoder::new();
            let mut out = Vec::new();
            let consumed = decoder.decode(&input[..cut], 0, false, &mut out);
            // Until `8=FIX` is complete only a possible prefix of it is kept back.
            let want = if cut >= 23 + START.len() { 23 } else { cut - 4 };
            assert_eq!(consumed, want, "cut at {cut}");
            assert!(out.is_empty(), "cut at {cut}: {out:?}");
        }
        let mut out = Vec::new();
        let consumed = FixDecoder::new().decode(&input, 0, false, &mut out);
        assert_eq!(consumed, input.len());
        assert!(matches!(&out[..], [Framed::Record(frame)] if frame.position == 23));
    }

    #[test]
    fn glued_begin_string_is_not_a_message_start() {
        let items = decode_whole(b"58=8=FIX is text|x8=FIX.4.2|9=5|35=0|10=161|");
        assert!(items.is_empty(), "{items:?}");
    }

    #[test]
    fn field_reads_tags_with_every_delimiter() {
        let soh = b"8=FIX.4.2\x019=5\x0135=0\x0155=IBM\x0110=000\x01";
        let pipe = b"8=FIX.4.2|9=5|35=0|155=X|55=IBM|10=000";
        let caret = b"8=FIXT.1.1^A9=5^A35=0^A55=IBM^A10=000^A";
        for message in [&soh[..], &pipe[..], &caret[..]] {
            assert_eq!(field(message, 55), Some(&b"IBM"[..]));
            assert_eq!(field(message, 35), Some(&b"0"[..]));
            assert_eq!(field(message, 10), Some(&b"000"[..]));
            assert_eq!(field(message, 44), None);
        }
        assert_eq!(field(caret, 8), Some(&b"FIXT.1.1"[..]));
        assert_eq!(field(b"", 8), None);
        assert_eq!(field(b"=|=|99999999999=1", 1), None);
    }

    #[test]
    fn random_garbage_never_panics_and_is_consumed_at_eof() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let pieces: [&[u8]; 8] = [
            b"8=FIX",
            b"8=FIX.4.2|9=",
            b"8=FIX.4.4\x019=12\x01",
            b"8=FIXT.1.1^A9=99999999999^A",
            b"\x0110=",
            b"|10=123|",
            b"^A10=12",
            b"8=FIX.4.2|9=5|35=0|10=161|",
        ];
        let mut garbage = Vec::new();
        while garbage.len() < 300_000 {
            let r = rng.next();
            if r.is_multiple_of(40) {
                garbage.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
            } else if r.is_multiple_of(3) {
                let noise = b"8=FIX|^A\x01 \n109";
                garbage.push(noise[(r >> 16) as usize % noise.len()]);
            } else {
                garbage.push((r >> 24) as u8);
            }
        }
        let whole = decode_whole(&garbage);
        assert!(!whole.is_empty());
        assert_eq!(
            decode_chunked(&garbage[..60_000], 7),
            decode_whole(&garbage[..60_000])
        );
    }

    #[test]
    fn settings_validation() {
        let file = FixSettings {
            file: Some("data/fix/x.fix".into()),
            follow: true,
            ..FixSettings::default()
        };
        assert!(file.validate("sources.fix").is_ok());
        let listen = FixSettings {
            listen: Some("127.0.0.1:9878".into()),
            ..FixSettings::default()
        };
        assert!(listen.validate("sources.fix").is_ok());

        let setting = |settings: FixSettings| match settings.validate("sources.fix") {
            Err(ConnectorError::Config { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(setting(FixSettings::default()), "sources.fix.file");
        assert_eq!(
            setting(FixSettings {
                listen: Some("localhost".into()),
                ..FixSettings::default()
            }),
            "sources.fix.listen"
        );
        assert_eq!(
            setting(FixSettings {
                listen: Some("127.0.0.1:9878".into()),
                follow: true,
                ..FixSettings::default()
            }),
            "sources.fix.follow"
        );
        assert_eq!(
            setting(FixSettings {
                file: file.file.clone(),
                listen: listen.listen.clone(),
                follow: false,
            }),
            "sources.fix.listen"
        );
        let parsed: FixSettings =
            serde_json::from_str(r#"{"listen": "0.0.0.0:9878"}"#).expect("deserialize");
        assert_eq!(
            parsed,
            FixSettings {
                listen: Some("0.0.0.0:9878".into()),
                ..FixSettings::default()
            }
        );
        assert!(serde_json::from_str::<FixSettings>(r#"{"port": 1}"#).is_err());
    }
}
