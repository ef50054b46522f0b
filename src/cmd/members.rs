//! `skiff members` and `skiff token`: look at and change the Raft cluster's membership; print
//! the join tokens; make, list and revoke user tokens.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use skiff_apiserver::auth::tokens;
use skiff_client::{Client, DeleteOptions, ListParams, Method};

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
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// A kubeconfig to use instead of the data dir's (for create, list and delete).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Print the token agents join with (`skiff agent --token`) instead of the server token.
    #[arg(long)]
    pub node: bool,
    #[command(subcommand)]
    pub action: Option<TokenAction>,
}

/// Bearer tokens for people, so a cluster is not run on one shared admin secret. RBAC decides
/// what each may do (`kubectl create rolebinding ... --user NAME`).
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Make a token for a user, printed once (the cluster keeps only its hash).
    Create {
        /// The user name RBAC bindings name (`--user` in `kubectl create rolebinding`).
        #[arg(long)]
        user: String,
        /// A group the user is in (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the token works (`24h`, `90d`); without it, until deleted.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the user tokens: id, user, groups, expiry (never the secrets).
    List,
    /// Revoke a token by its id (the part before the dot); it stops working at once.
    Delete { id: String },
}

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    let Some(action) = args.action else {
        let path = dir.join(if args.node { "node-token" } else { "token" });
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        println!("{}", token.trim());
        return Ok(());
    };
    let kubeconfig = args
        .kubeconfig
        .unwrap_or_else(|| dir.join("kubeconfig.yaml"));
    let client = Client::from_kubeconfig(&kubeconfig)?;
    let namespace = Some(tokens::NAMESPACE);
    match action {
        TokenAction::Create { user, groups, ttl } => {
            if user.trim().is_empty() {
                anyhow::bail!("--user: a token needs a user name");
            }
            let expiration = match ttl {
                None => None,
                Some(ttl) => {
                    let span: jiff::SignedDuration = ttl
                        .parse()
                        .with_context(|| format!("--ttl {ttl:?}: a duration such as 24h"))?;
                    if span.is_negative() || span.is_zero() {
                        anyhow::bail!("--ttl {ttl:?}: must be positive");
                    }
                    Some(jiff::Timestamp::now().checked_add(span)?)
                }
            };
            let (token, secret) = tokens::mint(&user, &groups, expiration)
                .map_err(|_| anyhow::anyhow!("no randomness for a token"))?;
            let secret: Secret = serde_json::from_value(secret)?;
            client
                .create(namespace, &secret)
                .await
                .context("storing the token")?;
            println!("{token}");
            eprintln!(
                "token for user {user:?}{}: use it with `kubectl config set-credentials {user} \
                 --token=TOKEN`; it can do nothing until RBAC grants it something",
                match expiration {
                    Some(at) => format!(", valid until {at}"),
                    None => String::new(),
                }
            );
        }
        TokenAction::List => {
            let secrets = client
                .list::<Secret>(namespace, &ListParams::default())
                .await?;
            println!("{:<8} {:<32} {:<32} EXPIRES", "ID", "USER", "GROUPS");
            for secret in secrets.items {
                if secret.type_.as_deref() != Some(tokens::SECRET_TYPE) {
                    continue;
                }
                let field = |name: &str| {
                    secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(name))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .unwrap_or_default()
                };
                let expires = field("expiration");
                println!(
                    "{:<8} {:<32} {:<32} {}",
                    field("token-id"),
                    field("user"),
                    field("groups"),
                    if expires.is_empty() {
                        "never".into()
                    } else {
                        expires
                    }
                );
            }
        }
        TokenAction::Delete { id } => {
            client
                .delete::<Secret>(
                    namespace,
                    &tokens::secret_name(&id),
                    &DeleteOptions::default(),
                )
                .await
                .with_context(|| format!("deleting token {id}"))?;
            println!("token {id} deleted");
        }
    }
    Ok(())
}

pub async fn run(args: MembersArgs) -> anyhow::Result<()> {
    let client = super::admin_client(args.data_dir, args.kubeconfig)?;
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
