//! The Raft log's write-ahead log (`member/wal`): entries, votes, truncations, purges and the
//! commit index as records in preallocated segment files, written and `fdatasync`ed by one
//! flush thread that groups whatever is queued into one write and one flush.
//!
//! - `record.rs`: the record format (length, chained CRC, kind, body) and its decoding.
//! - `segment.rs`: segment files (`<seq>.wal`, created full size) and reading one back.
//! - `writer.rs`: the flush thread.
//!
//! The log's index lives in memory: where each entry is (segment, offset), plus the payloads of
//! the most recent entries (what openraft reads back right after appending, to apply and to
//! replicate) up to a byte budget. Older entries are read from their segment. A segment starts
//! with a header record holding the log's state then (vote, commit index, purge point, last
//! entry), so older segments are deleted once every entry in them is purged.
//!
//! Recovery reads the segments in order. Only the last one may end in a torn write (the flush
//! thread makes a segment durable before it starts the next); its tail after the last valid
//! record is zeroed, so nothing left behind by the torn write can ever be read as a record.

mod record;
mod segment;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use bytes::Bytes;

pub use record::{LogPos, VoteRec};
pub use writer::Done;

use record::{Record, SegmentHeader};
use writer::{Job, Shared, Writer};

/// etcd's segment size.
pub const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// Payloads of recent entries kept in memory.
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub segment_size: u64,
    pub cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            segment_size: SEGMENT_SIZE,
            cache_bytes: CACHE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("WAL segment {path} is damaged at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("WAL: {0}")]
    Invalid(String),
    #[error("the WAL failed earlier and accepts no more writes")]
    Failed,
}

impl From<WalError> for io::Error {
    fn from(e: WalError) -> Self {
        let message = e.to_string();
        match e {
            WalError::Io { source, .. } => io::Error::new(source.kind(), message),
            _ => io::Error::other(message),
        }
    }
}

/// The log's state as openraft asks for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogState {
    pub vote: Option<VoteRec>,
    pub committed: Option<LogPos>,
    pub purged: Option<LogPos>,
    /// The last entry, or the purge point when no entry is kept.
    pub last: Option<LogPos>,
}

/// Where one entry is, and its payload while it is cached.
struct Loc {
    pos: LogPos,
    seg: u64,
    /// Offset of the payload in the segment, and its length.
    off: u64,
    len: u32,
    /// The log's position once this entry's record is written.
    lsn_end: u64,
    cached: Option<Bytes>,
}

struct Segment {
    path: PathBuf,
    read: Option<Arc<File>>,
    /// The highest entry index written to it, if any.
    last_index: Option<u64>,
}

struct State {
    vote: Option<VoteRec>,
    committed: Option<LogPos>,
    purged: Option<LogPos>,
    /// Index of `entries[0]`.
    first: u64,
    entries: VecDeque<Loc>,
    /// The oldest entry whose payload is still cached.
    cache_front: u64,
    cache_bytes: usize,
    segments: BTreeMap<u64, Segment>,
    /// Where the next record goes: segment, offset in it, the CRC it chains to, and where the
    /// segment's header ends (a segment holding only its header never needs a successor).
    seq: u64,
    off: u64,
    crc: u32,
    header_end: u64,
    /// Bytes ever queued (the log's position); the flush thread reports how far it wrote.
    lsn: u64,
    /// Records that need not be durable on their own (the commit index): they go to the flush
    /// thread with the next job that must be, rather than waking it for themselves.
    deferred: Vec<Job>,
}

pub struct Wal {
    dir: PathBuf,
    config: Config,
    state: Mutex<State>,
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How strictly a record must follow the log: as appended, or as replayed from segments whose
/// predecessors were deleted (see `start_from_header`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Recovery,
}

impl State {
    fn new() -> Self {
        Self {
            vote: None,
            committed: None,
            purged: None,
            first: 0,
            entries: VecDeque::new(),
            cache_front: 0,
            cache_bytes: 0,
            segments: BTreeMap::new(),
            seq: 0,
            off: 0,
            crc: record::chain_seed(0),
            header_end: 0,
            lsn: 0,
            deferred: Vec::new(),
        }
    }

