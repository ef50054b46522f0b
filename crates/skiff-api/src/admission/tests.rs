//! Admission end to end: manifests in, stored objects or Kubernetes' errors out.
//!
//! The seed manifests are copied verbatim from the project's shared manifests (taken from the
//! documents skiff was specified from), so the tests run from a clean checkout.

use serde_json::{json, Value};

use super::*;
use crate::decode::decode_body;
use crate::resources::{self, ResourceInfo};

const BROKEN_INDENT_DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-app
spec:
  replicas: 3
  selector:
    matchLabels:
      app: my-app
  template:
    metadata:
      labels:
      app: my-app
    spec:
      containers:
      - name: my-app
        image: my-app:latest
        ports:
        - containerPort: 3000
";

/// Every other seed manifest whose kind skiff serves (the HPA is not served yet).
const SERVED_SEEDS: &[(&str, &str)] = &[
    (
        "seed-000-service-loadbalancer.yaml",
        "\
apiVersion: v1
kind: Service
metadata:
  name: my-app
spec:
  selector:
    app: my-app
  ports:
    - protocol: TCP
      port: 80
      targetPort: 3000
  type: LoadBalancer
",
    ),
    (
        "seed-001-deployment-rolling.yaml",
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-service
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
  selector:
    matchLabels:
      app: my-app
  template:
    metadata:
      labels:
        app: my-app
    spec:
      containers:
      - name: my-container
        image: my-image
",
    ),
    (
        "seed-001-pod.yaml",
        "\
apiVersion: v1
kind: Pod
metadata:
  name: my-service
spec:
  containers:
  - name: my-container
    image: my-image
",
    ),
    (
        "seed-001-service.yaml",
        "\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: my-app
  ports:
  - protocol: TCP
    port: 80
    targetPort: 8080
",
    ),
    (
        "seed-002-deployment.yaml",
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-app
spec:
  replicas: 3
  selector:
    matchLabels:
      app: my-app
  template:
    metadata:
      labels:
        app: my-app
    spec:
      containers:
      - name: my-app
        image: my-app:1.0
        ports:
        - containerPort: 8080
",
    ),
    (
        "seed-002-pod-probes.yaml",
        "\
apiVersion: v1
kind: Pod
metadata:
  name: my-app
spec:
  containers:
  - name: my-app
    image: my-app:1.0
    ports:
    - containerPort: 8080
    livenessProbe:
      httpGet:
        path: /healthz
        port: 8080
      initialDelaySeconds: 10
      periodSeconds: 5
    readinessProbe:
      httpGet:
        path: /ready
        port: 8080
      initialDelaySeconds: 10
      periodSeconds: 5
",
    ),
    (
        "seed-003-pvc.yaml",
        "\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: my-app-pvc
spec:
  accessModes:
  - ReadWriteOnce
  resources:
    requests:
      storage: 1Gi
",
    ),
    (
        "seed-004-pod.yaml",
        "\
apiVersion: v1
kind: Pod
metadata:
  name: my-app-pod
spec:
  containers:
  - name: my-app-container
    image: my-app
    ports:
    - containerPort: 80
",
    ),
];

fn yaml(text: &str) -> Value {
    decode_body(text.as_bytes(), Some("application/yaml")).expect("manifest is valid YAML")
}

/// The served resource a manifest is for.
fn info_for(manifest: &Value) -> &'static ResourceInfo {
    let api_version = manifest["apiVersion"].as_str().unwrap_or("");
    let kind = manifest["kind"].as_str().unwrap_or("");
    resources::by_kind(api_version, kind).expect("served kind")
}

fn info(kind: &str) -> &'static ResourceInfo {
    resources::RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .expect("served kind")
}

#[test]
fn broken_indent_is_an_unknown_field_under_strict() {
    let manifest = yaml(BROKEN_INDENT_DEPLOYMENT);
    assert_eq!(
        admit(info_for(&manifest), manifest, FieldValidation::Strict),
        Err(ApiError::BadRequest(
            "strict decoding error: unknown field \"spec.template.metadata.app\"".into()
        ))
    );
}

