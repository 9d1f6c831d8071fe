//! The Raft snapshot file (`member/snap/raft.snapshot`): written, sent and installed as a
//! stream, so a snapshot never has to fit in memory.
//!
//! Layout: the dump (`CAIRNSNAP1\n`, then for each state-machine pair `u32 BE key length, key,
//! u32 BE value length, value`), then the snapshot's metadata (bincode), its length (`u32 LE`)
//! and the trailer `CAIRNSN2`. The metadata rides at the end so the whole file is what openraft
//! sends a follower, byte for byte from offset 0, and what the follower saves: it arrives with
//! its own metadata, checked against what the leader said it sent. One file, so a crash can
//! never pair one snapshot's data with another's metadata.
//!
//! Data dirs of older cairns hold `current.snapshot` (metadata first) or `current.snap` +
//! `current.meta`; `convert_legacy` rewrites them once in this layout.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::raft::codec;
use crate::raft::{Member, NodeId};
use openraft::SnapshotMeta;

pub type Meta = SnapshotMeta<NodeId, Member>;

const DUMP_MAGIC: &[u8] = b"CAIRNSNAP1\n";
const TRAILER: &[u8; 8] = b"CAIRNSN2";
const TAIL_LEN: u64 = 4 + TRAILER.len() as u64;

pub fn path(dir: &Path) -> PathBuf {
    dir.join("raft.snapshot")
}

