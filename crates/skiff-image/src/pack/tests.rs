//! Pack's promises, checked by reading the tarball back: reproducible bytes, a valid OCI
//! layout, and a layer that keeps symlinks and modes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::*;
use crate::layout::LayoutArchive;
use crate::rootfs::busybox_rootfs;

/// One entry of a tarball, read back for inspection.
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// A tarball's entries by path, plus their order.
fn read_tar(bytes: &[u8]) -> (Vec<String>, BTreeMap<String, Entry>) {
    let mut order = Vec::new();
    let mut entries = BTreeMap::new();
    for entry in tar::Archive::new(bytes).entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry
            .path()
            .expect("tar path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let header = entry.header().clone();
        let link = entry
            .link_name()
            .expect("tar link")
            .map(|l| l.to_string_lossy().to_string());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("tar entry data");
        order.push(path.clone());
        entries.insert(
            path,
            Entry {
                kind: header.entry_type(),
                mode: header.mode().expect("tar header field"),
                uid: header.uid().expect("tar header field"),
                gid: header.gid().expect("tar header field"),
                mtime: header.mtime().expect("tar header field"),
                link,
                data,
            },
        );
    }
    (order, entries)
}

fn blob<'a>(entries: &'a BTreeMap<String, Entry>, digest: &str) -> &'a [u8] {
    &entries[&blob_path(digest)].data
}

fn web_options(rootfs: &Path, output: &Path) -> PackOptions {
    let mut options = PackOptions::new(rootfs, "skiff.local/web:1.0", output);
    options.entrypoint = vec!["/bin/httpd".into()];
    options.cmd = vec![
        "-f".into(),
        "-p".into(),
        "80".into(),
        "-h".into(),
        "/var/www".into(),
    ];
    options.env = vec!["GREETING=hello".into()];
    options.working_dir = Some("/var/www".into());
    options.exposed_ports = vec!["80".into(), "53/udp".into()];
    options.user = Some("0:0".into());
    options
}

#[test]
fn packing_twice_gives_identical_bytes_and_digests() {
    // Two rootfs directories made at different moments (different mtimes, different inode
    // order on disk) must still pack to the same bytes.
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    busybox_rootfs(&a, &["sh", "httpd", "sleep"]).expect("busybox rootfs");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    busybox_rootfs(&b, &["sleep", "httpd", "sh"]).expect("busybox rootfs");

    let first = pack(&web_options(&a, &dir.path().join("first.tar"))).expect("pack");
    let second = pack(&web_options(&b, &dir.path().join("second.tar"))).expect("pack");

    assert_eq!(first.manifest_digest, second.manifest_digest);
    assert_eq!(first.config_digest, second.config_digest);
    assert_eq!(first.layer_digest, second.layer_digest);
    assert_eq!(
        std::fs::read(&first.path).expect("read tarball"),
        std::fs::read(&second.path).expect("read tarball"),
        "tarballs differ"
    );
}

#[test]
fn a_different_input_gives_a_different_digest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs, &["sh"]).expect("busybox rootfs");
    let plain = pack(&PackOptions::new(
        &rootfs,
        "skiff.local/a",
        dir.path().join("a.tar"),
    ))
    .expect("tar path");
    let mut later = PackOptions::new(&rootfs, "skiff.local/a", dir.path().join("b.tar"));
    later.created = 1_700_000_000;
    let later = pack(&later).expect("pack");
    assert_ne!(
        plain.layer_digest, later.layer_digest,
        "mtimes are in the layer"
    );
    assert_ne!(plain.config_digest, later.config_digest);
}

