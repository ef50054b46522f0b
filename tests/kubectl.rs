//! End-to-end: the real `kubectl` against a real `skiff server`, with the kubeconfig the server
//! writes. Every test runs twice: with the `kubectl` on PATH (a dispatcher that runs the version
//! matching the server's `/version`, 1.33) and with the 1.32 binary called directly.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, Server};

/// kubectl 1.32 behind the dispatcher (Debian's google-cloud-sdk layout).
const KUBECTL_1_32: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

thread_local! {
    /// The kubectl this test drives (each test runs on its own thread).
    static KUBECTL: std::cell::Cell<&'static str> = const { std::cell::Cell::new("kubectl") };
}

fn kubectl_binary() -> &'static str {
    KUBECTL.with(std::cell::Cell::get)
}

/// One test body, as two tests: with the dispatcher's kubectl (1.33) and with 1.32.
macro_rules! on_both_kubectls {
    ($($body:ident => $latest:ident, $v1_32:ident;)*) => {$(
        #[test]
        fn $latest() {
            $body()
        }
        #[test]
        fn $v1_32() {
            KUBECTL.with(|k| k.set(KUBECTL_1_32));
            $body()
        }
    )*};
}

on_both_kubectls! {
    gets_applies_watches_and_deletes => kubectl_gets_applies_watches_and_deletes, kubectl_1_32_gets_applies_watches_and_deletes;
    broken_seed_manifest => kubectl_apply_of_the_broken_seed_manifest_fails_clearly_and_stores_nothing, kubectl_1_32_apply_of_the_broken_seed_manifest_fails_clearly;
    prints_kubernetes_columns => kubectl_get_prints_the_columns_kubernetes_prints, kubectl_1_32_get_prints_the_columns_kubernetes_prints;
    pages_through_lists => kubectl_get_follows_continue_tokens_page_by_page, kubectl_1_32_get_follows_continue_tokens_page_by_page;
    holds_namespaces_to_quotas => kubectl_create_quota_holds_a_namespace_to_it, kubectl_1_32_create_quota_holds_a_namespace_to_it;
}

/// A pod manifest with one container `c` and the given resources (JSON).
fn quota_pod(name: &str, resources: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"containers": [{{"name": "c", "image": "pause", "resources": {resources}}}]}}}}"#
    )
}

