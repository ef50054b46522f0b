//! Black-box tests against a real containerd (started by the test, see `common`): pack a
//! busybox image, import it, and check that containerd has what the agent will need — and
//! still has it after garbage collection.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use common::{mounts_mentioning, TestContainerd};
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{Kind, StatSnapshotRequest};
use containerd_client::services::v1::{
    content_client::ContentClient, CreateRequest, DeleteRequest, InfoRequest, ListRequest,
};
use containerd_client::tonic::Request;
use skiff_image::{
    busybox_rootfs, import_tarball, list, pack, resolve, unpack, Channel, Error, PackOptions,
    PackedImage,
};

const NAMESPACE: &str = "skiff-image-test";
const SNAPSHOTTER: &str = "overlayfs";

fn namespaced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("containerd-namespace", NAMESPACE.parse().expect("ascii"));
    request
}

/// The demo web server image, packed into `dir`.
fn pack_web(dir: &Path, reference: &str, applets: &[&str]) -> PackedImage {
    let rootfs = dir.join(format!("rootfs-{}", applets.len()));
    busybox_rootfs(&rootfs, applets).expect("busybox rootfs");
    let mut options = PackOptions::new(
        &rootfs,
        reference,
        dir.join(format!("{}.tar", applets.len())),
    );
    options.entrypoint = vec!["/bin/httpd".into()];
    options.cmd = ["-f", "-p", "80", "-h", "/var/www"]
        .map(String::from)
        .to_vec();
    options.env = vec!["GREETING=hello".into()];
    options.working_dir = Some("/var/www".into());
    options.exposed_ports = vec!["80/tcp".into()];
    options.user = Some("nobody".into());
    pack(&options).expect("pack")
}

async fn snapshot_kind(channel: &Channel, snapshotter: &str, name: &str) -> Option<Kind> {
    let request = namespaced(StatSnapshotRequest {
        snapshotter: snapshotter.to_string(),
        key: name.to_string(),
    });
    let info = SnapshotsClient::new(channel.clone())
        .stat(request)
        .await
        .ok()?;
    info.into_inner().info.map(|i| i.kind())
}

async fn content_labels(channel: &Channel, digest: &str) -> Option<HashMap<String, String>> {
    let request = namespaced(InfoRequest {
        digest: digest.to_string(),
    });
    let info = ContentClient::new(channel.clone())
        .info(request)
        .await
        .ok()?;
    info.into_inner().info.map(|i| i.labels)
}

/// Deleting a lease with `sync: true` runs garbage collection before returning: afterwards,
/// only what is referenced from an image survives.
async fn collect_garbage(channel: &Channel) {
    let mut leases = LeasesClient::new(channel.clone());
    let id = "skiff-test-gc".to_string();
    leases
        .create(namespaced(CreateRequest {
            id: id.clone(),
            labels: HashMap::new(),
        }))
        .await
        .expect("create lease");
    leases
        .delete(namespaced(DeleteRequest { id, sync: true }))
        .await
        .expect("delete lease (runs GC)");
}

