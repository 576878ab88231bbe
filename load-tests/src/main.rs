//! `onair-bots`: scripted WebSocket participants that load-test onair (and the
//! baselines it is compared with), measuring what its users would see.
//!
//! * [`worker`] — the bots of one process and the phases of a run.
//! * [`busy_room`] — the room-isolation scenario (one process, a probe thread of its own).
//! * [`client`] — opening a socket (source address, token, small buffers).
//! * [`proto`] — the few frames bots send and the fields they read.
//! * [`stats`] — HDR histograms, counters and the report.
//! * [`procfs`] — the server's RSS and CPU time from `/proc/<pid>`.
//!
//! This file holds the command line and the parent: it runs one worker in
//! process or `--procs K` worker processes (itself, with a hidden
//! `--worker-index`), starts them together, reads the server from `/proc`
//! at the window's edges, and merges what the workers measured.

mod busy_room;
mod client;
mod procfs;
mod proto;
mod stats;
mod worker;

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;

use crate::client::{Server, Target};
use crate::stats::{HostReport, Progress, Report, ServerReport, Summary, WorkerReport};
use crate::worker::{Dialect, Kind, Plan, ToParent, ToWorker};

/// Scripted WebSocket bots that load-test onair: they mint tokens, join rooms,
/// hold, give consent and start/stop recordings like real participants, and
/// report HDR latency percentiles, throughput, errors and (with --server-pid)
/// the server's RSS and CPU time. Loopback targets only; every run is bounded
/// in count and time.
///
/// Exit status: 0 when the run saw no errors and no missed deliveries, 2 when
/// it did, 1 when it could not run.
#[derive(Parser)]
#[command(name = "onair-bots", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
struct Common {
    /// WebSocket URL of the server under test (loopback only); several, comma-separated,
    /// spread the bots over the nodes of a cluster (bot i → URL i mod n).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:7800/signaling")]
    url: String,
    /// HS256 secret to mint participant tokens with: the server's `[auth] jwt_secret`.
    #[arg(
        long,
        global = true,
        env = "ONAIR_AUTH__JWT_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// What the server speaks: onair's protocol (onair, node-ws) or the floor's relay.
    #[arg(long, global = true, value_enum, default_value_t = DialectArg::Onair)]
    dialect: DialectArg,
    /// Name of the server in the report (default: the dialect).
    #[arg(long, global = true)]
    label: Option<String>,
    /// Client processes to spread the bots over (each is limited by the open-files limit).
    #[arg(long, global = true, default_value_t = 1)]
    procs: usize,
    /// Loopback source addresses to spread sockets over: `127.0.0.2-127.0.0.9` or a comma list.
    #[arg(long, global = true)]
    source_ips: Option<String>,
    /// Async worker threads per client process.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// The server's pid: report its RSS and CPU seconds from /proc/<pid>.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Connection attempts in flight per client process.
    #[arg(long, global = true, default_value_t = 256)]
    concurrency: usize,
    /// Seconds a join may take before it counts as failed.
    #[arg(long, global = true, default_value_t = 10)]
    join_timeout: u64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, global = true, default_value_t = 900)]
    max_secs: u64,
    /// No progress line.
    #[arg(long, global = true)]
    quiet: bool,
    /// Internal: run as worker process N of --procs.
    #[arg(long, global = true, hide = true)]
    worker_index: Option<usize>,
    /// Internal: the run's id, shared by its worker processes.
    #[arg(long, global = true, hide = true)]
    run_id: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DialectArg {
    /// onair's protocol (also the node-ws baseline).
    Onair,
    /// The floor hub: frames relayed unchanged to the room.
    Floor,
}

