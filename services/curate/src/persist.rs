//! The curator's state directory (`curate.state_dir`): what makes a restart resume exactly
//! where the committed L3 tables are, at a per-cycle cost proportional to the cycle's input.
//!
//! **Why not a full state per cycle** (format 1, `cycle-N.json`): the window state holds every
//! trade of every open window — a correction or cancel must restore exact high/low/open/close,
//! so a bar keeps its trades until its window is final, and the news windows keep an hour and
//! a quarter of trade history because a news item may ask for any range in it. That state is
//! inherent (aggregates alone cannot un-apply a cancelled trade's high, nor find a window's
//! next open), but writing all of it every cycle made each save cost seconds at 10k trades/s.
//!
//! **Format 2: a journal of inputs plus snapshots.** The state at cycle `n` is a deterministic
//! function of the state at cycle `m < n` and the steps in between — each trade and news item
//! fed to [`CurateState`], and each cycle end with its wall-clock decisions (idle advance, final
//! flush, the processing time stamped on rows) recorded as data. So a cycle writes only:
//! - **a journal entry** `{cycle, steps since the last entry, offsets, outbox}` appended to
//!   `journal-<first cycle>.log` and `fdatasync`ed *before* the cycle's Delta commits — about
//!   35 bytes per trade ([`codec`]), whatever the size of the open state;
//! - **now and then a snapshot** `snapshot-<cycle>.bin`: the whole state at one cycle (its
//!   outbox included), held trades in a compact binary section. When one is due, the live loop
//!   copies its state right after journaling the cycle (an in-memory clone: the one piece of
//!   snapshot work on the hot path, once per snapshot, delaying that cycle's commits by the
//!   time to copy the open windows) and a compaction thread encodes and writes it atomically
//!   (temp file, fsync, rename, fsync the directory).
//!   Replaying the journal from the previous snapshot instead — what recovery does, and what
//!   [`StateStore::start_compaction`] still does when there is no live state — repeated all the
//!   curation work since the last snapshot. The live loop only rotates to a new journal segment
//!   when a compaction starts and, once it has finished, deletes the segments and snapshot it
//!   superseded. A compaction starts when the journal is larger than both the last snapshot and
//!   [`CompactionPolicy::min_journal_bytes`], so the bytes written stay proportional to the
//!   input (each byte of journal causes at most about one byte of snapshot) and the directory
//!   stays bounded (one snapshot plus at most about one snapshot's worth of journal).
//!
//! **Recovery** ([`StateStore::open`]): newest snapshot, then every journal entry after it in
//! order, each replayed through [`CurateState`] and **checked**: the rows a replayed cycle
//! produces must equal the outbox it recorded, or recovery stops (a state that does not
//! reproduce what was committed must not be resumed). The last entry's outbox is handed back so
//! tables below its cycle get it (the crash fell between the journal write and the commits).
//! An entry cut short by a crash — it can only be the last, and its commits never ran — is
//! recognised by its length and CRC-32 and truncated away; damage anywhere else is an error.
//! Each segment records the configuration it was written under; replay switches to it where
//! the run did (a restart with changed lateness), through the aggregators' own
//! snapshot/restore.
//!
//! **Versions.** Every file starts with `MLCURATE` and [`FORMAT_VERSION`]; another version is
//! refused, naming the file and `curate.state_dir`. A directory holding only format-1
//! `cycle-N.json` files is read once, rewritten as a snapshot, and the JSON files removed.
//!
//! **Exactly once is unchanged**: same tables, same `txn` (`l3-curate:cycle:0 = n`), the same
//! rule that a cycle's outbox is durable before its commit, and the per-raw-partition replay
//! filter inside the aggregators for records consumed again after a restart.

mod codec;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use marketlake_schemas::l2::{NewsRow, TradeRow};
use serde::{Deserialize, Serialize};

use self::codec::{crc32, decode_fills, encode_fills, Dec, Enc, Op, OpLog};
use crate::fill::simple_return;
use crate::state::{CurateState, CycleEnd, Outbox};
use crate::{
    AggregatorState, BarConfig, CurateError, Disposition, NewsWindowConfig, NewsWindowsState,
    Result,
};

/// Version of the state directory's files. 1 was one `cycle-N.json` per cycle.
pub const FORMAT_VERSION: u32 = 2;
const LEGACY_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"MLCURATE";
const KIND_SNAPSHOT: u8 = 1;
const KIND_JOURNAL: u8 = 2;
/// Magic, version, kind.
const FILE_HEADER_LEN: usize = 13;
/// Frame: payload length (u32 LE), CRC-32 of the payload (u32 LE).
const FRAME_HEADER_LEN: usize = 8;
const ENTRY_CYCLE: u8 = 1;

/// When the compaction thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Compact once the journal holds at least this many bytes *and* at least as many as the
    /// current snapshot: small states are not rewritten over and over, large ones are
    /// rewritten at most about once per their own size of input.
    pub min_journal_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_journal_bytes: 16 << 20,
        }
    }
}

/// Bytes and files written, for tests, benchmarks and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    pub entries: u64,
    pub entry_bytes: u64,
    pub snapshots: u64,
    /// Snapshots started from a copy of the live state (the rest replayed the journal).
    pub live_snapshots: u64,
    pub snapshot_bytes: u64,
}

