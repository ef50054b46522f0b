//! skiff-controllers: see lib docs (to be written).
pub mod nodeipam;