/// The scenarios.
#[derive(Subcommand, Clone)]
enum Scenario {
    /// N clients connect and join as fast as the server accepts them (up to
    /// --concurrency attempts in flight per process); reports joins/s and join latency.
    JoinStorm {
        /// Clients in all.
        #[arg(long, default_value_t = 5000)]
        clients: u64,
        /// Participants per room.
        #[arg(long, default_value_t = 10)]
        room_size: u64,
    },
    /// N idle joined participants held open; reports the server's RSS per participant.
    Hold {
        /// Clients in all.
        #[arg(long, default_value_t = 10000)]
        clients: u64,
        /// Participants per room.
        #[arg(long, default_value_t = 100)]
        room_size: u64,
        /// Seconds to let the server settle after everyone joined.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
        /// Seconds to hold everyone joined (the window).
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
    },
    /// R rooms × S participants; each room's moderator toggles start/stop at a
    /// fixed rate (open loop) or, with --rate 0, whenever fewer than
    /// --in-flight of its commands are still on their way to someone (closed
    /// loop: saturation). Latency runs from the
    /// command's intended send time to each participant's receipt of
    /// `started`/`stopped`, and to the last participant's.
    Fanout {
        #[command(flatten)]
        rooms: RoomArgs,
        /// Commands per room per second; 0 = closed loop.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Closed loop: commands per room on their way at once (each is two
        /// frames to everyone; keep 2 × this below the server's send queue).
        #[arg(long, default_value_t = 1)]
        in_flight: u32,
        #[command(flatten)]
        window: WindowArgs,
    },
    /// R rooms × S participants; every participant toggles its consent at a
    /// fixed rate; latency to each other participant's `update`.
    ConsentChurn {
        #[command(flatten)]
        rooms: RoomArgs,
        /// Toggles per participant per second.
        #[arg(long, default_value_t = 0.2)]
        rate: f64,
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Everything at once: moderators toggle recordings, participants toggle
    /// consent, and visitors per room leave and rejoin every 1–3 s.
    Mixed {
        #[command(flatten)]
        rooms: RoomArgs,
        /// Recording commands per room per second.
        #[arg(long, default_value_t = 0.5)]
        command_rate: f64,
        /// Consent toggles per participant per second.
        #[arg(long, default_value_t = 0.1)]
        consent_rate: f64,
        /// Visitors per room that keep leaving and rejoining.
        #[arg(long, default_value_t = 2)]
        visitors: u64,
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Room isolation: a quiet room of two, probed in a closed loop (A toggles
    /// its consent, the time until B sees the `update`), first alone and then
    /// while --busy-size sockets in another room each toggle their consent
    /// --busy-rate times a second. Reports the quiet room's round-trip
    /// p50/p99 in both phases. One process (--procs is ignored).
    BusyRoom {
        /// Sockets in the busy room.
        #[arg(long, default_value_t = 1000)]
        busy_size: u64,
        /// Consent toggles per busy socket per second.
        #[arg(long, default_value_t = 1.0)]
        busy_rate: f64,
        /// Quiet-room probes per second (keep it under `[server] messages_per_second`, 20).
        #[arg(long, default_value_t = 15.0)]
        probe_rate: f64,
        /// Seconds of probing with the server otherwise idle.
        #[arg(long, default_value_t = 30.0)]
        idle: f64,
        /// Seconds the busy room toggles before the loaded probing starts.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// Seconds of probing while the busy room toggles.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
}

#[derive(Args, Clone)]
struct RoomArgs {
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    rooms: u64,
    /// Participants per room (the first is the moderator).
    #[arg(long, default_value_t = 100)]
    room_size: u64,
}

#[derive(Args, Clone)]
struct WindowArgs {
    /// Seconds of warm-up before the window (commands run, nothing is recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds in the measurement window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Longest wait, in seconds, for in-flight deliveries after the window.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.common.threads.max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onair-bots: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Scenario::BusyRoom { .. } = &cli.scenario {
            busy_room_main(&cli).await
        } else if cli.common.worker_index.is_some() {
            child_worker(&cli).await.map(|()| true)
        } else {
            parent(&cli).await
        }
    });
    // Sockets still open are dropped with the runtime; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("onair-bots: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the plan for worker `index`.
fn plan(cli: &Cli, index: usize, run_id: &str) -> anyhow::Result<Plan> {
    let c = &cli.common;
    let dialect = match c.dialect {
        DialectArg::Onair => Dialect::Onair,
        DialectArg::Floor => Dialect::Floor,
    };
    let secret = match (dialect, &c.secret) {
        (Dialect::Onair, Some(s)) => s.clone(),
        (Dialect::Onair, None) => {
            bail!("--secret (or ONAIR_AUTH__JWT_SECRET) is needed to mint tokens for onair")
        }
        (Dialect::Floor, s) => s.clone().unwrap_or_default(),
    };
    ensure!(c.procs >= 1, "--procs must be at least 1");
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let mut p = Plan {
        kind: Kind::Hold,
        target: target(&c.url, c.source_ips.as_deref())?,
        dialect,
        secret,
        run_id: run_id.to_owned(),
        clients: 0,
        rooms: 0,
        room_size: 1,
        visitors: 0,
        command_rate: 0.0,
        window: 1,
        consent_rate: 0.0,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        drain: Duration::ZERO,
        concurrency: c.concurrency,
        join_timeout: Duration::from_secs(c.join_timeout),
        worker_index: index,
        worker_count: c.procs,
    };
    let mut rooms_of = |rooms: &RoomArgs| {
        p.rooms = rooms.rooms;
        p.room_size = rooms.room_size.max(1);
        p.clients = rooms.rooms * p.room_size;
    };
    match &cli.scenario {
        Scenario::JoinStorm { clients, room_size } => {
            p.kind = Kind::JoinStorm;
            p.clients = *clients;
            p.room_size = (*room_size).max(1);
            p.rooms = clients.div_ceil(p.room_size);
        }
        Scenario::Hold {
            clients,
            room_size,
            settle,
            hold,
        } => {
            p.kind = Kind::Hold;
            p.clients = *clients;
            p.room_size = (*room_size).max(1);
            p.rooms = clients.div_ceil(p.room_size);
            p.warmup = secs(*settle);
            p.duration = secs(*hold);
        }
        Scenario::Fanout {
            rooms,
            rate,
            in_flight,
            window,
        } => {
            rooms_of(rooms);
            p.kind = Kind::Fanout;
            p.command_rate = rate.max(0.0);
            p.window = (*in_flight).max(1);
            p.warmup = secs(window.warmup);
            p.duration = secs(window.duration);
            p.drain = secs(window.drain);
        }
        Scenario::ConsentChurn {
            rooms,
            rate,
            window,
        } => {
            rooms_of(rooms);
            p.kind = Kind::ConsentChurn;
            p.consent_rate = rate.max(0.0);
            p.warmup = secs(window.warmup);
            p.duration = secs(window.duration);
            p.drain = secs(window.drain);
        }
        Scenario::BusyRoom { .. } => bail!("busy-room runs on its own (busy_room_main)"),
        Scenario::Mixed {
            rooms,
            command_rate,
            consent_rate,
            visitors,
            window,
        } => {
            rooms_of(rooms);
            p.kind = Kind::Mixed;
            p.command_rate = command_rate.max(0.01);
            p.consent_rate = consent_rate.max(0.0);
            p.visitors = *visitors;
            p.warmup = secs(window.warmup);
            p.duration = secs(window.duration);
            p.drain = secs(window.drain);
        }
    }
    ensure!(p.clients > 0, "no clients to run");
    // (`busy-room` never gets here: see `busy_room_main`.)
    ensure!(
        p.rooms as usize >= p.worker_count,
        "--procs {} is more than the {} rooms: rooms are not split across processes",
        p.worker_count,
        p.rooms
    );
    Ok(p)
}

/// Runs `busy-room` and prints its report; `Ok(false)` when a probe or a busy socket failed.
async fn busy_room_main(cli: &Cli) -> anyhow::Result<bool> {
    let c = &cli.common;
    let Scenario::BusyRoom {
        busy_size,
        busy_rate,
        probe_rate,
        idle,
        warmup,
        duration,
    } = &cli.scenario
    else {
        bail!("not busy-room");
    };
    ensure!(
        matches!(c.dialect, DialectArg::Onair),
        "busy-room speaks onair's protocol only"
    );
    let secret = c
        .secret
        .clone()
        .context("--secret (or ONAIR_AUTH__JWT_SECRET) is needed to mint tokens for onair")?;
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let options = busy_room::Options {
        target: target(&c.url, c.source_ips.as_deref())?,
        secret,
        busy_size: *busy_size,
        busy_rate: *busy_rate,
        probe_rate: *probe_rate,
        idle: secs(*idle),
        warmup: secs(*warmup),
        duration: secs(*duration),
        concurrency: c.concurrency,
        timeout: Duration::from_secs(c.join_timeout),
        server_pid: c.server_pid,
    };
    let report = tokio::time::timeout(Duration::from_secs(c.max_secs), busy_room::run(options))
        .await
        .with_context(|| format!("--max-secs {} reached", c.max_secs))??;
    if c.json {
        busy_room::print(&report, &mut std::io::stderr())?;
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        busy_room::print(&report, &mut std::io::stdout())?;
    }
    Ok(report.idle.lost == 0 && report.loaded.lost == 0 && report.busy_failed == 0)
}

/// Parses the URLs and source addresses; refuses anything but loopback.
fn target(urls: &str, source_ips: Option<&str>) -> anyhow::Result<Target> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(server)
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!servers.is_empty(), "--url names no server");
    let source_ips = match source_ips {
        None => Vec::new(),
        Some(spec) => parse_ips(spec)?,
    };
    Ok(Target {
        servers,
        source_ips,
    })
}

