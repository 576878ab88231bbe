//! `busy-room`: does one busy room slow the others down (issue 16, room isolation)?
//!
//! A quiet room of two participants, A and B, is probed in a closed loop: A
//! toggles its consent and the probe waits for B's `update` carrying the new
//! value; the time between the two is one consent round trip. The probe first
//! runs with nothing else on the server (idle), then while `--busy-size`
//! sockets in one other room each toggle their consent `--busy-rate` times a
//! second (loaded). The report gives the quiet room's p50/p99 in both phases
//! and their ratio, and how much of the busy room's fan-out reached its bots.
//!
//! The probe runs on a thread and runtime of its own, so the busy bots' work
//! (reading every `update` the server sends them) does not delay the probe's
//! own reads: what it measures is the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Minter, Target, Ws};
use crate::procfs;
use crate::proto::{self, Event};

/// What a busy-room run is asked to do.
pub struct Options {
    /// Where the server is.
    pub target: Target,
    /// The HS256 secret to mint tokens with.
    pub secret: String,
    /// Sockets in the busy room.
    pub busy_size: u64,
    /// Consent toggles per busy socket per second.
    pub busy_rate: f64,
    /// Quiet-room probes per second (closed loop: fewer when they are slow).
    pub probe_rate: f64,
    /// Seconds of probing before the busy room exists.
    pub idle: Duration,
    /// Seconds the busy room toggles before the loaded probing starts.
    pub warmup: Duration,
    /// Seconds of probing with the busy room toggling.
    pub duration: Duration,
    /// Joins in flight while the busy room fills.
    pub concurrency: usize,
    /// How long one join or one probe may take.
    pub timeout: Duration,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
}

/// Percentiles of one probing phase, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Phase {
    /// Round trips measured.
    pub n: u64,
    /// Probes that got no `update` within the timeout.
    pub lost: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The report of one run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub busy_size: u64,
    pub busy_rate: f64,
    /// The quiet room with nothing else on the server.
    pub idle: Phase,
    /// The quiet room while the busy room toggles.
    pub loaded: Phase,
    /// loaded p99 / idle p99.
    pub p99_ratio: f64,
    /// Busy sockets that joined.
    pub busy_joined: u64,
    /// Busy sockets the server closed or that failed during the run.
    pub busy_failed: u64,
    /// Consent toggles the busy bots sent per second in the loaded window.
    pub busy_toggles_per_s: f64,
    /// `update` frames the busy bots received per second in the loaded window.
    pub busy_updates_per_s: f64,
    /// Server CPU seconds in the loaded window.
    pub server_cpu_s: Option<f64>,
}