    fn next_index(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn last(&self) -> Option<LogPos> {
        self.entries.back().map(|l| l.pos).or(self.purged)
    }

    fn log_state(&self) -> LogState {
        LogState {
            vote: self.vote,
            committed: self.committed,
            purged: self.purged,
            last: self.last(),
        }
    }

    fn header(&self, seq: u64) -> SegmentHeader {
        SegmentHeader {
            seq,
            base: self.last(),
            vote: self.vote,
            committed: self.committed,
            purged: self.purged,
        }
    }

    fn drop_cached(&mut self, loc: Loc) {
        if let Some(c) = loc.cached {
            self.cache_bytes -= c.len();
        }
    }

    /// Applies a record other than an entry to the in-memory log, checking that it follows
    /// from what is there.
    fn apply(&mut self, rec: &Record, mode: Mode) -> Result<(), String> {
        match rec {
            Record::Header(_) | Record::Entry(..) => {}
            Record::Vote(v) => self.vote = Some(*v),
            Record::Commit(c) => self.committed = Some(*c),
            Record::Truncate(index) if *index < self.first => {
                if mode == Mode::Live {
                    return Err(format!(
                        "truncating at {index}, before the first kept entry {}",
                        self.first
                    ));
                }
                // Replaying from a later segment: the entries it truncates were in deleted
                // segments; all of them, and what follows here, end up purged.
                while let Some(loc) = self.entries.pop_back() {
                    self.drop_cached(loc);
                }
                self.first = *index;
                self.cache_front = *index;
            }
            Record::Truncate(index) => {
                while self.next_index() > *index {
                    if let Some(loc) = self.entries.pop_back() {
                        self.drop_cached(loc);
                    }
                }
                self.cache_front = self.cache_front.min(*index);
            }
            // Purge points only move forward; an older one replayed after a header that is
            // already past it changes nothing.
            Record::Purge(p) if self.purged.is_some_and(|cur| cur.index >= p.index) => {}
            Record::Purge(p) => {
                while self.first <= p.index {
                    match self.entries.pop_front() {
                        Some(loc) => {
                            self.drop_cached(loc);
                            self.first += 1;
                        }
                        None => self.first = p.index + 1,
                    }
                }
                self.cache_front = self.cache_front.max(self.first);
                self.purged = Some(*p);
            }
        }
        Ok(())
    }

    /// Checks that `entries` continue the log.
    fn check_follows(&self, entries: &[(LogPos, Vec<u8>)]) -> Result<(), String> {
        for (k, (pos, _)) in entries.iter().enumerate() {
            let want = self.next_index() + k as u64;
            if pos.index != want {
                return Err(format!(
                    "entry {} does not follow the log, whose next index is {want}",
                    pos.index
                ));
            }
        }
        Ok(())
    }

    /// Drops cached payloads, oldest first, while over budget; only ones already written.
    fn evict(&mut self, budget: usize, written: u64) {
        while self.cache_bytes > budget && self.cache_front < self.next_index() {
            let i = (self.cache_front - self.first) as usize;
            let loc = &mut self.entries[i];
            if loc.lsn_end > written {
                break;
            }
            if let Some(c) = loc.cached.take() {
                self.cache_bytes -= c.len();
            }
            self.cache_front += 1;
        }
    }

    /// Segments before the current one whose entries are all purged, oldest first.
    fn purgeable_segments(&self) -> Vec<u64> {
        let purged = self.purged.map(|p| p.index);
        self.segments
            .iter()
            .take_while(|(seq, s)| {
                **seq < self.seq && s.last_index.is_none_or(|l| Some(l) <= purged)
            })
            .map(|(seq, _)| *seq)
            .collect()
    }

    fn add_segment(&mut self, dir: &Path, seq: u64, last_index: Option<u64>) {
        let seg = Segment {
            path: segment::path(dir, seq),
            read: None,
            last_index,
        };
        self.segments.insert(seq, seg);
    }
}

impl Wal {
    /// Opens the WAL in `dir` (creating it), recovering the log from its segments.
    pub fn open(dir: &Path, config: Config) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut state = State::new();
        let seqs = drop_unstarted_segment(dir, segment::list(dir).map_err(io_at(dir))?)?;
        let mut file = None;
        for (n, &seq) in seqs.iter().enumerate() {
            if n > 0 && seq != seqs[n - 1] + 1 {
                return Err(WalError::Invalid(format!(
                    "segment {} is missing from {}",
                    seqs[n - 1] + 1,
                    dir.display()
                )));
            }
            let is_last = n + 1 == seqs.len();
            let f = recover_segment(&mut state, dir, seq, n == 0, is_last)?;
            if is_last {
                file = Some(f);
            }
        }
        if state.first != state.purged.map_or(0, |p| p.index + 1) {
            return Err(WalError::Invalid(format!(
                "entries before {} are missing from {} (purged up to {:?})",
                state.first,
                dir.display(),
                state.purged.map(|p| p.index)
            )));
        }
        state.cache_front = state.next_index();
        let file = match file {
            Some(f) => f,
            None => start_first_segment(&mut state, dir, config.segment_size)?,
        };
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment_size: config.segment_size,
            file,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("cairn-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_at(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            state: Mutex::new(state),
            shared,
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole before anything can fail.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log_state(&self) -> LogState {
        self.lock().log_state()
    }

    /// The first index of the newest entries whose payloads add up to at most `max_bytes` (the
    /// next index if even the last entry is larger).
    pub fn tail_start(&self, max_bytes: u64) -> u64 {
        let st = self.lock();
        let mut total = 0u64;
        let mut start = st.next_index();
        for loc in st.entries.iter().rev() {
            total += u64::from(loc.len);
            if total > max_bytes {
                break;
            }
            start = loc.pos.index;
        }
        start
    }

    /// Bytes of records queued since the WAL was opened.
    pub fn bytes_queued(&self) -> u64 {
        self.lock().lsn
    }

    /// Appends entries (id and payload each); `done` hears once they are on disk. They are
    /// readable at once.
    pub fn append(
        &self,
        entries: Vec<(LogPos, Vec<u8>)>,
        done: Option<Done>,
    ) -> Result<(), WalError> {
        let size: u64 = entries
            .iter()
            .map(|(_, p)| (record::ENTRY_PAYLOAD_OFFSET + p.len()) as u64)
            .sum();
        let mut st = self.lock();
        st.check_follows(&entries).map_err(WalError::Invalid)?;
        let mut out = Vec::with_capacity(size as usize + 256);
        let new_segment = self.start_segment_if_full(&mut st, size, &mut out);
        // (id, where its payload starts in `out`, payload length)
        let mut placed = Vec::with_capacity(entries.len());
        for (pos, payload) in entries {
            let at = out.len() + record::ENTRY_PAYLOAD_OFFSET;
            let len = payload.len();
            st.crc = record::encode(&Record::Entry(pos, payload), st.crc, &mut out);
            placed.push((pos, at, len));
        }
        let data = Bytes::from(out);
        let (seq, off, lsn) = (st.seq, st.off, st.lsn);
        for (pos, at, len) in placed {
            st.entries.push_back(Loc {
                pos,
                seg: seq,
                off: off + at as u64,
                len: len as u32,
                lsn_end: lsn + (at + len) as u64,
                cached: Some(data.slice(at..at + len)),
            });
            st.cache_bytes += len;
            if let Some(seg) = st.segments.get_mut(&seq) {
                seg.last_index = Some(pos.index);
            }
        }
        self.submit(&mut st, new_segment, data, true, done, Vec::new())?;
        let written = self.shared.written.load(Ordering::Acquire);
        st.evict(self.config.cache_bytes, written);
        Ok(())
    }

    pub fn save_vote(&self, vote: VoteRec, done: Option<Done>) -> Result<(), WalError> {
        self.write_record(Record::Vote(vote), true, done)
    }

    /// Records the commit index; written and made durable with the next record that must be
    /// (losing it only means openraft learns it again).
    pub fn commit(&self, pos: LogPos) -> Result<(), WalError> {
        self.write_record(Record::Commit(pos), false, None)
    }

    /// Removes the entries at `index` and after.
    pub fn truncate(&self, index: u64, done: Option<Done>) -> Result<(), WalError> {
        self.write_record(Record::Truncate(index), true, done)
    }

    /// Removes the entries up to `pos`, which becomes the purge point; segments left with only
    /// purged entries are deleted once the purge is durable.
    pub fn purge(&self, pos: LogPos, done: Option<Done>) -> Result<(), WalError> {
        self.write_record(Record::Purge(pos), true, done)
    }

    /// `done` hears once everything queued before is on disk.
    pub fn flush(&self, done: Done) -> Result<(), WalError> {
        let mut st = self.lock();
        self.submit(&mut st, None, Bytes::new(), true, Some(done), Vec::new())
    }

    /// Blocks until everything queued before is on disk: for start-up, not for async code.
    pub fn flush_blocking(&self) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        self.flush(Box::new(move |res| {
            let _ = tx.send(res);
        }))?;
        rx.recv()
            .map_err(|_| io::Error::other("the WAL's flush thread stopped"))?
    }