/// ResourceQuota: `kubectl create quota`, its columns and describe, pods refused with
/// Kubernetes' words past the limit or without the requests it tracks, usage freed by deletes,
/// and concurrent creates that cannot overshoot it.
fn holds_namespaces_to_quotas() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let kc = server.kubeconfig();
    let cache = dir.path().join("kube-cache");
    let run = |args: &[&str]| kubectl(&kc, &cache, args);
    ok(&run(&["create", "namespace", "q"]));
    ok(&run(&[
        "create",
        "quota",
        "compute",
        "-n",
        "q",
        "--hard=pods=2,requests.cpu=1,limits.memory=256Mi,count/secrets=1,services.nodeports=0",
    ]));
    let table = ok(&run(&["get", "quota", "-n", "q"]));
    assert!(
        table.starts_with("NAME") && table.contains("REQUEST") && table.contains("LIMIT"),
        "{table}"
    );
    assert!(
        table.contains("count/secrets: 0/1, pods: 0/2, requests.cpu: 0/1, services.nodeports: 0/0")
            && table.contains("limits.memory: 0/256Mi"),
        "{table}"
    );
    let create = |name: &str, resources: &str| {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, quota_pod(name, resources)).expect("write pod");
        run(&["create", "-n", "q", "-f", file.to_str().expect("utf-8")])
    };
    let refused = |output: &Output, words: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "expected a refusal: {stderr}");
        // `kubectl create secret` words it "error: failed to create secret ...".
        assert!(
            stderr.contains("forbidden") && stderr.contains(words),
            "{stderr}"
        );
    };
    refused(
        &create("bare", "{}"),
        r#"pods "bare" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"#,
    );
    let sized = |cpu: &str| {
        format!(r#"{{"requests": {{"cpu": "{cpu}"}}, "limits": {{"memory": "100Mi"}}}}"#)
    };
    ok(&create("a", &sized("600m")));
    refused(
        &create("b", &sized("600m")),
        r#"pods "b" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"#,
    );
    ok(&create("b", &sized("400m")));
    refused(
        &create("c", &sized("1m")),
        "exceeded quota: compute, requested: limits.memory=100Mi,pods=1,requests.cpu=1m, used: limits.memory=200Mi,pods=2,requests.cpu=1, limited: limits.memory=256Mi,pods=2,requests.cpu=1",
    );
    let described = ok(&run(&["describe", "quota", "compute", "-n", "q"]));
    for line in [
        "pods                2     2",
        "requests.cpu        1     1",
        "limits.memory       200Mi  256Mi",
    ] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            described
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == words),
            "{line} in\n{described}"
        );
    }
    ok(&run(&[
        "create",
        "secret",
        "generic",
        "one",
        "-n",
        "q",
        "--from-literal=a=b",
    ]));
    refused(
        &run(&["create", "secret", "generic", "two", "-n", "q", "--from-literal=a=b"]),
        "exceeded quota: compute, requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1",
    );
    refused(
        &run(&["create", "service", "nodeport", "np", "-n", "q", "--tcp=80"]),
        "requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0",
    );
    ok(&run(&[
        "create",
        "service",
        "clusterip",
        "cip",
        "-n",
        "q",
        "--tcp=80",
    ]));
    // A delete frees its share at once, and the leader writes it into the status.
    ok(&run(&["delete", "pod", "a", "-n", "q", "--wait=false"]));
    eventually("pod a gone", Duration::from_secs(30), || {
        (client.get("/api/v1/namespaces/q/pods/a").0 == 404).then_some(())
    });
    ok(&create("c", &sized("500m")));
    let (_, quota) = client.get("/api/v1/namespaces/q/resourcequotas/compute");
    assert_eq!(quota["status"]["used"]["requests.cpu"], "900m", "{quota}");
    ok(&run(&["delete", "pod", "c", "-n", "q", "--wait=false"]));
    eventually(
        "used lowered after a delete",
        Duration::from_secs(30),
        || {
            let (_, quota) = client.get("/api/v1/namespaces/q/resourcequotas/compute");
            (quota["status"]["used"]["requests.cpu"] == "400m").then_some(())
        },
    );
    // Bad quotas are refused by field.
    let bad = run(&["create", "quota", "bad", "-n", "q", "--hard=bananas=1"]);
    refused_invalid(
        &bad,
        r#"spec.hard[bananas]: Invalid value: "bananas": must be a standard resource for quota"#,
    );

    // Eight writers at once against room for three: exactly three get in.
    ok(&run(&["create", "namespace", "race"]));
    ok(&run(&[
        "create",
        "quota",
        "three",
        "-n",
        "race",
        "--hard=count/secrets=3",
    ]));
    let created = std::thread::scope(|s| {
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let client = &client;
                s.spawn(move || {
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("s{i}")}});
                    client.post("/api/v1/namespaces/race/secrets", &body).0
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect::<Vec<u16>>()
    });
    assert_eq!(
        created.iter().filter(|c| **c == 201).count(),
        3,
        "{created:?}"
    );
    assert!(
        created.iter().all(|c| matches!(c, 201 | 403 | 409)),
        "{created:?}"
    );
    let (_, secrets) = client.get("/api/v1/namespaces/race/secrets");
    assert_eq!(common::names(&secrets).len(), 3, "{secrets}");
}

fn refused_invalid(output: &Output, words: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected a refusal: {stderr}");
    assert!(
        stderr.contains("is invalid") && stderr.contains(words),
        "{stderr}"
    );
}

