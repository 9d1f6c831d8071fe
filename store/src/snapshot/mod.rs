//! Backups: cairn's snapshot file, what the Snapshot RPC streams, and the offline tools that read
//! it (`cairn snapshot status`, `cairn snapshot restore`, see [`restore`]).
//!
//! The file format (cairn's own; etcd's is a bbolt file, which cairn does not have):
//!
//! ```text
//! MAGIC ("CAIRN-SNAPSHOT-1\n")
//! u32 BE header length, header (JSON: revision, compact revision, raft index/term, ids, version)
//! (u32 BE key length, key, u32 BE value length, value)*   the state-machine keyspaces, in order
//! u32 BE 0xFFFFFFFF                                       end of pairs
//! zero bytes up to a multiple of 512                      (see below)
//! 32 bytes: SHA-256 of everything before it
//! ```
//!
//! The padding is for etcd's clients: `etcdctl snapshot save` only accepts a stream whose length
//! is 32 more than a multiple of 512 (a bbolt file is page-aligned, so that is how it tells that
//! the digest is there).
//!
//! Everything before the digest is what the Snapshot RPC streams as `blob`s; the digest is its
//! last message, exactly as etcd sends it, so a client that appends every blob to a file (etcdctl
//! and `cairn snapshot save` do) writes this file, and the same integrity check applies.

pub mod restore;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::raft::state_machine::StateMachine;

pub const MAGIC: &[u8] = b"CAIRN-SNAPSHOT-1\n";
/// Length of the SHA-256 trailer.
pub const DIGEST_LEN: usize = 32;
const END: u32 = u32::MAX;
/// The body is padded to a multiple of this (see the module docs).
pub const ALIGN: u64 = 512;
/// A header longer than this is not one cairn wrote.
const MAX_HEADER: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a cairn snapshot file")]
    NotASnapshot,
    #[error("bad snapshot header: {0}")]
    BadHeader(String),
    #[error("snapshot file is truncated")]
    Truncated,
    /// etcdutl's wording for the same failure.
    #[error("expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("reading the state machine: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// What a snapshot says about the state it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The MVCC revision of the data.
    pub revision: i64,
    pub compact_revision: i64,
    /// The Raft log position the data reflects on the member that took it.
    pub raft_index: u64,
    pub raft_term: u64,
    pub cluster_id: u64,
    pub member_id: u64,
    /// The etcd API version of the server that wrote it (the Snapshot RPC's `version`).
    pub version: String,
}

/// Writes the snapshot body, hashing as it goes.
pub struct Writer<W: Write> {
    out: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut w = Self {
            out,
            sha: Sha256::new(),
            len: 0,
        };
        let raw = serde_json::to_vec(header).map_err(io::Error::other)?;
        w.put(MAGIC)?;
        w.put(&(raw.len() as u32).to_be_bytes())?;
        w.put(&raw)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let len = |b: &[u8]| {
            u32::try_from(b.len())
                .ok()
                .filter(|l| *l != END)
                .ok_or_else(|| io::Error::other("record too large for a snapshot"))
        };
        self.put(&len(key)?.to_be_bytes())?;
        self.put(key)?;
        self.put(&len(value)?.to_be_bytes())?;
        self.put(value)
    }

    /// Ends the body; returns the writer, the body's SHA-256 and the body's length. The digest is
    /// not written: the RPC sends it as its own message, a file gets it from [`Writer::finish_file`].
    pub fn finish(mut self) -> io::Result<(W, [u8; DIGEST_LEN], u64)> {
        self.put(&END.to_be_bytes())?;
        let pad = (ALIGN - self.len % ALIGN) % ALIGN;
        self.put(&vec![0u8; pad as usize])?;
        self.out.flush()?;
        Ok((self.out, self.sha.finalize().into(), self.len))
    }

    /// Ends the body and appends the digest: a complete snapshot file.
    pub fn finish_file(self) -> io::Result<W> {
        let (mut out, digest, _) = self.finish()?;
        out.write_all(&digest)?;
        out.flush()?;
        Ok(out)
    }
}

/// Writes the whole state machine as of one applied state into `out` as a snapshot body (writes
/// go on meanwhile; see `StateScan`). Returns the header, the body's digest and length.
pub fn write_state_machine<W: Write>(
    sm: &StateMachine,
    mut header: Header,
    out: W,
) -> Result<(W, Header, [u8; DIGEST_LEN], u64), SnapshotError> {
    let scan = sm.scan_state()?;
    let state = &scan.state;
    header.revision = state.revision;
    header.compact_revision = state.compacted;
    if let Some(id) = &state.last_applied {
        header.raft_index = id.index;
        header.raft_term = id.leader_id.term;
    }
    let mut w = Writer::new(out, &header)?;
    for item in scan {
        let (k, v) = item?;
        w.pair(&k, &v)?;
    }
    let (out, digest, len) = w.finish()?;
    Ok((out, header, digest, len))
}

/// A snapshot file opened for reading, its digest already verified (unless skipped).
pub struct SnapshotFile {
    pub header: Header,
    reader: BufReader<File>,
    /// Where the pairs start.
    body_start: u64,
    /// Total file size, digest included.
    pub size: u64,
}

fn read_u32(r: &mut impl Read) -> Result<u32, SnapshotError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(truncated)?;
    Ok(u32::from_be_bytes(b))
}