/// Where a snapshot sent by the leader is received.
pub fn incoming_path(dir: &Path) -> PathBuf {
    dir.join("incoming.snapshot")
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Writes a snapshot of `pairs` with `meta` to `path`, durably and atomically (a temporary
/// file renamed into place). Returns the file's size.
pub fn write<I, K, V>(path: &Path, meta: &Meta, pairs: I) -> io::Result<u64>
where
    I: IntoIterator<Item = io::Result<(K, V)>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    out.write_all(DUMP_MAGIC)?;
    for pair in pairs {
        let (k, v) = pair?;
        for part in [k.as_ref(), v.as_ref()] {
            let len = u32::try_from(part.len()).map_err(|_| invalid("pair over 4 GiB"))?;
            out.write_all(&len.to_be_bytes())?;
            out.write_all(part)?;
        }
    }
    let raw_meta = codec::encode("snapshot meta", meta).map_err(io::Error::other)?;
    let meta_len = u32::try_from(raw_meta.len()).map_err(|_| invalid("metadata over 4 GiB"))?;
    out.write_all(&raw_meta)?;
    out.write_all(&meta_len.to_le_bytes())?;
    out.write_all(TRAILER)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_parent(path)?;
    Ok(size)
}

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A snapshot file's metadata, and where its dump ends.
pub fn read_meta(file: &mut File) -> io::Result<(Meta, u64)> {
    let len = file.metadata()?.len();
    if len < DUMP_MAGIC.len() as u64 + TAIL_LEN {
        return Err(invalid("snapshot file shorter than its trailer"));
    }
    let mut tail = [0u8; TAIL_LEN as usize];
    file.seek(SeekFrom::Start(len - TAIL_LEN))?;
    file.read_exact(&mut tail)?;
    if &tail[4..] != TRAILER {
        return Err(invalid("not a cairn raft snapshot (trailer missing)"));
    }
    let meta_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    let dump_end = (len - TAIL_LEN)
        .checked_sub(meta_len)
        .filter(|end| *end >= DUMP_MAGIC.len() as u64)
        .ok_or_else(|| invalid("snapshot metadata longer than the file"))?;
    let mut raw_meta = vec![0u8; meta_len as usize];
    file.seek(SeekFrom::Start(dump_end))?;
    file.read_exact(&mut raw_meta)?;
    let meta = codec::decode("snapshot meta", &raw_meta).map_err(|e| invalid(e.to_string()))?;
    file.seek(SeekFrom::Start(0))?;
    Ok((meta, dump_end))
}

/// The saved snapshot, if any: its metadata and the file, positioned at its start.
pub fn open(dir: &Path) -> io::Result<Option<(Meta, File)>> {
    let mut file = match File::open(path(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (meta, _) = read_meta(&mut file)?;
    Ok(Some((meta, file)))
}

/// A dump's pairs, read as a stream.
pub struct Pairs<R> {
    input: io::Take<R>,
}

/// Reads the pairs of the snapshot in `file` (positioned anywhere).
pub fn pairs(mut file: File) -> io::Result<Pairs<BufReader<File>>> {
    let (_, dump_end) = read_meta(&mut file)?;
    dump_pairs(BufReader::with_capacity(1 << 20, file).take(dump_end))
}

/// The pairs of the dump that is all of `input`, magic first.
fn dump_pairs<R: Read>(mut input: io::Take<R>) -> io::Result<Pairs<R>> {
    let mut magic = [0u8; DUMP_MAGIC.len()];
    input.read_exact(&mut magic)?;
    if magic != DUMP_MAGIC {
        return Err(invalid("not a cairn snapshot dump"));
    }
    Ok(Pairs { input })
}

impl<R: Read> Pairs<R> {
    fn part(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.input.read(&mut len[..1])? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut len[1..])?,
        }
        let len = u32::from_be_bytes(len) as u64;
        if len > self.input.limit() {
            return Err(invalid("truncated snapshot pair"));
        }
        let mut buf = vec![0u8; len as usize];
        self.input.read_exact(&mut buf)?;
        Ok(Some(buf))
    }
}

impl<R: Read> Iterator for Pairs<R> {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let key = match self.part() {
            Ok(Some(k)) => k,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(match self.part() {
            Ok(Some(v)) => Ok((key, v)),
            Ok(None) => Err(invalid("snapshot key without a value")),
            Err(e) => Err(e),
        })
    }
}

/// Rewrites a snapshot an older cairn saved (`current.snapshot` with its metadata first, or
/// `current.snap` + `current.meta`) in this layout, then removes the old files.
pub fn convert_legacy(dir: &Path) -> io::Result<()> {
    let one_file = dir.join("current.snapshot");
    let (data, meta) = (dir.join("current.snap"), dir.join("current.meta"));
    let old = if path(dir).exists() {
        None
    } else if one_file.exists() {
        let mut file = std::fs::read(&one_file)?;
        let len = file
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|len| file.len() >= 4 + len)
            .ok_or_else(|| invalid("snapshot file shorter than its metadata"))?;
        let raw_meta = file[4..4 + len].to_vec();
        file.drain(..4 + len);
        Some((raw_meta, file))
    } else if data.exists() && meta.exists() {
        Some((std::fs::read(&meta)?, std::fs::read(&data)?))
    } else {
        None
    };
    if let Some((raw_meta, dump)) = old {
        let meta: Meta =
            codec::decode("snapshot meta", &raw_meta).map_err(|e| invalid(e.to_string()))?;
        let pairs = dump_pairs(dump.as_slice().take(dump.len() as u64))?;
        tracing::info!(snapshot = %meta.snapshot_id, "rewriting a raft snapshot in the streamed layout");
        write(&path(dir), &meta, pairs)?;
    }
    for legacy in [one_file, data, meta] {
        match std::fs::remove_file(legacy) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> Meta {
        SnapshotMeta {
            snapshot_id: id.into(),
            ..Default::default()
        }
    }

    fn sample() -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..1000u32)
            .map(|i| {
                (
                    format!("k{i}").into_bytes(),
                    vec![i as u8; (i % 300) as usize],
                )
            })
            .collect()
    }

    type PairRef<'a> = io::Result<(&'a Vec<u8>, &'a Vec<u8>)>;

    fn ok(p: &[(Vec<u8>, Vec<u8>)]) -> impl Iterator<Item = PairRef<'_>> {
        p.iter().map(|(k, v)| Ok((k, v)))
    }

    #[test]
    fn a_snapshot_streams_back_with_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let want = sample();
        write(&path(dir.path()), &meta("s1"), ok(&want)).unwrap();
        let (m, file) = open(dir.path()).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "s1");
        let got: Vec<_> = pairs(file).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want);
        assert!(!path(dir.path()).with_extension("tmp").exists());
    }

    #[test]
    fn a_cut_or_foreign_file_is_an_error_not_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        write(&p, &meta("s1"), ok(&sample())).unwrap();
        let whole = std::fs::read(&p).unwrap();
        let (_, dump_end) = read_meta(&mut File::open(&p).unwrap()).unwrap();
        for cut in [whole.len() - 1, whole.len() / 2, 5] {
            std::fs::write(&p, &whole[..cut]).unwrap();
            assert!(open(dir.path()).is_err(), "cut at {cut}");
        }
        // The trailer intact, a pair cut short inside the dump.
        let mut damaged = whole.clone();
        damaged.drain(dump_end as usize - 3..dump_end as usize);
        std::fs::write(&p, &damaged).unwrap();
        let (_, file) = open(dir.path()).unwrap().unwrap();
        assert!(pairs(file).unwrap().any(|p| p.is_err()));
    }

    #[test]
    fn both_older_layouts_are_rewritten_once() {
        let mut dump = DUMP_MAGIC.to_vec();
        for (k, v) in sample() {
            dump.extend_from_slice(&(k.len() as u32).to_be_bytes());
            dump.extend_from_slice(&k);
            dump.extend_from_slice(&(v.len() as u32).to_be_bytes());
            dump.extend_from_slice(&v);
        }
        let raw_meta = codec::encode("m", &meta("old")).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut one = (raw_meta.len() as u32).to_be_bytes().to_vec();
        one.extend_from_slice(&raw_meta);
        one.extend_from_slice(&dump);
        std::fs::write(dir.path().join("current.snapshot"), one).unwrap();
        convert_legacy(dir.path()).unwrap();
        assert!(!dir.path().join("current.snapshot").exists());
        let (m, file) = open(dir.path()).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "old");
        assert_eq!(pairs(file).unwrap().count(), 1000);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("current.snap"), &dump).unwrap();
        std::fs::write(dir.path().join("current.meta"), &raw_meta).unwrap();
        convert_legacy(dir.path()).unwrap();
        assert!(
            !dir.path().join("current.snap").exists() && !dir.path().join("current.meta").exists()
        );
        let (m, file) = open(dir.path()).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "old");
        let got: Vec<_> = pairs(file).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, sample());
        // Nothing left to convert.
        convert_legacy(dir.path()).unwrap();
        assert!(open(dir.path()).unwrap().is_some());
    }
}
