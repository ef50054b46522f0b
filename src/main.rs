//! `skiff`: one binary for the control plane and its tools.
//!
//! The commands live in `cmd/`; this file only parses the command line and sets up logging.

use clap::{Parser, Subcommand};

mod cmd;

/// mimalloc instead of glibc's malloc. A busy control plane allocates and frees many small JSON
/// values from many threads; glibc's malloc spent about a third of the leader's CPU on it in
/// the scheduler benchmark (consolidating and unlinking free chunks). See docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A small container orchestrator that speaks the Kubernetes API"
)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and matched once: the size of the server's flags costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a control-plane server (the first one, or one joining a cluster).
    Server(cmd::server::ServerArgs),
    /// Run a node agent that joins a cluster (with a node token from `skiff token --node`).
    Agent(cmd::agent::AgentArgs),
    /// Explain a scheduling decision: `skiff explain pod NAME`.
    Explain(cmd::explain::ExplainArgs),
    /// Build, import and list container images (no registry needed).
    Image(cmd::image::ImageArgs),
    /// List or remove the servers of the Raft cluster.
    Members(cmd::members::MembersArgs),
    /// Print the token other servers (or, with --node, agents) join this cluster with; make,
    /// list and revoke user tokens (`skiff token create --user NAME --group G`).
    Token(cmd::members::TokenArgs),
    /// Show the key Secrets are sealed with at rest, or rotate it on every server.
    SecretsEncrypt(cmd::secrets::SecretsEncryptArgs),
    /// Measure skiff next to its peers (see docs/benchmarks.md; needs a build with
    /// `--features bench`).
    #[cfg(feature = "bench")]
    Bench(skiff_bench::BenchArgs),
    /// (This build has no benchmarks: `cargo build --release --features bench`.)
    #[cfg(not(feature = "bench"))]
    #[command(hide = true, disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A multi-host cluster on this machine, one network namespace per host (see docs/lab.md).
    Lab(skiff_lab::LabArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The benchmark prints a table; Raft's warnings about peers it tears down would clutter it.
    let default_filter = match cli.command {
        #[cfg(feature = "bench")]
        Command::Bench(_) => "error,openraft=off",
        _ => "info,openraft=warn,sled=warn",
    };
    init_logging(&cli.log_format, default_filter);
    // rustls needs one crypto provider per process; skiff uses ring (aws-lc-rs costs a minute
    // more of build time on every cold build, see shared/reference/crates.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if matches!(cli.command, Command::Server(_) | Command::Agent(_)) {
        skiff_agent::proxy::limits::raise_open_files_limit();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => cmd::server::run(args).await,
            Command::Agent(args) => cmd::agent::run(args).await,
            Command::Image(args) => cmd::image::run(args).await,
            Command::Explain(args) => cmd::explain::run(args).await,
            Command::Members(args) => cmd::members::run(args).await,
            Command::Token(args) => cmd::members::token(args).await,
            Command::SecretsEncrypt(args) => cmd::secrets::run(args).await,
            #[cfg(feature = "bench")]
            Command::Bench(args) => skiff_bench::run(args).await,
            #[cfg(not(feature = "bench"))]
            Command::Bench { .. } => Err(anyhow::anyhow!(
                "this skiff was built without its benchmarks (they carry an etcd client and load \
                 generators an edge machine does not need): build it with \
                 `cargo build --release --features bench`"
            )),
            Command::Lab(args) => skiff_lab::run(args).await,
        }
    })
}

fn init_logging(format: &str, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
