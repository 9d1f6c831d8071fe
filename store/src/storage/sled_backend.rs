//! [`Backend`] on sled 0.34: one tree, batches for atomicity, `flush` for durability.

use std::ops::Bound;
use std::path::Path;

use super::{Backend, Batch, Pair, Result, Scan, StorageError};

pub struct SledBackend {
    db: sled::Db,
}

fn engine(action: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |source| StorageError::Engine { action, source }
}

fn pair((k, v): (sled::IVec, sled::IVec)) -> Pair {
    (Box::from(&k[..]), Box::from(&v[..]))
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from explicit flushes on the Raft paths; the background flusher
            // only bounds how much unflushed state-machine work a crash can make us re-apply.
            .flush_every_ms(Some(500))
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(engine("opening the database"))?;
        Ok(Self { db })
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Box<[u8]>>> {
        Ok(self
            .db
            .get(key)
            .map_err(engine("reading"))?
            .map(|v| Box::from(&v[..])))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.insert(key, value).map_err(engine("writing"))?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<()> {
        self.db.remove(key).map_err(engine("deleting"))?;
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
        self.db.apply_batch(b).map_err(engine("writing a batch"))
    }

    fn scan(&self, from: Bound<&[u8]>, to: Bound<&[u8]>, reverse: bool) -> Scan {
        let range = (from.map(sled::IVec::from), to.map(sled::IVec::from));
        let iter = self.db.range::<sled::IVec, _>(range);
        let map =
            |r: sled::Result<(sled::IVec, sled::IVec)>| r.map(pair).map_err(engine("scanning"));
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(engine("flushing to disk"))?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(engine("measuring size"))
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
}
