// Messages onair defines but this server does not send yet (the recordings
// catalog's `recording_available` / `recording_deleted`), and messages a
// future server may add, fed to the client through a scripted socket. The
// frames are the examples in protocol/examples/, so they stay in step with
// the protocol.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

import { OnairClient } from "../onair-client.js";
import { Recorder, root } from "./support.mjs";

const example = (name) =>
  JSON.parse(readFileSync(resolve(root, "../../protocol/examples", `${name}.json`), "utf8"));

/** A WebSocket stand-in: answers `join` with `join_success`, lets the test push frames. */
class ScriptedSocket extends EventTarget {
  static last = null;

  constructor(url, protocols) {
    super();
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    ScriptedSocket.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    });
  }

  send(text) {
    const frame = JSON.parse(text);
    this.sent.push(frame);
    if (frame.payload.action === "join") this.push(example("server.control.join_success"));
  }

  push(frame) {
    queueMicrotask(() => {
      const event = new Event("message");
      event.data = JSON.stringify(frame);
      this.dispatchEvent(event);
    });
  }

  close() {
    this.readyState = 3;
  }
}

test("recording_available and recording_deleted keep the room's recordings", async () => {
  const client = new OnairClient({ url: "http://onair.test", ticket: "t", WebSocket: ScriptedSocket });
  const events = new Recorder(client);
  await client.connect();
  const socket = ScriptedSocket.last;
  assert.deepEqual(socket.protocols, ["opentalk-signaling-json-v1.0", "ticket#t"]);
  assert.equal(socket.url, "ws://onair.test/signaling");

  socket.push(example("server.recording.recording_available"));
  const { recording } = await events.next("recordingAvailable");
  assert.deepEqual(recording, {
    recordingId: "c2f1e8d4-7a3b-4e9c-b5d2-6f0a1e8c3b57",
    name: "standup-2025-06-03T14-05-02Z.mp4",
    durationS: 1843.472,
    sizeBytes: 412338176,
    url: "https://onair.example.com/v1/recordings/c2f1e8d4-7a3b-4e9c-b5d2-6f0a1e8c3b57/media",
  });
  assert.equal(client.room.recordings.size, 1);

  socket.push({
    ...example("server.recording.recording_deleted"),
    payload: { message: "recording_deleted", recording_id: recording.recordingId },
  });
  assert.equal((await events.next("recordingDeleted")).recordingId, recording.recordingId);
  assert.equal(client.room.recordings.size, 0);
  client.close();
});

test("join_success fills the room; unknown messages are ignored", async () => {
  const client = new OnairClient({ url: "https://onair.test/rtc/", ticket: "t", WebSocket: ScriptedSocket });
  const events = new Recorder(client);
  const joined = await client.connect();
  assert.equal(ScriptedSocket.last.url, "wss://onair.test/rtc/signaling");
  assert.equal(client.room.participants.size, joined.participants.length + 1);
  const grace = client.room.participants.get("b7e3c2a1-9f48-4c6d-8e2b-1a0d5f3c7e94");
  assert.equal(grace.consents, true);
  assert.equal(grace.role, "user");

  const socket = ScriptedSocket.last;
  socket.push({ namespace: "recording", timestamp: "2025-06-03T14:05:02.640Z", payload: { message: "something_new" } });
  socket.push({ namespace: "chat", timestamp: "2025-06-03T14:05:02.640Z", payload: { message: "hello" } });
  socket.push(example("server.recording.status"));
  const { recording } = await events.next("status");
  assert.equal(recording.status, "initializing");
  assert.equal(recording.provider, "livekit");
  client.close();
});

test("a start that times out leaves the room inactive with the reason", async () => {
  const client = new OnairClient({ url: "http://onair.test", ticket: "t", WebSocket: ScriptedSocket });
  const events = new Recorder(client);
  await client.connect();
  const socket = ScriptedSocket.last;
  socket.push(example("server.recording.status"));
  await events.next("status");
  socket.push({
    namespace: "recording",
    timestamp: "2025-06-03T14:05:31.000Z",
    payload: { message: "error", error: "recorder_timeout" },
  });
  socket.push({
    namespace: "recording",
    timestamp: "2025-06-03T14:05:31.000Z",
    payload: {
      message: "status", status: "inactive", provider: "livekit", reason: "recorder_timeout",
      recording_id: "c2f1e8d4-7a3b-4e9c-b5d2-6f0a1e8c3b57",
    },
  });
  assert.equal((await events.next("error")).error, "recorder_timeout");
  const { recording } = await events.next("status");
  assert.deepEqual(
    { status: recording.status, reason: recording.reason, recordingId: recording.recordingId },
    { status: "inactive", reason: "recorder_timeout", recordingId: null },
  );
  client.close();
});
