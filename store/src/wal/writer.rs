//! The WAL's flush thread: writes what callers queued, in order, and `fdatasync`s once for
//! everything that arrived together (group commit), then tells each caller.
//!
//! A failed write or flush poisons the WAL for good: after a failed `fdatasync` the kernel may
//! have dropped the dirty pages, so retrying could report data durable that is not (the
//! PostgreSQL "fsyncgate" lesson). Every later job fails too, and the member stops.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::segment;

/// Told once the job's bytes are on disk (or that they never will be).
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// What a caller hands the flush thread: bytes to write where the segment's log ends.
pub struct Job {
    /// Start segment `seq` (created empty) and write there, from its beginning.
    pub new_segment: Option<u64>,
    pub data: Bytes,
    /// The log's position (bytes ever queued) once this job is written.
    pub lsn_end: u64,
    /// Whether the caller needs the bytes durable (entries, votes), or only written
    /// eventually (the commit index).
    pub sync: bool,
    pub done: Option<Done>,
    /// Segments to delete once this job is durable (wholly purged ones).
    pub delete: Vec<u64>,
}

/// What the callers and the flush thread share.
pub struct Shared {
    /// Bytes of the log written to the files (readable with `pread`) so far.
    pub written: AtomicU64,
    pub failed: AtomicBool,
}

pub struct Writer {
    pub dir: PathBuf,
    pub segment_size: u64,
    /// The segment being written, positioned where its log ends.
    pub file: File,
    pub shared: Arc<Shared>,
}

impl Writer {
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while let Ok(more) = jobs.try_recv() {
                group.push(more);
            }
            let outcome = if self.shared.failed.load(Ordering::Acquire) {
                Err(io::Error::other(
                    "the WAL failed earlier; refusing to write",
                ))
            } else {
                self.write_group(&group)
            };
            let outcome = match outcome {
                Ok(()) => {
                    if let Some(last) = group.last() {
                        self.shared.written.store(last.lsn_end, Ordering::Release);
                    }
                    self.delete_purged(&group);
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "writing the WAL failed; it accepts no more writes");
                    self.shared.failed.store(true, Ordering::Release);
                    Err(e)
                }
            };
            for job in group {
                if let Some(done) = job.done {
                    done(match &outcome {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        }
    }

    fn write_group(&mut self, group: &[Job]) -> io::Result<()> {
        let mut pending: Vec<&[u8]> = Vec::new();
        let mut created = false;
        for job in group {
            if let Some(seq) = job.new_segment {
                // Everything before the new segment is durable first: recovery reads segments
                // in order, and only the last one may end in a torn write.
                self.write_out(&mut pending)?;
                self.sync()?;
                self.file = segment::create(&self.dir, seq, self.segment_size)?;
                created = true;
            }
            pending.push(&job.data);
        }
        self.write_out(&mut pending)?;
        if created || group.iter().any(|j| j.sync) {
            self.sync()?;
        }
        Ok(())
    }

    fn write_out(&mut self, pending: &mut Vec<&[u8]>) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = pending
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| IoSlice::new(b))
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = self.file.write_vectored(slices)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        pending.clear();
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.file.sync_data()?;
        crate::metrics::observe_wal_fsync(started.elapsed());
        Ok(())
    }

    /// Removes segments whose entries are all purged. Failing to is only wasted space: they are
    /// read again at the next start and their entries dropped by the purge record.
    fn delete_purged(&self, group: &[Job]) {
        let mut removed = false;
        for seq in group.iter().flat_map(|j| &j.delete) {
            match std::fs::remove_file(segment::path(&self.dir, *seq)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, seq, "removing a purged WAL segment"),
            }
        }
        if removed {
            if let Err(e) = segment::sync_dir(&self.dir) {
                tracing::warn!(error = %e, "syncing the WAL directory");
            }
        }
    }
}
