//! Counting and timing: HDR histograms (in microseconds), the live counters a
//! worker shares with its bots, and the report a run ends with.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram holds, in microseconds (longer ones are clamped).
const MAX_MICROS: u64 = 120_000_000;

/// Shards per histogram, so bots on different threads rarely share a lock.
const SHARDS: usize = 8;

/// A new empty histogram of microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static histogram bounds are valid")
}

/// A histogram that several tasks record into.
pub struct Shared {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }
}

impl Shared {
    /// Records `micros` into the shard picked by `key`.
    pub fn record(&self, key: usize, micros: u64) {
        let mut h = self.shards[key % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*h).expect("histograms share bounds");
        }
        all
    }
}

/// A histogram as it travels between processes: `(value, count)` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl From<&Histogram<u64>> for Buckets {
    fn from(h: &Histogram<u64>) -> Self {
        Self(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }
}

impl Buckets {
    /// Adds these counts to `h`.
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = h.record_n(value.clamp(1, MAX_MICROS), count);
        }
    }
}

/// Percentiles of one histogram, in milliseconds, as reports show them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Samples recorded.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl From<&Histogram<u64>> for Summary {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// The counters and histograms one worker process shares with its bots.
#[derive(Default)]
pub struct Metrics {
    /// Sockets whose WebSocket handshake succeeded.
    pub connected: AtomicU64,
    /// Bots that got their join confirmed.
    pub joined: AtomicU64,
    /// Bots currently joined.
    pub live: AtomicU64,
    /// Frames received inside the measurement window.
    pub deliveries: AtomicU64,
    /// Frames received at any time.
    pub frames: AtomicU64,
    /// Commands (start/stop/set_consent) sent inside the measurement window.
    pub commands: AtomicU64,
    /// Deliveries the measured commands should have caused (announcements only).
    pub expected: AtomicU64,
    /// Of those, received.
    pub received: AtomicU64,
    /// Errors, by kind.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Error count, for progress lines.
    pub error_count: AtomicU64,
    /// Connect-to-join-confirmed time.
    pub join: Shared,
    /// Intended send time to each recipient's receipt of the announcement.
    pub delivery: Shared,
    /// Intended send time to the last recipient's receipt.
    pub last: Shared,
    /// Intended consent toggle time to each other participant's `update`.
    pub consent: Shared,
}

impl Metrics {
    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    /// A snapshot for the progress line.
    pub fn progress(&self) -> Progress {
        Progress {
            connected: self.connected.load(Ordering::Relaxed),
            joined: self.joined.load(Ordering::Relaxed),
            live: self.live.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            errors: self.error_count.load(Ordering::Relaxed),
        }
    }

    /// The worker's share of the report.
    pub fn report(&self) -> WorkerReport {
        WorkerReport {
            connected: self.connected.load(Ordering::Relaxed),
            joined: self.joined.load(Ordering::Relaxed),
            live_at_end: self.live.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            join: Buckets::from(&self.join.merged()),
            delivery: Buckets::from(&self.delivery.merged()),
            last: Buckets::from(&self.last.merged()),
            consent: Buckets::from(&self.consent.merged()),
            join_span_s: 0.0,
            bots_cpu_s: 0.0,
        }
    }
}

/// Live counts, sent to the parent for the progress line.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub connected: u64,
    pub joined: u64,
    pub live: u64,
    pub frames: u64,
    pub errors: u64,
}

impl std::ops::AddAssign for Progress {
    fn add_assign(&mut self, o: Self) {
        self.connected += o.connected;
        self.joined += o.joined;
        self.live += o.live;
        self.frames += o.frames;
        self.errors += o.errors;
    }
}

/// What one worker process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub connected: u64,
    pub joined: u64,
    pub live_at_end: u64,
    pub deliveries: u64,
    pub frames: u64,
    pub commands: u64,
    pub expected: u64,
    pub received: u64,
    pub errors: BTreeMap<String, u64>,
    pub join: Buckets,
    pub delivery: Buckets,
    pub last: Buckets,
    pub consent: Buckets,
    /// Seconds from the start signal to this worker's last join.
    pub join_span_s: f64,
    /// CPU seconds this worker process used.
    pub bots_cpu_s: f64,
}

/// The server as read from `/proc/<pid>` at the points a run cares about.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReport {
    /// The pid read.
    pub pid: u32,
    /// RSS before the bots connected, KiB.
    pub rss_before_kib: u64,
    /// RSS at the start of the measurement window (everyone joined), KiB.
    pub rss_joined_kib: u64,
    /// RSS at the end of the measurement window, KiB.
    pub rss_end_kib: u64,
    /// Highest RSS the server reached (VmHWM), KiB.
    pub rss_peak_kib: u64,
    /// (RSS at the end of the window − RSS before) / participants joined, KiB.
    pub rss_per_participant_kib: f64,
    /// Server CPU seconds (user + system) inside the measurement window.
    pub cpu_s: f64,
    /// Server CPU microseconds per delivery inside the window.
    pub cpu_us_per_delivery: Option<f64>,
    /// Server CPU microseconds per join during the join phase.
    pub cpu_us_per_join: Option<f64>,
    /// Threads of the server process at the end of the window.
    pub threads: u64,
}

