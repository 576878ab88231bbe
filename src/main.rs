//! The `onair` command: wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use onair::Config;
use onair::auth::{Verifier, claims_for, valid_room_id};
use onair::protocol::Role;

/// onair: room recording state and consent over WebSockets.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "ONAIR_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "ONAIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a participant token signed with the configured `[auth] jwt_secret`.
    Token(TokenArgs),
    /// Print an 8x8 JaaS meeting token (RS256) from the `[jaas]` API key.
    JaasToken(JaasTokenArgs),
    /// Copy a stopped single node's catalog, settings and undelivered outbox into a cluster's Redis.
    ///
    /// Reads the SQLite `[store] path`, writes to `[cluster] redis_url`, and
    /// puts recording files from the node's disk in `[storage] s3_bucket`.
    /// Safe to run again: nothing is copied twice.
    MigrateToRedis,
}

#[derive(Args)]
struct JaasTokenArgs {
    /// The meeting room, or `*` for any room of the app.
    #[arg(long, default_value = "*")]
    room: String,
    /// Display name.
    #[arg(long)]
    name: String,
    /// The user's id in your application.
    #[arg(long)]
    id: String,
    /// The user's e-mail.
    #[arg(long)]
    email: Option<String>,
    /// Moderator rights.
    #[arg(long)]
    moderator: bool,
    /// The recording feature (needs --moderator).
    #[arg(long)]
    recording: bool,
    /// Lifetime, e.g. `30m`, `2h`.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7800].
    #[arg(long, env = "ONAIR_LISTEN")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct TokenArgs {
    /// Room id (1-128 characters of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    room: String,
    /// Display name.
    #[arg(long)]
    name: String,
    /// Role in the room.
    #[arg(long, value_enum, default_value_t = RoleArg::User)]
    role: RoleArg,
    /// User id (`sub`); random when omitted.
    #[arg(long)]
    sub: Option<String>,
    /// Lifetime, e.g. `30m`, `1h`, `2days`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Take the right to start/stop recordings away (claim `recording: false`).
    #[arg(long)]
    no_recording: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Moderator,
    User,
    Guest,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Moderator => Role::Moderator,
            RoleArg::User => Role::User,
            RoleArg::Guest => Role::Guest,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onair: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Some(Command::Token(args)) => token(&config, args),
        Some(Command::JaasToken(args)) => {
            let user = onair::backends::jaas::JaasUser {
                id: args.id,
                name: args.name,
                email: args.email,
                moderator: args.moderator,
                recording: args.recording,
            };
            let token = onair::backends::jaas::mint_meeting_token(
                &config.jaas,
                &args.room,
                &user,
                args.ttl,
            )
            .map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Some(Command::MigrateToRedis) => migrate_to_redis(&config, cli.log_format),
        Some(Command::Serve(args)) => serve(config, args, cli.log_format),
        None => serve(config, cli.serve, cli.log_format),
    }
}

fn token(config: &Config, args: TokenArgs) -> anyhow::Result<()> {
    if config.auth.jwt_secret.is_none() && config.auth.has_token_keys() {
        anyhow::bail!(
            "cannot mint: `onair token` signs HS256 with [auth] jwt_secret, and this \
             configuration has only public keys ([auth] public_key_path / jwks_url), whose \
             private keys onair does not hold; get tokens from your identity provider"
        );
    }
    let secret = config.auth.jwt_secret.as_deref().context(
        "no [auth] jwt_secret configured (set ONAIR_AUTH__JWT_SECRET or use --config); \
         in development mode, get tokens from POST /v1/dev/token instead",
    )?;
    anyhow::ensure!(
        valid_room_id(&args.room),
        "--room must be 1-128 characters of A-Z a-z 0-9 . _ -"
    );
    if let Err(e) = onair::protocol::check_display_name(&args.name) {
        anyhow::bail!("--name {e}");
    }
    let mut claims = claims_for(
        &args.room,
        &args.name,
        args.sub.as_deref(),
        args.role.into(),
        args.ttl,
    );
    if args.no_recording {
        claims.recording = Some(false);
    }
    println!("{}", Verifier::new(secret, &config.auth).mint(&claims));
    Ok(())
}

fn serve(mut config: Config, args: ServeArgs, format: LogFormat) -> anyhow::Result<()> {
    init_logging(format);
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = bind(config.server.listen, config.server.socket_send_buffer_bytes)
            .with_context(|| format!("binding {}", config.server.listen))?;
        onair::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

fn migrate_to_redis(config: &Config, format: LogFormat) -> anyhow::Result<()> {
    init_logging(format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(onair::migrate::run(config, &mut std::io::stdout()))?;
    let failed = summary.total().failed;
    anyhow::ensure!(
        failed == 0,
        "{failed} of the node's items could not be copied (see the errors above); fix them and run \
         onair migrate-to-redis again: what was copied is not copied twice"
    );
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not turn every log line into a panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}

/// Binds with a deep accept queue: `TcpListener::bind` listens with a backlog of
/// 128, which a reconnect storm overflows (the kernel drops the SYNs and the
/// clients retry 1 s later). The kernel caps it at `net.core.somaxconn`.
///
/// `send_buffer` (bytes, 0: the kernel's autotuning) is set on the listener;
/// accepted sockets inherit it.
fn bind(addr: SocketAddr, send_buffer: usize) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(u32::try_from(send_buffer).unwrap_or(u32::MAX))?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}