#[test]
fn the_tarball_is_a_valid_oci_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs, &["sh", "httpd"]).expect("busybox rootfs");
    let packed = pack(&web_options(&rootfs, &dir.path().join("web.tar"))).expect("pack");
    let (_, entries) = read_tar(&std::fs::read(&packed.path).expect("read tarball"));

    // oci-layout and index.json → manifest, named both ways.
    let layout: serde_json::Value =
        serde_json::from_slice(&entries["oci-layout"].data).expect("valid json");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: ImageIndex =
        serde_json::from_slice(&entries["index.json"].data).expect("valid json");
    let [descriptor] = index.manifests().as_slice() else {
        panic!("expected one manifest, got {:?}", index.manifests())
    };
    assert_eq!(descriptor.digest().to_string(), packed.manifest_digest);
    let annotations = descriptor.annotations().clone().expect("annotations");
    assert_eq!(
        annotations["org.opencontainers.image.ref.name"],
        "skiff.local/web:1.0"
    );
    assert_eq!(
        annotations["io.containerd.image.name"],
        "skiff.local/web:1.0"
    );

    // Every blob hashes to its name.
    for (path, entry) in &entries {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(&entry.data), format!("sha256:{hex}"), "{path}");
        }
    }

    // manifest → config + one uncompressed layer.
    let manifest: ImageManifest =
        serde_json::from_slice(blob(&entries, &packed.manifest_digest)).expect("valid json");
    assert_eq!(manifest.config().digest().to_string(), packed.config_digest);
    let [layer] = manifest.layers().as_slice() else {
        panic!("expected one layer")
    };
    assert_eq!(
        layer.media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(layer.size(), packed.layer_size);

    // config: the run settings, and diffID = sha256 of the (uncompressed) layer.
    let config: ImageConfiguration =
        serde_json::from_slice(blob(&entries, &packed.config_digest)).expect("valid json");
    let layer_bytes = blob(&entries, &packed.layer_digest);
    assert_eq!(config.rootfs().diff_ids(), &vec![sha256(layer_bytes)]);
    assert_eq!(config.created().as_deref(), Some("1970-01-01T00:00:00Z"));
    let run = config.config().clone().expect("config field");
    assert_eq!(
        run.entrypoint().clone().expect("config field"),
        vec!["/bin/httpd"]
    );
    assert_eq!(
        run.cmd().clone().expect("config field"),
        vec!["-f", "-p", "80", "-h", "/var/www"]
    );
    assert_eq!(
        run.env().clone().expect("config field"),
        vec![DEFAULT_PATH.to_string(), "GREETING=hello".to_string()]
    );
    assert_eq!(run.working_dir().as_deref(), Some("/var/www"));
    assert_eq!(run.user().as_deref(), Some("0:0"));
    let mut ports = run.exposed_ports().clone().expect("config field");
    ports.sort();
    assert_eq!(ports, vec!["53/udp", "80/tcp"]);

    // And skiff's own reader agrees.
    let archive = LayoutArchive::open(&packed.path).expect("open layout");
    let images = archive.images().expect("layout images");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "skiff.local/web:1.0");
    assert_eq!(images[0].parts.diff_ids, vec![packed.layer_digest.clone()]);
}

#[test]
fn the_layer_keeps_symlinks_and_modes_and_fixes_ownership_and_times() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs, &["sh", "httpd"]).expect("busybox rootfs");
    let packed = pack(&PackOptions::new(
        &rootfs,
        "skiff.local/bb",
        dir.path().join("bb.tar"),
    ))
    .expect("tar path");
    let (_, outer) = read_tar(&std::fs::read(&packed.path).expect("read tarball"));
    let (order, layer) = read_tar(blob(&outer, &packed.layer_digest));

    for applet in ["bin/sh", "bin/httpd"] {
        assert_eq!(layer[applet].kind, tar::EntryType::Symlink, "{applet}");
        assert_eq!(layer[applet].link.as_deref(), Some("busybox"), "{applet}");
    }
    let busybox = &layer["bin/busybox"];
    assert_eq!(busybox.kind, tar::EntryType::Regular);
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(
        busybox.data,
        std::fs::read(crate::BUSYBOX).expect("read busybox")
    );
    assert_eq!(layer["tmp"].kind, tar::EntryType::Directory);
    assert_eq!(layer["tmp"].mode, 0o1777);
    assert_eq!(layer["etc/passwd"].mode, 0o644);
    for (path, entry) in &layer {
        assert_eq!((entry.uid, entry.gid, entry.mtime), (0, 0, 0), "{path}");
    }
    // Depth first, each directory sorted: bin before bin/busybox before bin/httpd before dev.
    let mut expected = order.clone();
    expected.sort();
    assert_eq!(order, expected);
}

#[test]
fn sockets_in_the_rootfs_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    let _listener =
        std::os::unix::net::UnixListener::bind(rootfs.join("app.sock")).expect("bind socket");
    let error = pack(&PackOptions::new(
        &rootfs,
        "skiff.local/x",
        dir.path().join("x.tar"),
    ))
    .expect_err("must be refused");
    assert!(
        matches!(&error, Error::UnsupportedFile { path } if path.ends_with("app.sock")),
        "{error}"
    );
}

#[test]
fn an_invalid_reference_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("x.tar");
    let error =
        pack(&PackOptions::new(dir.path(), "Not Valid", &output)).expect_err("must be refused");
    assert!(matches!(error, Error::InvalidReference { .. }), "{error}");
    assert!(!output.exists());
}
