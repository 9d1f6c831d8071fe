//! [`Backend`] on sled 0.34: one tree, batches for atomicity, `flush` for durability.
//!
//! sled's own flush is not durable on Linux: it ends with `sync_file_range`, which neither
//! flushes the disk's write cache nor the file's metadata (sled issue #1452), and it never
//! fsyncs the files it writes large items to (`blobs/`, anything over a quarter of a segment,
//! 128 KiB: a big value, or a big batch of log entries). So [`Backend::flush`] here also
//! fsyncs the blobs written since the last flush, their directory, and sled's data file
//! (`fdatasync`, as etcd's WAL does); nothing is acknowledged before that.
//!
//! sled never gives space back on its own (no compaction call; freed pages are reused, the file
//! does not shrink), so [`SledBackend::defragment`] rebuilds the database: it copies every live
//! pair into a fresh sled directory and swaps it in, with every operation paused meanwhile (etcd's
//! defragment also blocks the member). The swap survives a crash at any step (see [`recover`]).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use super::{Backend, Batch, Pair, Result, Scan, StorageError};

pub struct SledBackend {
    /// Operations hold the read side; a defragmentation holds the write side while it swaps.
    db: RwLock<sled::Db>,
    path: PathBuf,
    /// Bytes in use, measured by a background scan (see [`SledBackend::size_in_use`]).
    in_use: Arc<Mutex<InUse>>,
    /// One defragmentation at a time.
    defragmenting: Mutex<()>,
    /// The newest blob (sled names them by log sequence number) already fsynced.
    synced_blob: Mutex<Option<i64>>,
}

/// How long a measured in-use size is served before a new measurement starts.
const IN_USE_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct InUse {
    measured: Option<(Instant, u64)>,
    measuring: bool,
}

/// Where a defragmentation builds the new copy, and where the old one goes during the swap.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Finishes or undoes a defragmentation that a crash interrupted, before opening `path`.
///
/// Order of a swap: build `db.defrag` -> create `db.defrag.done` -> rename `db` to `db.old` ->
/// rename `db.defrag` to `db` -> remove the marker -> remove `db.old`. So: if `db` exists, any
/// leftovers are garbage; if it does not, the marker says whether the new copy is complete (use
/// it) or not (put the old one back).
fn recover(path: &Path) -> std::io::Result<()> {
    let (building, done, old) = (
        sibling(path, ".defrag"),
        sibling(path, ".defrag.done"),
        sibling(path, ".old"),
    );
    if !path.exists() {
        if done.exists() && building.exists() {
            std::fs::rename(&building, path)?;
        } else if old.exists() {
            std::fs::rename(&old, path)?;
        }
    }
    for leftover in [&building, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)?;
        }
    }
    if done.exists() {
        std::fs::remove_file(&done)?;
    }
    Ok(())
}

/// How long opening waits for a just-dropped handle on the same directory to let go of its lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Opens `dir`, waiting while another handle's lock is still held. Dropping a sled handle does
/// not release the directory's lock at once: its IO threads finish pending writes first. Under
/// load a reopen right after a drop (the defragmented copy, a restarted member in tests) failed
/// with `could not acquire lock`.
fn open_db(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match try_open_db(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.map_err(engine("opening the database")),
        }
    }
}

