//! A minimal root filesystem built from the host's static busybox.
//!
//! Demos and tests need an image without a registry. busybox-static is one binary with no
//! shared libraries that becomes `sh`, `httpd`, `sleep`… depending on the name it is run as,
//! so a working rootfs is that binary plus one symlink per command and the few files programs
//! expect (`/etc/passwd` so `id` and `httpd` can resolve users, a world-writable `/tmp`).
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Where Debian's `busybox-static` package installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Commands worth having in a demo image: a shell, a web server, and tools to poke at both.
pub const DEFAULT_APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "env", "hostname", "httpd", "id", "ls", "mkdir", "nc", "ps",
    "sleep", "true", "false", "wget",
];

/// `root` and `nobody`, enough for `USER nobody` and for httpd's user lookups.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Lays out a minimal rootfs in `dir` (created if missing):
///
/// ```text
/// bin/busybox            copy of /bin/busybox, mode 0755
/// bin/<applet>  -> busybox   one relative symlink per applet
/// etc/passwd, etc/group  root and nobody
/// tmp/                   mode 1777
/// var/www/               empty document root for `httpd -h /var/www`
/// root/ proc/ sys/ dev/  mount points and root's home, as every distribution has
/// ```
///
/// Permissions are set explicitly (not left to the umask) so that packing the result is
/// reproducible on any machine with the same busybox.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) -> Result<()> {
    for sub in ["bin", "etc", "root", "proc", "sys", "dev", "var/www", "tmp"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(Error::io(&path))?;
        set_mode(&path, 0o755)?;
    }
    set_mode(&dir.join("tmp"), 0o1777)?;
    set_mode(&dir.join("root"), 0o700)?;

    let busybox = dir.join("bin/busybox");
    fs::copy(BUSYBOX, &busybox).map_err(Error::io(BUSYBOX))?;
    set_mode(&busybox, 0o755)?;
    for applet in applets {
        let link = dir.join("bin").join(applet);
        // Re-running on the same directory must not fail on links it made last time.
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).map_err(Error::io(&link))?;
        }
        symlink("busybox", &link).map_err(Error::io(&link))?;
    }

    for (name, content) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let path = dir.join(name);
        fs::write(&path, content).map_err(Error::io(&path))?;
        set_mode(&path, 0o644)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io(path))
}
