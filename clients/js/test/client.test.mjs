// The client against the real onair binary.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";

import { OnairClient, OnairError, describeError } from "../onair-client.js";
import { Recorder, admin, devToken, roomName, signedToken, startServer, until } from "./support.mjs";

/** How far a freshly seen status may lie in the past, in ms. */
const TIMEOUT_FOR_CLOCK = 5000;

let server;
const clients = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

/** A connected client with a recorder of its events. */
async function connect(room, name, role = "user", options = {}) {
  const token = options.token ?? (await devToken(server.url, { room, name, role }));
  const client = new OnairClient({ url: server.url, token, WebSocket, ...options });
  clients.push(client);
  const events = new Recorder(client);
  const joined = await client.connect();
  return { client, events, joined, token };
}

test("joins with a ticket and sees itself in the room", async () => {
  const room = roomName();
  const { client, joined } = await connect(room, "Ada", "moderator");
  assert.equal(joined.message, "join_success");
  assert.equal(client.state, "joined");
  assert.equal(client.room.name, room);
  assert.equal(client.room.role, "moderator");
  assert.equal(client.canRecord, true);
  assert.deepEqual(client.self, {
    id: joined.id,
    displayName: "Ada",
    role: "moderator",
    kind: "user",
    joinedAt: null,
    consents: false,
    self: true,
  });
  assert.equal(client.room.recording.status, "inactive");
});

test("sees others join, change consent and leave", async () => {
  const room = roomName();
  const ada = await connect(room, "Ada", "moderator");
  const grace = await connect(room, "Grace", "guest");

  const joined = await ada.events.next("joined");
  assert.equal(joined.participant.displayName, "Grace");
  assert.equal(joined.participant.role, "guest");
  assert.equal(joined.participant.kind, "guest");
  assert.equal(joined.participant.consents, false);
  assert.equal(grace.client.room.participants.size, 2);
  assert.equal(grace.client.canRecord, false);

  grace.client.setConsent(true);
  // The sender's own view changes at once (the server sends it no echo) …
  assert.equal(grace.client.room.consent, true);
  assert.equal(grace.client.self.consents, true);
  // … and the others are told.
  const update = await ada.events.next("update");
  assert.equal(update.participant.id, grace.joined.id);
  assert.equal(update.participant.consents, true);
  assert.equal(ada.client.room.participants.get(grace.joined.id).consents, true);

  grace.client.setConsent(false);
  await ada.events.next("update", (u) => u.participant.consents === false);

  grace.client.close();
  const left = await ada.events.next("left");
  assert.equal(left.participant.displayName, "Grace");
  assert.equal(ada.client.room.participants.size, 1);
});

test("a moderator starts and stops; everyone sees it; others cannot", async () => {
  const room = roomName();
  const ada = await connect(room, "Ada", "moderator");
  const linus = await connect(room, "Linus", "user");

  linus.client.start();
  const refused = await linus.events.next("error");
  assert.deepEqual(refused, {
    namespace: "recording",
    error: "insufficient_permissions",
    detail: null,
    message: describeError("insufficient_permissions"),
  });
  await ada.events.none("status");

  ada.client.start();
  for (const { client, events } of [ada, linus]) {
    const { recordingId } = await events.next("started");
    const status = await events.next("status");
    assert.equal(status.recording.status, "recording");
    assert.equal(status.recording.recordingId, recordingId);
    assert.equal(client.room.recording.status, "recording");
    // `started` made the change; the `status` frame behind it names the provider
    // (it may arrive in a later read than `started`).
    await until(client, () => client.room.recording.provider === "manual", "the provider");
    assert.ok(Date.now() - client.room.recording.since < TIMEOUT_FOR_CLOCK);
  }
  const recordingId = ada.client.room.recording.recordingId;

  ada.client.start();
  assert.equal((await ada.events.next("error")).error, "already_recording");

  linus.client.stop();
  assert.equal((await linus.events.next("error")).error, "insufficient_permissions");

  ada.client.stop("not-the-recording");
  assert.equal((await ada.events.next("error")).error, "invalid_recording_id");

  ada.client.stop();
  for (const { client, events } of [ada, linus]) {
    assert.equal((await events.next("stopped")).recordingId, recordingId);
    const status = await events.next("status");
    assert.equal(status.recording.status, "inactive");
    assert.equal(client.room.recording.status, "inactive");
  }
  // `stopped` then `status inactive` is one change, reported once.
  await ada.events.none("status");
});

test("a late joiner gets the running recording from join_success", async () => {
  const room = roomName();
  const ada = await connect(room, "Ada", "moderator");
  ada.client.start();
  const { recordingId } = await ada.events.next("started");

  const late = await connect(room, "Late", "user");
  assert.equal(late.client.room.recording.status, "recording");
  assert.equal(late.client.room.recording.recordingId, recordingId);
  // It began before this client joined: no start time is known.
  assert.equal(late.client.room.recording.since, null);

  // The late joiner can be stopped for: the id it learned is the right one.
  ada.client.stop(late.client.room.recording.recordingId);
  await late.events.next("stopped");
});

