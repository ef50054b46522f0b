//! `skiff explain pod NAME`: why the scheduler put a pod where it did (or could not).
//!
//! The scheduler stores each decision on the pod (annotation `scheduler.skiff.io/decision`):
//! every node's filter verdict with its reasons, or its scores by scorer and the total. This
//! command reads it through the API and prints it as a table.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use skiff_scheduler::runner::EXPLAIN_ANNOTATION;
use skiff_scheduler::Decision;

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// What to explain (only `pod` for now).
    #[arg(value_parser = ["pod", "pods", "po"])]
    pub kind: String,
    /// The pod's name.
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The kubeconfig to use (default: the data dir's).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let kubeconfig = args.kubeconfig.unwrap_or_else(|| {
        args.data_dir
            .unwrap_or_else(super::default_data_dir)
            .join("kubeconfig.yaml")
    });
    let client = skiff_client::Client::from_kubeconfig(&kubeconfig)?;
    let pod: Pod = client
        .get(Some(&args.namespace), &args.name)
        .await
        .with_context(|| format!("reading pod {}/{}", args.namespace, args.name))?;
    let Some(record) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPLAIN_ANNOTATION))
    else {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        match node {
            Some(node) => println!(
                "pod {}/{} runs on {node}; it was not placed by the scheduler (spec.nodeName was set)",
                args.namespace, args.name
            ),
            None => println!(
                "pod {}/{} has not been considered by the scheduler yet",
                args.namespace, args.name
            ),
        }
        return Ok(());
    };
    let decision: Decision =
        serde_json::from_str(record).context("reading the scheduler's decision record")?;
    print!("{}", decision.render());
    Ok(())
}