/// One cycle as the journal records it: what to replay, where to resume, what to commit.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    cycle: i64,
    ops: OpLog,
    offsets: BTreeMap<String, i64>,
    outbox: Outbox,
}

impl JournalEntry {
    pub fn cycle(&self) -> i64 {
        self.cycle
    }

    /// The rows this cycle commits.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Next offset to consume per `topic:partition` once this cycle is committed.
    pub fn offsets(&self) -> &BTreeMap<String, i64> {
        &self.offsets
    }

    /// Steps (trades, news items, cycle ends) recorded in this entry.
    pub fn steps(&self) -> u64 {
        self.ops.len()
    }
}

/// What [`StateStore::open`] found: the state to resume, at which cycle and offsets, and the
/// rows of that cycle (for the tables that do not hold it yet).
#[derive(Debug)]
pub struct Recovered {
    pub state: CurateState,
    pub cycle: i64,
    pub offsets: BTreeMap<String, i64>,
    pub outbox: Outbox,
}

/// The window state plus what the next journal entry must hold: every step applied to the
/// state since the last entry, and the consumed positions. The pipeline feeds records through
/// it; tests drive it the same way without a broker.
#[derive(Debug)]
pub struct Curator {
    state: CurateState,
    cycle: i64,
    offsets: BTreeMap<String, i64>,
    log: OpLog,
    /// Records consumed since the last entry (parsed or not).
    consumed: u64,
}

impl Curator {
    /// Resume from what recovery found (its outbox is the caller's to commit).
    pub fn resume(state: CurateState, cycle: i64, offsets: BTreeMap<String, i64>) -> Self {
        Curator {
            state,
            cycle,
            offsets,
            log: OpLog::default(),
            consumed: 0,
        }
    }

    pub fn state(&self) -> &CurateState {
        &self.state
    }

    /// The last cycle handed out in an entry.
    pub fn cycle(&self) -> i64 {
        self.cycle
    }

    pub fn offsets(&self) -> &BTreeMap<String, i64> {
        &self.offsets
    }

    /// A record was consumed from `partition` (`topic:partition`); `next_offset` is where to
    /// resume after it. Call for every record, before feeding it (or not, if unreadable).
    pub fn consumed(&mut self, partition: &str, next_offset: i64) {
        if let Some(offset) = self.offsets.get_mut(partition) {
            *offset = next_offset;
        } else {
            self.offsets.insert(partition.to_string(), next_offset);
        }
        self.consumed += 1;
    }

    pub fn trade(&mut self, trade: &TradeRow) -> Result<Disposition> {
        let disposition = self.state.apply_trade(trade)?;
        self.log.trade(trade);
        Ok(disposition)
    }

    pub fn news(&mut self, news: &NewsRow) -> Result<()> {
        self.state.apply_news(news)?;
        self.log.news(news);
        Ok(())
    }

    /// End a cycle: the rows that fired and, when there is anything to save (rows, or records
    /// consumed), the journal entry of the next cycle number. A cycle end that changed nothing
    /// is not recorded; one that changed the state without rows or records to save (an idle
    /// advance dropping windows) is kept for the next entry.
    pub fn end_cycle(&mut self, end: CycleEnd) -> Option<JournalEntry> {
        let (outbox, changed) = self.state.end_cycle(end);
        if changed {
            self.log.end_cycle(end);
        }
        if outbox.is_empty() && self.consumed == 0 {
            return None;
        }
        self.cycle += 1;
        self.consumed = 0;
        Some(JournalEntry {
            cycle: self.cycle,
            ops: std::mem::take(&mut self.log),
            offsets: self.offsets.clone(),
            outbox,
        })
    }
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> CurateError {
    CurateError::StateFile {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Attach the file to an error from decoding or restoring its contents.
fn in_file(path: &Path, e: CurateError) -> CurateError {
    match e {
        CurateError::StateFile { .. } => e,
        other => file_error(path, other),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| CurateError::State(format!("cannot serialise: {e}")))
}

fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| CurateError::State(format!("{what}: {e}")))
}

fn snapshot_path(dir: &Path, cycle: i64) -> PathBuf {
    dir.join(format!("snapshot-{cycle:012}.bin"))
}

fn segment_path(dir: &Path, first_cycle: i64) -> PathBuf {
    dir.join(format!("journal-{first_cycle:012}.log"))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn sync_dir(dir: &Path) {
    // Makes a rename or unlink durable; not every platform can open a directory for it.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a superseded state file");
        }
    }
}