fn truncated(e: io::Error) -> SnapshotError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SnapshotError::Truncated
    } else {
        SnapshotError::Io(e)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SnapshotFile {
    /// Opens `path`, checking the SHA-256 trailer first unless `skip_hash_check`.
    pub fn open(path: &Path, skip_hash_check: bool) -> Result<Self, SnapshotError> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        if size < (MAGIC.len() + 4 + 4 + DIGEST_LEN) as u64 {
            return Err(SnapshotError::NotASnapshot);
        }
        if !skip_hash_check {
            verify_digest(&mut file, size)?;
        }
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::new(file);
        let mut magic = vec![0u8; MAGIC.len()];
        reader.read_exact(&mut magic).map_err(truncated)?;
        if magic != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let len = read_u32(&mut reader)?;
        if len > MAX_HEADER {
            return Err(SnapshotError::BadHeader(format!("{len} bytes long")));
        }
        let mut raw = vec![0u8; len as usize];
        reader.read_exact(&mut raw).map_err(truncated)?;
        let header: Header =
            serde_json::from_slice(&raw).map_err(|e| SnapshotError::BadHeader(e.to_string()))?;
        Ok(Self {
            header,
            reader,
            body_start: (MAGIC.len() + 4) as u64 + u64::from(len),
            size,
        })
    }

    /// Calls `each` for every (key, value) pair in file order.
    pub fn for_each_pair(
        &mut self,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        self.reader.seek(SeekFrom::Start(self.body_start))?;
        let (mut key, mut value) = (Vec::new(), Vec::new());
        loop {
            let klen = read_u32(&mut self.reader)?;
            if klen == END {
                return Ok(());
            }
            key.resize(klen as usize, 0);
            self.reader.read_exact(&mut key).map_err(truncated)?;
            let vlen = read_u32(&mut self.reader)?;
            value.resize(vlen as usize, 0);
            self.reader.read_exact(&mut value).map_err(truncated)?;
            each(&key, &value)?;
        }
    }
}

/// Checks that the last 32 bytes are the SHA-256 of everything before them.
fn verify_digest(file: &mut File, size: u64) -> Result<(), SnapshotError> {
    let body = size - DIGEST_LEN as u64;
    file.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut limited = BufReader::new(&mut *file).take(body);
    io::copy(&mut limited, &mut sha)?;
    let actual = sha.finalize();
    let mut expected = [0u8; DIGEST_LEN];
    file.seek(SeekFrom::Start(body))?;
    file.read_exact(&mut expected).map_err(truncated)?;
    if expected[..] != actual[..] {
        return Err(SnapshotError::ChecksumMismatch {
            expected: hex(&expected),
            actual: hex(&actual),
        });
    }
    Ok(())
}

/// `snapshot status`: what etcdutl reports for a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// CRC-32 over every stored key and value.
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

pub fn status(path: &Path) -> Result<(Status, Header), SnapshotError> {
    let mut file = SnapshotFile::open(path, false)?;
    let mut crc = crc32fast::Hasher::new();
    let mut total_key = 0u64;
    file.for_each_pair(|k, v| {
        crc.update(k);
        crc.update(v);
        total_key += 1;
        Ok(())
    })?;
    Ok((
        Status {
            hash: crc.finalize(),
            revision: file.header.revision,
            total_key,
            total_size: file.size,
        },
        file.header.clone(),
    ))
}

/// Writes a complete snapshot file of the state machine at `path` (for tests and tools that run
/// next to a state machine; clients use the Snapshot RPC).
pub fn save_file(sm: &StateMachine, header: Header, path: &Path) -> Result<(), SnapshotError> {
    let out = BufWriter::new(File::create(path)?);
    let (mut out, _, digest, _) = write_state_machine(sm, header, out)?;
    out.write_all(&digest)?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("s.db");
        let header = Header {
            revision: 9,
            compact_revision: 3,
            version: "3.5.17".into(),
            ..Default::default()
        };
        let mut w = Writer::new(BufWriter::new(File::create(&path).unwrap()), &header).unwrap();
        w.pair(b"Ka", b"1").unwrap();
        w.pair(b"Kb", b"").unwrap();
        w.finish_file().unwrap();
        path
    }

    #[test]
    fn round_trip_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let mut f = SnapshotFile::open(&path, false).unwrap();
        assert_eq!(f.header.revision, 9);
        let mut pairs = Vec::new();
        f.for_each_pair(|k, v| {
            pairs.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            pairs,
            vec![(b"Ka".to_vec(), b"1".to_vec()), (b"Kb".to_vec(), vec![])]
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() % ALIGN,
            DIGEST_LEN as u64
        );
        let (st, _) = status(&path).unwrap();
        assert_eq!(st.total_key, 2);
        assert_eq!(st.revision, 9);
        assert_eq!(st.total_size, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn corruption_and_truncation_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let mut raw = std::fs::read(&path).unwrap();
        let at = raw.len() - DIGEST_LEN - 6;
        raw[at] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(
            SnapshotFile::open(&path, false),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
        std::fs::write(&path, &raw[..raw.len() - 40]).unwrap();
        assert!(SnapshotFile::open(&path, false).is_err());
        std::fs::write(&path, b"hello, this is not a snapshot at all, not at all").unwrap();
        assert!(SnapshotFile::open(&path, true).is_err());
    }
}
