#!/usr/bin/env python3
"""Turns compare.sh's raw JSON reports into load-tests/RESULTS.md.

Medians of the measured runs, with the spread (min-max) beside them, the
ratios onair/node-ws and onair/floor, and which of onair's targets are met.
Everything below the line `<!-- notes -->` in an existing RESULTS.md is kept
(profiling notes, before/after), so re-running compare.sh does not lose them.
Standard library only.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess

SERVERS = ["onair", "onair-patched", "node-ws", "floor"]
ONAIRS = ["onair", "onair-patched"]
NOTES_MARK = "<!-- notes -->"

# Per scenario: (label, path into the report, unit, better) — better is "low" or "high".
METRICS = {
    "join-storm": [
        ("joins/s", "joins_per_s", "", "high"),
        ("join latency p50", "join_latency.p50_ms", "ms", "low"),
        ("join latency p99", "join_latency.p99_ms", "ms", "low"),
        ("server CPU per join", "server.cpu_us_per_join", "µs", "low"),
        ("errors", "error_total", "", "low"),
    ],
    "hold-10k": [
        ("server RSS per idle participant", "server.rss_per_participant_kib", "KiB", "low"),
        ("server RSS, all joined", "server.rss_end_kib", "KiB", "low"),
        ("participants live at the end", "live_at_end", "", "high"),
        ("joins/s (setup)", "joins_per_s", "", "high"),
        ("errors", "error_total", "", "low"),
    ],
    "hold-10k-r10": [
        ("server RSS per idle participant", "server.rss_per_participant_kib", "KiB", "low"),
        ("server RSS, all joined", "server.rss_end_kib", "KiB", "low"),
        ("participants live at the end", "live_at_end", "", "high"),
        ("joins/s (setup)", "joins_per_s", "", "high"),
        ("errors", "error_total", "", "low"),
    ],
    "fanout-100x100": [
        ("per-delivery latency p50", "delivery_latency.p50_ms", "ms", "low"),
        ("per-delivery latency p99", "delivery_latency.p99_ms", "ms", "low"),
        ("per-delivery latency p99.9", "delivery_latency.p999_ms", "ms", "low"),
        ("last-receipt latency p50", "last_receipt_latency.p50_ms", "ms", "low"),
        ("last-receipt latency p99", "last_receipt_latency.p99_ms", "ms", "low"),
        ("server CPU per delivery", "server.cpu_us_per_delivery", "µs", "low"),
        ("deliveries/s", "deliveries_per_s", "", "high"),
        ("missed deliveries", "missed", "", "low"),
        ("errors", "error_total", "", "low"),
    ],
    "fanout-1x1000": [
        ("per-delivery latency p50", "delivery_latency.p50_ms", "ms", "low"),
        ("per-delivery latency p99", "delivery_latency.p99_ms", "ms", "low"),
        ("last-receipt latency p50", "last_receipt_latency.p50_ms", "ms", "low"),
        ("last-receipt latency p99", "last_receipt_latency.p99_ms", "ms", "low"),
        ("server CPU per delivery", "server.cpu_us_per_delivery", "µs", "low"),
        ("missed deliveries", "missed", "", "low"),
        ("errors", "error_total", "", "low"),
    ],
    "saturation": [
        ("deliveries/s", "deliveries_per_s", "", "high"),
        ("server CPU per delivery", "server.cpu_us_per_delivery", "µs", "low"),
        ("server CPU in window", "server.cpu_s", "s", ""),
        ("bots CPU (whole run)", "bots_cpu_s", "s", ""),
        ("per-delivery latency p99", "delivery_latency.p99_ms", "ms", "low"),
        ("last-receipt latency p99", "last_receipt_latency.p99_ms", "ms", "low"),
        ("missed deliveries", "missed", "", "low"),
        ("errors", "error_total", "", "low"),
    ],
    "consent-churn": [
        ("update latency p50", "consent_latency.p50_ms", "ms", "low"),
        ("update latency p99", "consent_latency.p99_ms", "ms", "low"),
        ("deliveries/s", "deliveries_per_s", "", "high"),
        ("server CPU per delivery", "server.cpu_us_per_delivery", "µs", "low"),
        ("missed deliveries", "missed", "", "low"),
        ("errors", "error_total", "", "low"),
    ],
    "mixed": [
        ("recording fan-out p99", "delivery_latency.p99_ms", "ms", "low"),
        ("last-receipt latency p99", "last_receipt_latency.p99_ms", "ms", "low"),
        ("update latency p99", "consent_latency.p99_ms", "ms", "low"),
        ("join latency p99 (incl. rejoins)", "join_latency.p99_ms", "ms", "low"),
        ("deliveries/s", "deliveries_per_s", "", "high"),
        ("server CPU per delivery", "server.cpu_us_per_delivery", "µs", "low"),
        ("missed deliveries", "missed", "", "low"),
        ("errors", "error_total", "", "low"),
    ],
    "capacity-19k": [
        ("participants joined", "joined", "", "high"),
        ("participants live at the end", "live_at_end", "", "high"),
        ("server RSS per idle participant", "server.rss_per_participant_kib", "KiB", "low"),
        ("server RSS, all joined", "server.rss_end_kib", "KiB", "low"),
        ("joins/s (setup)", "joins_per_s", "", "high"),
        ("errors", "error_total", "", "low"),
    ],
}

# Appended to every scenario: how much else the machine did during the window.
HOST = [
    ("server CPU in window", "server.cpu_s", "s", ""),
    ("bots CPU in window", "host.bots_cpu_s", "s", ""),
    ("(soft)irq CPU in window (loopback TCP)", "host.irq_s", "s", ""),
    ("other processes' CPU in window", "host.others_cpu_s", "s", ""),
]

DESCRIPTIONS = {
    "join-storm": "5,000 clients (rooms of 10) connect and join as fast as the server accepts them, 100 attempts in flight, HS256 tokens.",
    "hold-10k": "10,000 idle joined participants in rooms of 100; RSS read after everyone joined, 3 s of settling and 5 s of holding, minus the RSS before the first connection.",
    "hold-10k-r10": "The same in rooms of 10 (smaller `join_success` frames).",
    "fanout-100x100": "100 rooms × 100 participants, each moderator toggles start/stop once a second (open loop, phases spread over the second); 3 s warm-up, 15 s window. Each command is two frames to everyone (`started`/`stopped` + `status`); latency is for the first, from the intended send time.",
    "fanout-1x1000": "One room of 1,000 participants, one command a second; 3 s warm-up, 15 s window.",
    "saturation": "100 rooms × 100, closed loop: each moderator keeps 4 commands on their way and sends the next as soon as one has reached all 100 participants; 3 s warm-up, 10 s window; both cores full, bots included. The per-connection rate limit of onair and node-ws is raised for this scenario only (`ONAIR_SERVER__MESSAGES_PER_SECOND=200 ONAIR_SERVER__MESSAGE_BURST=400`).",
    "consent-churn": "100 rooms × 20; every participant toggles its consent every 2 s; latency of `update` at each other participant.",
    "mixed": "50 rooms × 40: recordings toggled every 2 s, consent every 10 s per participant, and 4 visitors per room leaving and rejoining every 1–3 s.",
    "capacity-19k": "19,000 idle joined participants from 2 bot processes over 8 loopback source addresses (one run).",
}


def get(report, path):
    value = report
    for part in path.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return None
        # A latency summary of no samples has no percentiles.
        if value.get("count") == 0:
            return None
        value = value[part]
    return value


def fmt(value, unit=""):
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer() or unit in ("ms", "µs", "KiB", "s"):
        if abs(value) >= 1000:
            text = f"{value:,.0f}"
        elif abs(value) >= 100:
            text = f"{value:.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}"
        else:
            text = f"{value:.2f}"
    else:
        text = f"{int(value):,}"
    return f"{text} {unit}".strip()


def cell(values, unit):
    values = [v for v in values if v is not None]
    if not values:
        return "–", None
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, unit), med
    return f"{fmt(med, unit)} ({fmt(min(values))}–{fmt(max(values))})", med


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


def machine():
    model = sh("lscpu | sed -n 's/^Model name: *//p' | head -1") or platform.processor()
    mem = sh("free -g | awk '/^Mem:/ {print $2}'")
    return (
        f"{os.cpu_count()} cores ({model}), {mem} GiB RAM, Linux {platform.release()}, "
        f"open-files limit {sh('ulimit -n')}"
    )


def versions(root, onair_bin):
    lock = open(os.path.join(root, "Cargo.lock")).read()

    def crate(name):
        m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
        return m.group(1) if m else "?"

    ws = "?"
    try:
        pl = json.load(open(os.path.join(root, "load-tests/baselines/node-ws/package-lock.json")))
        ws = pl["packages"]["node_modules/ws"]["version"]
    except Exception:
        pass
    rev = sh(f"git -C {root} rev-parse --short HEAD")
    dirty = sh(f"git -C {root} status --porcelain -- src Cargo.toml")
    onair_rev = os.environ.get("ONAIR_REV") or (rev + (" + uncommitted changes in src/" if dirty else ""))
    patched = []
    if os.environ.get("ONAIR_PATCHED_BIN"):
        patched = [("onair-patched", f"{os.environ.get('ONAIR_PATCHED_REV', '?')} (`{os.environ['ONAIR_PATCHED_BIN']}`)")]
    return [
        ("onair", f"commit {onair_rev} (`{onair_bin}`)"),
        *patched,
        ("rustc", sh("rustc --version")),
        ("tokio / tungstenite / axum", f"{crate('tokio')} / {crate('tungstenite')} / {crate('axum')}"),
        ("node", sh("node --version")),
        ("ws (npm)", ws),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--onair-bin", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)

    data = {}  # scenario -> server -> [report]
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        name, server, _run, _ = os.path.basename(path).rsplit(".", 3)
        try:
            data.setdefault(name, {}).setdefault(server, []).append(json.load(open(path)))
        except json.JSONDecodeError:
            pass

    medians = {}  # (scenario, server, path) -> median
    out = []
    out.append("# onair load-test results")
    out.append("")
    out.append(
        "Written by `load-tests/compare.sh` (raw reports in `load-tests/results/`). Every figure is the "
        "**median of the measured runs, with the spread (min–max) in brackets**; ratios are of medians. "
        "Each run used a fresh server process; each scenario began with one unrecorded warm-up run per "
        "server, and the servers took turns (the order rotates every round). Bots and server share the "
        "same 2 cores, as in the calibration runs of issue 6."
    )
    out.append("")
    out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    out.append(f"- Machine: {machine()}")
    for k, v in versions(root, args.onair_bin):
        out.append(f"- {k}: {v}")
    out.append("")
    out.append("## Commands")
    out.append("")
    out.append("```sh")
    out.append("load-tests/compare.sh   # RUNS=3; servers started by it as below")
    out.append("ONAIR_AUTH__JWT_SECRET=$S ONAIR_LISTEN=127.0.0.1:7810 target/release/onair --log-format json")
    out.append("ONAIR_AUTH__JWT_SECRET=$S node load-tests/baselines/node-ws/server.js --listen 127.0.0.1:7811")
    out.append("target/release/onair-floor --listen 127.0.0.1:7812")
    out.append("# each run: onair-bots --quiet --json --url ws://127.0.0.1:<port>/signaling \\")
    out.append("#   --dialect <onair|floor> --label <server> --server-pid <pid> <scenario arguments below>")
    out.append("```")
    out.append("")

    present = [sv for sv in SERVERS if any(sv in d for d in data.values())]
    onairs = [o for o in ONAIRS if o in present]
    tables = []
    for name in METRICS:
        if name not in data:
            continue
        runs = max(len(v) for v in data[name].values())
        args_path = os.path.join(args.results, name + ".args")
        bots_args = open(args_path).read().strip() if os.path.exists(args_path) else "?"
        tables.append(f"### {name}")
        tables.append("")
        tables.append(DESCRIPTIONS.get(name, ""))
        tables.append("")
        tables.append(f"`onair-bots … {bots_args}` — {runs} measured run(s) per server.")
        tables.append("")
        ratio_cols = [(o, b) for o in onairs for b in ("node-ws", "floor") if b in present]
        tables.append("| figure | " + " | ".join(present) + " | " + " | ".join(f"{o}/{b}" for o, b in ratio_cols) + " |")
        tables.append("|---" * (1 + len(present) + len(ratio_cols)) + "|")
        seen = {p for _, p, _, _ in METRICS[name]}
        for label, path, unit, _better in METRICS[name] + [h for h in HOST if h[1] not in seen]:
            cells = []
            for server in present:
                text, med = cell([get(r, path) for r in data[name].get(server, [])], unit)
                medians[(name, server, path)] = med
                cells.append(text)
            no_ratio = label in ("errors", "missed deliveries") or (label, path, unit, _better) in HOST
            show = lambda r: "–" if r is None or no_ratio else f"{r:.2f}×"
            ratios = [show(ratio(medians[(name, o, path)], medians[(name, b, path)])) for o, b in ratio_cols]
            tables.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        tables.append("")

    def m(scenario, server, path):
        return medians.get((scenario, server, path))

    rows = []  # (text, [(measured, ok) per onair variant])

    def row(text, fn):
        rows.append((text, [fn(o) for o in onairs]))

    def rel(scenario, path, other, limit, unit, at_most=True):
        def fn(o):
            a, b = m(scenario, o, path), m(scenario, other, path)
            r = ratio(a, b)
            errors, missed = m(scenario, o, "error_total"), m(scenario, o, "missed")
            if errors or missed:
                return f"runs failed: {fmt(errors)} errors, {fmt(missed)} missed deliveries (median)", False
            if r is None:
                return "–", None
            return f"{fmt(a, unit)} vs {fmt(b, unit)} = {r:.2f}×", (r <= limit if at_most else r >= limit)
        return fn

    def capacity(o):
        live, errs = m("capacity-19k", o, "live_at_end"), m("capacity-19k", o, "error_total")
        if live is None:
            return "–", None
        return f"{fmt(live)} live at the end, {fmt(errs)} errors", live >= 19000 and errs == 0

    def memory(scenario):
        def fn(o):
            v = m(scenario, o, "server.rss_per_participant_kib")
            return (fmt(v, "KiB"), v <= 6.0) if v is not None else ("–", None)
        return fn

    row("≥ 19,000 concurrent joined participants in one onair process", capacity)
    row("≤ 6 KiB server RSS per idle joined participant at 10,000 (rooms of 100)", memory("hold-10k"))
    row("≤ 6 KiB server RSS per idle joined participant at 10,000 (rooms of 10)", memory("hold-10k-r10"))
    row("100 × 100 fan-out, per-delivery p99 ≤ 1.2× the floor's", rel("fanout-100x100", "delivery_latency.p99_ms", "floor", 1.2, "ms"))
    row("100 × 100 fan-out, last-receipt p99 ≤ 1.2× the floor's", rel("fanout-100x100", "last_receipt_latency.p99_ms", "floor", 1.2, "ms"))
    row("room of 1,000, last-receipt p99 ≤ 1.2× the floor's", rel("fanout-1x1000", "last_receipt_latency.p99_ms", "floor", 1.2, "ms"))
    row("saturation deliveries/s ≥ 0.9× the floor's", rel("saturation", "deliveries_per_s", "floor", 0.9, "", at_most=False))
    row("saturation deliveries/s ≥ 2.5× node-ws's", rel("saturation", "deliveries_per_s", "node-ws", 2.5, "", at_most=False))
    row("server CPU per delivery (saturation) ≤ 1.2× the floor's", rel("saturation", "server.cpu_us_per_delivery", "floor", 1.2, "µs"))
    row("server CPU per delivery (100 × 100 at 1/s) ≤ 1.2× the floor's", rel("fanout-100x100", "server.cpu_us_per_delivery", "floor", 1.2, "µs"))
    row("join storm (HS256) ≥ 2× node-ws joins/s", rel("join-storm", "joins_per_s", "node-ws", 2.0, "", at_most=False))

    def mark(ok):
        return "–" if ok is None else ("**met**" if ok else "**missed**")

    targets = []
    targets.append("| target | " + " | ".join(f"{o} (medians) | {o}" for o in onairs) + " |")
    targets.append("|---" * (1 + 2 * len(onairs)) + "|")
    for text, results in rows:
        targets.append(f"| {text} | " + " | ".join(f"{meas} | {mark(ok)}" for meas, ok in results) + " |")

    out.append("## Targets (issue 6)")
    out.append("")
    out.extend(targets)
    out.append("")
    out.append("## Scenarios")
    out.append("")
    out.extend(tables)

    notes = ""
    if os.path.exists(args.out):
        old = open(args.out).read()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK):]
    if not notes:
        notes = NOTES_MARK + "\n\n## Notes\n\n(Profiling notes and before/after measurements go here; compare.sh keeps this part.)\n"
    out.append(notes.rstrip("\n"))
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
