//! kubelet's atomic writer: a volume's files are written to a new hidden directory named for
//! the time, and become visible all at once when the `..data` symlink is renamed onto it.
//! Every file a user sees is a symlink through `..data`, so a reader that resolves `..data`
//! once (or opens one file) sees one version or the next, never a mix:
//!
//! ```text
//! volume/
//!   ..2026_12_04_12_00_01.123456789/   the files of the current version
//!   ..data -> ..2026_12_04_12_00_01.123456789
//!   app.conf -> ..data/app.conf         one link per top-level name
//!   conf.d -> ..data/conf.d
//! ```
//!
//! Writing the same files again changes nothing (no new directory, no rename).
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// A volume's files: path (relative, `/`-separated) → (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Makes `dir` hold exactly `files`; whether anything changed.
pub fn write(dir: &Path, files: &Files) -> io::Result<bool> {
    for path in files.keys() {
        check_path(path)?;
    }
    std::fs::create_dir_all(dir)?;
    if current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();

    // 1. The new version, complete, in its own directory.
    let stamp = jiff::Zoned::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let version = dir.join(&stamp);
    std::fs::create_dir(&version)?;
    for (path, (bytes, mode)) in files {
        let target = version.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o777))?;
    }

    // 2. The switch: one rename of a symlink.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;

    // 3. The user-visible names: a link per top-level name, stale ones removed.
    let top: std::collections::BTreeSet<&str> =
        files.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("..") && !top.contains(name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }

    // 4. The old version goes (a reader inside it keeps what it has open).
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// A path a volume may hold: relative, no `..` element, no empty element, and not starting with
/// `..` (the writer's own names). Kubernetes' validation refuses the same.
pub fn check_path(path: &str) -> io::Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.starts_with("..")
        || path.split('/').any(|part| part == ".." || part.is_empty());
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {path:?} is not a relative path inside the volume"),
        ));
    }
    Ok(())
}

/// Whether `dir` holds a version written before.
pub fn has_version(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(DATA)).is_ok()
}

/// The files of the current version, if there is one.
fn current(dir: &Path) -> Option<Files> {
    let version = dir.join(std::fs::read_link(dir.join(DATA)).ok()?);
    let mut files = Files::new();
    read_tree(&version, "", &mut files).ok()?;
    Some(files)
}

fn read_tree(dir: &Path, prefix: &str, files: &mut Files) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            read_tree(&entry.path(), &path, files)?;
        } else {
            let bytes = std::fs::read(entry.path())?;
            files.insert(path, (bytes, meta.permissions().mode() & 0o777));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(p, c)| (p.to_string(), (c.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    fn read(dir: &Path, path: &str) -> String {
        std::fs::read_to_string(dir.join(path)).expect("read")
    }

    #[test]
    fn versions_switch_at_once_and_stale_names_go() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("config");
        assert!(write(&dir, &files(&[("a", "1"), ("sub/b", "1")])).expect("first"));
        assert_eq!(read(&dir, "a"), "1");
        assert_eq!(read(&dir, "sub/b"), "1");
        assert!(std::fs::symlink_metadata(dir.join("a"))
            .expect("link")
            .file_type()
            .is_symlink());
        let first = std::fs::read_link(dir.join(DATA)).expect("..data");

        // The same files: nothing happens.
        assert!(!write(&dir, &files(&[("a", "1"), ("sub/b", "1")])).expect("same"));
        assert_eq!(std::fs::read_link(dir.join(DATA)).expect("..data"), first);

        // A change: a new version, the old one gone, `sub` no longer a name.
        assert!(write(&dir, &files(&[("a", "2"), ("c", "2")])).expect("second"));
        assert_eq!(read(&dir, "a"), "2");
        assert_eq!(read(&dir, "c"), "2");
        assert!(!dir.join("sub").exists());
        assert!(!dir.join(&first).exists());
        let hidden: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "{hidden:?}"); // ..data and one version
    }

    #[test]
    fn modes_are_kept_and_count_as_a_change() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut f = files(&[("key", "v")]);
        write(root.path(), &f).expect("write");
        f.get_mut("key").expect("key").1 = 0o400;
        assert!(write(root.path(), &f).expect("mode change"));
        let mode = std::fs::metadata(root.path().join("key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn paths_that_leave_the_volume_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        for bad in ["../x", "/etc/passwd", "a/../../b", "..data", "a//b", ""] {
            assert!(write(root.path(), &files(&[(bad, "x")])).is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(root.path()).expect("dir").count(), 0);
    }
}
