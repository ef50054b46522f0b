//! `skiff members` and `skiff token`: look at and change the Raft cluster's membership.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use skiff_client::{Client, Method};

#[derive(Args, Debug)]
pub struct MembersArgs {
    /// The data dir of a server of the cluster (its kubeconfig is used).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// A kubeconfig to use instead of the data dir's.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub action: MembersAction,
}

#[derive(Subcommand, Debug)]
pub enum MembersAction {
    /// List the members: id, name, address, role, leader.
    List,
    /// Remove a member by id (it stops receiving Raft traffic; stop its process afterwards).
    Remove { id: u64 },
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the token agents join with (`skiff agent --token`) instead of the server token.
    #[arg(long)]
    pub node: bool,
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.unwrap_or_else(super::default_data_dir);
    let path = dir.join(if args.node { "node-token" } else { "token" });
    let token =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    println!("{}", token.trim());
    Ok(())
}

pub use skiff_client::Kubeconfig;

pub async fn run(args: MembersArgs) -> anyhow::Result<()> {
    let path = args.kubeconfig.unwrap_or_else(|| {
        args.data_dir
            .unwrap_or_else(super::default_data_dir)
            .join("kubeconfig.yaml")
    });
    let config = Kubeconfig::read(&path)?;
    let client = Client::new(&config.server, &config.ca_pem, &config.token)?;
    let answer: Value = match args.action {
        MembersAction::List => {
            client
                .request_leader(Method::GET, "/skiff/v1/members", None)
                .await?
        }
        MembersAction::Remove { id } => client
            .request_leader(Method::DELETE, &format!("/skiff/v1/members/{id}"), None)
            .await
            .with_context(|| format!("removing member {id}"))?,
    };
    println!(
        "{:<4} {:<20} {:<28} {:<8} LEADER",
        "ID", "NAME", "ADDRESS", "ROLE"
    );
    for m in answer["members"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<4} {:<20} {:<28} {:<8} {}",
            m["id"].as_u64().unwrap_or(0),
            m["name"].as_str().unwrap_or(""),
            m["addr"].as_str().unwrap_or(""),
            m["role"].as_str().unwrap_or(""),
            if m["leader"].as_bool().unwrap_or(false) {
                "*"
            } else {
                ""
            }
        );
    }
    if let Some(warning) = answer["warning"].as_str() {
        println!("warning: {warning}");
    }
    Ok(())
}
