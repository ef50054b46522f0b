//! RBAC end to end, as people use it: a user token from `skiff token create`, kubectl (1.33
//! and 1.32) for roles, bindings, `auth can-i`, `auth whoami` and impersonation, and the
//! attacks a user with a little access tries: a view-only user deleting a pod, and escalation
//! through a RoleBinding or a Role.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::kubectl::{run as kubectl, text, KUBECTL_1_32};
use common::{eventually, Server};

fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .output()
        .expect("run skiff")
}

/// A kubeconfig like the admin's, with `token` instead of the admin token.
fn kubeconfig_with_token(admin: &Path, token: &str, path: PathBuf) -> PathBuf {
    let text = std::fs::read_to_string(admin).expect("admin kubeconfig");
    let replaced: Vec<String> = text
        .lines()
        .map(|line| match line.trim().strip_prefix("token:") {
            Some(_) => format!("    token: \"{token}\""),
            None => line.to_string(),
        })
        .collect();
    std::fs::write(&path, replaced.join("\n")).expect("write kubeconfig");
    path
}

struct Round<'a> {
    binary: &'a str,
    admin: PathBuf,
    ann: PathBuf,
}

impl Round<'_> {
    fn admin(&self, args: &[&str]) -> Output {
        kubectl(self.binary, &self.admin, args)
    }

    fn ann(&self, args: &[&str]) -> Output {
        kubectl(self.binary, &self.ann, args)
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "admin: kubectl {args:?}: {}",
            text(&out)
        );
        text(&out)
    }

    fn ann_ok(&self, args: &[&str]) -> String {
        let out = self.ann(args);
        assert!(
            out.status.success(),
            "ann: kubectl {args:?}: {}",
            text(&out)
        );
        text(&out)
    }

    fn ann_refused(&self, args: &[&str]) -> String {
        let out = self.ann(args);
        assert!(
            !out.status.success(),
            "ann: kubectl {args:?} succeeded: {}",
            text(&out)
        );
        text(&out)
    }
}