test("a failure reported by the recorder reaches everyone with its reason", async () => {
  const room = roomName();
  const ada = await connect(room, "Ada", "moderator");
  const bob = await connect(room, "Bob", "user");
  ada.client.start();
  const { recordingId } = await bob.events.next("started");
  await bob.events.next("status");
  await ada.events.next("status");

  const report = await admin(server, "POST", `/v1/rooms/${room}/recording/status`, {
    status: "failed",
    recording_id: recordingId,
    reason: "disk full",
  });
  assert.equal(report.status, 200, JSON.stringify(report.body));
  for (const { client, events } of [ada, bob]) {
    // It had started: `stopped` comes first (a seed-002 client knows no other end)…
    assert.equal((await events.next("stopped")).recordingId, recordingId);
    // …then the failure with its reason.
    let status;
    do {
      status = await events.next("status");
    } while (status.recording.status !== "failed");
    assert.equal(status.recording.status, "failed");
    assert.equal(status.recording.reason, "disk full");
    assert.equal(client.room.recording.reason, "disk full");
  }
  // After a failure a new start works.
  ada.client.start();
  assert.notEqual((await bob.events.next("started")).recordingId, recordingId);
});

test("other ways to present the token: ?token= and a single ticket", async () => {
  const room = roomName();
  const token = await devToken(server.url, { room, name: "Query", role: "user" });
  const viaQuery = await connect(room, "Query", "user", { token, tokenInQuery: true });
  assert.equal(viaQuery.client.state, "joined");

  const other = await devToken(server.url, { room, name: "Ticket", role: "user" });
  const answer = await fetch(`${server.url}/v1/rooms/${room}/start`, {
    method: "POST",
    headers: { authorization: `Bearer ${other}` },
  }).then((r) => r.json());
  const client = new OnairClient({ url: server.url, ticket: answer.ticket, WebSocket, displayName: "Renamed" });
  clients.push(client);
  const joined = await client.connect();
  assert.equal(joined.display_name, "Renamed");
});

test("a bad token is refused with an error a person can read", async () => {
  const client = new OnairClient({ url: server.url, token: "not.a.token", room: "r", WebSocket });
  await assert.rejects(client.connect(), (e) => {
    assert.ok(e instanceof OnairError);
    assert.equal(e.code, "invalid_token");
    assert.match(describeError(e.code), /token/);
    return true;
  });
  assert.equal(client.state, "closed");

  const token = await devToken(server.url, { room: "room-a", name: "A" });
  const wrongRoom = new OnairClient({ url: server.url, token, room: "room-b", WebSocket });
  await assert.rejects(wrongRoom.connect(), (e) => e.code === "room_mismatch");
});

test("an unreachable server fails the first connect", async () => {
  const token = await devToken(server.url, { room: "x", name: "X" });
  const client = new OnairClient({ url: "http://127.0.0.1:9", token, WebSocket });
  await assert.rejects(client.connect(), (e) => e.code === "connection_failed");
});

test("reconnects after a server restart, re-joins and gives its consent again", async () => {
  const secret = "a-test-secret-that-is-long-enough-for-hs256";
  const env = { ONAIR_AUTH__JWT_SECRET: secret };
  let first = await startServer({ env });
  const room = roomName();
  const mk = async (name, role) => {
    const token = signedToken(secret, { room, name, role });
    const client = new OnairClient({
      url: first.url, token, WebSocket, minDelayMs: 100, maxDelayMs: 400,
    });
    clients.push(client);
    const events = new Recorder(client);
    await client.connect();
    return { client, events };
  };
  const ada = await mk("Ada", "moderator");
  const bob = await mk("Bob", "user");
  bob.client.setConsent(true);
  await ada.events.next("update", (u) => u.participant.consents);
  ada.client.start();
  await bob.events.next("started");

  await first.stop();
  for (const { events } of [ada, bob]) {
    const lost = await events.next("error");
    assert.equal(lost.error, "connection_lost");
    await events.next("connection", (c) => c.state === "reconnecting");
  }
  // Same port, same secret: the old tokens work again.
  first = await startServer({ env, listen: first.local });
  try {
    for (const { client, events } of [ada, bob]) {
      const again = await events.next("joinSuccess", (j) => j.reconnected, 10000);
      assert.equal(again.reconnected, true);
      assert.equal(client.state, "joined");
      // The new server has no recording: the view is reconciled.
      assert.equal(client.room.recording.status, "inactive");
    }
    // Bob's consent belonged to the old connection; the client gave it again.
    assert.equal(bob.client.room.consent, true);
    // Whichever re-joined first, Ada ends up seeing Bob's consent.
    await until(
      ada.client,
      () => [...ada.client.room.participants.values()].some((p) => p.displayName === "Bob" && p.consents),
      "Ada seeing Bob's consent after the restart",
      10000,
    );
  } finally {
    ada.client.close();
    bob.client.close();
    await first.stop();
  }
});
