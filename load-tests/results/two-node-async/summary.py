"""Medians (and ranges) of the rounds run.sh wrote into this directory."""
import glob
import json
import statistics


def load(kind, scenario):
    runs = []
    for path in sorted(glob.glob(f"*.{kind}.{scenario}.json")):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def cell(values, fmt):
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def row(label, scenario, pick, fmt):
    cells = [cell([pick(r) for r in load(k, scenario) if r.get("ok")], fmt) for k in ("single", "two")]
    failed = [sum(1 for r in load(k, scenario) if not r.get("ok")) for k in ("single", "two")]
    print(f"| {label} | {cells[0]} | {cells[1]} |")
    return failed


ms = lambda v: f"{v:.1f} ms"
print("| figure | one node | two nodes + Redis |")
print("|---|---|---|")
fails = row("join storm, 2,000 clients in rooms of 10: joins/s", "join", lambda r: r["joins_per_s"], lambda v: f"{v:,.0f}")
row("join latency p50", "join", lambda r: r["join_latency"]["p50_ms"], ms)
row("join latency p99", "join", lambda r: r["join_latency"]["p99_ms"], ms)
fails2 = row("fan-out 20 rooms × 50, 1 command/room/s: delivery p50", "fanout", lambda r: r["delivery_latency"]["p50_ms"], ms)
row("delivery p99", "fanout", lambda r: r["delivery_latency"]["p99_ms"], ms)
row("last-receipt p99", "fanout", lambda r: r["last_receipt_latency"]["p99_ms"], ms)
row("announcements missed", "fanout", lambda r: r["missed"], lambda v: f"{v:.0f}")
row("fan-out joins/s (1,000 clients)", "fanout", lambda r: r["joins_per_s"], lambda v: f"{v:,.0f}")
runs = len(load("single", "join"))
print(f"\n{runs} round(s); runs that failed (not in the figures): join {fails}, fan-out {fails2} (one node, two nodes)")
