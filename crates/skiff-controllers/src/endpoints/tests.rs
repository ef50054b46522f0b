//! Endpoints controller tests: what a Service's pods become (tables over [`desired_endpoints`]
//! and [`desired_slices`]), and what a pass writes ([`reconcile`]) against a simulated store.
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

/// A pod of the `web` app on `node-1`, Running, with no IP until [`PodBuilder::ip`].
struct PodBuilder(Pod);

fn pod(name: &str) -> PodBuilder {
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "c".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    };
    set_ready(&mut pod, false);
    PodBuilder(pod)
}

fn set_ready(pod: &mut Pod, ready: bool) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        ..PodCondition::default()
    }]);
}

impl PodBuilder {
    fn ip(mut self, ip: &str) -> Self {
        if let Some(s) = self.0.status.as_mut() {
            s.pod_ip = Some(ip.into());
        }
        self
    }
    fn ready(mut self) -> Self {
        set_ready(&mut self.0, true);
        self
    }
    fn terminating(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        self
    }
    fn phase(mut self, phase: &str) -> Self {
        if let Some(s) = self.0.status.as_mut() {
            s.phase = Some(phase.into());
        }
        self
    }
    fn app(mut self, app: &str) -> Self {
        self.0.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        self
    }
    /// A named container port (what a named targetPort looks up).
    fn port(mut self, name: &str, number: i32) -> Self {
        if let Some(spec) = self.0.spec.as_mut() {
            spec.containers[0]
                .ports
                .get_or_insert_with(Vec::new)
                .push(ContainerPort {
                    name: Some(name.into()),
                    container_port: number,
                    ..ContainerPort::default()
                });
        }
        self
    }
    fn build(self) -> Pod {
        self.0
    }
}

/// Service `web` selecting `app=web`, with `ports` as JSON (`[]` for none).
fn service(ports: serde_json::Value, extra: serde_json::Value) -> Service {
    let mut spec = json!({"selector": {"app": "web"}, "ports": ports});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid",
                     "labels": {"team": "a"}},
        "spec": spec,
    }))
    .expect("service")
}

fn http_to(target: serde_json::Value) -> serde_json::Value {
    json!([{"name": "http", "port": 80, "targetPort": target, "protocol": "TCP"}])
}

/// A subset as `ready | not ready | ports`, e.g. `10.0.0.1 | 10.0.0.2 | http:8080`.
fn subsets(endpoints: &Endpoints) -> Vec<String> {
    let ips = |list: &Option<Vec<EndpointAddress>>| {
        let ips: Vec<&str> = list.iter().flatten().map(|a| a.ip.as_str()).collect();
        ips.join(",")
    };
    endpoints
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name.as_deref().unwrap_or(""), p.port))
                .collect();
            format!(
                "{} | {} | {}",
                ips(&s.addresses),
                ips(&s.not_ready_addresses),
                ports.join(",")
            )
        })
        .collect()
}

/// A slice as `ports: ip(ready serving terminating) ...`, with conditions as `R`/`S`/`T` or `-`.
fn slices(slices: &[EndpointSlice]) -> Vec<String> {
    slices
        .iter()
        .map(|s| {
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}:{}",
                        p.name.as_deref().unwrap_or(""),
                        p.port.unwrap_or(0)
                    )
                })
                .collect();
            let endpoints: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| {
                    let c = e.conditions.clone().unwrap_or_default();
                    let flag = |on: Option<bool>, letter: char| {
                        if on == Some(true) {
                            letter
                        } else {
                            '-'
                        }
                    };
                    format!(
                        "{}({}{}{})",
                        e.addresses.join(","),
                        flag(c.ready, 'R'),
                        flag(c.serving, 'S'),
                        flag(c.terminating, 'T')
                    )
                })
                .collect();
            format!("{}: {}", ports.join(","), endpoints.join(" "))
        })
        .collect()
}

