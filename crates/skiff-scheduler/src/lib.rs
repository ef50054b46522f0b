//! skiff-scheduler: see lib docs (to be written).
