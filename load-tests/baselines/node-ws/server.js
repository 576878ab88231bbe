// node-ws: the baseline onair is compared with — the stack many teams pick
// instead: Node.js and the `ws` package from npm, speaking the same protocol
// subset as onair (see ../../../protocol/README.md):
//
//   control:   join → join_success; joined / left / update to the others
//   recording: start / stop (moderators) → started / stopped + status to all,
//              set_consent → update to the others; errors to the sender
//
// Written the way a performance-aware team would: HS256 checked with
// node:crypto before the upgrade, every frame serialized once and sent as a
// shared Buffer, no per-message deflate, a bounded send buffer per socket,
// the same rate limit and join timeout as onair.
//
//   ONAIR_AUTH__JWT_SECRET=… node server.js --listen 127.0.0.1:7801
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const listen = arg('--listen', process.env.ONAIR_LISTEN || '127.0.0.1:7801');
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];
const secret = process.env.ONAIR_AUTH__JWT_SECRET;
if (!secret || secret.length < 16) {
  console.error('node-ws: set ONAIR_AUTH__JWT_SECRET (at least 16 bytes)');
  process.exit(1);
}
if (!['127.0.0.1', 'localhost', '::1'].includes(host) && !host.startsWith('127.')) {
  console.error('node-ws: loopback only');
  process.exit(1);
}

const MAX_FRAME = 64 * 1024;
const MAX_BUFFERED = 256 * 1024; // bytes queued per socket before it counts as not reading
// The same knobs, names and defaults as onair's [server] section.
const RATE = Number(process.env.ONAIR_SERVER__MESSAGES_PER_SECOND || 20);
const BURST = Number(process.env.ONAIR_SERVER__MESSAGE_BURST || 40);
const JOIN_TIMEOUT_MS = 1000 * Number(process.env.ONAIR_SERVER__JOIN_TIMEOUT_S || 10);
const ROOM_ID = /^[A-Za-z0-9._-]{1,128}$/;
const key = Buffer.from(secret);

/** rooms: id → { members: Map<participantId, Member>, recording: null | string } */
const rooms = new Map();

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** Verifies an HS256 JWT; returns its claims or throws. */
function verify(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('malformed token');
  const header = b64urlJson(parts[0]);
  if (header.alg !== 'HS256') throw new Error('algorithm not allowed');
  const expected = crypto.createHmac('sha256', key).update(parts[0] + '.' + parts[1]).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    throw new Error('bad signature');
  }
  const claims = b64urlJson(parts[1]);
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp + 30 < now) throw new Error('token expired');
  if (typeof claims.sub !== 'string' || !claims.sub) throw new Error('claim `sub` missing');
  if (typeof claims.room !== 'string') throw new Error('claim `room` missing');
  return claims;
}

function refuse(socket, status, code, message) {
  const body = JSON.stringify({ code, message });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

function frame(namespace, payload) {
  return Buffer.from(JSON.stringify({ namespace, timestamp: new Date().toISOString(), payload }));
}

function sendTo(member, buf) {
  const ws = member.ws;
  if (ws.readyState !== 1) return;
  if (ws.bufferedAmount > MAX_BUFFERED) {
    // Does not read: drop it (its 'close' handler tells the others).
    ws.close(1008, 'send queue overflow: client is not reading');
    return;
  }
  ws.send(buf, { binary: false });
}

function broadcast(room, buf, exceptId) {
  for (const [id, member] of room.members) {
    if (id !== exceptId) sendTo(member, buf);
  }
}

const wss = new WebSocketServer({
  noServer: true,
  maxPayload: MAX_FRAME,
  perMessageDeflate: false,
  clientTracking: false,
});

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"code":"not_found","message":"no such endpoint"}');
});

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/signaling') return refuse(socket, 404, 'not_found', 'no such endpoint');
  const auth = req.headers.authorization || '';
  const token = auth.startsWith('Bearer ') ? auth.slice(7) : url.searchParams.get('token');
  if (!token) return refuse(socket, 401, 'invalid_token', 'no credential');
  let claims;
  try {
    claims = verify(token);
  } catch (e) {
    return refuse(socket, 401, 'invalid_token', 'token rejected: ' + e.message);
  }
  if (!ROOM_ID.test(claims.room)) return refuse(socket, 400, 'invalid_room', 'bad room id');
  wss.handleUpgrade(req, socket, head, (ws) => session(ws, claims));
});

