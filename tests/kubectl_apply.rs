//! `kubectl apply --server-side` against a real skiff server, with the kubectl on PATH (the
//! dispatcher runs the version matching the server, 1.33) and the 1.32 binary called directly.
mod common;

use std::path::Path;
use std::process::Command;

use common::kubectl::{run, text, KUBECTL_1_32};
use common::Server;
use serde_json::Value;

fn manifest(dir: &Path, replicas: u32, tier_label: bool) -> String {
    let tier = if tier_label { "\n    tier: web" } else { "" };
    let path = dir.join(format!("web-{replicas}-{tier_label}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web{tier}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: skiff.local/web:1.0
"#
        ),
    )
    .expect("manifest");
    path.display().to_string()
}

fn server_side_apply_round(kubectl: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s"));
    server.wait_ready();
    let kc = server.kubeconfig();

    // Creates when missing.
    let out = run(
        kubectl,
        &kc,
        &[
            "apply",
            "--server-side",
            "-f",
            &manifest(dir.path(), 2, true),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("deployment.apps/web serverside-applied"),
        "{}",
        text(&out)
    );
    let out = run(
        kubectl,
        &kc,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    let live: Value = serde_json::from_slice(&out.stdout).expect("json");
    let managed = &live["metadata"]["managedFields"][0];
    assert_eq!(managed["manager"], "kubectl", "{live}");
    assert_eq!(managed["operation"], "Apply");
    assert!(
        managed["fieldsV1"]["f:spec"]["f:replicas"].is_object(),
        "{managed}"
    );

    // Dry run changes nothing.
    let out = run(
        kubectl,
        &kc,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            &manifest(dir.path(), 4, true),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        kubectl,
        &kc,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(text(&out), "2");

    // Leaving a field out of the next apply removes it.
    let out = run(
        kubectl,
        &kc,
        &[
            "apply",
            "--server-side",
            "-f",
            &manifest(dir.path(), 2, false),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        kubectl,
        &kc,
        &["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"],
    );
    assert!(!text(&out).contains("tier"), "{}", text(&out));

    // Another manager takes spec.replicas; applying a different count is a conflict that names
    // the manager and the field...
    let out = run(kubectl, &kc, &["scale", "deploy", "web", "--replicas=5"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        kubectl,
        &kc,
        &[
            "apply",
            "--server-side",
            "-f",
            &manifest(dir.path(), 3, false),
        ],
    );
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("Apply failed with 1 conflict"),
        "{message}"
    );
    assert!(message.contains(".spec.replicas"), "{message}");
    // ...and --force-conflicts takes it over.
    let out = run(
        kubectl,
        &kc,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &manifest(dir.path(), 3, false),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        kubectl,
        &kc,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(text(&out), "3");

    // annotate, edit (through $EDITOR), replace, describe.
    let out = run(kubectl, &kc, &["annotate", "deploy", "web", "owner=team-a"]);
    assert!(out.status.success(), "{}", text(&out));
    // The "editor": a script that changes the replica count in the file kubectl opens.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 3/replicas: 4/' \"$1\"\n",
    )
    .expect("editor");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["edit", "deploy", "web"])
        .env("EDITOR", editor.display().to_string())
        .output()
        .expect("kubectl edit");
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        kubectl,
        &kc,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(text(&out), "4", "edited through $EDITOR");
    // kubectl replace reads the current resourceVersion and sends it back, so a status write
    // of the deployment controller in between is a 409 ("try again"), as on Kubernetes; a
    // user tries again, and so does this test.
    let replace = manifest(dir.path(), 1, false);
    let mut out = run(kubectl, &kc, &["replace", "-f", &replace]);
    for _ in 0..5 {
        if out.status.success() || !text(&out).contains("(Conflict)") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        out = run(kubectl, &kc, &["replace", "-f", &replace]);
    }
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("deployment.apps/web replaced"),
        "{}",
        text(&out)
    );
    let out = run(kubectl, &kc, &["describe", "deploy", "web"]);
    let described = text(&out);
    assert!(out.status.success(), "{described}");
    for line in [
        "Name:",
        "Replicas:",
        "1 desired",
        "StrategyType:",
        "RollingUpdate",
        "Pod Template:",
    ] {
        assert!(
            described.contains(line),
            "{line} missing from:\n{described}"
        );
    }

    // The OpenAPI documents carry real schemas: explain prints field docs.
    let out = run(kubectl, &kc, &["explain", "pod.spec.containers"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("List of containers belonging to the pod"),
        "{}",
        text(&out)
    );

    // A missing fieldManager is refused by the API itself.
    let client = server.wait_ready();
    let (code, body) = client.call(
        reqwest::Method::PATCH,
        "/apis/apps/v1/namespaces/default/deployments/web",
        None,
    );
    assert_ne!(code, 200, "{body}");
}

#[test]
fn server_side_apply_with_kubectl_1_33() {
    server_side_apply_round("kubectl");
}

#[test]
fn server_side_apply_with_kubectl_1_32() {
    server_side_apply_round(KUBECTL_1_32);
}