/// Runs the scenario.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let options = Arc::new(options);
    let run_id = format!("br{}x{}", std::process::id(), rand_seed() % 1_000_000_000);
    let minter = Arc::new(Minter::new(&options.secret, Duration::from_secs(3600)));

    // The probe: its own thread and runtime.
    let (to_probe, probe_rx) = std::sync::mpsc::channel::<ProbeCommand>();
    let (probe_tx, mut from_probe) =
        tokio::sync::mpsc::unbounded_channel::<anyhow::Result<Phase>>();
    let probe = {
        let options = options.clone();
        let minter = minter.clone();
        let room = format!("{run_id}-quiet");
        std::thread::Builder::new()
            .name("quiet-probe".into())
            .spawn(move || probe_thread(options, minter, room, probe_rx, probe_tx))
            .context("starting the probe thread")?
    };
    let phase = |duration: Duration| -> anyhow::Result<()> {
        to_probe
            .send(ProbeCommand::Measure(duration))
            .context("the probe thread ended")
    };

    // Idle.
    phase(options.idle)?;
    let idle = from_probe
        .recv()
        .await
        .context("the probe thread ended")??;

    // The busy room.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let counters = Arc::new(Counters::default());
    let room = format!("{run_id}-busy");
    let gate = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut bots = tokio::task::JoinSet::new();
    for i in 0..options.busy_size {
        let (options, minter, room, mut stop, counters, gate) = (
            options.clone(),
            minter.clone(),
            room.clone(),
            stopped.clone(),
            counters.clone(),
            gate.clone(),
        );
        bots.spawn(async move {
            if busy_bot(&options, &minter, &room, i, &mut stop, &counters, &gate)
                .await
                .is_err()
            {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let fill_deadline = Instant::now() + options.timeout * 10 + Duration::from_secs(30);
    loop {
        let settled =
            counters.joined.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
        if settled >= options.busy_size {
            break;
        }
        if Instant::now() > fill_deadline {
            bail!(
                "the busy room did not fill in time ({settled} of {})",
                options.busy_size
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "busy-room: {} busy sockets joined ({} failed); warming up",
        counters.joined.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed)
    );
    tokio::time::sleep(options.warmup).await;

    // Loaded.
    let toggles0 = counters.toggles.load(Ordering::Relaxed);
    let updates0 = counters.updates.load(Ordering::Relaxed);
    let cpu0 = options.server_pid.map(procfs::cpu_s);
    let t0 = Instant::now();
    phase(options.duration)?;
    let loaded = from_probe
        .recv()
        .await
        .context("the probe thread ended")??;
    let window = t0.elapsed().as_secs_f64().max(1e-9);
    let cpu1 = options.server_pid.map(procfs::cpu_s);
    let toggles = counters.toggles.load(Ordering::Relaxed) - toggles0;
    let updates = counters.updates.load(Ordering::Relaxed) - updates0;

    let _ = stop.send(true);
    let _ = to_probe.send(ProbeCommand::Close);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while bots.join_next().await.is_some() {}
    })
    .await;
    bots.abort_all();
    let _ = probe.join();

    let p99_ratio = if idle.p99_ms > 0.0 {
        loaded.p99_ms / idle.p99_ms
    } else {
        0.0
    };
    Ok(Report {
        scenario: "busy-room",
        busy_size: options.busy_size,
        busy_rate: options.busy_rate,
        idle,
        loaded,
        p99_ratio,
        busy_joined: counters.joined.load(Ordering::Relaxed),
        busy_failed: counters.failed.load(Ordering::Relaxed),
        busy_toggles_per_s: toggles as f64 / window,
        busy_updates_per_s: updates as f64 / window,
        server_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
    })
}

/// Prints the report as a table.
pub fn print(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let phase = |p: &Phase| {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms  (n={}, lost {})",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.n, p.lost
        )
    };
    writeln!(out, "  scenario                     busy-room")?;
    writeln!(
        out,
        "  busy room                    {} sockets × {}/s consent toggles ({} joined, {} failed)",
        report.busy_size, report.busy_rate, report.busy_joined, report.busy_failed
    )?;
    writeln!(
        out,
        "  quiet round trip, idle       {}",
        phase(&report.idle)
    )?;
    writeln!(
        out,
        "  quiet round trip, loaded     {}",
        phase(&report.loaded)
    )?;
    writeln!(
        out,
        "  loaded p99 / idle p99        {:.2}×",
        report.p99_ratio
    )?;
    writeln!(
        out,
        "  busy room, loaded window     {:.0} toggles/s sent, {:.0} updates/s received",
        report.busy_toggles_per_s, report.busy_updates_per_s
    )?;
    if let Some(cpu) = report.server_cpu_s {
        writeln!(out, "  server CPU in that window    {cpu:.2} s")?;
    }
    Ok(())
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Default)]
struct Counters {
    joined: AtomicU64,
    failed: AtomicU64,
    toggles: AtomicU64,
    updates: AtomicU64,
}

enum ProbeCommand {
    Measure(Duration),
    Close,
}

/// The quiet room's probe, on a current-thread runtime of its own.
fn probe_thread(
    options: Arc<Options>,
    minter: Arc<Minter>,
    room: String,
    commands: std::sync::mpsc::Receiver<ProbeCommand>,
    results: tokio::sync::mpsc::UnboundedSender<anyhow::Result<Phase>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = results.send(Err(e.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let pair = async {
            let a = connect_and_join(&options, &minter, &room, "quiet-a", u64::MAX - 1).await?;
            let b = connect_and_join(&options, &minter, &room, "quiet-b", u64::MAX - 2).await?;
            anyhow::Ok((a, b))
        }
        .await;
        let (mut a, mut b) = match pair {
            Ok(pair) => pair,
            Err(e) => {
                let _ = results.send(Err(e));
                return;
            }
        };
        let mut state = ProbeState::default();
        while let Ok(ProbeCommand::Measure(duration)) = commands.recv() {
            let phase = probe(&options, &mut a, &mut b, &mut state, duration).await;
            let _ = results.send(phase);
        }
        let _ = a.close(None).await;
        let _ = b.close(None).await;
    });
}