#[test]
fn broken_indent_is_invalid_otherwise() {
    for validation in [FieldValidation::Warn, FieldValidation::Ignore] {
        let manifest = yaml(BROKEN_INDENT_DEPLOYMENT);
        let error = admit(info_for(&manifest), manifest, validation).expect_err("must be rejected");
        let ApiError::Invalid { kind, name, causes } = &error else {
            panic!("{validation:?}: {error:?}");
        };
        assert_eq!(
            (kind.as_str(), name.as_str()),
            ("Deployment.apps", "my-app")
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.template.metadata.labels"],
            "{validation:?}"
        );
        assert_eq!(
            error.to_string(),
            "Deployment.apps \"my-app\" is invalid: spec.template.metadata.labels: Invalid value: \
             map[string]string(nil): `selector` does not match template `labels`"
        );
        assert_eq!(error.code(), 422);
    }
}

#[test]
fn every_served_seed_is_admitted_under_strict() {
    for (file, text) in SERVED_SEEDS {
        let manifest = yaml(text);
        let admitted = admit(
            info_for(&manifest),
            manifest.clone(),
            FieldValidation::Strict,
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            admitted.warnings.is_empty(),
            "{file}: {:?}",
            admitted.warnings
        );
        assert_eq!(admitted.object["kind"], manifest["kind"], "{file}");
        assert_eq!(admitted.object["metadata"], manifest["metadata"], "{file}");
    }
}

#[test]
fn pods_are_defaulted_like_kubernetes() {
    let manifest = yaml(SERVED_SEEDS[2].1);
    let admitted = admit(info("Pod"), manifest, FieldValidation::Strict).expect("admitted");
    assert_eq!(
        admitted.object,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "my-service"},
            "spec": {
                "containers": [{
                    "name": "my-container",
                    "image": "my-image",
                    "imagePullPolicy": "Always",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }],
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30
            }
        })
    );
}

#[test]
fn probes_and_ports_are_defaulted() {
    let manifest = yaml(SERVED_SEEDS[5].1);
    let admitted = admit(info("Pod"), manifest, FieldValidation::Strict).expect("admitted");
    let container = &admitted.object["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        container["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        container["livenessProbe"],
        json!({
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "initialDelaySeconds": 10, "periodSeconds": 5,
            "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3
        })
    );

    // Zero is "unset" for these Go integers (protobuf clients always send them).
    let mut manifest = yaml(SERVED_SEEDS[5].1);
    manifest["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = json!(0);
    manifest["spec"]["containers"][0]["livenessProbe"]["failureThreshold"] = json!(0);
    let admitted = admit(info("Pod"), manifest, FieldValidation::Strict).expect("admitted");
    let probe = &admitted.object["spec"]["containers"][0]["livenessProbe"];
    assert_eq!(
        (&probe["periodSeconds"], &probe["failureThreshold"]),
        (&json!(10), &json!(3))
    );
}

#[test]
fn deployments_are_defaulted_like_kubernetes() {
    let manifest = yaml(SERVED_SEEDS[1].1);
    let admitted = admit(info("Deployment"), manifest, FieldValidation::Strict).expect("admitted");
    let spec = &admitted.object["spec"];
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let template_spec = &spec["template"]["spec"];
    assert_eq!(template_spec["restartPolicy"], "Always");
    assert_eq!(template_spec["containers"][0]["imagePullPolicy"], "Always");
    // SetDefaults_Pod, not SetDefaults_PodSpec: templates do not get it.
    assert!(template_spec.get("enableServiceLinks").is_none());
}

#[test]
fn services_are_defaulted_like_kubernetes() {
    let cases = [
        (
            SERVED_SEEDS[0].1,
            json!({
                "selector": {"app": "my-app"},
                "ports": [{"protocol": "TCP", "port": 80, "targetPort": 3000}],
                "type": "LoadBalancer",
                "sessionAffinity": "None",
                "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster",
                "allocateLoadBalancerNodePorts": true
            }),
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n",
            json!({
                "ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}],
                "type": "ClusterIP",
                "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster"
            }),
        ),
    ];
    for (text, want) in cases {
        let admitted =
            admit(info("Service"), yaml(text), FieldValidation::Strict).expect("admitted");
        assert_eq!(admitted.object["spec"], want);
    }
}

#[test]
fn namespaces_and_secrets_are_defaulted() {
    let ns = admit(
        info("Namespace"),
        json!({"metadata": {"name": "team-a", "namespace": "x"}}),
        FieldValidation::Strict,
    )
    .expect("admitted");
    assert_eq!(
        ns.object,
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        })
    );

    let secret = admit(
        info("Secret"),
        json!({"metadata": {"name": "s"}, "data": {"a": "MQ=="}, "stringData": {"b": "2"}}),
        FieldValidation::Strict,
    )
    .expect("admitted");
    assert_eq!(secret.object["type"], "Opaque");
    assert_eq!(secret.object["data"], json!({"a": "MQ==", "b": "Mg=="}));
    assert!(secret.object.get("stringData").is_none());
}

