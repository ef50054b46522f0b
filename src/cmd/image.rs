//! `skiff image pack|import|ls`: images without a registry.
//!
//! `pack` turns a directory (or the host's busybox, with `--busybox`) into an OCI image layout
//! tarball; `import` loads a tarball into a node's containerd; `ls` lists what a node has.
//! Dropping a tarball into `DATA_DIR/agent/images/` has the same effect as `import`: the agent
//! imports what it finds there at start and when new files appear (k3s' airgap convention).
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an OCI image layout tarball from a root filesystem directory.
    Pack(PackArgs),
    /// Import an image tarball into a node's containerd.
    Import(NodeImageArgs),
    /// List the images a node's containerd has.
    Ls(NodeImageArgs),
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The directory that becomes the container's `/`.
    #[arg(long, required_unless_present = "busybox", conflicts_with = "busybox")]
    pub rootfs: Option<PathBuf>,
    /// Build the root filesystem from the host's busybox-static (with a web root at /var/www).
    #[arg(long)]
    pub busybox: bool,
    /// The image name, e.g. `skiff.local/web:1.0`.
    #[arg(long)]
    pub tag: String,
    /// Where to write the tarball.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// ENTRYPOINT, one argument per flag: `--entrypoint /bin/httpd`.
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// CMD, one argument per flag: `--cmd -f --cmd -p --cmd 8080`.
    #[arg(long, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
    /// ENV as KEY=VALUE.
    #[arg(long)]
    pub env: Vec<String>,
    /// EXPOSE: `8080` or `53/udp`.
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// WORKDIR.
    #[arg(long)]
    pub workdir: Option<String>,
    /// USER: `uid` or `uid:gid`.
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Args, Debug)]
pub struct NodeImageArgs {
    /// The tarball (import only).
    pub file: Option<PathBuf>,
    /// The data dir of the server or agent whose containerd to use.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A containerd socket instead (`--containerd-socket` of the agent).
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// The containerd namespace the agent uses.
    #[arg(long, default_value = "skiff")]
    pub containerd_namespace: String,
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Pack(args) => pack(args).await,
        ImageCommand::Import(args) => import(args).await,
        ImageCommand::Ls(args) => list(args).await,
    }
}

async fn pack(args: PackArgs) -> anyhow::Result<()> {
    let scratch;
    let rootfs = match (&args.rootfs, args.busybox) {
        (Some(dir), _) => dir.clone(),
        (None, _) => {
            scratch = tempfile::tempdir()?;
            let dir = scratch.path().join("rootfs");
            skiff_image::busybox_rootfs(&dir, skiff_image::DEFAULT_APPLETS)
                .context("building a busybox root filesystem (is busybox-static installed?)")?;
            dir
        }
    };
    let mut options = skiff_image::PackOptions::new(rootfs, &args.tag, &args.output);
    options.entrypoint = args.entrypoint;
    options.cmd = args.cmd;
    options.env = args.env;
    options.exposed_ports = args.ports;
    options.working_dir = args.workdir;
    options.user = args.user;
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        options.created = epoch.parse().context("SOURCE_DATE_EPOCH")?;
    }
    let packed = tokio::task::spawn_blocking(move || skiff_image::pack(&options)).await??;
    println!(
        "{} {} ({} bytes) -> {}",
        packed.name,
        packed.manifest_digest,
        packed.size,
        packed.path.display()
    );
    Ok(())
}

/// The socket of the containerd the agent in `data_dir` runs.
fn socket_of(args: &NodeImageArgs) -> PathBuf {
    if let Some(socket) = &args.containerd_socket {
        return socket.clone();
    }
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    // A server's agent lives in DATA/agent; `skiff agent --data-dir` is the agent dir itself.
    let server_agent = data.join("agent");
    let base = if server_agent.join("containerd").exists() {
        server_agent
    } else {
        data
    };
    skiff_agent::containerd::process::ContainerdPaths::under(&base).socket
}

async fn import(args: NodeImageArgs) -> anyhow::Result<()> {
    let file = args
        .file
        .clone()
        .context("which tarball? `skiff image import FILE`")?;
    let socket = socket_of(&args);
    let channel = containerd_client::connect(&socket)
        .await
        .with_context(|| format!("connecting to containerd at {}", socket.display()))?;
    let images =
        skiff_image::import_tarball(&channel, &args.containerd_namespace, "overlayfs", &file)
            .await?;
    for image in images {
        println!("imported {} {}", image.name, image.manifest_digest);
    }
    Ok(())
}

async fn list(args: NodeImageArgs) -> anyhow::Result<()> {
    let socket = socket_of(&args);
    let channel = containerd_client::connect(&socket)
        .await
        .with_context(|| format!("connecting to containerd at {}", socket.display()))?;
    let images = skiff_image::list(&channel, &args.containerd_namespace).await?;
    println!("{:<50} {:<75} SIZE", "IMAGE", "DIGEST");
    for image in images {
        println!("{:<50} {:<75} {}", image.name, image.digest, image.size);
    }
    Ok(())
}