fn try_open_db(dir: &Path) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        // Durability comes from explicit flushes on the Raft paths; the background flusher
        // only bounds how much unflushed state-machine work a crash can make us re-apply.
        .flush_every_ms(Some(500))
        // sled's page cache. Reads that miss it rebuild pages from the OS page cache, which
        // keeps the file's hot part anyway; a smaller cache mostly saves resident memory. 16
        // against 64 MiB, measured: the bench suite ended at 151 against 251 MiB resident, and a
        // k8s-mix over 50,000 1 KiB objects (far more than either cache) ran 2% slower.
        .cache_capacity(16 * 1024 * 1024)
        .open()
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> StorageError {
    move |e| StorageError::Engine {
        action,
        source: sled::Error::Io(e),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// sled's flush made durable (see the module comment): the blobs newer than `synced_blob`, the
/// flush itself, then `fdatasync` of the data file. `synced_blob` moves to the newest blob.
fn durable_flush(db: &sled::Db, dir: &Path, synced_blob: &mut Option<i64>) -> Result<()> {
    sync_new_blobs(dir, synced_blob).map_err(io("fsyncing blobs"))?;
    db.flush().map_err(engine("flushing to disk"))?;
    std::fs::File::open(dir.join("db"))
        .and_then(|f| f.sync_data())
        .map_err(io("fsyncing the data file"))
}

/// Fsyncs the blob files sled wrote after `synced` (sled names them by log sequence number,
/// which only grows), then their directory.
fn sync_new_blobs(dir: &Path, synced: &mut Option<i64>) -> std::io::Result<()> {
    let blobs = dir.join("blobs");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut newest = *synced;
    for entry in entries {
        let entry = entry?;
        let Some(lsn) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if synced.is_some_and(|s| lsn <= s) {
            continue;
        }
        match std::fs::File::open(entry.path()) {
            Ok(f) => f.sync_all()?,
            // Rewritten and removed by sled meanwhile: nothing left to make durable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        newest = newest.max(Some(lsn));
    }
    if newest != *synced {
        std::fs::File::open(&blobs)?.sync_all()?;
        *synced = newest;
    }
    Ok(())
}

/// Copies every pair into `fresh`, in batches.
fn copy_into(
    fresh: &sled::Db,
    pairs: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for item in pairs {
        let (k, v) = item.map_err(engine("reading while defragmenting"))?;
        batch.insert(k, v);
        in_batch += 1;
        if in_batch == 10_000 {
            fresh
                .apply_batch(std::mem::take(&mut batch))
                .map_err(engine("writing while defragmenting"))?;
            in_batch = 0;
        }
    }
    fresh
        .apply_batch(batch)
        .map_err(engine("writing while defragmenting"))
}

/// Collects the database's change events until told to stop, then what is left of them. sled
/// blocks writers when a subscriber's queue is full, so they are drained as they come.
fn record_changes(
    mut changes: sled::Subscriber,
    stop: std::sync::mpsc::Receiver<()>,
) -> Vec<sled::Event> {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    let mut events = Vec::new();
    loop {
        match changes.next_timeout(Duration::from_millis(10)) {
            Ok(event) => events.push(event),
            Err(RecvTimeoutError::Timeout) => {
                if stop.try_recv() != Err(TryRecvError::Empty) {
                    // Writers are paused now: whatever they did is already queued.
                    while let Ok(event) = changes.next_timeout(Duration::from_millis(1)) {
                        events.push(event);
                    }
                    return events;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return events,
        }
    }
}

fn measure_in_use(db: &sled::Db) -> Result<u64> {
    let mut bytes = 0u64;
    for item in db.iter() {
        let (k, v) = item.map_err(engine("measuring size in use"))?;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok(bytes)
}

fn engine(action: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |source| StorageError::Engine { action, source }
}

fn pair((k, v): (sled::IVec, sled::IVec)) -> Pair {
    (Box::from(&k[..]), Box::from(&v[..]))
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<Self> {
        recover(dir).map_err(io("recovering an interrupted defragmentation"))?;
        Ok(Self {
            db: RwLock::new(open_db(dir)?),
            path: dir.to_path_buf(),
            in_use: Arc::default(),
            synced_blob: Mutex::new(None),
            defragmenting: Mutex::new(()),
        })
    }

    fn db(&self) -> RwLockReadGuard<'_, sled::Db> {
        // The guarded handle is replaced in one assignment; a panic cannot leave it half-set.
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the database with only its live pairs, giving freed space back to the file
    /// system. Every other operation waits until it is done.
    pub fn defragment(&self) -> Result<()> {
        let _one = self.defragmenting.lock().unwrap_or_else(|p| p.into_inner());
        let (building, done, old) = (
            sibling(&self.path, ".defrag"),
            sibling(&self.path, ".defrag.done"),
            sibling(&self.path, ".old"),
        );
        recover(&self.path).map_err(io("clearing an earlier defragmentation"))?;
        // Copy while the database keeps serving (a copy of a million keys takes tens of seconds;
        // blocking every operation for that long starved the runtime, so clients' keepalive
        // pings went unanswered and they dropped the connection). Every change made meanwhile
        // is recorded and replayed onto the copy below, with operations paused only for that.
        let source = self.db().clone();
        let (stop, stopped) = std::sync::mpsc::channel();
        let changes = {
            // Registered with operations paused, so no write is half done: each one is either
            // complete before the copy starts or reported to the recorder.
            let _pause = self.db.write().unwrap_or_else(|p| p.into_inner());
            source.watch_prefix(Vec::<u8>::new())
        };
        let recorder = std::thread::Builder::new()
            .name("cairn-defrag-changes".into())
            .spawn(move || record_changes(changes, stopped))
            .map_err(io("starting the defragmentation's change recorder"))?;
        let fresh = open_db(&building)?;
        copy_into(&fresh, source.iter())?;
        let mut current = self.db.write().unwrap_or_else(|p| p.into_inner());
        let _ = stop.send(());
        let changed = recorder.join().map_err(|_| StorageError::Engine {
            action: "recording changes while defragmenting",
            source: sled::Error::Unsupported("the recorder thread panicked".into()),
        })?;
        let mut replay = sled::Batch::default();
        for event in changed {
            match event {
                sled::Event::Insert { key, value } => replay.insert(key, value),
                sled::Event::Remove { key } => replay.remove(key),
            }
        }
        fresh
            .apply_batch(replay)
            .map_err(engine("replaying changes made while defragmenting"))?;
        durable_flush(&fresh, &building, &mut None)?;
        // Dropped here: sled releases its directory before the rename.
        drop(fresh);
        drop(source);
        std::fs::File::create(&done)
            .and_then(|f| f.sync_all())
            .map_err(io("marking the defragmented copy complete"))?;
        std::fs::rename(&self.path, &old)
            .and_then(|()| std::fs::rename(&building, &self.path))
            .and_then(|()| sync_dir(&self.path))
            .map_err(io("swapping in the defragmented copy"))?;
        std::fs::remove_file(&done).map_err(io("removing the defragmentation marker"))?;
        *current = open_db(&self.path)?;
        drop(current);
        self.in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .measured = None;
        // The copy numbers its blobs afresh (and flushed them itself, durably or not).
        *self.synced_blob.lock().unwrap_or_else(|p| p.into_inner()) = None;
        std::fs::remove_dir_all(&old).map_err(io("removing the pre-defragmentation copy"))?;
        Ok(())
    }

    /// Bytes of live keys and values (what a rebuilt database would have to hold at least).
    ///
    /// sled cannot tell this without a scan of everything, which took over 5 s with a million
    /// keys and made `etcdctl endpoint status` time out. So Status never waits for one: it gets
    /// the last measurement (the size on disk before the first), and a stale one starts a new
    /// scan in the background, at most one at a time and one per [`IN_USE_TTL`].
    pub fn size_in_use(&self) -> Result<u64> {
        // Taken before the in-use lock: a defragmentation holds the handle's write side while
        // it resets the in-use state, so the opposite order could deadlock.
        let db = self.db().clone();
        let mut state = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        let stale = state
            .measured
            .is_none_or(|(at, _)| at.elapsed() >= IN_USE_TTL);
        if stale && !state.measuring {
            let db = db.clone();
            let slot = self.in_use.clone();
            let spawned = std::thread::Builder::new()
                .name("cairn-db-in-use".into())
                .spawn(move || {
                    let measured = measure_in_use(&db);
                    let mut state = slot.lock().unwrap_or_else(|p| p.into_inner());
                    state.measuring = false;
                    match measured {
                        Ok(bytes) => state.measured = Some((Instant::now(), bytes)),
                        Err(e) => tracing::warn!(error = %e, "measuring the size in use"),
                    }
                });
            state.measuring = spawned.is_ok();
        }
        match state.measured {
            Some((_, bytes)) => Ok(bytes),
            None => db.size_on_disk().map_err(engine("measuring size")),
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Box<[u8]>>> {
        Ok(self
            .db()
            .get(key)
            .map_err(engine("reading"))?
            .map(|v| Box::from(&v[..])))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db().insert(key, value).map_err(engine("writing"))?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        self.db().remove(key).map_err(engine("deleting"))?;
        Ok(())
    }

    fn write(&self, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db().apply_batch(b).map_err(engine("writing a batch"))
    }

    fn scan(&self, from: Bound<&[u8]>, to: Bound<&[u8]>, reverse: bool) -> Scan {
        let range = (from.map(sled::IVec::from), to.map(sled::IVec::from));
        let iter = self.db().range::<sled::IVec, _>(range);
        let map =
            |r: sled::Result<(sled::IVec, sled::IVec)>| r.map(pair).map_err(engine("scanning"));
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn flush(&self) -> Result<()> {
        let db = self.db();
        let mut synced_blob = self.synced_blob.lock().unwrap_or_else(|p| p.into_inner());
        durable_flush(&db, &self.path, &mut synced_blob)
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.db().size_on_disk().map_err(engine("measuring size"))
    }

    fn size_in_use(&self) -> Result<u64> {
        SledBackend::size_in_use(self)
    }

    fn defragment(&self) -> Result<()> {
        SledBackend::defragment(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_scans_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = SledBackend::open(dir.path()).unwrap();
            let mut batch = Batch::default();
            batch.put(b"a1".to_vec(), b"x".to_vec());
            batch.put(b"a2".to_vec(), b"y".to_vec());
            batch.put(b"b1".to_vec(), b"z".to_vec());
            b.write(batch).unwrap();
            b.flush().unwrap();
            let keys: Vec<_> = crate::storage::scan_prefix(&b, b"a")
                .map(|r| r.unwrap().0.to_vec())
                .collect();
            assert_eq!(keys, vec![b"a1".to_vec(), b"a2".to_vec()]);
            let rev: Vec<_> = b
                .scan(Bound::Unbounded, Bound::Unbounded, true)
                .map(|r| r.unwrap().0.to_vec())
                .collect();
            assert_eq!(rev, vec![b"b1".to_vec(), b"a2".to_vec(), b"a1".to_vec()]);
        }
        let b = SledBackend::open(dir.path()).unwrap();
        assert_eq!(b.get(b"a2").unwrap().as_deref(), Some(&b"y"[..]));
    }

    /// Values over sled's blob threshold live in their own files, which sled never fsyncs: the
    /// flush finds and syncs them (and only new ones the next time), and they read back after
    /// a reopen, also through a defragmentation.
    #[test]
    fn large_values_go_to_blobs_that_flush_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let b = SledBackend::open(&path).unwrap();
        let big = vec![3u8; 300 * 1024];
        b.insert(b"big", &big).unwrap();
        b.flush().unwrap();
        let blobs = std::fs::read_dir(path.join("blobs")).unwrap().count();
        assert!(blobs >= 1, "a 300 KiB value is a blob");
        let first = b.synced_blob.lock().unwrap().expect("a blob was synced");
        b.insert(b"big2", &big).unwrap();
        b.flush().unwrap();
        assert!(b.synced_blob.lock().unwrap().unwrap() > first);
        b.defragment().unwrap();
        b.insert(b"big3", &big).unwrap();
        b.flush().unwrap();
        drop(b);
        let b = SledBackend::open(&path).unwrap();
        for k in [&b"big"[..], b"big2", b"big3"] {
            assert_eq!(b.get(k).unwrap().as_deref(), Some(&big[..]));
        }
    }

    /// The in-use size never waits for a scan: the first answer is the size on disk, and the
    /// background measurement replaces it with the live bytes.
    #[test]
    fn size_in_use_is_measured_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let b = SledBackend::open(dir.path()).unwrap();
        for i in 0..1000u32 {
            b.insert(&i.to_be_bytes(), &[1u8; 100]).unwrap();
        }
        b.flush().unwrap();
        let first = b.size_in_use().unwrap();
        assert_eq!(first, b.size_on_disk().unwrap());
        let live = 1000 * (4 + 100);
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.size_in_use().unwrap() != live {
            assert!(Instant::now() < deadline, "no measurement after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes made while the copy runs are not lost: they are replayed onto it before the swap.
    #[test]
    fn defragment_keeps_writes_made_during_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let b = Arc::new(SledBackend::open(&path).unwrap());
        for i in 0..20_000u32 {
            b.insert(&i.to_be_bytes(), &[0u8; 64]).unwrap();
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    b.insert(&(100_000 + n).to_be_bytes(), b"new").unwrap();
                    b.remove(&(n % 20_000).to_be_bytes()).unwrap();
                    n += 1;
                }
                n
            })
        };
        b.defragment().unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let written = writer.join().unwrap();
        assert!(written > 0, "the writer ran during the defragmentation");
        for n in 0..written {
            assert_eq!(
                b.get(&(100_000 + n).to_be_bytes()).unwrap().as_deref(),
                Some(&b"new"[..]),
                "write {n}"
            );
        }
        for i in 0..20_000u32 {
            let gone = i < written.min(20_000);
            assert_eq!(b.get(&i.to_be_bytes()).unwrap().is_none(), gone, "key {i}");
        }
    }

    /// Defragmenting keeps every live pair, gives space back, and the result reopens.
    #[test]
    fn defragment_keeps_data_and_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let b = SledBackend::open(&path).unwrap();
        let value = vec![7u8; 4096];
        for round in 0..4u32 {
            for i in 0..500u32 {
                b.insert(
                    &i.to_be_bytes(),
                    &[&value[..], &round.to_be_bytes()].concat(),
                )
                .unwrap();
            }
            b.flush().unwrap();
        }
        for i in 0..450u32 {
            b.remove(&i.to_be_bytes()).unwrap();
        }
        b.flush().unwrap();
        let before = b.size_on_disk().unwrap();
        b.defragment().unwrap();
        let after = b.size_on_disk().unwrap();
        assert!(after < before, "size before {before}, after {after}");
        assert_eq!(b.get(&0u32.to_be_bytes()).unwrap(), None);
        let last = b.get(&499u32.to_be_bytes()).unwrap().unwrap();
        assert_eq!(&last[4096..], &3u32.to_be_bytes());
        b.insert(b"new", b"write after the swap").unwrap();
        b.flush().unwrap();
        drop(b);
        let b = SledBackend::open(&path).unwrap();
        assert_eq!(
            b.scan(Bound::Unbounded, Bound::Unbounded, false).count(),
            51
        );
        assert!(!sibling(&path, ".old").exists());
        assert!(!sibling(&path, ".defrag").exists());
    }

    /// A swap interrupted after the new copy was marked complete finishes on the next open;
    /// one interrupted before that keeps the old database.
    #[test]
    fn interrupted_defragmentation_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let b = SledBackend::open(&path).unwrap();
            b.insert(b"k", b"old").unwrap();
            b.flush().unwrap();
        }
        {
            let fresh = open_db(&sibling(&path, ".defrag")).unwrap();
            fresh.insert(b"k", b"new").unwrap();
            fresh.flush().unwrap();
        }
        // Crash before the marker: the copy is discarded.
        let b = SledBackend::open(&path).unwrap();
        assert_eq!(b.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
        drop(b);
        {
            let fresh = open_db(&sibling(&path, ".defrag")).unwrap();
            fresh.insert(b"k", b"new").unwrap();
            fresh.flush().unwrap();
        }
        std::fs::File::create(sibling(&path, ".defrag.done")).unwrap();
        std::fs::rename(&path, sibling(&path, ".old")).unwrap();
        // Crash between the two renames: the complete copy is used.
        let b = SledBackend::open(&path).unwrap();
        assert_eq!(b.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
        assert!(!sibling(&path, ".old").exists());
    }
}