/// Temp file, fsync, rename, fsync the directory: the file is whole or absent.
fn write_atomic(path: &Path, parts: &[&[u8]]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(|e| file_error(&tmp, e))?;
    for part in parts {
        file.write_all(part).map_err(|e| file_error(&tmp, e))?;
    }
    file.sync_all().map_err(|e| file_error(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| file_error(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

fn file_header(kind: u8) -> Vec<u8> {
    let mut header = Vec::with_capacity(FILE_HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.push(kind);
    header
}

/// Check magic, version and kind; the bytes after the header.
fn check_header<'a>(path: &Path, bytes: &'a [u8], kind: u8) -> Result<&'a [u8]> {
    if bytes.len() < FILE_HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(file_error(
            path,
            "not a curator state file (no MLCURATE header); move it out of the state directory",
        ));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(file_error(
            path,
            format!(
                "state format version {version} is not one this curator reads (version \
                 {FORMAT_VERSION}, and version {LEGACY_VERSION} `cycle-N.json` files): it was \
                 written by another release of the curator; run that release, or move the \
                 state directory aside"
            ),
        ));
    }
    if bytes[12] != kind {
        return Err(file_error(
            path,
            format!("file kind {} where {kind} was expected", bytes[12]),
        ));
    }
    Ok(&bytes[FILE_HEADER_LEN..])
}

/// `payload` framed: length, CRC-32, bytes.
fn frame(payload: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| CurateError::State("a journal entry over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

enum FrameAt {
    Ok {
        payload: std::ops::Range<usize>,
        next: usize,
    },
    /// Cut short by a crash: runs past the end of the file, or is followed by nothing but the
    /// zeros a file system may leave after an interrupted append.
    Torn,
    Damaged,
}

fn frame_at(bytes: &[u8], pos: usize) -> FrameAt {
    let rest = &bytes[pos..];
    let nothing_after = |from: usize| rest.get(from..).is_none_or(|r| r.iter().all(|&b| b == 0));
    if rest.len() < FRAME_HEADER_LEN {
        return FrameAt::Torn;
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&rest[..4]);
    let len = u32::from_le_bytes(word) as usize;
    word.copy_from_slice(&rest[4..8]);
    let crc = u32::from_le_bytes(word);
    if len == 0 {
        return if nothing_after(0) {
            FrameAt::Torn
        } else {
            FrameAt::Damaged
        };
    }
    let end = FRAME_HEADER_LEN + len;
    if end > rest.len() {
        return FrameAt::Torn;
    }
    if crc32(&rest[FRAME_HEADER_LEN..end]) != crc {
        return if nothing_after(end) {
            FrameAt::Torn
        } else {
            FrameAt::Damaged
        };
    }
    FrameAt::Ok {
        payload: pos + FRAME_HEADER_LEN..pos + end,
        next: pos + end,
    }
}

/// First frame of a journal segment: the configuration its entries were produced under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentHeader {
    first_cycle: i64,
    bars: BarConfig,
    news_windows: NewsWindowConfig,
}

struct ParsedSegment {
    header: SegmentHeader,
    entries: Vec<std::ops::Range<usize>>,
    /// Bytes up to the end of the last whole entry.
    valid_len: usize,
    torn: bool,
}

fn parse_segment(path: &Path, bytes: &[u8], allow_torn: bool) -> Result<ParsedSegment> {
    check_header(path, bytes, KIND_JOURNAL)?;
    // The header frame is written atomically with the file: it is whole or the file is absent.
    let FrameAt::Ok { payload, next } = frame_at(bytes, FILE_HEADER_LEN) else {
        return Err(file_error(path, "the journal segment header is damaged"));
    };
    let header: SegmentHeader =
        from_json(&bytes[payload], "journal segment header").map_err(|e| in_file(path, e))?;
    let mut entries = Vec::new();
    let mut pos = next;
    let mut torn = false;
    while pos < bytes.len() {
        match frame_at(bytes, pos) {
            FrameAt::Ok { payload, next } => {
                entries.push(payload);
                pos = next;
            }
            FrameAt::Torn if allow_torn => {
                torn = true;
                break;
            }
            FrameAt::Torn => {
                return Err(file_error(
                    path,
                    format!(
                        "the journal entry at byte {pos} is incomplete, in a segment that is not \
                         the newest (only the last write before a crash can be cut short): the \
                         directory was damaged; restore it from a backup"
                    ),
                ))
            }
            FrameAt::Damaged => {
                return Err(file_error(
                    path,
                    format!(
                        "the journal entry at byte {pos} fails its checksum and is followed by \
                         more data: the file was damaged after it was written; restore the \
                         directory from a backup"
                    ),
                ))
            }
        }
    }
    Ok(ParsedSegment {
        header,
        entries,
        valid_len: pos,
        torn,
    })
}

/// The outbox of an entry, from its payload alone.
#[derive(Serialize)]
struct EntryMetaRef<'a> {
    offsets: &'a BTreeMap<String, i64>,
    outbox: &'a Outbox,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryMeta {
    offsets: BTreeMap<String, i64>,
    outbox: Outbox,
}

/// An entry's payload: kind, cycle, steps, then offsets and outbox as JSON (small, and the
/// row types already speak serde).
fn encode_entry(entry: &JournalEntry) -> Result<Vec<u8>> {
    let meta = to_json(&EntryMetaRef {
        offsets: &entry.offsets,
        outbox: &entry.outbox,
    })?;
    let mut out = Enc::with_capacity(entry.ops.encoded_len() + meta.len() + 64);
    out.u8(ENTRY_CYCLE);
    out.ivar(entry.cycle);
    entry.ops.encode(&mut out);
    out.bytes(&meta);
    Ok(out.into_inner())
}

fn entry_cycle(payload: &[u8]) -> Result<i64> {
    let mut dec = Dec::new(payload);
    if dec.u8()? != ENTRY_CYCLE {
        return Err(CurateError::State("unknown journal entry kind".into()));
    }
    dec.ivar()
}

/// Rows read back from JSON, with each news window's `simple_return` derived again from its
/// prices as the drain derived it: a float need not survive JSON bit for bit, and the rows a
/// recovery commits must be the ones the run would have committed.
fn rederived(mut outbox: Outbox) -> Outbox {
    for row in &mut outbox.windows {
        row.simple_return = simple_return(row.first_price, row.last_price);
    }
    outbox
}

/// Apply one entry to `state`, checking it reproduces the rows it recorded.
fn replay_entry(
    state: &mut CurateState,
    payload: &[u8],
) -> Result<(i64, BTreeMap<String, i64>, Outbox)> {
    let mut dec = Dec::new(payload);
    if dec.u8()? != ENTRY_CYCLE {
        return Err(CurateError::State("unknown journal entry kind".into()));
    }
    let cycle = dec.ivar()?;
    let mut produced = Outbox::default();
    OpLog::replay(&mut dec, |op| match op {
        Op::Trade(trade) => state.apply_trade(&trade).map(drop),
        Op::News(news) => state.apply_news(&news),
        Op::End(end) => {
            produced.extend(state.end_cycle(end).0);
            Ok(())
        }
    })?;
    let meta: EntryMeta = from_json(dec.bytes()?, "journal entry")?;
    dec.finish("a journal entry")?;
    let recorded = rederived(meta.outbox);
    if produced != recorded {
        return Err(CurateError::State(format!(
            "replaying cycle {cycle} gives other rows than it recorded ({} bars, {} late, {} \
             windows replayed; {} / {} / {} recorded): the journal does not describe this \
             state, so resuming from it could contradict the committed tables; keep the \
             directory for a post-mortem",
            produced.bars.len(),
            produced.late.len(),
            produced.windows.len(),
            recorded.bars.len(),
            recorded.late.len(),
            recorded.windows.len(),
        )));
    }
    Ok((cycle, meta.offsets, produced))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotMeta {
    cycle: i64,
    offsets: BTreeMap<String, i64>,
    outbox: Outbox,
    bars: BarConfig,
    news_windows: NewsWindowConfig,
}

/// Write the whole state at `cycle` atomically; its size in bytes. Each aggregator is turned
/// into its serde state one at a time, held trades moved to the binary section, so the extra
/// memory is one symbol's worth.
fn write_snapshot(
    path: &Path,
    state: &CurateState,
    cycle: i64,
    offsets: &BTreeMap<String, i64>,
    outbox: &Outbox,
) -> Result<u64> {
    let mut body = Enc::with_capacity(1 << 20);
    body.bytes(&to_json(&SnapshotMeta {
        cycle,
        offsets: offsets.clone(),
        outbox: outbox.clone(),
        bars: state.bar_config().clone(),
        news_windows: state.news_config().clone(),
    })?);
    body.usize(state.bars().len());
    for (symbol, aggregator) in state.bars() {
        let mut saved = aggregator.snapshot();
        let lists = saved.take_fill_lists();
        body.str(symbol);
        body.bytes(&to_json(&saved)?);
        body.usize(lists.len());
        for fills in &lists {
            encode_fills(&mut body, fills);
        }
    }
    body.usize(state.windows().len());
    for (ticker, windows) in state.windows() {
        let mut saved = windows.snapshot();
        let lists = saved.take_fill_lists();
        body.str(ticker);
        body.bytes(&to_json(&saved)?);
        body.usize(lists.len());
        for fills in &lists {
            encode_fills(&mut body, fills);
        }
    }
    let body = body.into_inner();
    let mut head = file_header(KIND_SNAPSHOT);
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(&crc32(&body).to_le_bytes());
    write_atomic(path, &[&head, &body])?;
    Ok((head.len() + body.len()) as u64)
}

struct Base {
    state: CurateState,
    cycle: i64,
    offsets: BTreeMap<String, i64>,
    outbox: Outbox,
}

fn read_snapshot(path: &Path) -> Result<Base> {
    let bytes = fs::read(path).map_err(|e| file_error(path, e))?;
    let rest = check_header(path, &bytes, KIND_SNAPSHOT)?;
    let damaged = |what: &str| {
        file_error(
            path,
            format!(
                "{what}; snapshots are written atomically, so the file was damaged after it was \
                 written: restore the directory from a backup"
            ),
        )
    };
    if rest.len() < 12 {
        return Err(damaged("the snapshot header is cut short"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&rest[..8]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&rest[8..12]);
    let body = &rest[12..];
    if u64::from_le_bytes(len) != body.len() as u64 {
        return Err(damaged("the snapshot is not the length it records"));
    }
    if crc32(body) != u32::from_le_bytes(crc) {
        return Err(damaged("the snapshot fails its checksum"));
    }
    decode_snapshot(body).map_err(|e| in_file(path, e))
}

fn decode_snapshot(body: &[u8]) -> Result<Base> {
    let mut dec = Dec::new(body);
    let meta: SnapshotMeta = from_json(dec.bytes()?, "snapshot")?;
    let mut state = CurateState::new(meta.bars, meta.news_windows)?;
    for _ in 0..dec.count()? {
        let symbol = dec.string()?;
        let mut saved: AggregatorState = from_json(dec.bytes()?, "bar state")?;
        let lists = (0..dec.count()?)
            .map(|_| decode_fills(&mut dec))
            .collect::<Result<Vec<_>>>()?;
        saved.put_fill_lists(lists)?;
        state.restore_bars(symbol, saved)?;
    }
    for _ in 0..dec.count()? {
        let ticker = dec.string()?;
        let mut saved: NewsWindowsState = from_json(dec.bytes()?, "news window state")?;
        let lists = (0..dec.count()?)
            .map(|_| decode_fills(&mut dec))
            .collect::<Result<Vec<_>>>()?;
        saved.put_fill_lists(lists)?;
        state.restore_windows(ticker, saved)?;
    }
    dec.finish("the snapshot")?;
    Ok(Base {
        state,
        cycle: meta.cycle,
        offsets: meta.offsets,
        outbox: rederived(meta.outbox),
    })
}

/// A format-1 state file (`cycle-N.json`): the whole state of one cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LegacyCycleState {
    pub(crate) cycle: i64,
    pub(crate) offsets: BTreeMap<String, i64>,
    pub(crate) bars: BTreeMap<String, AggregatorState>,
    pub(crate) news: BTreeMap<String, NewsWindowsState>,
    pub(crate) outbox: Outbox,
}

impl LegacyCycleState {
    #[cfg(test)]
    pub(crate) fn of(
        state: &CurateState,
        cycle: i64,
        offsets: &BTreeMap<String, i64>,
        outbox: &Outbox,
    ) -> Self {
        LegacyCycleState {
            cycle,
            offsets: offsets.clone(),
            bars: state
                .bars()
                .iter()
                .map(|(s, a)| (s.clone(), a.snapshot()))
                .collect(),
            news: state
                .windows()
                .iter()
                .map(|(t, w)| (t.clone(), w.snapshot()))
                .collect(),
            outbox: outbox.clone(),
        }
    }
}

#[cfg(test)]
fn legacy_path(dir: &Path, cycle: i64) -> PathBuf {
    dir.join(format!("cycle-{cycle:012}.json"))
}

fn read_legacy(path: &Path, bars: &BarConfig, news: &NewsWindowConfig) -> Result<Recovered> {
    let bytes = fs::read(path).map_err(|e| file_error(path, e))?;
    let legacy: LegacyCycleState = serde_json::from_slice(&bytes).map_err(|e| {
        file_error(
            path,
            format!(
                "{e}; this format-{LEGACY_VERSION} file is written atomically, so this is not a \
                 torn write: restore it from a backup or move it aside"
            ),
        )
    })?;
    // Format 1 restored into the running configuration, as the curator that wrote it did.
    let mut state = CurateState::new(bars.clone(), news.clone())?;
    for (symbol, saved) in legacy.bars {
        state
            .restore_bars(symbol, saved)
            .map_err(|e| in_file(path, e))?;
    }
    for (ticker, saved) in legacy.news {
        state
            .restore_windows(ticker, saved)
            .map_err(|e| in_file(path, e))?;
    }
    Ok(Recovered {
        state,
        cycle: legacy.cycle,
        offsets: legacy.offsets,
        outbox: rederived(legacy.outbox),
    })
}

/// A journal segment as recovery found it.
struct SeenSegment {
    path: PathBuf,
    first_cycle: i64,
    last_cycle: Option<i64>,
    valid_len: u64,
    torn: bool,
}

struct Loaded {
    state: CurateState,
    cycle: i64,
    offsets: BTreeMap<String, i64>,
    outbox: Outbox,
    segments: Vec<SeenSegment>,
}

/// Snapshot (or an empty state under `fresh`), then every journal entry after it up to `upto`.
/// A torn last entry is tolerated only with `allow_torn` (recovery; a compaction reads only
/// whole, synced entries).
fn load(
    snapshot: Option<&Path>,
    segments: &[PathBuf],
    upto: Option<i64>,
    allow_torn: bool,
    fresh: (&BarConfig, &NewsWindowConfig),
) -> Result<Loaded> {
    let Base {
        mut state,
        mut cycle,
        mut offsets,
        mut outbox,
    } = match snapshot {
        Some(path) => read_snapshot(path)?,
        None => Base {
            state: CurateState::new(fresh.0.clone(), fresh.1.clone())?,
            cycle: 0,
            offsets: BTreeMap::new(),
            outbox: Outbox::default(),
        },
    };
    let base = cycle;
    let mut seen = Vec::with_capacity(segments.len());
    'segments: for (i, path) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(|e| file_error(path, e))?;
        let last = i + 1 == segments.len();
        let parsed = parse_segment(path, &bytes, allow_torn && last)?;
        let mut last_cycle = None;
        for range in &parsed.entries {
            let payload = &bytes[range.clone()];
            let entry = entry_cycle(payload).map_err(|e| in_file(path, e))?;
            if upto.is_some_and(|u| entry > u) {
                break 'segments;
            }
            last_cycle = Some(entry);
            if entry <= base {
                continue; // in the snapshot already
            }
            if entry != cycle + 1 {
                return Err(file_error(
                    path,
                    format!(
                        "the journal goes from cycle {cycle} to cycle {entry}: a segment is \
                         missing; restore the directory from a backup"
                    ),
                ));
            }
            // Where the run restarted under another configuration, so does the replay.
            if state.bar_config() != &parsed.header.bars
                || state.news_config() != &parsed.header.news_windows
            {
                state = state
                    .reconfigure(&parsed.header.bars, &parsed.header.news_windows)
                    .map_err(|e| in_file(path, e))?;
            }
            let (c, o, b) = replay_entry(&mut state, payload).map_err(|e| in_file(path, e))?;
            (cycle, offsets, outbox) = (c, o, b);
        }
        seen.push(SeenSegment {
            path: path.clone(),
            first_cycle: parsed.header.first_cycle,
            last_cycle,
            valid_len: parsed.valid_len as u64,
            torn: parsed.torn,
        });
    }
    if let Some(upto) = upto {
        if cycle != upto {
            return Err(CurateError::State(format!(
                "compaction to cycle {upto} found the journal ending at cycle {cycle}"
            )));
        }
    }
    Ok(Loaded {
        state,
        cycle,
        offsets,
        outbox,
        segments: seen,
    })
}

/// What the directory holds, by kind, oldest first.
#[derive(Default)]
struct Listing {
    snapshots: Vec<(i64, PathBuf)>,
    segments: Vec<(i64, PathBuf)>,
    legacy: Vec<(i64, PathBuf)>,
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| file_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let numbered = |prefix: &str, suffix: &str| -> Option<i64> {
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        };
        if name.ends_with(".tmp") {
            listing.temps.push(entry.path());
        } else if let Some(cycle) = numbered("snapshot-", ".bin") {
            listing.snapshots.push((cycle, entry.path()));
        } else if let Some(cycle) = numbered("journal-", ".log") {
            listing.segments.push((cycle, entry.path()));
        } else if let Some(cycle) = numbered("cycle-", ".json") {
            listing.legacy.push((cycle, entry.path()));
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    listing.legacy.sort();
    Ok(listing)
}

/// A file the store keeps: a snapshot (at `cycle`) or a journal segment (from `cycle`).
#[derive(Debug, Clone)]
struct Stored {
    cycle: i64,
    path: PathBuf,
    bytes: u64,
}

struct Compaction {
    upto: i64,
    handle: JoinHandle<Result<Stored>>,
}

/// Load the state at `upto` from files the live loop no longer writes, and write it as a
/// snapshot. Runs on its own thread.
fn compact(
    dir: &Path,
    snapshot: Option<PathBuf>,
    segments: Vec<PathBuf>,
    upto: i64,
    fresh: (BarConfig, NewsWindowConfig),
) -> Result<Stored> {
    let loaded = load(
        snapshot.as_deref(),
        &segments,
        Some(upto),
        false,
        (&fresh.0, &fresh.1),
    )?;
    store_snapshot(
        dir,
        upto,
        (&loaded.state, loaded.cycle, &loaded.offsets, &loaded.outbox),
    )
}

/// Write the snapshot file of cycle `upto`: `(state, its cycle, offsets, outbox)`, replayed by
/// [`compact`] or copied from the live state when its entry was appended.
fn store_snapshot(
    dir: &Path,
    upto: i64,
    (state, cycle, offsets, outbox): (&CurateState, i64, &BTreeMap<String, i64>, &Outbox),
) -> Result<Stored> {
    let path = snapshot_path(dir, upto);
    let bytes = write_snapshot(&path, state, cycle, offsets, outbox)?;
    Ok(Stored {
        cycle: upto,
        path,
        bytes,
    })
}

/// The state directory: journal appends on the hot path, compaction on a thread, recovery.
/// One per directory (the pipeline holds an exclusive lock on it).
pub struct StateStore {
    dir: PathBuf,
    bars: BarConfig,
    news: NewsWindowConfig,
    policy: CompactionPolicy,
    snapshot: Option<Stored>,
    /// Journal segments after the snapshot, oldest first; appends go to the last one while
    /// `writer` is open.
    segments: Vec<Stored>,
    writer: Option<File>,
    /// The last cycle written (or recovered).
    cycle: i64,
    compaction: Option<Compaction>,
    /// Set when a write failed half way: the segment may end in a partial entry, which only
    /// a restart (recovery cuts it) may follow.
    failed: bool,
    counters: StoreCounters,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.dir)
            .field("cycle", &self.cycle)
            .field("snapshot", &self.snapshot)
            .field("segments", &self.segments)
            .field("compacting_to", &self.compaction.as_ref().map(|c| c.upto))
            .finish()
    }
}

impl StateStore {
    /// Open (creating) `dir` and recover the newest state, for this configuration.
    pub fn open(
        dir: &Path,
        bars: BarConfig,
        news: NewsWindowConfig,
        policy: CompactionPolicy,
    ) -> Result<(StateStore, Recovered)> {
        fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let listing = list(dir)?;
        for tmp in &listing.temps {
            remove(tmp); // an atomic write a crash interrupted
        }
        let mut store = StateStore {
            dir: dir.to_path_buf(),
            bars,
            news,
            policy,
            snapshot: None,
            segments: Vec::new(),
            writer: None,
            cycle: 0,
            compaction: None,
            failed: false,
            counters: StoreCounters::default(),
        };
        if listing.snapshots.is_empty() && listing.segments.is_empty() {
            let recovered = match listing.legacy.last() {
                Some((_, path)) => store.migrate(path, &listing.legacy)?,
                None => Recovered {
                    state: CurateState::new(store.bars.clone(), store.news.clone())?,
                    cycle: 0,
                    offsets: BTreeMap::new(),
                    outbox: Outbox::default(),
                },
            };
            store.cycle = recovered.cycle;
            return Ok((store, recovered));
        }

        let newest = listing.snapshots.last().map(|(_, path)| path.clone());
        let paths: Vec<PathBuf> = listing.segments.iter().map(|(_, p)| p.clone()).collect();
        let loaded = load(
            newest.as_deref(),
            &paths,
            None,
            true,
            (&store.bars, &store.news),
        )?;
        if let Some((legacy_cycle, path)) = listing.legacy.last() {
            if *legacy_cycle > loaded.cycle {
                return Err(file_error(
                    path,
                    format!(
                        "this format-{LEGACY_VERSION} state file is at cycle {legacy_cycle}, \
                         ahead of the journal (cycle {}): an older curator ran on this \
                         directory after a newer one; keep the files of the one to resume and \
                         move the others aside",
                        loaded.cycle
                    ),
                ));
            }
            for (_, path) in &listing.legacy {
                remove(path); // superseded by the migration that made the snapshot
            }
        }

        // A crash mid-append leaves a partial last entry: its commits never ran, cut it.
        for seen in loaded.segments.iter().filter(|s| s.torn) {
            tracing::warn!(path = %seen.path.display(), at = seen.valid_len, "cutting a journal entry a crash left incomplete");
            let file = OpenOptions::new()
                .write(true)
                .open(&seen.path)
                .map_err(|e| file_error(&seen.path, e))?;
            file.set_len(seen.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| file_error(&seen.path, e))?;
        }
        // Keep the newest snapshot and the segments with entries after it.
        let base = match &newest {
            Some(path) => {
                let bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let cycle = listing.snapshots.last().map_or(0, |(c, _)| *c);
                store.snapshot = Some(Stored {
                    cycle,
                    path: path.clone(),
                    bytes,
                });
                cycle
            }
            None => 0,
        };
        for (_, path) in listing.snapshots.iter().rev().skip(1) {
            remove(path);
        }
        for seen in loaded.segments {
            if seen.last_cycle.is_some_and(|last| last > base) {
                store.segments.push(Stored {
                    cycle: seen.first_cycle,
                    path: seen.path,
                    bytes: seen.valid_len,
                });
            } else {
                remove(&seen.path);
            }
        }
        sync_dir(dir);
        let state = if loaded.state.bar_config() != &store.bars
            || loaded.state.news_config() != &store.news
        {
            loaded.state.reconfigure(&store.bars, &store.news)?
        } else {
            loaded.state
        };
        store.cycle = loaded.cycle;
        Ok((
            store,
            Recovered {
                state,
                cycle: loaded.cycle,
                offsets: loaded.offsets,
                outbox: loaded.outbox,
            },
        ))
    }

    /// Read the newest format-1 file, rewrite it as a snapshot, then remove the format-1 files.
    fn migrate(&mut self, newest: &Path, all: &[(i64, PathBuf)]) -> Result<Recovered> {
        let recovered = read_legacy(newest, &self.bars, &self.news)?;
        let path = snapshot_path(&self.dir, recovered.cycle);
        let bytes = write_snapshot(
            &path,
            &recovered.state,
            recovered.cycle,
            &recovered.offsets,
            &recovered.outbox,
        )?;
        for (_, old) in all {
            remove(old);
        }
        sync_dir(&self.dir);
        tracing::info!(from = %newest.display(), to = %path.display(), cycle = recovered.cycle, "curator state migrated to format {FORMAT_VERSION}");
        self.snapshot = Some(Stored {
            cycle: recovered.cycle,
            path,
            bytes,
        });
        self.counters.snapshots += 1;
        self.counters.snapshot_bytes += bytes;
        Ok(recovered)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    /// Bytes of journal the next recovery would replay.
    pub fn journal_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Append `entry` and make it durable (`fdatasync`) before returning: only then may its
    /// outbox be committed. Returns the bytes written. `live` is the curator that produced the
    /// entry: when a compaction is due and it is still at the entry's cycle, the snapshot is
    /// written from a copy of its state (else the journal is replayed). Reports the failure of
    /// a compaction that ran since the last call.
    pub fn append(&mut self, entry: &JournalEntry, live: &Curator) -> Result<u64> {
        self.poll_compaction()?;
        if self.failed {
            return Err(file_error(
                &self.dir,
                "an earlier journal write failed; restart the curator to recover",
            ));
        }
        if entry.cycle != self.cycle + 1 {
            return Err(CurateError::State(format!(
                "journal entry for cycle {} after cycle {}",
                entry.cycle, self.cycle
            )));
        }
        let framed = frame(&encode_entry(entry)?)?;
        if self.writer.is_none() {
            self.open_segment(entry.cycle)?;
        }
        let (Some(file), Some(segment)) = (self.writer.as_mut(), self.segments.last_mut()) else {
            return Err(CurateError::State("no open journal segment".into()));
        };
        if let Err(e) = file.write_all(&framed).and_then(|()| file.sync_data()) {
            self.failed = true;
            self.writer = None;
            return Err(file_error(&segment.path, e));
        }
        let written = framed.len() as u64;
        segment.bytes += written;
        self.cycle = entry.cycle;
        self.counters.entries += 1;
        self.counters.entry_bytes += written;
        // `end_cycle` hands out the entry and the curator's cycle together: a curator at
        // another cycle holds another state, which must not stand for this one.
        let live = (live.cycle() == entry.cycle).then(|| live.state());
        self.maybe_compact(live, entry)?;
        Ok(written)
    }

    /// A new segment from `first_cycle`, its header written atomically.
    fn open_segment(&mut self, first_cycle: i64) -> Result<()> {
        let path = segment_path(&self.dir, first_cycle);
        let header = to_json(&SegmentHeader {
            first_cycle,
            bars: self.bars.clone(),
            news_windows: self.news.clone(),
        })?;
        let mut bytes = file_header(KIND_JOURNAL);
        bytes.extend(frame(&header)?);
        write_atomic(&path, &[&bytes])?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| file_error(&path, e))?;
        self.segments.push(Stored {
            cycle: first_cycle,
            path,
            bytes: bytes.len() as u64,
        });
        self.writer = Some(file);
        Ok(())
    }

    fn maybe_compact(&mut self, live: Option<&CurateState>, entry: &JournalEntry) -> Result<()> {
        if self.compaction.is_some() {
            return Ok(());
        }
        let snapshot = self.snapshot.as_ref().map_or(0, |s| s.bytes);
        if self.journal_bytes() < self.policy.min_journal_bytes.max(snapshot) {
            return Ok(());
        }
        self.start_compaction_from(live.map(|state| (state, entry)))
    }

    /// Compact everything written so far on a thread, from the files alone: the snapshot and
    /// the journal replayed (what recovery does). The next entry starts a new segment, so the
    /// thread reads only files nobody writes.
    pub fn start_compaction(&mut self) -> Result<()> {
        self.start_compaction_from(None)
    }

    /// As [`Self::start_compaction`]; with the live state at the last cycle and that cycle's
    /// entry, the snapshot is written from a copy of the state instead of a replay of the
    /// journal, which would repeat all the curation work since the last snapshot.
    fn start_compaction_from(&mut self, live: Option<(&CurateState, &JournalEntry)>) -> Result<()> {
        if self.compaction.is_some() || self.cycle <= self.snapshot.as_ref().map_or(0, |s| s.cycle)
        {
            return Ok(());
        }
        let upto = self.cycle;
        // Copied on the caller's thread (the state moves on as soon as it returns); `append`
        // passes it only with the entry it just wrote, the one of `upto`.
        let live =
            live.map(|(state, entry)| (state.clone(), entry.offsets.clone(), entry.outbox.clone()));
        self.counters.live_snapshots += u64::from(live.is_some());
        let snapshot = self.snapshot.as_ref().map(|s| s.path.clone());
        let segments: Vec<PathBuf> = self.segments.iter().map(|s| s.path.clone()).collect();
        let dir = self.dir.clone();
        let fresh = (self.bars.clone(), self.news.clone());
        self.writer = None;
        let handle = std::thread::Builder::new()
            .name("curate-compact".into())
            .spawn(move || match live {
                Some((state, offsets, outbox)) => {
                    store_snapshot(&dir, upto, (&state, upto, &offsets, &outbox))
                }
                None => compact(&dir, snapshot, segments, upto, fresh),
            })
            .map_err(|e| file_error(&self.dir, format!("cannot start compaction: {e}")))?;
        tracing::debug!(upto, "state compaction started");
        self.compaction = Some(Compaction { upto, handle });
        Ok(())
    }

    /// Take the result of a finished compaction, if any.
    fn poll_compaction(&mut self) -> Result<()> {
        if self
            .compaction
            .as_ref()
            .is_some_and(|c| c.handle.is_finished())
        {
            self.finish_compaction()?;
        }
        Ok(())
    }

    /// Wait for a running compaction and take its result (end of a run, tests).
    pub fn finish_compaction(&mut self) -> Result<()> {
        let Some(compaction) = self.compaction.take() else {
            return Ok(());
        };
        let stored = match compaction.handle.join() {
            Ok(result) => result?,
            Err(_) => {
                return Err(file_error(
                    &self.dir,
                    format!("compaction to cycle {} panicked", compaction.upto),
                ))
            }
        };
        self.compacted(stored);
        Ok(())
    }

    /// A snapshot is durable: drop what it supersedes.
    fn compacted(&mut self, stored: Stored) {
        tracing::info!(
            cycle = stored.cycle,
            bytes = stored.bytes,
            "state snapshot written"
        );
        self.counters.snapshots += 1;
        self.counters.snapshot_bytes += stored.bytes;
        let cycle = stored.cycle;
        if let Some(old) = self.snapshot.replace(stored) {
            if old.cycle != cycle {
                remove(&old.path);
            }
        }
        // Segments that began at or before the compacted cycle were closed when it started.
        self.segments.retain(|s| {
            let superseded = s.cycle <= cycle;
            if superseded {
                remove(&s.path);
            }
            !superseded
        });
        sync_dir(&self.dir);
    }

    /// Simulate a crash right after a compaction finished: its snapshot is durable, nothing
    /// it supersedes has been removed.
    #[cfg(test)]
    fn crash_after_compaction(&mut self) {
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.handle.join();
        }
    }

    /// Simulate a crash in the middle of appending `entry`: only `keep` bytes of its frame
    /// reach the file, and it is never synced (nor committed).
    #[cfg(test)]
    fn append_torn(&mut self, entry: &JournalEntry, keep: usize) -> Result<()> {
        self.poll_compaction()?;
        let framed = frame(&encode_entry(entry)?)?;
        if self.writer.is_none() {
            self.open_segment(entry.cycle)?;
        }
        let Some(file) = self.writer.as_mut() else {
            return Err(CurateError::State("no open journal segment".into()));
        };
        file.write_all(&framed[..keep.min(framed.len())])
            .map_err(|e| CurateError::State(e.to_string()))?;
        self.failed = true;
        Ok(())
    }

    /// The upto cycle of the running compaction.
    #[cfg(test)]
    fn compacting_to(&self) -> Option<i64> {
        self.compaction.as_ref().map(|c| c.upto)
    }
}