    fn write_record(&self, rec: Record, sync: bool, done: Option<Done>) -> Result<(), WalError> {
        let mut st = self.lock();
        st.apply(&rec, Mode::Live).map_err(WalError::Invalid)?;
        let mut out = Vec::new();
        let new_segment = self.start_segment_if_full(&mut st, 64, &mut out);
        st.crc = record::encode(&rec, st.crc, &mut out);
        let mut delete = Vec::new();
        if let Record::Purge(_) = rec {
            delete = st.purgeable_segments();
            for seq in &delete {
                st.segments.remove(seq);
            }
        }
        self.submit(&mut st, new_segment, Bytes::from(out), sync, done, delete)
    }

    /// Starts the next segment when `size` more bytes do not fit in the current one, writing
    /// its header into `out`. A record larger than a segment goes alone into a fresh one,
    /// which grows past its preallocated size.
    fn start_segment_if_full(&self, st: &mut State, size: u64, out: &mut Vec<u8>) -> Option<u64> {
        if st.off + size <= self.config.segment_size || st.off <= st.header_end {
            return None;
        }
        let seq = st.seq + 1;
        let header = Record::Header(st.header(seq));
        st.crc = record::encode(&header, record::chain_seed(seq), out);
        st.seq = seq;
        st.off = 0;
        st.header_end = out.len() as u64;
        st.add_segment(&self.dir, seq, None);
        Some(seq)
    }