#[test]
fn names_follow_each_kinds_rule() {
    // (kind, name, valid)
    let cases = [
        ("Pod", "web.v1", true),
        ("Pod", "Web", false),
        ("Namespace", "team-a", true),
        ("Namespace", "team.a", false),
        ("Service", "web", true),
        ("Service", "1web", false),
        ("ConfigMap", "app.config", true),
    ];
    for (kind, name, valid) in cases {
        let mut body = json!({"metadata": {"name": name}});
        match kind {
            "Pod" => body["spec"] = json!({"containers": [{"name": "c", "image": "i"}]}),
            "Service" => body["spec"] = json!({"ports": [{"port": 80}]}),
            _ => {}
        }
        let result = admit(info(kind), body, FieldValidation::Strict);
        assert_eq!(result.is_ok(), valid, "{kind} {name}: {result:?}");
    }
}

#[test]
fn type_meta_is_checked_and_filled_in() {
    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let admitted = admit(info("Pod"), pod.clone(), FieldValidation::Strict).expect("admitted");
    assert_eq!(
        (&admitted.object["apiVersion"], &admitted.object["kind"]),
        (&json!("v1"), &json!("Pod"))
    );

    let mut wrong_version = yaml(SERVED_SEEDS[4].1);
    wrong_version["apiVersion"] = json!("apps/v2");
    let mut wrong_kind = pod.clone();
    wrong_kind["kind"] = json!("Deployment");
    let cases = [
        (
            info("Deployment"),
            wrong_version,
            "the API version in the data (apps/v2) does not match the expected API version (apps/v1)",
        ),
        (info("Pod"), wrong_kind, "the kind in the data (Deployment) does not match the expected kind (Pod)"),
        (info("Pod"), json!([]), "the body of the request must be an object, not an array"),
    ];
    for (info, body, want) in cases {
        assert_eq!(
            admit(info, body, FieldValidation::Strict),
            Err(ApiError::BadRequest(want.into()))
        );
    }
}

#[test]
fn type_errors_name_the_field() {
    let mut replicas = yaml(SERVED_SEEDS[4].1);
    replicas["spec"]["replicas"] = json!("two");
    let pod = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});
    let cases = [
        (
            info("Deployment"),
            replicas,
            "Deployment in version \"v1\" cannot be handled as a Deployment: spec.replicas: \
             invalid type: string \"two\", expected i32",
        ),
        (
            info("Pod"),
            pod(
                json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "x"}]}]}),
            ),
            "Pod in version \"v1\" cannot be handled as a Pod: \
             spec.containers[0].ports[0].containerPort: invalid type: string \"x\", expected i32",
        ),
        (
            info("Pod"),
            json!({"metadata": {"name": "p", "labels": {"a": 1}}}),
            "Pod in version \"v1\" cannot be handled as a Pod: metadata.labels.a: \
             invalid type: integer `1`, expected a string",
        ),
    ];
    for (info, body, want) in cases {
        assert_eq!(
            admit(info, body, FieldValidation::Strict),
            Err(ApiError::BadRequest(want.into()))
        );
    }
}

#[test]
fn unknown_fields_follow_field_validation() {
    let pod = json!({
        "metadata": {"name": "p", "labelz": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "Always"}]}
    });
    let strict = admit(info("Pod"), pod.clone(), FieldValidation::Strict);
    assert_eq!(
        strict,
        Err(ApiError::BadRequest(
            "strict decoding error: unknown field \"metadata.labelz\", unknown field \
             \"spec.containers[0].imagePolicy\""
                .into()
        ))
    );
    let warned = admit(info("Pod"), pod.clone(), FieldValidation::Warn).expect("admitted");
    assert_eq!(
        warned.warnings,
        vec![
            "unknown field \"metadata.labelz\"",
            "unknown field \"spec.containers[0].imagePolicy\""
        ]
    );
    let ignored = admit(info("Pod"), pod, FieldValidation::Ignore).expect("admitted");
    assert!(ignored.warnings.is_empty());
    assert_eq!(ignored.object, warned.object);
}

