// Test support: run the real onair binary on a free port, mint tokens, call the
// REST API, and wait for client events with a timeout.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

const here = dirname(fileURLToPath(import.meta.url));
/** The package root, `clients/js`. */
export const root = resolve(here, "..");
/** The onair binary under test. */
export const ONAIR_BIN = resolve(root, process.env.ONAIR_BIN ?? "../../target/debug/onair");

/** Every receive in a test waits at most this long. */
export const TIMEOUT_MS = 5000;

/** Servers still running, killed when the test file's process exits, however it exits. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * The environment for onair: this process's, without any ONAIR_ settings that
 * could leak in from the developer's shell, plus `env`.
 */
function onairEnv(env) {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("ONAIR_") && k !== "RUST_LOG"),
  );
  return { ...clean, RUST_LOG: "info", ...env };
}

/**
 * Starts onair and waits for its "onair listening" log line.
 * @param {object} [options]
 * @param {Record<string,string>} [options.env]  Extra environment (e.g. ONAIR_AUTH__JWT_SECRET).
 * @param {string} [options.listen]  Address to bind (default `127.0.0.1:0`).
 * @returns {Promise<{url: string, local: string, adminKey: string, logs: string[], stop: () => Promise<void>}>}
 */
export async function startServer({ env = {}, listen = "127.0.0.1:0" } = {}) {
  const adminKey = env.ONAIR_AUTH__ADMIN_KEY ?? randomBytes(16).toString("hex");
  // A directory of its own, so nothing onair writes lands in the work tree.
  const cwd = mkdtempSync(join(tmpdir(), "onair-test-"));
  const child = spawn(ONAIR_BIN, ["--log-format", "json"], {
    cwd,
    env: onairEnv({ ONAIR_LISTEN: listen, ONAIR_AUTH__ADMIN_KEY: adminKey, ...env }),
    stdio: ["ignore", "ignore", "pipe"],
  });
  running.add(child);
  const logs = [];
  const exited = new Promise((res) => child.once("exit", (code, signal) => {
    running.delete(child);
    res({ code, signal });
  }));
  const local = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`onair did not start in time:\n${logs.join("\n")}`)), 10000);
    let buffer = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        logs.push(line);
        try {
          const entry = JSON.parse(line);
          if (entry.fields?.message === "onair listening" && entry.fields.local) {
            clearTimeout(timer);
            res(entry.fields.local);
          }
        } catch {
          // not JSON: keep it in the logs only
        }
      }
    });
    child.once("error", (e) => { clearTimeout(timer); rej(e); });
    exited.then(({ code }) => {
      clearTimeout(timer);
      rej(new Error(`onair exited with ${code}:\n${logs.join("\n")}`));
    });
  });
  let stopped = null;
  return {
    url: `http://${local}`,
    local,
    adminKey,
    logs,
    /** SIGTERM, then wait for the process to end (SIGKILL after 5 s). */
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
          await exited;
          clearTimeout(timer);
        }
        rmSync(cwd, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}

/** A token from the development endpoint. */
export async function devToken(url, { room, name, role = "user" }) {
  const response = await fetch(`${url}/v1/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ room, name, role }),
  });
  if (!response.ok) throw new Error(`dev token: ${response.status} ${await response.text()}`);
  return (await response.json()).token;
}

/** A token signed with a configured secret, by `onair token`. */
export function signedToken(secret, { room, name, role = "user" }) {
  return execFileSync(ONAIR_BIN, ["token", "--room", room, "--name", name, "--role", role], {
    env: onairEnv({ ONAIR_AUTH__JWT_SECRET: secret }),
    encoding: "utf8",
  }).trim();
}

/** Calls the REST API with the admin key; returns `{status, body}`. */
export async function admin(server, method, path, body) {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${server.adminKey}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body: parsed };
}

/** A room name no other test uses. */
export function roomName(prefix = "room") {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/**
 * Records a client's events so a test can wait for them in order.
 * `next(type, predicate?)` resolves with the `detail` of the first matching event
 * not consumed yet, or rejects after TIMEOUT_MS.
 */
export class Recorder {
  constructor(client, types = ["joinSuccess", "joined", "left", "update", "started", "stopped",
    "status", "recordingAvailable", "recordingDeleted", "error", "connection"]) {
    /** @type {{type: string, detail: any}[]} */
    this.events = [];
    this.waiters = [];
    for (const type of types) {
      client.addEventListener(type, (e) => {
        this.events.push({ type, detail: e.detail });
        this.wake();
      });
    }
  }

  wake() {
    for (const waiter of [...this.waiters]) waiter();
  }

  next(type, predicate = () => true, timeoutMs = TIMEOUT_MS) {
    return new Promise((res, rej) => {
      const check = () => {
        const index = this.events.findIndex((e) => e.type === type && predicate(e.detail));
        if (index < 0) return false;
        const [event] = this.events.splice(index, 1);
        done();
        res(event.detail);
        return true;
      };
      const timer = setTimeout(() => {
        done();
        const seen = this.events.map((e) => e.type).join(", ") || "nothing";
        rej(new Error(`no ${type} event within ${timeoutMs} ms (pending: ${seen})`));
      }, timeoutMs);
      const waiter = () => { check(); };
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      this.waiters.push(waiter);
      check();
    });
  }

  /** Asserts that no event of `type` arrives within `ms`. */
  async none(type, ms = 300) {
    await sleep(ms);
    const found = this.events.find((e) => e.type === type);
    if (found) throw new Error(`unexpected ${type}: ${JSON.stringify(found.detail)}`);
  }
}

/** Resolves once `predicate()` holds, checking on each `change` of `client`. */
export function until(client, predicate, what = "the condition", timeoutMs = TIMEOUT_MS) {
  return new Promise((res, rej) => {
    const check = () => {
      if (!predicate()) return;
      client.removeEventListener("change", check);
      clearTimeout(timer);
      res();
    };
    const timer = setTimeout(() => {
      client.removeEventListener("change", check);
      rej(new Error(`${what} did not happen within ${timeoutMs} ms`));
    }, timeoutMs);
    client.addEventListener("change", check);
    check();
  });
}