#[test]
fn pods_become_subsets_and_slices() {
    struct Case {
        what: &'static str,
        service: Service,
        pods: Vec<Pod>,
        endpoints: Vec<&'static str>,
        slices: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            what: "ready, not ready and terminating pods",
            service: service(http_to(json!(8080)), json!({})),
            pods: vec![
                pod("a").ip("10.0.0.1").ready().build(),
                pod("b").ip("10.0.0.2").build(),
                pod("c").ip("10.0.0.3").ready().terminating().build(),
            ],
            // The terminating pod leaves the Endpoints but stays in the slice, serving.
            endpoints: vec!["10.0.0.1 | 10.0.0.2 | http:8080"],
            slices: vec!["http:8080: 10.0.0.1(RS-) 10.0.0.2(---) 10.0.0.3(-ST)"],
        },
        Case {
            what: "a named targetPort resolved differently per pod",
            service: service(http_to(json!("web")), json!({})),
            pods: vec![
                pod("a").ip("10.0.0.1").ready().port("web", 8080).build(),
                pod("b").ip("10.0.0.2").ready().port("web", 9090).build(),
            ],
            endpoints: vec!["10.0.0.1 |  | http:8080", "10.0.0.2 |  | http:9090"],
            slices: vec!["http:8080: 10.0.0.1(RS-)", "http:9090: 10.0.0.2(RS-)"],
        },
        Case {
            what: "no IP, another app, a finished pod: all left out",
            service: service(http_to(json!(8080)), json!({})),
            pods: vec![
                pod("a").ip("10.0.0.1").ready().build(),
                pod("no-ip").ready().build(),
                pod("other").ip("10.0.0.2").ready().app("db").build(),
                pod("done").ip("10.0.0.3").phase("Succeeded").build(),
            ],
            endpoints: vec!["10.0.0.1 |  | http:8080"],
            slices: vec!["http:8080: 10.0.0.1(RS-)"],
        },
        Case {
            what: "two ports, one of them named and missing on one pod",
            service: service(
                json!([
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"},
                ]),
                json!({}),
            ),
            pods: vec![
                pod("a")
                    .ip("10.0.0.1")
                    .ready()
                    .port("metrics", 9100)
                    .build(),
                pod("b").ip("10.0.0.2").ready().build(),
            ],
            // RepackSubsets: http is served by both, metrics by `a` alone.
            endpoints: vec![
                "10.0.0.1 |  | metrics:9100",
                "10.0.0.1,10.0.0.2 |  | http:8080",
            ],
            slices: vec![
                "http:8080: 10.0.0.2(RS-)",
                "http:8080,metrics:9100: 10.0.0.1(RS-)",
            ],
        },
        Case {
            what: "publishNotReadyAddresses: everyone is ready",
            service: service(
                http_to(json!(8080)),
                json!({"publishNotReadyAddresses": true}),
            ),
            pods: vec![
                pod("a").ip("10.0.0.1").build(),
                pod("b").ip("10.0.0.2").ready().terminating().build(),
            ],
            endpoints: vec!["10.0.0.1,10.0.0.2 |  | http:8080"],
            slices: vec!["http:8080: 10.0.0.1(R--) 10.0.0.2(RST)"],
        },
        Case {
            what: "a headless service without ports",
            service: service(json!([]), json!({"clusterIP": "None"})),
            pods: vec![pod("a").ip("10.0.0.1").ready().build()],
            endpoints: vec!["10.0.0.1 |  | "],
            slices: vec![": 10.0.0.1(RS-)"],
        },
        Case {
            what: "no pods: no subsets, one empty slice",
            service: service(http_to(json!(8080)), json!({})),
            pods: vec![],
            endpoints: vec![],
            slices: vec![": "],
        },
    ];
    for case in cases {
        let got = desired_endpoints(&case.service, &case.pods);
        assert_eq!(subsets(&got), case.endpoints, "{}: endpoints", case.what);
        let got = desired_slices(&case.service, &case.pods);
        assert_eq!(slices(&got), case.slices, "{}: slices", case.what);
    }
}

#[test]
fn endpoints_and_slices_name_label_and_point_at_their_owners() {
    let svc = service(http_to(json!(8080)), json!({"clusterIP": "None"}));
    let pods = [pod("a").ip("10.0.0.1").ready().build()];
    let ep = desired_endpoints(&svc, &pods);
    assert_eq!(ep.metadata.name.as_deref(), Some("web"));
    let owner = &ep.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", "svc-uid", Some(true))
    );
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(labels.get(HEADLESS_LABEL).map(String::as_str), Some(""));
    let address = &ep.subsets.as_ref().expect("subsets")[0]
        .addresses
        .as_ref()
        .expect("addresses")[0];
    assert_eq!(address.node_name.as_deref(), Some("node-1"));
    let target = address.target_ref.as_ref().expect("targetRef");
    assert_eq!(target.name.as_deref(), Some("a"));
    assert_eq!(target.resource_version, None);

    let slice = &desired_slices(&svc, &pods)[0];
    let name = slice.metadata.name.as_deref().unwrap_or("");
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGER);
    assert_eq!(labels["team"], "a");
    assert_eq!(
        slice.metadata.owner_references,
        ep.metadata.owner_references
    );
    let port = &slice.ports.as_ref().expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
}

#[test]
fn large_services_are_split_into_slices_of_a_hundred() {
    let svc = service(http_to(json!(8080)), json!({}));
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            pod(&format!("p{i}"))
                .ip(&format!("10.0.{}.{}", i / 200, i % 200))
                .ready()
                .build()
        })
        .collect();
    let sizes: Vec<usize> = desired_slices(&svc, &pods)
        .iter()
        .map(|s| s.endpoints.len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
}

/// The store's copy of a created or updated object: a JSON round trip with a new
/// resourceVersion.
fn stored<
    T: serde::Serialize + serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
>(
    object: &T,
    version: &str,
) -> T {
    let mut copy: T =
        serde_json::from_value(serde_json::to_value(object).expect("json")).expect("typed");
    copy.metadata_mut().resource_version = Some(version.into());
    copy
}