    fn submit(
        &self,
        st: &mut State,
        new_segment: Option<u64>,
        data: Bytes,
        sync: bool,
        done: Option<Done>,
        delete: Vec<u64>,
    ) -> Result<(), WalError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(WalError::Failed);
        }
        st.off += data.len() as u64;
        st.lsn += data.len() as u64;
        let job = Job {
            new_segment,
            data,
            lsn_end: st.lsn,
            sync,
            done,
            delete,
        };
        if !sync && job.done.is_none() {
            st.deferred.push(job);
            return Ok(());
        }
        // Sent under the state lock: jobs reach the flush thread in the order their
        // positions were given out.
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let tx = jobs.as_ref().ok_or(WalError::Failed)?;
        for deferred in st.deferred.drain(..).chain(std::iter::once(job)) {
            tx.send(deferred).map_err(|_| WalError::Failed)?;
        }
        Ok(())
    }

    /// Entries with index in `[from, to)` that the log holds, in order.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(LogPos, Bytes)>, WalError> {
        enum Src {
            Cached(Bytes),
            File(Arc<File>, PathBuf, u64, u32),
        }
        let mut wanted = Vec::new();
        {
            let mut st = self.lock();
            let from = from.max(st.first);
            let to = to.min(st.next_index());
            for index in from..to {
                let l = &st.entries[(index - st.first) as usize];
                let (pos, seg, off, len) = (l.pos, l.seg, l.off, l.len);
                if let Some(b) = &l.cached {
                    wanted.push((pos, Src::Cached(b.clone())));
                    continue;
                }
                let s = st.segments.get_mut(&seg).ok_or_else(|| {
                    WalError::Invalid(format!("entry {index} is in a deleted segment"))
                })?;
                let file = match &s.read {
                    Some(f) => f.clone(),
                    None => {
                        let f = Arc::new(File::open(&s.path).map_err(io_at(&s.path))?);
                        s.read = Some(f.clone());
                        f
                    }
                };
                wanted.push((pos, Src::File(file, s.path.clone(), off, len)));
            }
        }
        // Read outside the lock: appends and other readers go on meanwhile.
        wanted
            .into_iter()
            .map(|(pos, src)| match src {
                Src::Cached(b) => Ok((pos, b)),
                Src::File(f, path, off, len) => {
                    let mut buf = vec![0u8; len as usize];
                    f.read_exact_at(&mut buf, off).map_err(io_at(&path))?;
                    Ok((pos, Bytes::from(buf)))
                }
            })
            .collect()
    }
}

impl Drop for Wal {
    /// Lets the flush thread finish what is queued, so the directory can be opened again at
    /// once (tests, restarts inside one process).
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn open_rw(path: &Path) -> Result<File, WalError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_at(path))
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}

/// A last segment without a valid header was being started when the member stopped (the
/// header goes out with the first records written to it): nothing in it was ever reported
/// durable, so it goes. Returns the segments left.
fn drop_unstarted_segment(dir: &Path, mut seqs: Vec<u64>) -> Result<Vec<u64>, WalError> {
    let Some(&seq) = seqs.last() else {
        return Ok(seqs);
    };
    let path = segment::path(dir, seq);
    let mut f = open_rw(&path)?;
    // Only its first record matters here; `recover_segment` reads the rest.
    let mut records = segment::Records::new(&mut f, record::chain_seed(seq));
    let first = records.next().transpose().map_err(io_at(&path))?;
    if matches!(&first, Some((0, Record::Header(h))) if h.seq == seq) {
        return Ok(seqs);
    }
    let zeros = first.is_none() && records.end() == Some(&segment::End::Clean);
    if seqs.len() == 1 && !zeros {
        // The only segment, with a damaged start: refuse, rather than start from an empty log.
        return Err(corrupt(&path, 0, "no valid segment header"));
    }
    tracing::warn!(path = %path.display(), "removing a WAL segment that was never written to");
    std::fs::remove_file(&path).map_err(io_at(&path))?;
    segment::sync_dir(dir).map_err(io_at(dir))?;
    seqs.pop();
    Ok(seqs)
}