#[test]
fn all_problems_are_reported_at_once() {
    let pod = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"image": ""}], "restartPolicy": "Sometimes"}});
    let Err(ApiError::Invalid { causes, .. }) = admit(info("Pod"), pod, FieldValidation::Strict)
    else {
        panic!("must be invalid");
    };
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "metadata.name",
            "spec.containers[0].name",
            "spec.containers[0].image",
            "spec.restartPolicy"
        ]
    );
}

#[test]
fn oversized_objects_are_rejected() {
    let huge = "x".repeat(MAX_OBJECT_BYTES);
    let pod = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "BIG", "value": huge}]}]}
    });
    let result = admit(info("Pod"), pod, FieldValidation::Strict);
    assert!(
        matches!(result, Err(ApiError::RequestEntityTooLarge(_))),
        "{result:?}"
    );
}

#[test]
fn field_validation_parses_like_kubernetes() {
    let cases = [
        (None, Ok(FieldValidation::Warn)),
        (Some(""), Ok(FieldValidation::Warn)),
        (Some("Strict"), Ok(FieldValidation::Strict)),
        (Some("Warn"), Ok(FieldValidation::Warn)),
        (Some("Ignore"), Ok(FieldValidation::Ignore)),
    ];
    for (input, want) in cases {
        assert_eq!(FieldValidation::parse(input), want, "{input:?}");
    }
    assert!(matches!(
        FieldValidation::parse(Some("strict")),
        Err(ApiError::BadRequest(_))
    ));
}

#[test]
fn kubectl_style_bodies_have_no_unknown_fields() {
    // What `kubectl create deployment web --image=nginx` sends: nulls and empty objects included.
    let body = json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
            },
            "strategy": {}
        },
        "status": {}
    });
    let admitted = admit(info("Deployment"), body, FieldValidation::Warn).expect("admitted");
    assert!(admitted.warnings.is_empty(), "{:?}", admitted.warnings);
    assert_eq!(admitted.object["spec"]["strategy"]["type"], "RollingUpdate");
}

#[test]
fn volumes_claims_and_classes_are_checked_like_kubernetes() {
    let problems = |kind: &str, object: Value| -> Vec<String> {
        match admit(info(kind), object, FieldValidation::Strict) {
            Ok(_) => Vec::new(),
            Err(ApiError::Invalid { causes, .. }) => causes
                .iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect(),
            Err(other) => panic!("{other:?}"),
        }
    };
    let pv = |spec: Value| json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"}, "spec": spec});
    assert_eq!(
        problems(
            "PersistentVolume",
            pv(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}))
        ),
        ["spec: Required value: must specify a volume type"]
    );
    assert_eq!(
        problems(
            "PersistentVolume",
            pv(
                json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "local": {"path": "/mnt/disk"}})
            )
        ),
        ["spec.nodeAffinity: Required value: Local volume requires node affinity"]
    );
    assert_eq!(
        problems(
            "PersistentVolume",
            pv(
                json!({"capacity": {"storage": "0"}, "accessModes": ["ReadWriteOncePod", "ReadOnlyMany"],
            "hostPath": {"path": "data"}, "nfs": {"server": "x", "path": "/"}})
            )
        ),
        [
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
            "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
            "spec: Forbidden: may not specify more than 1 volume type",
            "spec.hostPath.path: Invalid value: \"data\": must be an absolute path",
        ]
    );
    let admitted = admit(
        info("PersistentVolume"),
        pv(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}})),
        FieldValidation::Strict,
    )
    .expect("a hostPath volume");
    assert_eq!(
        admitted.object["spec"]["persistentVolumeReclaimPolicy"],
        "Retain"
    );
    let class = |extra: Value| {
        let mut class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": "example.com/disk"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            class[k] = v.clone();
        }
        class
    };
    let admitted = admit(
        info("StorageClass"),
        class(json!({})),
        FieldValidation::Strict,
    )
    .expect("a class");
    assert_eq!(admitted.object["reclaimPolicy"], "Delete");
    assert_eq!(admitted.object["volumeBindingMode"], "Immediate");
    assert_eq!(
        problems("StorageClass", class(json!({"reclaimPolicy": "Recycle", "volumeBindingMode": "Later"}))),
        [
            "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
            "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
        ]
    );
}
