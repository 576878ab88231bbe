// The client in a large room (SPEC §3 "Large rooms"), against the real onair binary with
// `[server] large_room_threshold` lowered to 2: a room of three is large.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";

import { OnairClient } from "../onair-client.js";
import { devToken, roomName, startServer, until } from "./support.mjs";

let server;
const clients = [];

before(async () => {
  server = await startServer({ env: { ONAIR_SERVER__LARGE_ROOM_THRESHOLD: "2" } });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

async function connect(room, name, role = "user") {
  const token = await devToken(server.url, { room, name, role });
  const client = new OnairClient({ url: server.url, token, WebSocket });
  clients.push(client);
  await client.connect();
  return client;
}

const names = (client) => [...client.room.participants.values()].map((p) => p.displayName).sort();

test("a large room keeps a true list and a headcount, and catches up when it is small again", async () => {
  const room = roomName("hall");
  const host = await connect(room, "Host", "moderator");
  const ada = await connect(room, "Ada");
  assert.equal(ada.room.headcount, null);
  assert.deepEqual(names(ada), ["Ada", "Host"]);

  // The third makes the room large.
  const bob = await connect(room, "Bob", "guest");
  assert.deepEqual(names(bob), ["Bob", "Host"], "a non-moderator joining a large room sees the moderators");
  assert.equal(bob.room.headcount.count, 3);
  // Ada knew nobody but the host before; she keeps a true list and gets the count.
  await until(ada, () => ada.room.headcount?.count === 3, "Ada's headcount of 3");
  assert.deepEqual(names(ada), ["Ada", "Host"]);
  // The moderator sees everyone: its list is the whole room.
  await until(host, () => host.room.participants.size === 3, "the host seeing Bob");
  assert.equal(host.room.headcount, null);

  await bob.setConsent(true);
  await until(ada, () => ada.room.headcount?.consenting === 1, "Ada counting Bob's consent");
  await until(host, () => host.room.participants.get(bob.room.selfId)?.consents === true, "the host seeing Bob's consent");
  assert.equal(ada.room.participants.has(bob.room.selfId), false);

  // Small again when the host leaves: Ada is told of Bob, and her list is the whole room.
  host.close();
  await until(ada, () => ada.room.participants.size === 2 && ada.room.headcount === null, "Ada's small room");
  assert.deepEqual(names(ada), ["Ada", "Bob"]);
  assert.equal(ada.room.participants.get(bob.room.selfId).consents, true);
});
