//! Making sled's writes durable.
//!
//! sled's `flush()` writes its buffers with `sync_file_range`, which flushes neither file metadata
//! nor the drive's cache: on power loss a "flushed" write can vanish. Raft's contract needs more
//! (a vote or an appended entry must be on disk before we say so), so after `flush()` we call
//! `fdatasync` on sled's data file ourselves. Log and state machine share one sled database and
//! therefore one file, so one sync covers both.

use std::fs::File;
use std::io;
use std::path::Path;

/// A handle on sled's data file, kept open to `fdatasync` it.
#[derive(Debug)]
pub struct DurableDb {
    pub db: sled::Db,
    file: File,
}

impl DurableDb {
    /// Opens (or creates) the sled database in `dir`.
    pub fn open(dir: &Path) -> io::Result<DurableDb> {
        let db = sled::Config::new()
            .path(dir)
            // Nothing relies on sled's own periodic flush for correctness; keep it as a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(io::Error::other)?;
        // sled 0.34 keeps all of its pages in `<dir>/db`.
        let file = File::open(dir.join("db"))?;
        Ok(DurableDb { db, file })
    }

    /// Returns once everything written so far is on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.file.sync_data()
    }
}