/// Applies a plan to `endpoints` and `slices` as the API server would.
fn apply(plan: &[Action], endpoints: &mut Option<Endpoints>, slices: &mut Vec<EndpointSlice>) {
    for action in plan {
        match action {
            Action::Create(Object::Endpoints(e)) | Action::Update(Object::Endpoints(e)) => {
                *endpoints = Some(stored(&**e, "2"));
            }
            Action::Create(Object::EndpointSlice(s)) | Action::Update(Object::EndpointSlice(s)) => {
                slices.retain(|old| old.metadata.name != s.metadata.name);
                slices.push(stored(&**s, "2"));
            }
            Action::Delete { object, .. } => slices.retain(|s| s.metadata.name != object.name),
            other => panic!("unexpected action {other}"),
        }
    }
}

#[test]
fn a_pass_writes_only_what_changed() {
    let svc = service(http_to(json!(8080)), json!({}));
    let mut pods = vec![
        pod("a").ip("10.0.0.1").ready().build(),
        pod("b").ip("10.0.0.2").ready().build(),
    ];
    let (mut endpoints, mut slices) = (None, Vec::new());

    // 1. First pass: create both.
    let plan = reconcile(&svc, &pods, endpoints.as_ref(), &slices);
    let said: Vec<String> = plan.iter().map(ToString::to_string).collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[0] == "create Endpoints default/web", "{said:?}");
    assert!(
        said[1].starts_with("create EndpointSlice default/web-"),
        "{said:?}"
    );
    apply(&plan, &mut endpoints, &mut slices);

    // 2. Nothing changed (a pod's status churns in ways endpoints do not show): no writes.
    pods[0].metadata.resource_version = Some("9".into());
    assert_eq!(reconcile(&svc, &pods, endpoints.as_ref(), &slices), vec![]);

    // 3. `b` turns not ready: both are replaced, compare-and-swap on the stored version.
    set_ready(&mut pods[1], false);
    let plan = reconcile(&svc, &pods, endpoints.as_ref(), &slices);
    assert_eq!(plan.len(), 2, "{plan:?}");
    for action in &plan {
        let Action::Update(object) = action else {
            panic!("expected an update, got {action}");
        };
        assert_eq!(object.reference().resource_version.as_deref(), Some("2"));
    }
    apply(&plan, &mut endpoints, &mut slices);
    assert_eq!(
        subsets(endpoints.as_ref().expect("endpoints")),
        ["10.0.0.1 | 10.0.0.2 | http:8080"]
    );
    assert_eq!(reconcile(&svc, &pods, endpoints.as_ref(), &slices), vec![]);
}

#[test]
fn stale_slices_of_ours_go_and_others_stay() {
    let svc = service(http_to(json!(8080)), json!({}));
    let pods = [pod("a").ip("10.0.0.1").ready().build()];
    let endpoints = Some(stored(&desired_endpoints(&svc, &pods), "1"));
    let mut slices: Vec<EndpointSlice> = desired_slices(&svc, &pods)
        .iter()
        .map(|s| stored(s, "1"))
        .collect();
    // An old slice of ours (other ports), a hand-made one, and one of another service.
    let mut old = slices[0].clone();
    old.metadata.name = Some("web-old".into());
    old.metadata.uid = Some("old-uid".into());
    let mut mirrored = old.clone();
    mirrored.metadata.name = Some("web-by-hand".into());
    if let Some(labels) = mirrored.metadata.labels.as_mut() {
        labels.insert(MANAGED_BY_LABEL.into(), "someone-else".into());
    }
    let mut other = old.clone();
    other.metadata.name = Some("db-abcde".into());
    if let Some(labels) = other.metadata.labels.as_mut() {
        labels.insert(SERVICE_NAME_LABEL.into(), "db".into());
    }
    slices.extend([old, mirrored, other]);

    let plan = reconcile(&svc, &pods, endpoints.as_ref(), &slices);
    let said: Vec<String> = plan.iter().map(ToString::to_string).collect();
    assert_eq!(said, ["delete EndpointSlice default/web-old (uid old-uid)"]);
}

#[test]
fn services_without_selector_external_names_and_deleted_ones_are_left_alone() {
    let pods = [pod("a").ip("10.0.0.1").ready().build()];
    let mut no_selector = service(http_to(json!(8080)), json!({}));
    if let Some(spec) = no_selector.spec.as_mut() {
        spec.selector = None;
    }
    let external = service(
        json!([]),
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
    );
    let mut deleting = service(http_to(json!(8080)), json!({}));
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    for svc in [no_selector, external, deleting] {
        assert_eq!(reconcile(&svc, &pods, None, &[]), vec![]);
    }
}

#[test]
fn a_pod_change_concerns_the_services_that_select_it_or_list_it() {
    let web = service(http_to(json!(8080)), json!({}));
    let mut db = web.clone();
    db.metadata.name = Some("db".into());
    if let Some(spec) = db.spec.as_mut() {
        spec.selector = Some([("app".to_string(), "db".to_string())].into());
    }
    let a = pod("a").ip("10.0.0.1").ready().build();
    // `a` was relabelled from db to web: db's slice still lists it.
    let db_slices = desired_slices(&db, &[pod("a").ip("10.0.0.1").app("db").build()]);
    let got = services_of_pod(&[web, db], &db_slices, &a);
    assert_eq!(got.into_iter().collect::<Vec<_>>(), ["db", "web"]);
}