/// What else the machine did during the window: bots and server share the
/// cores with whatever else runs, and this says how much that was.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostReport {
    /// CPU seconds the bot processes used inside the window.
    pub bots_cpu_s: f64,
    /// Busy CPU seconds of the whole machine inside the window (all cores).
    pub machine_busy_s: f64,
    /// Of those, in interrupts and soft interrupts (where loopback TCP is processed).
    pub irq_s: f64,
    /// Busy CPU seconds of all other processes (needs --server-pid).
    pub others_cpu_s: Option<f64>,
    /// Cores × window seconds: the CPU seconds there were.
    pub capacity_s: f64,
    /// 1-minute load average at the end of the window.
    pub loadavg: f64,
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub label: String,
    pub url: String,
    pub dialect: String,
    pub procs: usize,
    pub clients: u64,
    pub rooms: u64,
    pub room_size: u64,
    /// Measurement window, seconds.
    pub window_s: f64,
    pub connected: u64,
    pub joined: u64,
    pub live_at_end: u64,
    /// Joins per second during the join phase.
    pub joins_per_s: f64,
    pub join_latency: Summary,
    pub commands: u64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub expected: u64,
    pub received: u64,
    pub missed: u64,
    pub delivery_latency: Summary,
    pub last_receipt_latency: Summary,
    pub consent_latency: Summary,
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    pub bots_cpu_s: f64,
    pub server: Option<ServerReport>,
    pub host: HostReport,
    /// Whether the run saw no errors and no missed deliveries.
    pub ok: bool,
}

impl Report {
    /// A human-readable summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<28} {v}\n"));
        row(
            "scenario",
            format!("{} against {} ({})", self.scenario, self.label, self.url),
        );
        row(
            "clients",
            format!(
                "{} in {} rooms of {} ({} procs)",
                self.clients, self.rooms, self.room_size, self.procs
            ),
        );
        row(
            "connected / joined / live",
            format!(
                "{} / {} / {}",
                self.connected, self.joined, self.live_at_end
            ),
        );
        row("joins/s", format!("{:.0}", self.joins_per_s));
        row("join latency", latency(&self.join_latency));
        if self.window_s > 0.0 {
            row("window", format!("{:.1} s", self.window_s));
        }
        if self.commands > 0 || self.deliveries > 0 {
            row("commands", self.commands.to_string());
            row(
                "deliveries",
                format!("{} ({:.0}/s)", self.deliveries, self.deliveries_per_s),
            );
            row(
                "announcements",
                format!(
                    "{} expected, {} received, {} missed",
                    self.expected, self.received, self.missed
                ),
            );
            row("delivery latency", latency(&self.delivery_latency));
            row("last-receipt latency", latency(&self.last_receipt_latency));
            row("consent latency", latency(&self.consent_latency));
        }
        if let Some(s) = &self.server {
            row(
                "server RSS",
                format!(
                    "{:.1} MiB before, {:.1} MiB joined, {:.1} MiB end, {:.1} MiB peak",
                    s.rss_before_kib as f64 / 1024.0,
                    s.rss_joined_kib as f64 / 1024.0,
                    s.rss_end_kib as f64 / 1024.0,
                    s.rss_peak_kib as f64 / 1024.0
                ),
            );
            row(
                "server RSS/participant",
                format!("{:.2} KiB", s.rss_per_participant_kib),
            );
            row("server CPU in window", format!("{:.2} s", s.cpu_s));
            if let Some(us) = s.cpu_us_per_delivery {
                row("server CPU/delivery", format!("{us:.2} µs"));
            }
            if let Some(us) = s.cpu_us_per_join {
                row("server CPU/join", format!("{us:.1} µs"));
            }
        }
        row("bots CPU", format!("{:.2} s", self.bots_cpu_s));
        let h = &self.host;
        row(
            "machine in window",
            format!(
                "{:.1} of {:.1} CPU-s busy: bots {:.1}, (soft)irq {:.1}, others {}; load {:.1}",
                h.machine_busy_s,
                h.capacity_s,
                h.bots_cpu_s,
                h.irq_s,
                h.others_cpu_s
                    .map(|o| format!("{o:.1}"))
                    .unwrap_or_else(|| "?".into()),
                h.loadavg
            ),
        );
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        row("errors", errors);
        row("result", if self.ok { "OK" } else { "FAILED" }.to_owned());
        out
    }
}

fn latency(s: &Summary) -> String {
    if s.count == 0 {
        return "-".to_owned();
    }
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
        s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms, s.count
    )
}
