//! Table-driven tests of each filter: the pod, the node, what the node already runs, and the
//! reasons expected (none: it fits).

use k8s_openapi::api::core::v1::{Node, Pod};

use super::*;
use crate::testing::{container, node, pod, NodeBuilder, PodBuilder};

/// The Kubernetes reasons `node` (already running `bound`) gives for `pod`.
fn reasons(pod: &Pod, node: &Node, bound: &[Pod]) -> Vec<String> {
    rejections(pod, node, bound)
        .iter()
        .map(|r| r.reason().into_owned())
        .collect()
}

fn rejections(pod: &Pod, node: &Node, bound: &[Pod]) -> Vec<Rejection> {
    let spec = pod.spec.as_ref().expect("builder sets a spec");
    let demand = PodDemand::of(spec);
    let mut usage = NodeUsage::default();
    for other in bound {
        usage.add(&PodDemand::of(
            other.spec.as_ref().expect("builder sets a spec"),
        ));
    }
    let mut out = Vec::new();
    check(
        &PodConstraints::new(spec, &demand),
        &NodeInfo::of(node),
        &usage,
        &mut out,
    );
    out
}

/// (case name, the pod, the node, pods already bound to it, the reasons expected).
type Case<'a> = (
    &'a str,
    PodBuilder,
    NodeBuilder,
    Vec<PodBuilder>,
    &'a [&'a str],
);

fn run_table(cases: Vec<Case>) {
    for (name, pod, node, bound, want) in cases {
        let bound: Vec<Pod> = bound.into_iter().map(PodBuilder::build).collect();
        assert_eq!(
            reasons(&pod.build(), &node.build(), &bound),
            want,
            "case: {name}"
        );
    }
}

const CPU: &str = "Insufficient cpu";
const MEMORY: &str = "Insufficient memory";
const AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

#[test]
fn resources_fit_or_not() {
    run_table(vec![
        (
            "fits",
            pod("p").cpu("1").memory("1Gi"),
            node("n"),
            vec![],
            &[],
        ),
        (
            "exactly fits",
            pod("p").cpu("4").memory("8Gi"),
            node("n"),
            vec![],
            &[],
        ),
        (
            "too much cpu",
            pod("p").cpu("4001m"),
            node("n"),
            vec![],
            &[CPU],
        ),
        (
            "too much memory",
            pod("p").memory("9Gi"),
            node("n"),
            vec![],
            &[MEMORY],
        ),
        (
            "both",
            pod("p").cpu("5").memory("9Gi"),
            node("n"),
            vec![],
            &[CPU, MEMORY],
        ),
        (
            "bound pods use it up: 3 + 1.5 > 4",
            pod("p").cpu("1500m"),
            node("n"),
            vec![pod("a").cpu("1").on("n"), pod("b").cpu("2").on("n")],
            &[CPU],
        ),
        (
            "no pod slot left",
            pod("p"),
            node("n").pods(1),
            vec![pod("a").on("n")],
            &["Too many pods"],
        ),
        (
            "a pod asking nothing fits an overcommitted node",
            pod("p"),
            node("n").cpu("1"),
            vec![pod("a").cpu("2").on("n")],
            &[],
        ),
        (
            // max(500m + 500m, 3000m) = 3000m > 4000m - 2000m.
            "the largest init container counts",
            pod("p")
                .container(container("a").cpu("500m"))
                .container(container("b").cpu("500m"))
                .init(container("init").cpu("3")),
            node("n"),
            vec![pod("a").cpu("2").on("n")],
            &[CPU],
        ),
        (
            // The same pod on an empty node: 3000m <= 4000m.
            "the largest init container fits an empty node",
            pod("p")
                .container(container("a").cpu("500m"))
                .init(container("init").cpu("3")),
            node("n"),
            vec![],
            &[],
        ),
        (
            "limits count as requests",
            pod("p").container(container("a").limit_cpu("5").limit_memory("1Gi")),
            node("n"),
            vec![],
            &[CPU],
        ),
    ]);
}

#[test]
fn resource_rejections_carry_the_numbers() {
    let bound = [pod("a").cpu("1800m").on("n").build()];
    let got = rejections(
        &pod("p").cpu("500m").build(),
        &node("n").cpu("2").build(),
        &bound,
    );
    assert_eq!(
        got[0].to_string(),
        "Insufficient cpu: requested 500m, used 1800m, allocatable 2"
    );
}

