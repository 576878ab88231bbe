#!/usr/bin/env python3
"""The HTTP edge probe of issue 16, repeatable: what clients without a token
can make an onair process hold, and whether /healthz answers throughout.

    cargo build --release --bin onair
    python3 load-tests/edge-probe.py [--onair target/release/onair]

It starts its own onair (JaaS backend, so the webhook route exists), runs each
attack against 127.0.0.1 only, bounded in count and time, and prints one line
per attack: the server's RSS before, at its peak, and 10 s after the attack's
sockets closed; how many attack sockets the server had closed by itself; and
the /healthz probe (answered / asked, worst latency) while the attack ran.
"""

import argparse
import asyncio
import os
import subprocess
import tempfile
import time

HOST = "127.0.0.1"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def healthz(port):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), 2)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 2)
        w.close()
        return data.startswith(b"HTTP/1.1 200"), time.monotonic() - t
    except Exception:
        return False, time.monotonic() - t


async def watch(port, pid, stop, stats):
    while not stop.is_set():
        ok, took = await healthz(port)
        stats["asked"] += 1
        stats["answered"] += ok
        stats["worst"] = max(stats["worst"], took)
        stats["peak"] = max(stats["peak"], rss_kib(pid))
        await asyncio.sleep(0.2)


async def open_many(port, n, first_bytes):
    socks = []
    for _ in range(n):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
        except Exception:
            continue
        if first_bytes:
            w.write(first_bytes)
        socks.append((r, w))
    return socks


async def closed_by_server(socks, within):
    async def one(r):
        try:
            data = await asyncio.wait_for(r.read(1 << 20), within)
            while data:
                data = await asyncio.wait_for(r.read(1 << 20), within)
            return True
        except asyncio.TimeoutError:
            return False
        except Exception:  # reset by the server
            return True

    return sum(await asyncio.gather(*(one(r) for r, _ in socks)))


async def attack(name, port, pid, run, within):
    stats = {"asked": 0, "answered": 0, "worst": 0.0, "peak": 0}
    before = rss_kib(pid)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(port, pid, stop, stats))
    t = time.monotonic()
    socks, note = await run()
    closed = await closed_by_server(socks, within) if socks else 0
    took = time.monotonic() - t
    for _, w in socks:
        w.close()
    await asyncio.sleep(10)
    stop.set()
    await watcher
    after = rss_kib(pid)
    print(
        f"{name:<44} sockets {len(socks):>5}  closed by onair {closed:>5} in {took:5.1f} s  "
        f"RSS {before / 1024:6.1f} → peak {stats['peak'] / 1024:6.1f} → {after / 1024:6.1f} MiB 10 s after  "
        f"/healthz {stats['answered']}/{stats['asked']} (worst {stats['worst'] * 1000:.0f} ms)  {note}",
        flush=True,
    )


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--onair", default="target/release/onair")
    p.add_argument("--port", type=int, default=7830)
    args = p.parse_args()
    port = args.port
    data = tempfile.mkdtemp()
    cfg = os.path.join(data, "onair.toml")
    with open(cfg, "w") as f:
        f.write('[recording]\nbackend = "jaas"\n[jaas]\nwebhook_secret = "probe-secret-0123456789"\n')
    env = dict(os.environ, ONAIR_AUTH__JWT_SECRET="probe-secret-0123456789",
               ONAIR_STORE__PATH=f"{data}/onair.db", ONAIR_STORAGE__PATH=f"{data}/rec", RUST_LOG="warn")
    server = subprocess.Popen([args.onair, "--listen", f"{HOST}:{port}", "--config", cfg], env=env,
                              stderr=open(os.path.join(data, "onair.log"), "w"))
    try:
        for _ in range(100):
            if (await healthz(port))[0]:
                break
            await asyncio.sleep(0.1)
        pid = server.pid

        async def big_headers():
            # 3,000 connections, each ~400 KB of headers, never finished.
            socks = await open_many(port, 3000, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            chunk = b"X-Pad: " + b"a" * 8000 + b"\r\n"
            for _ in range(50):
                for _, w in socks:
                    if not w.is_closing():
                        w.write(chunk)
                await asyncio.sleep(0)
            return socks, "(400 KB of headers each)"

        async def dribble():
            # 2,000 connections: half send a header line every 5 s, half nothing.
            socks = await open_many(port, 2000, None)
            for i, (_, w) in enumerate(socks):
                if i % 2 == 0:
                    w.write(b"GET /healthz HTTP/1.1\r\n")

            async def keep():
                for k in range(6):
                    await asyncio.sleep(5)
                    for i, (_, w) in enumerate(socks):
                        if i % 2 == 0 and not w.is_closing():
                            w.write(f"X-{k}: y\r\n".encode())

            asyncio.create_task(keep())
            return socks, "(a header line every 5 s, or nothing)"

        async def idle_keepalive():
            socks = await open_many(port, 200, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return socks, "(idle after one request)"

        async def stalled_webhooks():
            # 1,000 unsigned JaaS webhooks, each stalled after 262 KB.
            head = b"POST /webhooks/jaas HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300000\r\n\r\n"
            socks = await open_many(port, 1000, head + b" " * 262_000)
            return socks, "(unsigned, 262 KB of a 300 KB body)"

        async def huge_length():
            head = b"POST /webhooks/jaas HTTP/1.1\r\nHost: x\r\nX-Jaas-Signature: t=1,v1=x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
            socks = await open_many(port, 100, head)
            return socks, "(Content-Length 10 GB, signature header present)"

        print(f"onair {args.onair}, header_timeout_s 10, idle_timeout_s 60, body_timeout_s 10 (defaults)")
        await attack("3,000 × 400 KB unfinished headers", port, pid, big_headers, 30)
        await attack("2,000 slow or silent header senders", port, pid, dribble, 30)
        await attack("200 idle keep-alive connections", port, pid, idle_keepalive, 90)
        await attack("1,000 unsigned stalled JaaS webhooks", port, pid, stalled_webhooks, 30)
        await attack("100 webhooks declaring 10 GB", port, pid, huge_length, 30)
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    asyncio.run(main())
