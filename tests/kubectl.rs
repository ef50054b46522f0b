//! End-to-end: the real `kubectl` on PATH against a real `skiff server`, with the kubeconfig the
//! server writes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, Server};

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("run kubectl")
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "kubectl failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn kubectl_gets_applies_watches_and_deletes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    server.wait_ready();
    let kc = server.kubeconfig();
    let cache = dir.path().join("kube-cache");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");

    // get ns lists the system namespaces.
    let namespaces = ok(&kubectl(&kc, &cache, &["get", "ns"]));
    assert!(
        namespaces.contains("default") && namespaces.contains("kube-system"),
        "{namespaces}"
    );

    // apply -f creates a ConfigMap and a Deployment (stored; nothing runs them yet).
    let cm = examples.join("web-config.yaml");
    let deploy = examples.join("web-deployment.yaml");
    let applied = ok(&kubectl(
        &kc,
        &cache,
        &[
            "apply",
            "-f",
            cm.to_str().expect("path"),
            "-f",
            deploy.to_str().expect("path"),
        ],
    ));
    assert!(
        applied.contains("configmap/web-config created"),
        "{applied}"
    );
    assert!(applied.contains("deployment.apps/web created"), "{applied}");

    // get -o yaml shows the stored object with server defaults.
    let yaml = ok(&kubectl(
        &kc,
        &cache,
        &["get", "deployment", "web", "-o", "yaml"],
    ));
    assert!(yaml.contains("maxSurge: 25%"), "defaults applied: {yaml}");
    assert!(yaml.contains("revisionHistoryLimit: 10"), "{yaml}");
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    let by_short_name = ok(&kubectl(
        &kc,
        &cache,
        &["get", "cm", "web-config", "-o", "jsonpath={.data.GREETING}"],
    ));
    assert_eq!(by_short_name, "hello from skiff");

    // apply of a changed manifest: kubectl sends a strategic merge patch.
    let changed = dir.path().join("web-changed.yaml");
    let text = std::fs::read_to_string(&deploy).expect("manifest");
    std::fs::write(
        &changed,
        text.replace("replicas: 3", "replicas: 4")
            .replace("web:1.0", "web:1.1"),
    )
    .expect("write");
    let reapplied = ok(&kubectl(
        &kc,
        &cache,
        &["apply", "-f", changed.to_str().expect("path")],
    ));
    assert!(
        reapplied.contains("deployment.apps/web configured"),
        "{reapplied}"
    );
    let fields = ok(&kubectl(
        &kc,
        &cache,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}"],
    ));
    assert_eq!(fields, "4 skiff.local/web:1.1 8080 2");
    // Applying the same manifest again changes nothing. (kubectl still sends
    // `{"spec":{"strategy":{"$retainKeys":["type"]}}}` — the live object has the defaulted
    // rollingUpdate the manifest lacks — and prints "configured", as it does against
    // Kubernetes; the defaults come back and the spec, hence the generation, stays the same.)
    ok(&kubectl(
        &kc,
        &cache,
        &["apply", "-f", changed.to_str().expect("path")],
    ));
    let again = ok(&kubectl(
        &kc,
        &cache,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation} {.spec.strategy.rollingUpdate.maxSurge}",
        ],
    ));
    assert_eq!(again, "2 25%");

    // get -w sees a change made by someone else.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    assert_eq!(first, "configmap/web-config");
    // (Not `kubectl create configmap`: its generator sends protobuf, which skiff cannot decode yet.)
    let watched = dir.path().join("watched.yaml");
    std::fs::write(
        &watched,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  a: b\n",
    )
    .expect("write manifest");
    ok(&kubectl(
        &kc,
        &cache,
        &["apply", "-f", watched.to_str().expect("path")],
    ));
    let seen = eventually(
        "get -w to print the new ConfigMap",
        Duration::from_secs(20),
        || {
            lines
                .next()
                .and_then(|l| l.ok())
                .filter(|l| l.contains("watched"))
        },
    );
    assert_eq!(seen, "configmap/watched");
    let _ = watch.kill();
    let _ = watch.wait();

    // label (merge patch) works; delete removes.
    ok(&kubectl(
        &kc,
        &cache,
        &["label", "configmap", "watched", "tier=demo"],
    ));
    let labelled = ok(&kubectl(
        &kc,
        &cache,
        &["get", "cm", "-l", "tier=demo", "-o", "name"],
    ));
    assert_eq!(labelled.trim(), "configmap/watched");
    let deleted = ok(&kubectl(
        &kc,
        &cache,
        &["delete", "-f", deploy.to_str().expect("path")],
    ));
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    let gone = kubectl(&kc, &cache, &["get", "deployment", "web"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );
}

#[test]
fn kubectl_apply_of_the_broken_seed_manifest_fails_clearly_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    server.wait_ready();
    let kc = server.kubeconfig();
    let cache = dir.path().join("kube-cache");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests/seed-000-deployment-broken-indent.yaml");
    let output = kubectl(
        &kc,
        &cache,
        &["apply", "-f", manifest.to_str().expect("path")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("spec.template.metadata.app"),
        "kubectl said: {stderr}"
    );
    let listed = ok(&kubectl(&kc, &cache, &["get", "deployments", "-o", "name"]));
    assert_eq!(listed.trim(), "", "nothing stored");
}