/// Replays segment `seq` into `st`; the last one is made ready for appending (its torn tail,
/// if any, zeroed) and returned positioned at its end.
fn recover_segment(
    st: &mut State,
    dir: &Path,
    seq: u64,
    is_first: bool,
    is_last: bool,
) -> Result<File, WalError> {
    let path = segment::path(dir, seq);
    let mut f = open_rw(&path)?;
    let mut last_index = None;
    let mut header_end = None;
    let mut records = segment::Records::new(&mut f, record::chain_seed(seq));
    while let Some(item) = records.next() {
        let (off, rec) = item.map_err(io_at(&path))?;
        match (header_end, rec) {
            (None, Record::Header(h)) if h.seq == seq => {
                if is_first {
                    start_from_header(st, &h);
                }
                header_end = Some(records.offset());
            }
            (None, _) => return Err(corrupt(&path, 0, "no valid segment header")),
            (Some(_), Record::Header(_)) => return Err(corrupt(&path, off, "a second header")),
            (Some(_), Record::Entry(pos, payload)) => {
                if pos.index != st.next_index() {
                    let reason = format!(
                        "entry {} does not follow the log, whose next index is {}",
                        pos.index,
                        st.next_index()
                    );
                    return Err(corrupt(&path, off, &reason));
                }
                st.entries.push_back(Loc {
                    pos,
                    seg: seq,
                    off: off + record::ENTRY_PAYLOAD_OFFSET as u64,
                    len: payload.len() as u32,
                    lsn_end: 0,
                    cached: None,
                });
                last_index = Some(pos.index);
            }
            (Some(_), rec) => st
                .apply(&rec, Mode::Recovery)
                .map_err(|reason| corrupt(&path, off, &reason))?,
        }
    }
    let (end, crc) = (records.offset(), records.crc());
    if let Some(segment::End::Invalid(e)) = records.end() {
        if !is_last {
            return Err(corrupt(&path, end, &e.to_string()));
        }
        tracing::warn!(
            path = %path.display(), offset = end, reason = %e,
            "the WAL ends in a torn write (the member stopped during a flush); dropping it"
        );
    }
    st.add_segment(dir, seq, last_index);
    if is_last {
        // Whatever a torn write left after the valid records is zeroed: appends go there next.
        let dirty_end = segment::last_nonzero_end(&mut f, end).map_err(io_at(&path))?;
        if dirty_end > end {
            segment::zero(&f, end, dirty_end).map_err(io_at(&path))?;
        }
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(end)).map_err(io_at(&path))?;
        st.seq = seq;
        st.off = end;
        st.crc = crc;
        st.header_end = header_end.unwrap_or(0);
    }
    Ok(f)
}

/// A new WAL's first segment, its header written and durable before anything else.
fn start_first_segment(st: &mut State, dir: &Path, size: u64) -> Result<File, WalError> {
    let mut f = segment::create(dir, 0, size).map_err(io_at(dir))?;
    let mut buf = Vec::new();
    st.crc = record::encode(
        &Record::Header(st.header(0)),
        record::chain_seed(0),
        &mut buf,
    );
    f.write_all_at(&buf, 0).map_err(io_at(dir))?;
    f.sync_data().map_err(io_at(dir))?;
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(buf.len() as u64))
        .map_err(io_at(dir))?;
    st.seq = 0;
    st.off = buf.len() as u64;
    st.header_end = st.off;
    st.add_segment(dir, 0, None);
    Ok(f)
}

/// The oldest remaining segment's header is where the log starts. Segments before it were
/// deleted because every entry in them was purged; so entries continue after the header's
/// `base` (the last entry when the segment was started), and a purge record later in the log
/// covers everything before it.
fn start_from_header(st: &mut State, h: &SegmentHeader) {
    st.vote = h.vote;
    st.committed = h.committed;
    st.purged = h.purged;
    st.first = h.base.or(h.purged).map_or(0, |p| p.index + 1);
}

#[cfg(test)]
mod tests;