/// Round trips A → server → B for `duration`.
///
/// Every toggle of A changes its consent, so B gets exactly one `update` per
/// toggle, in order: the k-th `update` B reads answers A's k-th toggle, and a
/// probe that timed out cannot be mistaken for the next one when it arrives late.
async fn probe(
    options: &Options,
    a: &mut Ws,
    b: &mut Ws,
    state: &mut ProbeState,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut lost = 0;
    let interval = Duration::from_secs_f64(1.0 / options.probe_rate.max(0.1));
    let end = Instant::now() + duration;
    let mut next = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        state.consent = !state.consent;
        state.sent += 1;
        let sent = Instant::now();
        a.send(Message::text(proto::set_consent(state.consent)))
            .await?;
        let seen = tokio::time::timeout(options.timeout, async {
            while state.received < state.sent {
                match b.next().await {
                    Some(Ok(Message::Text(text))) => {
                        if proto::classify(&text) == Event::Update {
                            state.received += 1;
                        } else if proto::classify(&text) == Event::Error {
                            bail!("the quiet room got an error: {text}");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("the quiet room's socket closed"),
                }
            }
            anyhow::Ok(())
        })
        .await;
        match seen {
            Ok(Ok(())) => {
                let us = sent.elapsed().as_micros() as u64;
                histogram.record(us.max(1))?;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => lost += 1,
        }
        // A never hears its own updates; read what it got (pings, errors) without waiting.
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::ZERO, a.next()).await {
            if let Message::Text(text) = frame?
                && proto::classify(&text) == Event::Error
            {
                bail!("the quiet room got an error: {text}");
            }
        }
        if Instant::now() > next {
            next = Instant::now();
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Phase {
        n: histogram.len(),
        lost,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}

/// Where the probe's toggles stand.
#[derive(Default)]
struct ProbeState {
    /// A's consent as last sent.
    consent: bool,
    /// Toggles A sent.
    sent: u64,
    /// `update`s B received.
    received: u64,
}

async fn connect_and_join(
    options: &Options,
    minter: &Minter,
    room: &str,
    sub: &str,
    index: u64,
) -> anyhow::Result<Ws> {
    let token = minter.mint(&format!("{room}-{sub}"), room, false);
    let mut ws = options
        .target
        .connect(index, Some(&token), None)
        .await
        .map_err(|e| anyhow::anyhow!("connecting: {}", e.0))?;
    ws.send(Message::text(proto::join())).await?;
    tokio::time::timeout(options.timeout, async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame?
                && proto::classify(&text) == Event::JoinSuccess
            {
                return anyhow::Ok(());
            }
        }
        bail!("closed before join_success")
    })
    .await
    .context("join timed out")??;
    Ok(ws)
}

/// One busy-room socket: joins, then toggles its consent at the rate and reads everything.
async fn busy_bot(
    options: &Options,
    minter: &Minter,
    room: &str,
    i: u64,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    counters: &Counters,
    gate: &tokio::sync::Semaphore,
) -> anyhow::Result<()> {
    let ws = {
        let _permit = gate.acquire().await?;
        connect_and_join(options, minter, room, &format!("b{i}"), i).await?
    };
    counters.joined.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let interval = Duration::from_secs_f64(1.0 / options.busy_rate.max(0.01));
    // Phases spread over the interval.
    let offset = interval.mul_f64(i as f64 / options.busy_size.max(1) as f64);
    let mut ticks = tokio::time::interval_at((Instant::now() + offset).into(), interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut consent = false;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = sink.close().await;
                return Ok(());
            }
            _ = ticks.tick() => {
                consent = !consent;
                sink.send(Message::text(proto::set_consent(consent))).await?;
                counters.toggles.fetch_add(1, Ordering::Relaxed);
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if proto::classify(&text) == Event::Update {
                        counters.updates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed by the server"),
            },
        }
    }
}