/// `limit` and `continue`: pages of a list with Kubernetes' metadata, and kubectl's
/// `--chunk-size` following the tokens to the end.
fn pages_through_lists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let kc = server.kubeconfig();
    let cache = dir.path().join("kube-cache");
    for i in 0..7 {
        let (code, body) = client.post(
            "/api/v1/namespaces/default/configmaps",
            &common::configmap(&format!("page-{i}"), "v"),
        );
        assert_eq!(code, 201, "{body}");
    }
    let selector = "fieldSelector=metadata.name!=kube-root-ca.crt";
    let (code, first) = client.get(&format!(
        "/api/v1/namespaces/default/configmaps?limit=3&{selector}"
    ));
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3), "{first}");
    assert_eq!(first["items"][0]["metadata"]["name"], "page-0");
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    let (_, unfiltered) = client.get("/api/v1/namespaces/default/configmaps?limit=3");
    assert_eq!(
        unfiltered["metadata"]["remainingItemCount"], 5,
        "{unfiltered}"
    );
    let (_, second) = client.get(&format!(
        "/api/v1/namespaces/default/configmaps?limit=3&{selector}&continue={token}"
    ));
    assert_eq!(second["items"][0]["metadata"]["name"], "page-3", "{second}");
    assert_eq!(
        second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "every page carries the first page's revision"
    );
    // A token for another collection is refused by name.
    let (code, refused) = client.get(&format!(
        "/api/v1/namespaces/default/secrets?limit=1&continue={token}"
    ));
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("continue key is not valid"),
        "{refused}"
    );

    let listed = ok(&kubectl(
        &kc,
        &cache,
        &["get", "configmaps", "--chunk-size=2", "-o", "name"],
    ));
    let names: Vec<&str> = listed.lines().filter(|l| l.contains("page-")).collect();
    assert_eq!(names.len(), 7, "{listed}");
}

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_binary())
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