/// One `ws://` URL; refuses anything but loopback.
fn server(url: &str) -> anyhow::Result<Server> {
    let rest = url
        .strip_prefix("ws://")
        .context("--url must start with ws:// (loopback, no TLS)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to nothing"))?;
    ensure!(
        addr.ip().is_loopback(),
        "{addr} is not a loopback address: onair-bots only targets this machine"
    );
    Ok(Server {
        addr,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3`.
fn parse_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: Ipv4Addr = from.trim().parse().context("source address range")?;
            let to: Ipv4Addr = to.trim().parse().context("source address range")?;
            let (a, b) = (u32::from(from), u32::from(to));
            ensure!(a <= b && b - a < 65536, "bad source address range {part}");
            ips.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            ips.push(part.parse().context("source address")?);
        }
    }
    ensure!(
        ips.iter().all(IpAddr::is_loopback),
        "source addresses must be loopback (127.0.0.0/8 or ::1)"
    );
    Ok(ips)
}

/// One worker, in this process or in a child.
enum Handle {
    Local,
    Child {
        child: Child,
        stdin: std::process::ChildStdin,
    },
}

/// Runs the scenario and prints the report; `Ok(false)` when it saw errors.
async fn parent(cli: &Cli) -> anyhow::Result<bool> {
    let c = &cli.common;
    let run_id = c.run_id.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("b{}x{}", std::process::id(), t.as_millis() % 1_000_000_000)
    });
    let plan0 = plan(cli, 0, &run_id)?;
    let deadline = Instant::now() + Duration::from_secs(c.max_secs);
    let server_before = c.server_pid.and_then(procfs::sample);
    if c.server_pid.is_some() && server_before.is_none() {
        bail!("no process with --server-pid {}", c.server_pid.unwrap_or(0));
    }

    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, ToParent)>();
    let mut handles = Vec::new();
    let mut local_tx = None;
    for i in 0..c.procs {
        if c.procs == 1 {
            let (to_worker, from_parent) = mpsc::unbounded_channel();
            let (to_parent, mut from_worker) = mpsc::unbounded_channel();
            tokio::spawn(worker::run(plan(cli, i, &run_id)?, to_parent, from_parent));
            let events_tx = events_tx.clone();
            tokio::spawn(async move {
                while let Some(m) = from_worker.recv().await {
                    let _ = events_tx.send((0, m));
                }
            });
            local_tx = Some(to_worker);
            handles.push(Handle::Local);
        } else {
            handles.push(spawn_child(i, &run_id, events_tx.clone())?);
        }
    }
    drop(events_tx);
    let child_pids: Vec<u32> = handles
        .iter()
        .filter_map(|h| match h {
            Handle::Child { child, .. } => Some(child.id()),
            Handle::Local => None,
        })
        .collect();
    let send_all = |handles: &mut Vec<Handle>, m: &ToWorker| -> anyhow::Result<()> {
        let line = serde_json::to_string(m)?;
        for h in handles.iter_mut() {
            match h {
                Handle::Local => {
                    let m: ToWorker = serde_json::from_str(&line)?;
                    if let Some(tx) = &local_tx {
                        let _ = tx.send(m);
                    }
                }
                Handle::Child { stdin, .. } => {
                    let _ = writeln!(stdin, "{line}");
                    let _ = stdin.flush();
                }
            }
        }
        Ok(())
    };

    let result = async {
        let mut latest = vec![Progress::default(); c.procs];
        let mut line = ProgressLine::new(c.quiet, plan0.kind, plan0.clients);
        // Setup.
        wait_for(
            &mut events,
            c.procs,
            deadline,
            &mut latest,
            &mut line,
            |m| matches!(m, ToParent::Ready),
        )
        .await?;
        let go = SystemTime::now() + Duration::from_millis(300);
        let go_ns = go.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        send_all(&mut handles, &ToWorker::Go { unix_ns: go_ns })?;
        let go_at = Instant::now() + Duration::from_millis(300);
        let start_at = go_at + plan0.warmup;
        let end_at = start_at + plan0.duration;
        line.run_started(go_at, start_at, end_at);

        // Read the server and the machine at the window's edges while collecting progress.
        let host_now = || {
            let bots =
                procfs::own_cpu_s() + child_pids.iter().map(|p| procfs::cpu_s(*p)).sum::<f64>();
            let (busy, irq) = procfs::machine_busy_s();
            (busy, irq, bots, Instant::now())
        };
        let storm = plan0.kind == Kind::JoinStorm;
        let mut host_start = None;
        let mut host_end = None;
        let mut at_go = None;
        let mut at_start = None;
        let mut at_end = None;
        let mut done: Vec<Option<WorkerReport>> = vec![None; c.procs];
        let mut finished = 0;
        while finished < c.procs {
            let now = Instant::now();
            if now >= deadline {
                bail!("--max-secs {} reached", c.max_secs);
            }
            if host_start.is_none() && now >= if storm { go_at } else { start_at } {
                host_start = Some(host_now());
            }
            if host_end.is_none() && !storm && now >= end_at {
                host_end = Some(host_now());
            }
            if let Some(pid) = c.server_pid {
                if at_go.is_none() && now >= go_at {
                    at_go = procfs::sample(pid);
                }
                if at_start.is_none() && now >= start_at {
                    at_start = procfs::sample(pid);
                }
                if at_end.is_none() && now >= end_at && plan0.kind != Kind::JoinStorm {
                    at_end = procfs::sample(pid);
                }
            }
            let next = [go_at, start_at, end_at]
                .into_iter()
                .filter(|t| *t > now)
                .min()
                .unwrap_or(now + Duration::from_millis(500))
                .min(now + Duration::from_millis(500));
            match tokio::time::timeout_at(next.into(), events.recv()).await {
                Err(_) => {}
                Ok(None) => bail!("a worker ended without a report"),
                Ok(Some((i, m))) => match m {
                    ToParent::Progress(p) => latest[i] = p,
                    ToParent::Done(r) => {
                        if done[i].is_none() {
                            finished += 1;
                        }
                        done[i] = Some(*r);
                    }
                    ToParent::Failed { error } => bail!("worker {i}: {error}"),
                    _ => {}
                },
            }
            let progress = latest.iter().fold(Progress::default(), |mut a, p| {
                a += *p;
                a
            });
            line.show(&progress);
        }
        let host_end = host_end.unwrap_or_else(host_now);
        let host = host_start.map(|(busy0, irq0, bots0, t0)| {
            let (busy1, irq1, bots1, t1) = host_end;
            let window = (t1 - t0).as_secs_f64();
            HostReport {
                bots_cpu_s: bots1 - bots0,
                machine_busy_s: busy1 - busy0,
                irq_s: irq1 - irq0,
                others_cpu_s: None,
                capacity_s: window
                    * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
                loadavg: procfs::loadavg(),
            }
        });
        if let Some(pid) = c.server_pid {
            let now = procfs::sample(pid);
            if plan0.kind == Kind::JoinStorm {
                at_end = now;
            }
            at_end = at_end.or(now);
        }
        line.finish();
        // Close.
        send_all(&mut handles, &ToWorker::Close)?;
        let _ = wait_for(
            &mut events,
            c.procs,
            (Instant::now() + Duration::from_secs(20)).min(deadline),
            &mut latest,
            &mut line,
            |m| matches!(m, ToParent::Closed),
        )
        .await;
        let reports: Vec<WorkerReport> = done.into_iter().flatten().collect();
        let server = c.server_pid.map(|pid| ServerReport {
            pid,
            ..Default::default()
        });
        Ok((
            reports,
            server,
            host.unwrap_or_default(),
            [server_before, at_go, at_start, at_end],
        ))
    }
    .await;

    for h in &mut handles {
        if let Handle::Child { child, .. } = h {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    let (reports, server, host, samples) = result?;
    let report = merge(cli, &plan0, reports, server, host, samples);
    let table = report.table();
    if c.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
    }
    Ok(report.ok)
}

/// Waits until every worker has sent a message matching `want`.
async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<(usize, ToParent)>,
    procs: usize,
    deadline: Instant,
    latest: &mut [Progress],
    line: &mut ProgressLine,
    want: impl Fn(&ToParent) -> bool,
) -> anyhow::Result<()> {
    let mut seen = vec![false; procs];
    while seen.iter().any(|s| !s) {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Err(_) => bail!("timed out waiting for the workers"),
            Ok(None) => bail!("a worker ended early"),
            Ok(Some((i, m))) => {
                if let ToParent::Failed { error } = &m {
                    bail!("worker {i}: {error}");
                }
                if let ToParent::Progress(p) = &m {
                    latest[i] = *p;
                    let total = latest.iter().fold(Progress::default(), |mut a, p| {
                        a += *p;
                        a
                    });
                    line.show(&total);
                }
                if want(&m) {
                    seen[i] = true;
                }
            }
        }
    }
    Ok(())
}

/// Starts worker process `index`: this binary with the same arguments.
fn spawn_child(
    index: usize,
    run_id: &str,
    events: mpsc::UnboundedSender<(usize, ToParent)>,
) -> anyhow::Result<Handle> {
    let exe = std::env::current_exe().context("finding onair-bots' own executable")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--worker-index")
        .arg(index.to_string())
        .arg("--run-id")
        .arg(run_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a worker process")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToParent>(&line) {
                Ok(m) => {
                    if events.send((index, m)).is_err() {
                        break;
                    }
                }
                Err(_) => eprintln!("worker {index}: {line}"),
            }
        }
    });
    Ok(Handle::Child { child, stdin })
}

/// The worker side of `--procs`: messages as JSON lines on stdin/stdout.
async fn child_worker(cli: &Cli) -> anyhow::Result<()> {
    let index = cli.common.worker_index.unwrap_or(0);
    let run_id = cli.common.run_id.clone().context("--run-id")?;
    let plan = plan(cli, index, &run_id)?;
    let (to_worker, from_parent) = mpsc::unbounded_channel();
    let (to_parent, mut from_worker) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Ok(m) = serde_json::from_str::<ToWorker>(&line)
                && to_worker.send(m).is_err()
            {
                break;
            }
        }
    });
    let worker = tokio::spawn(worker::run(plan, to_parent, from_parent));
    while let Some(m) = from_worker.recv().await {
        let closed = matches!(m, ToParent::Closed | ToParent::Failed { .. });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&m)?)?;
        out.flush()?;
        if closed {
            break;
        }
    }
    worker.abort();
    Ok(())
}

/// Merges the workers' reports and the server samples into the run's report.
fn merge(
    cli: &Cli,
    plan: &Plan,
    reports: Vec<WorkerReport>,
    server: Option<ServerReport>,
    mut host: HostReport,
    samples: [Option<procfs::Sample>; 4],
) -> Report {
    let c = &cli.common;
    let mut join = stats::histogram();
    let mut delivery = stats::histogram();
    let mut last = stats::histogram();
    let mut consent = stats::histogram();
    let mut total = WorkerReport::default();
    for r in &reports {
        r.join.add_to(&mut join);
        r.delivery.add_to(&mut delivery);
        r.last.add_to(&mut last);
        r.consent.add_to(&mut consent);
        total.connected += r.connected;
        total.joined += r.joined;
        total.live_at_end += r.live_at_end;
        total.deliveries += r.deliveries;
        total.frames += r.frames;
        total.commands += r.commands;
        total.expected += r.expected;
        total.received += r.received;
        total.join_span_s = total.join_span_s.max(r.join_span_s);
        total.bots_cpu_s += r.bots_cpu_s;
        for (k, v) in &r.errors {
            *total.errors.entry(k.clone()).or_default() += v;
        }
    }
    if reports.len() < c.procs {
        *total.errors.entry("worker_lost".into()).or_default() += 1;
    }
    let window_s = plan.duration.as_secs_f64();
    let [before, at_go, at_start, at_end] = samples;
    let server = server.map(|mut s| {
        let before = before.unwrap_or_default();
        let end = at_end.unwrap_or_default();
        s.rss_before_kib = before.rss_kib;
        s.rss_joined_kib = at_start.map(|x| x.rss_kib).unwrap_or(0);
        s.rss_end_kib = end.rss_kib;
        s.rss_peak_kib = end.hwm_kib;
        s.threads = end.threads;
        if total.joined > 0 {
            s.rss_per_participant_kib =
                end.rss_kib.saturating_sub(before.rss_kib) as f64 / total.joined as f64;
        }
        match plan.kind {
            Kind::JoinStorm => {
                let from = at_go.unwrap_or(before);
                s.cpu_s = end.cpu_s - from.cpu_s;
                if total.joined > 0 {
                    s.cpu_us_per_join = Some(s.cpu_s * 1e6 / total.joined as f64);
                }
            }
            _ => {
                let from = at_start.unwrap_or(before);
                s.cpu_s = end.cpu_s - from.cpu_s;
                if total.deliveries > 0 {
                    s.cpu_us_per_delivery = Some(s.cpu_s * 1e6 / total.deliveries as f64);
                }
                if plan.kind == Kind::Hold && total.joined > 0 {
                    // Setup's joins, between "before" and "go".
                    let joins = at_go.unwrap_or(before).cpu_s - before.cpu_s;
                    s.cpu_us_per_join = Some(joins * 1e6 / total.joined as f64);
                }
            }
        }
        s
    });
    if let Some(s) = &server {
        host.others_cpu_s =
            Some((host.machine_busy_s - host.irq_s - host.bots_cpu_s - s.cpu_s).max(0.0));
    }
    let error_total: u64 = total.errors.values().sum();
    let missed = total.expected.saturating_sub(total.received);
    let expected_live = if plan.kind == Kind::Mixed {
        plan.clients
    } else {
        total.joined
    };
    Report {
        scenario: plan.kind.name().to_owned(),
        label: c.label.clone().unwrap_or_else(|| {
            match plan.dialect {
                Dialect::Onair => "onair",
                Dialect::Floor => "floor",
            }
            .to_owned()
        }),
        url: c.url.clone(),
        dialect: match plan.dialect {
            Dialect::Onair => "onair",
            Dialect::Floor => "floor",
        }
        .to_owned(),
        procs: c.procs,
        clients: plan.clients,
        rooms: plan.rooms,
        room_size: plan.room_size,
        window_s: if plan.kind == Kind::JoinStorm {
            total.join_span_s
        } else {
            window_s
        },
        connected: total.connected,
        joined: total.joined,
        live_at_end: total.live_at_end,
        joins_per_s: if total.join_span_s > 0.0 {
            total.joined as f64 / total.join_span_s
        } else {
            0.0
        },
        join_latency: Summary::from(&join),
        commands: total.commands,
        deliveries: total.deliveries,
        deliveries_per_s: if window_s > 0.0 {
            total.deliveries as f64 / window_s
        } else {
            0.0
        },
        expected: total.expected,
        received: total.received,
        missed,
        delivery_latency: Summary::from(&delivery),
        last_receipt_latency: Summary::from(&last),
        consent_latency: Summary::from(&consent),
        ok: error_total == 0 && missed == 0 && total.joined >= plan.clients,
        errors: total.errors,
        error_total,
        bots_cpu_s: total.bots_cpu_s,
        server,
        host,
    }
    .with_live_check(expected_live)
}

impl Report {
    /// A run in which participants dropped before the end is not OK either.
    fn with_live_check(mut self, expected: u64) -> Self {
        if self.live_at_end < expected.min(self.clients) {
            self.ok = false;
        }
        self
    }
}

/// The progress line on stderr: redrawn in place on a terminal, every 5 s otherwise.
struct ProgressLine {
    quiet: bool,
    tty: bool,
    kind: Kind,
    clients: u64,
    started: Instant,
    last_print: Option<Instant>,
    run: Option<(Instant, Instant, Instant)>,
    frames_at: (Instant, u64),
    rate: f64,
}

impl ProgressLine {
    fn new(quiet: bool, kind: Kind, clients: u64) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            kind,
            clients,
            started: Instant::now(),
            last_print: None,
            run: None,
            frames_at: (Instant::now(), 0),
            rate: 0.0,
        }
    }

    fn run_started(&mut self, go: Instant, start: Instant, end: Instant) {
        self.run = Some((go, start, end));
    }

    fn show(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last_print.is_some_and(|t| now - t < every) {
            return;
        }
        let dt = (now - self.frames_at.0).as_secs_f64();
        if dt >= 0.5 {
            self.rate = p.frames.saturating_sub(self.frames_at.1) as f64 / dt;
            self.frames_at = (now, p.frames);
        }
        self.last_print = Some(now);
        let (phase, done, total) = match self.run {
            None => ("setup", p.joined, self.clients),
            Some(_) if self.kind == Kind::JoinStorm => ("storm", p.joined, self.clients),
            Some((go, start, end)) => {
                let phase = if now < start {
                    "warm-up"
                } else if now < end {
                    "window"
                } else {
                    "drain"
                };
                let total = (end - go).as_millis() as u64;
                (phase, ((now - go).as_millis() as u64).min(total), total)
            }
        };
        let width = 24;
        let filled = (done * width).checked_div(total).unwrap_or(0) as usize;
        let bar: String =
            "#".repeat(filled) + &".".repeat(width as usize - filled.min(width as usize));
        let text = format!(
            "[{bar}] {phase:<7} {:>5.0}s  joined {}/{}  live {}  frames {} ({:.0}/s)  errors {}",
            (now - self.started).as_secs_f64(),
            p.joined,
            self.clients,
            p.live,
            p.frames,
            self.rate,
            p.errors
        );
        if self.tty {
            eprint!("\r\x1b[2K{text}");
        } else {
            eprintln!("{text}");
        }
    }

    fn finish(&mut self) {
        if !self.quiet && self.tty {
            eprintln!();
        }
    }
}