#[test]
fn node_selector_and_affinity_operators() {
    let labelled = || node("n").label("disk", "ssd").label("rank", "5");
    run_table(vec![
        (
            "selector matches",
            pod("p").node_selector("disk", "ssd"),
            labelled(),
            vec![],
            &[],
        ),
        (
            "selector differs",
            pod("p").node_selector("disk", "hdd"),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "selector label absent",
            pod("p").node_selector("gpu", "yes"),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "In",
            pod("p").affinity_term(&[("disk", "In", &["hdd", "ssd"])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "In, no value",
            pod("p").affinity_term(&[("disk", "In", &["hdd"])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "NotIn",
            pod("p").affinity_term(&[("disk", "NotIn", &["hdd"])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "NotIn, listed",
            pod("p").affinity_term(&[("disk", "NotIn", &["ssd"])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "NotIn, label absent",
            pod("p").affinity_term(&[("gpu", "NotIn", &["a"])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "Exists",
            pod("p").affinity_term(&[("disk", "Exists", &[])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "Exists, absent",
            pod("p").affinity_term(&[("gpu", "Exists", &[])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "DoesNotExist",
            pod("p").affinity_term(&[("gpu", "DoesNotExist", &[])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "DoesNotExist, present",
            pod("p").affinity_term(&[("disk", "DoesNotExist", &[])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "Gt",
            pod("p").affinity_term(&[("rank", "Gt", &["4"])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "Gt, equal",
            pod("p").affinity_term(&[("rank", "Gt", &["5"])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "Lt",
            pod("p").affinity_term(&[("rank", "Lt", &["6"])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "Lt, not a number",
            pod("p").affinity_term(&[("disk", "Lt", &["6"])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "expressions in a term are ANDed",
            pod("p").affinity_term(&[("disk", "In", &["ssd"]), ("rank", "Gt", &["9"])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "terms are ORed",
            pod("p")
                .affinity_term(&[("disk", "In", &["hdd"])])
                .affinity_term(&[("rank", "Lt", &["9"])]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "matchFields name In",
            pod("p").field_term("In", &["n"]),
            labelled(),
            vec![],
            &[],
        ),
        (
            "matchFields name NotIn",
            pod("p").field_term("NotIn", &["n"]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "an empty term matches nothing",
            pod("p").affinity_term(&[]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "an unknown operator matches nothing",
            pod("p").affinity_term(&[("disk", "Like", &["s*"])]),
            labelled(),
            vec![],
            &[AFFINITY],
        ),
        (
            "selector and affinity both fail: both reported",
            pod("p")
                .node_selector("disk", "hdd")
                .affinity_term(&[("gpu", "Exists", &[])]),
            labelled(),
            vec![],
            &[AFFINITY, AFFINITY],
        ),
    ]);
}

#[test]
fn taints_and_tolerations() {
    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    let unreachable = || node("n").taint(UNREACHABLE, "", "NoExecute");
    let dedicated = || node("n").taint("dedicated", "gpu", "NoSchedule");
    run_table(vec![
        (
            "untolerated NoExecute",
            pod("p"),
            unreachable(),
            vec![],
            &["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"],
        ),
        (
            "untolerated NoSchedule shows key and value",
            pod("p"),
            dedicated(),
            vec![],
            &["node(s) had untolerated taint {dedicated: gpu}"],
        ),
        (
            "PreferNoSchedule is ignored",
            pod("p"),
            node("n").taint("slow", "", "PreferNoSchedule"),
            vec![],
            &[],
        ),
        (
            "Exists on the key",
            pod("p").toleration(UNREACHABLE, "Exists", "", ""),
            unreachable(),
            vec![],
            &[],
        ),
        (
            "Exists with an empty key tolerates all",
            pod("p").toleration("", "Exists", "", ""),
            dedicated(),
            vec![],
            &[],
        ),
        (
            "Equal with the value",
            pod("p").toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            dedicated(),
            vec![],
            &[],
        ),
        (
            "operator defaults to Equal",
            pod("p").toleration("dedicated", "", "gpu", ""),
            dedicated(),
            vec![],
            &[],
        ),
        (
            "Equal with another value",
            pod("p").toleration("dedicated", "Equal", "cpu", ""),
            dedicated(),
            vec![],
            &["node(s) had untolerated taint {dedicated: gpu}"],
        ),
        (
            "the wrong effect",
            pod("p").toleration(UNREACHABLE, "Exists", "", "NoSchedule"),
            unreachable(),
            vec![],
            &["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"],
        ),
        (
            "only the first untolerated taint is named",
            pod("p"),
            dedicated().taint("zone", "x", "NoSchedule"),
            vec![],
            &["node(s) had untolerated taint {dedicated: gpu}"],
        ),
    ]);
}

#[test]
fn node_state_filters() {
    run_table(vec![
        (
            "not ready",
            pod("p"),
            node("n").not_ready(),
            vec![],
            &["node(s) were not ready"],
        ),
        (
            "cordoned",
            pod("p"),
            node("n").cordoned(),
            vec![],
            &["node(s) were unschedulable"],
        ),
        (
            "cordoned, but the pod tolerates it (as DaemonSet pods do)",
            pod("p").toleration(
                "node.kubernetes.io/unschedulable",
                "Exists",
                "",
                "NoSchedule",
            ),
            node("n").cordoned(),
            vec![],
            &[],
        ),
    ]);
}

#[test]
fn host_ports_conflict() {
    let web = |name: &str| pod(name).host_port(8080);
    run_table(vec![
        ("free", web("p"), node("n"), vec![], &[]),
        (
            "taken",
            web("p"),
            node("n"),
            vec![web("a").on("n")],
            &[PORTS],
        ),
        (
            "another port",
            web("p"),
            node("n"),
            vec![pod("a").host_port(9090).on("n")],
            &[],
        ),
        (
            "another address of the node",
            pod("p").container(container("c").host_port_on("10.0.0.1", "TCP", 8080)),
            node("n"),
            vec![pod("a")
                .container(container("c").host_port_on("10.0.0.2", "TCP", 8080))
                .on("n")],
            &[],
        ),
        (
            "another protocol",
            pod("p").container(container("c").host_port_on("0.0.0.0", "UDP", 8080)),
            node("n"),
            vec![web("a").on("n")],
            &[],
        ),
    ]);
}

#[test]
fn every_reason_is_kept_in_stage_order() {
    let got = rejections(
        &pod("p").cpu("8").node_selector("disk", "ssd").build(),
        &node("n").not_ready().taint("k", "v", "NoSchedule").build(),
        &[],
    );
    let stages: Vec<Stage> = got.iter().map(Rejection::stage).collect();
    assert_eq!(
        stages,
        [
            Stage::NodeReady,
            Stage::TaintToleration,
            Stage::NodeAffinity,
            Stage::NodeResourcesFit
        ]
    );
}