fn roles_bindings_and_reviews(binary: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"));
    server.wait_ready();
    let data_dir = server.dir.to_str().expect("utf-8 path");

    // A token for a person: printed once; the cluster keeps its hash.
    let out = skiff(&[
        "token",
        "create",
        "--user",
        "ann",
        "--group",
        "shop",
        "--data-dir",
        data_dir,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (id, _) = token.split_once('.').expect("ID.SECRET");
    let listed = text(&skiff(&["token", "list", "--data-dir", data_dir]));
    assert!(listed.contains(id) && listed.contains("ann"), "{listed}");
    assert!(
        !listed.contains(&token),
        "list never shows the secret: {listed}"
    );

    let round = Round {
        binary,
        admin: server.kubeconfig(),
        ann: kubeconfig_with_token(&server.kubeconfig(), &token, dir.path().join("ann.yaml")),
    };
    // The default policy is made right after the system namespaces; aggregation fills `view`.
    eventually("the view role aggregated", Duration::from_secs(30), || {
        let rules = round.admin_ok(&["get", "clusterrole", "view", "-o", "jsonpath={.rules}"]);
        rules.contains("pods").then_some(())
    });

    // Who am I: the admin is in system:masters, ann in her group.
    let who = round.admin_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(who.contains("system:masters"), "{who}");
    let who = round.ann_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo}"]);
    assert!(
        who.contains("\"username\":\"ann\"") && who.contains("shop"),
        "{who}"
    );

    // Nothing until granted, in Kubernetes' words.
    let refused = round.ann_refused(&["get", "pods"]);
    assert!(
        refused.contains(r#"pods is forbidden: User "ann" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{refused}"
    );
    assert_eq!(
        text(&round.ann(&["auth", "can-i", "list", "pods"])).trim(),
        "no"
    );

    // A view binding (a protobuf body from `kubectl create`).
    round.admin_ok(&[
        "create",
        "rolebinding",
        "ann-view",
        "--clusterrole=view",
        "--user=ann",
    ]);
    round.ann_ok(&["get", "pods"]);
    assert_eq!(
        text(&round.ann(&["auth", "can-i", "list", "pods"])).trim(),
        "yes"
    );
    assert_eq!(
        text(&round.ann(&["auth", "can-i", "delete", "pods"])).trim(),
        "no"
    );
    assert_eq!(
        text(&round.ann(&["auth", "can-i", "list", "pods", "-n", "kube-system"])).trim(),
        "no"
    );
    let list = round.ann_ok(&["auth", "can-i", "--list"]);
    assert!(
        list.contains("pods") && list.contains("[get list watch]"),
        "{list}"
    );

    // The attack: a view-only user deletes a pod.
    round.admin_ok(&["run", "web", "--image=registry.example/web:1"]);
    let refused = round.ann_refused(&["delete", "pod", "web"]);
    assert!(
        refused.contains(r#"pods "web" is forbidden: User "ann" cannot delete resource "pods""#),
        "{refused}"
    );
    round.admin_ok(&["get", "pod", "web"]);

    // Impersonation: the admin may ask as anyone; ann may not act as anyone else.
    assert_eq!(
        text(&round.admin(&["auth", "can-i", "list", "pods", "--as", "ann"])).trim(),
        "yes"
    );
    assert_eq!(
        text(&round.admin(&["auth", "can-i", "list", "pods", "--as", "bob"])).trim(),
        "no"
    );
    assert_eq!(
        text(&round.admin(&[
            "auth",
            "can-i",
            "get",
            "pods",
            "--as",
            "system:serviceaccount:default:default"
        ]))
        .trim(),
        "no"
    );
    let refused = round.ann_refused(&["get", "pods", "--as", "bob"]);
    assert!(
        refused.contains(r#"users "bob" is forbidden: User "ann" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{refused}"
    );

    // Escalation: allowed to write bindings and roles, ann still cannot grant what she lacks.
    round.admin_ok(&[
        "create",
        "role",
        "binder",
        "--verb=create,get,list",
        "--resource=rolebindings,roles",
    ]);
    round.admin_ok(&[
        "create",
        "rolebinding",
        "ann-binder",
        "--role=binder",
        "--user=ann",
    ]);
    let refused = round.ann_refused(&[
        "create",
        "rolebinding",
        "ann-admin",
        "--clusterrole=admin",
        "--user=ann",
    ]);
    assert!(
        refused.contains("is attempting to grant RBAC permissions not currently held")
            && refused.contains(r#"Resources:["secrets"]"#),
        "{refused}"
    );
    let refused = round.ann_refused(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    assert!(refused.contains("not currently held"), "{refused}");
    // What she holds she may pass on.
    round.ann_ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
    ]);
    round.ann_ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
    ]);
    assert_eq!(
        text(&round.admin(&["auth", "can-i", "list", "pods", "--as", "bob"])).trim(),
        "yes"
    );

    // Cluster roles and bindings, and their printing.
    round.admin_ok(&[
        "create",
        "clusterrole",
        "node-reader",
        "--verb=get,list",
        "--resource=nodes",
    ]);
    round.admin_ok(&[
        "create",
        "clusterrolebinding",
        "shop-nodes",
        "--clusterrole=node-reader",
        "--group=shop",
    ]);
    round.ann_ok(&["get", "nodes"]);
    let described = round.admin_ok(&["describe", "clusterrole", "node-reader"]);
    assert!(
        described.contains("nodes") && described.contains("[get list]"),
        "{described}"
    );
    let bindings = round.admin_ok(&["get", "rolebindings"]);
    for name in ["ann-view", "ann-binder", "bob-view"] {
        assert!(bindings.contains(name), "{bindings}");
    }
    // A binding's role cannot change under it.
    let out = round.admin(&[
        "patch",
        "rolebinding",
        "ann-view",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"name":"admin"}}"#,
    ]);
    assert!(
        text(&out).contains("cannot change roleRef"),
        "{}",
        text(&out)
    );

    // Revoked: the token stops working at once.
    let out = skiff(&["token", "delete", id, "--data-dir", data_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let refused = round.ann_refused(&["get", "pods"]);
    assert!(refused.contains("Unauthorized"), "{refused}");

    round.admin_ok(&["delete", "pod", "web", "--wait=false"]);
}

#[test]
fn roles_bindings_and_reviews_with_kubectl_1_33() {
    roles_bindings_and_reviews("kubectl");
}

#[test]
fn roles_bindings_and_reviews_with_kubectl_1_32() {
    roles_bindings_and_reviews(KUBECTL_1_32);
}

/// ServiceAccounts: every namespace has `default` and the CA bundle; `kubectl create token`
/// signs a token the API accepts as the account, RBAC grants it what it may do, deleting the
/// account revokes it; a pod runs as an account with its token volume.
#[test]
fn service_account_tokens_with_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"));
    let client = server.wait_ready();
    let admin = server.kubeconfig();
    let run = |kubeconfig: &Path, args: &[&str]| kubectl("kubectl", kubeconfig, args);
    let ok = |args: &[&str]| {
        let out = run(&admin, args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("the default account", Duration::from_secs(30), || {
        run(&admin, &["get", "serviceaccount", "default"])
            .status
            .success()
            .then_some(())
    });
    let ca = eventually("the CA bundle", Duration::from_secs(30), || {
        let out = run(
            &admin,
            &[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-o",
                r"jsonpath={.data.ca\.crt}",
            ],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(ca.trim(), client.ca_pem.trim(), "the cluster CA");

    ok(&["create", "serviceaccount", "robot"]);
    let token = ok(&["create", "token", "robot", "--duration=1h"])
        .trim()
        .to_string();
    let claims = token.split('.').nth(1).expect("a JWT");
    assert!(!claims.is_empty());
    let robot = kubeconfig_with_token(&admin, &token, dir.path().join("robot.yaml"));
    let who = text(&run(
        &robot,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo}"],
    ));
    assert!(
        who.contains(r#""username":"system:serviceaccount:default:robot""#)
            && who.contains("system:serviceaccounts:default"),
        "{who}"
    );
    let refused = text(&run(&robot, &["get", "pods"]));
    assert!(
        refused
            .contains(r#"User "system:serviceaccount:default:robot" cannot list resource "pods""#),
        "{refused}"
    );
    ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    assert!(run(&robot, &["get", "pods"]).status.success());
    assert_eq!(
        text(&run(
            &admin,
            &[
                "auth",
                "can-i",
                "list",
                "pods",
                "--as=system:serviceaccount:default:robot"
            ]
        ))
        .trim(),
        "yes"
    );

    // A pod runs as `default`, with the token, the CA and its namespace mounted.
    ok(&["run", "web", "--image=registry.example/web:1"]);
    let spec = ok(&["get", "pod", "web", "-o", "jsonpath={.spec.serviceAccountName} {.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath}"]);
    let parts: Vec<&str> = spec.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"default"), "{spec}");
    assert!(
        parts
            .get(1)
            .is_some_and(|v| v.starts_with("kube-api-access-")),
        "{spec}"
    );
    assert_eq!(
        parts.get(2),
        Some(&"/var/run/secrets/kubernetes.io/serviceaccount"),
        "{spec}"
    );

    // Deleting the account revokes its tokens.
    ok(&["delete", "serviceaccount", "robot"]);
    let refused = text(&run(&robot, &["get", "pods"]));
    assert!(refused.contains("Unauthorized"), "{refused}");
    ok(&["delete", "pod", "web", "--wait=false"]);
}

/// `--audit-log-path`: every request, allowed or refused, is one `audit.k8s.io/v1` Event line
/// naming who, what, the object and the answer; the response carries its `Audit-Id`.
#[test]
fn requests_are_recorded_in_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit").join("audit.log");
    let server = Server::start_with_flags(
        &dir.path().join("s"),
        &["--audit-log-path", log.to_str().expect("utf-8")],
    );
    let admin = server.wait_ready();
    let data_dir = server.dir.to_str().expect("utf-8 path");
    let out = skiff(&["token", "create", "--user", "eve", "--data-dir", data_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let eve = common::Client::new(
        &server.url(),
        &admin.ca_pem,
        String::from_utf8_lossy(&out.stdout).trim(),
    );
    let answer = eve
        .request(
            reqwest::Method::DELETE,
            "/api/v1/namespaces/kube-system/secrets/anything",
        )
        .send()
        .expect("an answer");
    assert_eq!(answer.status().as_u16(), 403);
    let audit_id = answer
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .expect("an Audit-Id header")
        .to_string();
    let line = eventually("eve's request in the log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
            .find(|e| e["auditID"] == audit_id)
    });
    assert_eq!(line["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(line["level"], "Metadata");
    assert_eq!(line["user"]["username"], "eve");
    assert_eq!(line["verb"], "delete");
    assert_eq!(line["objectRef"]["resource"], "secrets");
    assert_eq!(line["objectRef"]["namespace"], "kube-system");
    assert_eq!(line["responseStatus"]["code"], 403);
    assert_eq!(
        line["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(line["sourceIPs"][0], "127.0.0.1");
    assert!(
        line.get("requestObject").is_none(),
        "Metadata level: no bodies"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).expect("log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the audit log is private");
    // The admin's list is there too, allowed.
    assert_eq!(admin.get("/api/v1/namespaces/default/pods").0, 200);
    eventually(
        "the admin's list in the log",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .any(|l| {
                    l.contains(r#""username":"system:admin""#)
                        && l.contains(r#""verb":"list""#)
                        && l.contains(r#""code":200"#)
                })
                .then_some(())
        },
    );
}

/// `--audit-policy-file`: the first matching rule gives each request its level — `None` leaves
/// it out, `Request` keeps the request's object, `RequestResponse` the response's too; a
/// request no rule matches is not logged; a bad policy stops the server naming the field.
#[test]
fn an_audit_policy_decides_what_is_logged_and_how_much() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.log");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
  - level: None
    verbs: ["get"]
    resources: [{group: "", resources: ["configmaps"]}]
  - level: Request
    verbs: ["create"]
    resources: [{group: "", resources: ["configmaps"]}]
  - level: RequestResponse
    resources: [{group: "", resources: ["namespaces"]}]
  - level: Metadata
    resources: [{group: "", resources: ["pods"]}]
"#,
    )
    .expect("policy");
    let server = Server::start_with_flags(
        &dir.path().join("s"),
        &[
            "--audit-log-path",
            log.to_str().expect("utf-8"),
            "--audit-policy-file",
            policy.to_str().expect("utf-8"),
        ],
    );
    let admin = server.wait_ready();
    let (code, _) = admin.post(
        "/api/v1/namespaces/default/configmaps",
        &common::configmap("audited", "kept-in-the-log"),
    );
    assert_eq!(code, 201);
    assert_eq!(
        admin.get("/api/v1/namespaces/default/configmaps/audited").0,
        200
    );
    assert_eq!(admin.get("/api/v1/namespaces/default").0, 200);
    assert_eq!(admin.get("/api/v1/namespaces/default/pods").0, 200);
    assert_eq!(admin.get("/api/v1/namespaces/default/secrets").0, 200);
    let lines = eventually("the pods list in the log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .collect();
        lines
            .iter()
            .any(|e| e["objectRef"]["resource"] == "pods")
            .then_some(lines)
    });
    let about = |resource: &str, verb: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|e| e["objectRef"]["resource"] == resource && e["verb"] == verb)
            .collect()
    };
    let created: Vec<_> = about("configmaps", "create")
        .into_iter()
        .filter(|e| e["requestObject"]["metadata"]["name"] == "audited")
        .collect();
    assert_eq!(created.len(), 1, "{lines:?}");
    assert_eq!(created[0]["level"], "Request");
    assert_eq!(
        created[0]["requestObject"]["data"]["value"],
        "kept-in-the-log"
    );
    assert!(created[0].get("responseObject").is_none());
    assert!(about("configmaps", "get").is_empty(), "level None");
    let namespace: Vec<_> = about("namespaces", "get")
        .into_iter()
        .filter(|e| e["objectRef"]["name"] == "default")
        .collect();
    assert_eq!(namespace[0]["level"], "RequestResponse");
    assert_eq!(
        namespace[0]["responseObject"]["metadata"]["name"],
        "default"
    );
    assert!(
        namespace[0]["responseObject"]["metadata"]
            .get("managedFields")
            .is_none(),
        "omitManagedFields"
    );
    assert_eq!(about("pods", "list")[0]["level"], "Metadata");
    assert!(about("secrets", "list").is_empty(), "no rule matched");
    drop(admin);
    drop(server);

    std::fs::write(&policy, "kind: Policy\nrules:\n  - level: Loud\n").expect("bad policy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("s2"))
        .args(["--listen", "127.0.0.1:0", "--disable-agent"])
        .arg("--audit-log-path")
        .arg(&log)
        .arg("--audit-policy-file")
        .arg(&policy)
        .output()
        .expect("skiff server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rules[0].level"), "{stderr}");
}