function session(ws, claims) {
  const role = ['moderator', 'user', 'guest'].includes(claims.role) ? claims.role : 'user';
  const mayRecord = role === 'moderator' && claims.recording !== false;
  let member = null;
  let room = null;
  let tokens = BURST;
  let last = Date.now();
  let warned = 0;
  const joinTimer = setTimeout(() => ws.close(1008, 'join timeout: send `join` first'), JOIN_TIMEOUT_MS);

  const reply = (namespace, payload) => {
    if (ws.readyState === 1) ws.send(frame(namespace, payload), { binary: false });
  };
  const controlError = (error) => reply('control', { message: 'error', error });
  const recordingError = (error) => reply('recording', { message: 'error', error });

  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.close(1009, 'binary frames are not supported');
    const now = Date.now();
    tokens = Math.min(BURST, tokens + ((now - last) / 1000) * RATE);
    last = now;
    if (tokens < 1) {
      if (now - warned >= 1000) {
        warned = now;
        controlError('rate_limited');
      }
      return;
    }
    tokens -= 1;
    let msg;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      return controlError('invalid_json');
    }
    const action = msg && msg.payload && msg.payload.action;
    if (msg.namespace === 'control') {
      if (action !== 'join') return controlError('invalid_payload');
      if (member) return controlError('already_joined');
      clearTimeout(joinTimer);
      const name = (typeof msg.payload.display_name === 'string' && msg.payload.display_name.trim()) ||
        (typeof claims.name === 'string' && claims.name.trim()) || claims.sub;
      const participant = {
        id: crypto.randomUUID(),
        control: {
          display_name: name,
          role,
          joined_at: new Date().toISOString(),
          participation_kind: role === 'guest' ? 'guest' : 'user',
        },
        recording: { consents_recording: false },
      };
      room = rooms.get(claims.room);
      if (!room) {
        room = { members: new Map(), recording: null };
        rooms.set(claims.room, room);
      }
      const others = [];
      for (const m of room.members.values()) others.push(m.participant);
      reply('control', {
        message: 'join_success',
        id: participant.id,
        display_name: name,
        role,
        participants: others,
        recording: room.recording ? { status: 'recording', recording_id: room.recording } : null,
      });
      broadcast(room, frame('control', { message: 'joined', ...participant }), null);
      member = { ws, participant };
      room.members.set(participant.id, member);
      return;
    }
    if (msg.namespace !== 'recording') return controlError('invalid_namespace');
    if (!member) return controlError('not_yet_joined');
    switch (action) {
      case 'set_consent': {
        const consent = msg.payload.consent === true;
        if (member.participant.recording.consents_recording === consent) return;
        member.participant.recording.consents_recording = consent;
        broadcast(room, frame('control', { message: 'update', ...member.participant }), member.participant.id);
        return;
      }
      case 'start': {
        if (!mayRecord) return recordingError('insufficient_permissions');
        if (room.recording) return recordingError('already_recording');
        const id = crypto.randomUUID();
        room.recording = id;
        broadcast(room, frame('recording', { message: 'started', recording_id: id }), null);
        broadcast(room, frame('recording', { message: 'status', status: 'recording', recording_id: id, provider: 'manual' }), null);
        return;
      }
      case 'stop': {
        if (!mayRecord) return recordingError('insufficient_permissions');
        const id = msg.payload.recording_id;
        if (!room.recording || id !== room.recording) return recordingError('invalid_recording_id');
        room.recording = null;
        broadcast(room, frame('recording', { message: 'stopped', recording_id: id }), null);
        broadcast(room, frame('recording', { message: 'status', status: 'inactive', recording_id: id, provider: 'manual' }), null);
        return;
      }
      default:
        return recordingError('invalid_payload');
    }
  });

  ws.on('close', () => {
    clearTimeout(joinTimer);
    if (!member) return;
    room.members.delete(member.participant.id);
    if (room.members.size === 0) {
      rooms.delete(claims.room);
    } else {
      broadcast(room, frame('control', { message: 'left', id: member.participant.id }), null);
    }
    member = null;
  });
  ws.on('error', () => {});
}

server.listen({ host, port, backlog: 511 }, () => {
  console.error(`node-ws listening on ${host}:${port} (node ${process.version})`);
});
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 2000).unref();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