#[tokio::test]
async fn import_list_resolve_against_real_containerd() {
    // 1. Start a containerd of our own and pack the demo image.
    let containerd = TestContainerd::start().await;
    let channel = &containerd.channel;
    let work = tempfile::tempdir().expect("temp dir");
    let packed = pack_web(
        work.path(),
        "skiff.local/web:1.0",
        &["sh", "httpd", "sleep"],
    );

    // 2. Import it: one image, named as packed, its one layer unpacked.
    let started = Instant::now();
    let imported = import_tarball(channel, NAMESPACE, SNAPSHOTTER, &packed.path)
        .await
        .expect("import");
    let first_import = started.elapsed();
    let [image] = imported.as_slice() else {
        panic!("expected one image, got {imported:?}")
    };
    assert_eq!(image.name, "skiff.local/web:1.0");
    assert_eq!(image.manifest_digest, packed.manifest_digest);
    assert_eq!(image.config_digest, packed.config_digest);
    // One uncompressed layer: its chain ID is its diffID is its digest.
    assert_eq!(image.chain_id, packed.layer_digest);
    assert_eq!(image.size, packed.size);

    // 3. Import again: same answer, nothing rewritten.
    let started = Instant::now();
    let again = import_tarball(channel, NAMESPACE, SNAPSHOTTER, &packed.path)
        .await
        .expect("second import");
    let second_import = started.elapsed();
    assert_eq!(again, imported);
    eprintln!(
        "import of {} ({} bytes): first {first_import:?}, again {second_import:?}",
        image.name, image.size
    );

    // 4. List shows it with the manifest digest and full size.
    let images = list(channel, NAMESPACE).await.expect("list");
    let listed = images
        .iter()
        .find(|i| i.name == "skiff.local/web:1.0")
        .unwrap_or_else(|| panic!("not listed: {images:?}"));
    assert_eq!(listed.digest, packed.manifest_digest);
    assert_eq!(listed.size, packed.size);

    // 5. Resolve gives the agent the run config and the snapshot to start from.
    let resolved = resolve(channel, NAMESPACE, "skiff.local/web:1.0")
        .await
        .expect("resolve");
    assert_eq!(resolved.chain_id, image.chain_id);
    assert_eq!(resolved.config_digest, packed.config_digest);
    assert_eq!(resolved.config.entrypoint, vec!["/bin/httpd"]);
    assert_eq!(resolved.config.cmd, ["-f", "-p", "80", "-h", "/var/www"]);
    assert!(resolved.config.env.contains(&"GREETING=hello".to_string()));
    assert!(resolved.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(resolved.config.working_dir.as_deref(), Some("/var/www"));
    assert_eq!(resolved.config.user.as_deref(), Some("nobody"));
    assert_eq!(resolved.config.exposed_ports, vec!["80/tcp"]);
    assert_eq!(
        resolved
            .config
            .argv(&[], &["-f".into(), "-p".into(), "8080".into()]),
        vec!["/bin/httpd", "-f", "-p", "8080"]
    );

    // 6. Names are normalised: `web:1.0` means Docker Hub's library/web, which is not here.
    let missing = resolve(channel, NAMESPACE, "web:1.0").await;
    assert!(
        matches!(&missing, Err(Error::ImageNotFound { name, .. }) if name == "docker.io/library/web:1.0"),
        "{missing:?}"
    );

    // 7. The snapshot exists, committed, and the labels that protect it are in place.
    assert_eq!(
        snapshot_kind(channel, SNAPSHOTTER, &image.chain_id).await,
        Some(Kind::Committed)
    );
    let config_labels = content_labels(channel, &image.config_digest)
        .await
        .expect("config stored");
    assert_eq!(
        config_labels.get("containerd.io/gc.ref.snapshot.overlayfs"),
        Some(&image.chain_id)
    );
    let manifest_labels = content_labels(channel, &image.manifest_digest)
        .await
        .expect("manifest stored");
    assert_eq!(
        manifest_labels.get("containerd.io/gc.ref.content.l.0"),
        Some(&packed.layer_digest)
    );

    // 8. No lease is left behind, and garbage collection keeps everything the image needs.
    let leases = LeasesClient::new(channel.clone())
        .list(namespaced(ListRequest { filters: vec![] }))
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    assert!(leases.is_empty(), "leftover leases: {leases:?}");
    collect_garbage(channel).await;
    for digest in [
        &packed.manifest_digest,
        &packed.config_digest,
        &packed.layer_digest,
    ] {
        assert!(
            content_labels(channel, digest).await.is_some(),
            "{digest} was collected"
        );
    }
    assert_eq!(
        snapshot_kind(channel, SNAPSHOTTER, &image.chain_id).await,
        Some(Kind::Committed),
        "snapshot was collected"
    );

    // 9. Two imports of another image at once both succeed (one waits for the other's
    //    upload), and the image can be unpacked for a second snapshotter on demand.
    let other = pack_web(
        work.path(),
        "skiff.local/tools:2",
        &["sh", "ls", "cat", "wget"],
    );
    let (a, b) = tokio::join!(
        import_tarball(channel, NAMESPACE, SNAPSHOTTER, &other.path),
        import_tarball(channel, NAMESPACE, SNAPSHOTTER, &other.path),
    );
    assert_eq!(
        a.expect("concurrent import a"),
        b.expect("concurrent import b")
    );
    let native_top = unpack(channel, NAMESPACE, "native", "skiff.local/tools:2")
        .await
        .expect("unpack for native");
    assert_eq!(native_top, other.layer_digest);
    assert_eq!(
        snapshot_kind(channel, "native", &native_top).await,
        Some(Kind::Committed)
    );
    let names: Vec<String> = list(channel, NAMESPACE)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["skiff.local/tools:2", "skiff.local/web:1.0"]);

    // 10. Nothing is left mounted under containerd's directory.
    let mounts = mounts_mentioning(containerd.dir());
    assert!(mounts.is_empty(), "still mounted: {mounts:#?}");
}

#[tokio::test]
async fn a_file_that_is_not_an_image_layout_is_refused_clearly() {
    let containerd = TestContainerd::start().await;
    let work = tempfile::tempdir().expect("temp dir");

    let missing = import_tarball(
        &containerd.channel,
        NAMESPACE,
        SNAPSHOTTER,
        &work.path().join("nope.tar"),
    )
    .await;
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");

    // An old-style `docker save` tarball: manifest.json, no oci-layout.
    let old = work.path().join("old.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&old).expect("create"));
    let manifest = br#"[{"Config":"c.json","RepoTags":["web:1"],"Layers":[]}]"#;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.json", &manifest[..])
        .expect("append");
    builder.finish().expect("finish tar");
    drop(builder);
    let refused = import_tarball(&containerd.channel, NAMESPACE, SNAPSHOTTER, &old).await;
    let message = refused.expect_err("must be refused").to_string();
    assert!(message.contains("oci-layout"), "{message}");
}
