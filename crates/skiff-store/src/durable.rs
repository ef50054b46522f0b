//! Making sled's writes durable.
//!
//! sled's `flush()` writes its buffers with `sync_file_range`, which flushes neither file metadata
//! nor the drive's cache: on power loss a "flushed" write can vanish. Raft's contract needs more
//! (a vote or an appended entry must be on disk before we say so), so after `flush()` we sync
//! sled's files ourselves:
//!
//! - `<dir>/db`, where sled keeps its log of page fragments: `fdatasync`.
//! - `<dir>/blobs/<lsn>`: any page write bigger than a quarter segment (128 KiB by default — a
//!   leaf of 16 big objects, a large coalesced log entry) goes to a file of its own, which sled
//!   writes without syncing. A blob that vanished makes sled's recovery skip the write or stop
//!   at it, so every new blob file is `fsync`ed, and the directory with it.
//!
//! Log and state machine share one sled database and therefore these files, so one sync covers
//! both.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A sled database plus what is needed to make its writes durable.
#[derive(Debug)]
pub struct DurableDb {
    pub db: sled::Db,
    file: File,
    blobs: PathBuf,
    /// The highest blob file (sled names them by log sequence number) known to be synced.
    synced_blob: Mutex<u64>,
}

impl DurableDb {
    /// Opens (or creates) the sled database in `dir`.
    pub fn open(dir: &Path) -> io::Result<DurableDb> {
        let db = sled::Config::new()
            .path(dir)
            // Every log append already flushes and syncs (which also carries the state machine's
            // writes to disk); sled's own periodic flush would only compete with those.
            .flush_every_ms(None)
            // sled caches up to 1 GiB of pages by default; skiff's objects live in memory
            // already, and an edge server should idle in tens of MB.
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(io::Error::other)?;
        let file = File::open(dir.join("db"))?;
        let durable = DurableDb {
            db,
            file,
            blobs: dir.join("blobs"),
            synced_blob: Mutex::new(0),
        };
        // Blobs left by a previous run may never have been synced.
        durable.sync_blobs()?;
        Ok(durable)
    }

    /// Returns once everything written so far is on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.sync_blobs()?;
        self.file.sync_data()
    }

    fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self.synced_blob.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = *synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn > *synced {
                // A blob sled garbage-collected meanwhile needs no syncing.
                match File::open(entry.path()) {
                    Ok(blob) => blob.sync_all()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                newest = newest.max(lsn);
            }
        }
        if newest > *synced {
            File::open(&self.blobs)?.sync_all()?;
            *synced = newest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_go_to_blob_files_and_sync_covers_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let durable = DurableDb::open(dir.path()).expect("open");
        durable.db.insert(b"small", vec![1u8; 100]).expect("insert");
        durable.sync().expect("sync");
        assert_eq!(
            *durable.synced_blob.lock().expect("lock"),
            0,
            "small values need no blob"
        );
        // Over a quarter of sled's 512 KiB segment: sled writes this value as a blob file.
        durable
            .db
            .insert(b"large", vec![2u8; 300 * 1024])
            .expect("insert");
        durable.sync().expect("sync");
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .expect("blobs dir")
            .count();
        assert!(blobs > 0, "sled wrote a blob file");
        assert!(
            *durable.synced_blob.lock().expect("lock") > 0,
            "the blob was synced"
        );
    }
}
