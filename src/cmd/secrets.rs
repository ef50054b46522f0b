//! `skiff secrets-encrypt`: which key Secrets are sealed with at rest, and rotating it on every
//! server while the cluster serves (see skiff-apiserver's `secrets_encryption`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use skiff_client::Method;

#[derive(Args, Debug)]
pub struct SecretsEncryptArgs {
    /// The data dir of a server of the cluster (its kubeconfig is used).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// A kubeconfig with the admin credential to use instead of the data dir's.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub action: SecretsEncryptAction,
}

#[derive(Subcommand, Debug)]
pub enum SecretsEncryptAction {
    /// The providers and key names in force on the leader, and the key that seals.
    Status,
    /// Make a new key, install it on every server, seal with it, and rewrite every Secret.
    /// Every server must be up; earlier keys stay as readers of older log entries.
    Rotate {
        /// The cipher of the new key.
        #[arg(long, default_value = "aesgcm", value_parser = ["aesgcm", "secretbox"])]
        provider: String,
    },
}

pub async fn run(args: SecretsEncryptArgs) -> anyhow::Result<()> {
    let client = super::admin_client(args.data_dir, args.kubeconfig)?;
    match args.action {
        SecretsEncryptAction::Status => {
            let status: Value = client
                .request_leader(Method::GET, "/skiff/v1/encryption", None)
                .await?;
            println!(
                "sealing with: {}",
                status["sealingWith"]
                    .as_str()
                    .unwrap_or("(nothing: identity first)")
            );
            for p in status["providers"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {:<10} {}",
                    p["provider"].as_str().unwrap_or(""),
                    p["name"].as_str().unwrap_or("")
                );
            }
        }
        SecretsEncryptAction::Rotate { provider } => {
            let answer: Value = client
                .request_leader(
                    Method::POST,
                    "/skiff/v1/encryption/rotate",
                    Some(&json!({ "provider": provider })),
                )
                .await?;
            println!(
                "sealing with {} key {} on {} server(s); {} Secret(s) rewritten",
                answer["provider"].as_str().unwrap_or(""),
                answer["key"].as_str().unwrap_or(""),
                answer["members"],
                answer["secretsRewritten"]
            );
        }
    }
    Ok(())
}