/// Runs `kubectl get configmaps -w <args>`, applies a ConfigMap `watched` with `data` (YAML
/// lines under `data:`) once the first line is out, and returns the first line and the first
/// one about `watched`.
fn watch_configmaps(
    kubeconfig: &Path,
    cache: &Path,
    dir: &Path,
    args: &[&str],
    data: &str,
) -> (String, String) {
    let mut watch = Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(["get", "configmaps", "-w"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    let manifest = dir.join("watched.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n{data}"),
    )
    .expect("write manifest");
    ok(&kubectl(
        kubeconfig,
        cache,
        &["apply", "-f", manifest.to_str().expect("path")],
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
    let _ = watch.kill();
    let _ = watch.wait();
    (first, seen)
}

fn gets_applies_watches_and_deletes() {
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
    assert!(yaml.contains("maxSurge: 1"), "{yaml}");
    assert!(
        yaml.contains("progressDeadlineSeconds: 600"),
        "defaults applied: {yaml}"
    );
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
    assert_eq!(again, "2 1");

    // get -w sees a change made by someone else.
    // (Not `kubectl create configmap`: its generator sends protobuf, which skiff cannot decode yet.)
    let (first, seen) = watch_configmaps(&kc, &cache, dir.path(), &["-o", "name"], "  a: b\n");
    assert_eq!(
        first, "configmap/kube-root-ca.crt",
        "the list first, by name"
    );
    assert_eq!(seen, "configmap/watched");

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

fn broken_seed_manifest() {
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

/// The words of the header line of `kubectl get` output.
fn header(output: &str) -> Vec<&str> {
    output
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

/// The cells of the row whose first cell is `name` (columns are padded with spaces).
fn row<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    output
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{output}"))
}

fn prints_kubernetes_columns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    server.wait_ready();
    let kc = server.kubeconfig();
    let cache = dir.path().join("kube-cache");
    let get = |args: &[&str]| {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        ok(&kubectl(&kc, &cache, &all))
    };

    // 1. A pod (Pending: this server runs no agent), a Deployment, a NodePort Service and a
    //    ConfigMap.
    let manifest = dir.path().join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\n  labels:\n    app: box\nspec:\n  containers:\n  - name: box\n    image: busybox\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: front\nspec:\n  type: NodePort\n  selector:\n    app: box\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    )
    .expect("write manifest");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in [
        manifest,
        examples.join("web-deployment.yaml"),
        examples.join("web-config.yaml"),
    ] {
        ok(&kubectl(
            &kc,
            &cache,
            &["apply", "-f", file.to_str().expect("path")],
        ));
    }

    // 2. Pods: the columns, and the wide ones.
    let pods = get(&["pods"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    assert_eq!(row(&pods, "box")[1..4], ["0/1", "Pending", "0"], "{pods}");
    let wide = get(&["pods", "-o", "wide"]);
    let columns = header(&wide);
    assert!(
        columns.contains(&"IP") && columns.contains(&"NODE") && columns.contains(&"GATES"),
        "{wide}"
    );
    assert!(row(&wide, "box").contains(&"<none>"), "{wide}");

    // 3. Deployments, Services, Namespaces, ConfigMaps.
    let deployments = get(&["deploy"]);
    assert_eq!(
        header(&deployments),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deployments}"
    );
    assert_eq!(row(&deployments, "web")[1], "0/3", "{deployments}");
    let services = get(&["svc"]);
    assert_eq!(
        header(&services),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{services}"
    );
    let front = row(&services, "front");
    assert_eq!(front[1], "NodePort", "{services}");
    assert_eq!(front[3], "<none>", "{services}");
    assert!(
        front[4].starts_with("80:") && front[4].ends_with("/TCP"),
        "{services}"
    );
    let namespaces = get(&["ns"]);
    assert_eq!(
        header(&namespaces),
        ["NAME", "STATUS", "AGE"],
        "{namespaces}"
    );
    assert_eq!(row(&namespaces, "default")[1], "Active", "{namespaces}");
    let configmaps = get(&["cm"]);
    assert_eq!(header(&configmaps), ["NAME", "DATA", "AGE"], "{configmaps}");
    assert_eq!(row(&configmaps, "web-config")[1], "1", "{configmaps}");

    // 4. Nodes, if this server has any (it runs no agent, so usually none).
    let nodes = get(&["nodes"]);
    if !nodes.trim().is_empty() {
        assert_eq!(
            header(&nodes),
            ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            "{nodes}"
        );
    }

    // 5. -A adds NAMESPACE and --show-labels adds LABELS, both from the rows' metadata.
    let everywhere = get(&["cm", "-A"]);
    assert_eq!(
        header(&everywhere),
        ["NAMESPACE", "NAME", "DATA", "AGE"],
        "{everywhere}"
    );
    assert!(
        everywhere
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["default", "web-config"])),
        "{everywhere}"
    );
    assert_eq!(
        row(&everywhere, "kube-system")[1],
        "kube-root-ca.crt",
        "every namespace holds the CA bundle: {everywhere}"
    );
    let labelled = get(&["pods", "--show-labels"]);
    assert_eq!(header(&labelled).last(), Some(&"LABELS"), "{labelled}");
    assert_eq!(row(&labelled, "box").last(), Some(&"app=box"), "{labelled}");

    // 6. One object is a one-row table; -o json still gets the objects themselves.
    let one = get(&["pod", "box"]);
    assert_eq!(one.lines().count(), 2, "{one}");
    let json: serde_json::Value =
        serde_json::from_str(&get(&["pods", "-o", "json"])).expect("JSON list");
    assert_eq!(json["items"][0]["kind"], "Pod", "{json}");
    assert_eq!(
        json["items"][0]["spec"]["containers"][0]["image"],
        "busybox"
    );

    // 7. get -w prints the header, then a row per change (one-row tables in the watch).
    let (first, seen) = watch_configmaps(&kc, &cache, dir.path(), &[], "  a: b\n  c: d\n");
    assert_eq!(header(&first), ["NAME", "DATA", "AGE"]);
    assert_eq!(row(&seen, "watched")[1], "2", "{seen}");
}
