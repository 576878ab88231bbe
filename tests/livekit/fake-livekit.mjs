// A fake LiveKit server for onair's tests, built on LiveKit's own Node server
// SDK (`livekit-server-sdk`) and protocol classes (`@livekit/protocol`).
//
// As LiveKit, on 127.0.0.1 only:
//   POST /twirp/livekit.Egress/StartRoomCompositeEgress, .../StopEgress, .../ListEgress
//   POST /twirp/livekit.RoomService/ListRooms, .../UpdateRoomMetadata, .../SendData
// Each call's `Authorization: Bearer <JWT>` is checked with the SDK's
// `TokenVerifier` and the grant LiveKit requires for the method; the JSON body
// is parsed strictly with the protocol class (an unknown field is an error, as
// a typo would be); answers are protojson with proto field names and every
// field present, as LiveKit's twirp server writes them. Every call is recorded.
//
// Webhooks are signed as LiveKit's server signs them (an `AccessToken` valid
// for 5 minutes whose `sha256` claim is the base64 SHA-256 of the body, sent
// bare in `Authorization`, `Content-Type: application/webhook+json`) and
// delivered one after another per egress. With `auto` on, the fake drives an
// egress's life by itself: started → active after a start, ending → complete
// (with a file) after a stop.
//
// `ListEgress` answers only what the test listed (`POST list`), filtered by
// the request's `egress_id` (unknown: `not_found`), `room_name` and `active`
// (STARTING, ACTIVE, ENDING) as LiveKit's server filters its store.
//
// Control API for the tests (JSON), under /_fake/:
//   POST config    {webhookUrl?, auto?, webhooksBeforeStartReply?}
//   POST rooms     {name, metadata}                      create or replace a room
//   POST fail      {method, status?, code?, msg?, times?} the next calls of `method` fail
//   POST list      {egressId?, roomName?, status, withFile?, location?, error?}
//                  lists an egress for ListEgress (onair's, by id, or a foreign one)
//                  with that status; again for the same id replaces it → the EgressInfo
//   POST webhook   {event, egressId?, roomName?, status?, error?, updatedAt?, withFile?,
//                   location?, id?, sign?, rawBody?, sha256?, apiKey?, apiSecret?, url?}
//                  → {status, body, requestBody, token, sdkVerdict}
//                  (`sdkVerdict`: what the SDK's WebhookReceiver says of the same request)
//   GET  calls     every twirp call, in order
//   GET  egresses  the egresses started
//   GET  deliveries every webhook delivery and onair's answer
//
// Usage: node fake-livekit.mjs --api-key KEY --api-secret SECRET
// Prints {"port":N} on its first line; exits when its stdin closes.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import {
  EgressInfo,
  EgressStatus,
  FileInfo,
  ListEgressRequest,
  ListEgressResponse,
  ListRoomsRequest,
  ListRoomsResponse,
  Room,
  RoomCompositeEgressRequest,
  SendDataRequest,
  SendDataResponse,
  StopEgressRequest,
  UpdateRoomMetadataRequest,
  WebhookEvent,
} from '@livekit/protocol';
import * as jose from 'jose';
import { AccessToken, TokenVerifier, WebhookReceiver } from 'livekit-server-sdk';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const apiKey = args['api-key'] ?? 'devkey';
const apiSecret = args['api-secret'] ?? 'secret';
const verifier = new TokenVerifier(apiKey, apiSecret);
const receiver = new WebhookReceiver(apiKey, apiSecret);

const state = {
  webhookUrl: null,
  auto: true,
  webhooksBeforeStartReply: false,
  rooms: new Map(),
  egresses: new Map(),
  // What ListEgress answers, by egress id.
  listed: new Map(),
  failures: new Map(),
  calls: [],
  deliveries: [],
  // One delivery chain per egress: LiveKit queues an egress's webhooks in order.
  chains: new Map(),
};

// Strictly increasing nanosecond timestamps (protojson int64).
let lastNs = 0n;
function nowNs() {
  let t = BigInt(Date.now()) * 1_000_000n;
  if (t <= lastNs) t = lastNs + 1n;
  lastNs = t;
  return t;
}

const id = (prefix) => prefix + randomBytes(6).toString('hex');
const wire = (message) => message.toJson({ useProtoFieldName: true, emitDefaultValues: true });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class TwirpError extends Error {
  constructor(status, code, msg) {
    super(msg);
    this.status = status;
    this.code = code;
  }
}

// The grant LiveKit's server requires for each method.
const methods = {
  'Egress/StartRoomCompositeEgress': {
    request: RoomCompositeEgressRequest,
    allowed: (video) => video?.roomRecord === true,
    handle: startEgress,
  },
  'Egress/StopEgress': {
    request: StopEgressRequest,
    allowed: (video) => video?.roomRecord === true,
    handle: stopEgress,
  },
  'Egress/ListEgress': {
    request: ListEgressRequest,
    allowed: (video) => video?.roomRecord === true,
    handle: listEgress,
  },
  'RoomService/ListRooms': {
    request: ListRoomsRequest,
    allowed: (video) => video?.roomList === true,
    handle: (req) =>
      wire(
        new ListRoomsResponse({
          rooms: [...state.rooms.values()].filter(
            (room) => req.names.length === 0 || req.names.includes(room.name),
          ),
        }),
      ),
  },
  'RoomService/UpdateRoomMetadata': {
    request: UpdateRoomMetadataRequest,
    allowed: (video, req) => video?.roomAdmin === true && video?.room === req.room,
    handle: (req) => {
      const room = existingRoom(req.room);
      room.metadata = req.metadata;
      return wire(room);
    },
  },
  'RoomService/SendData': {
    request: SendDataRequest,
    allowed: (video, req) => video?.roomAdmin === true && video?.room === req.room,
    handle: (req) => {
      existingRoom(req.room);
      return wire(new SendDataResponse());
    },
  },
};

function existingRoom(name) {
  const room = state.rooms.get(name);
  if (!room) throw new TwirpError(404, 'not_found', 'requested room does not exist');
  return room;
}

function filename(template, roomName) {
  const time = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  return template.replaceAll('{room_name}', roomName).replaceAll('{time}', time);
}

async function startEgress(req) {
  const output = req.fileOutputs[0];
  const info = new EgressInfo({
    egressId: id('EG_'),
    roomId: state.rooms.get(req.roomName)?.sid ?? '',
    roomName: req.roomName,
    status: EgressStatus.EGRESS_STARTING,
    updatedAt: nowNs(),
  });
  info.fakeFilepath = output?.filepath ?? '{room_name}-{time}.mp4';
  state.egresses.set(info.egressId, info);
  const reply = wire(info);
  if (state.webhooksBeforeStartReply) {
    // LiveKit may deliver egress_started (and more) before the answer.
    const sent = lifecycle(info, ['egress_started', EgressStatus.EGRESS_STARTING], [
      'egress_updated',
      EgressStatus.EGRESS_ACTIVE,
    ]);
    await Promise.race([sent, sleep(300)]);
  } else if (state.auto) {
    setImmediate(() =>
      lifecycle(info, ['egress_started', EgressStatus.EGRESS_STARTING], [
        'egress_updated',
        EgressStatus.EGRESS_ACTIVE,
      ]),
    );
  }
  return reply;
}

function stopEgress(req) {
  const info = state.egresses.get(req.egressId);
  if (!info) throw new TwirpError(404, 'not_found', 'egress not found');
  if (info.status >= EgressStatus.EGRESS_ENDING) {
    throw new TwirpError(412, 'failed_precondition', 'egress is not active');
  }
  info.status = EgressStatus.EGRESS_ENDING;
  info.updatedAt = nowNs();
  const reply = wire(info);
  if (state.auto) {
    setImmediate(() =>
      lifecycle(info, ['egress_updated', EgressStatus.EGRESS_ENDING], [
        'egress_ended',
        EgressStatus.EGRESS_COMPLETE,
      ]),
    );
  }
  return reply;
}

function listEgress(req) {
  let items = [...state.listed.values()];
  if (req.egressId) {
    const one = state.listed.get(req.egressId);
    if (!one) throw new TwirpError(404, 'not_found', 'egress does not exist');
    items = [one];
  } else {
    if (req.roomName) items = items.filter((info) => info.roomName === req.roomName);
    if (req.active) items = items.filter((info) => info.status < EgressStatus.EGRESS_COMPLETE);
  }
  return wire(new ListEgressResponse({ items }));
}

// Lists an egress for ListEgress: one onair started (a copy of it) or a foreign one.
function list(spec) {
  const stored = spec.egressId !== undefined ? state.egresses.get(spec.egressId) : undefined;
  const info = stored
    ? EgressInfo.fromJson(stored.toJson())
    : new EgressInfo({
        egressId: spec.egressId ?? id('EG_'),
        roomId: id('RM_'),
        roomName: spec.roomName ?? '',
        startedAt: nowNs(),
      });
  if (spec.roomName !== undefined) info.roomName = spec.roomName;
  info.status = statusOf(spec.status) ?? EgressStatus.EGRESS_ACTIVE;
  info.updatedAt = nowNs();
  if (info.status >= EgressStatus.EGRESS_ACTIVE && !info.startedAt) info.startedAt = info.updatedAt;
  if (info.status >= EgressStatus.EGRESS_COMPLETE) info.endedAt = info.updatedAt;
  if (spec.error !== undefined) info.error = spec.error;
  if (spec.withFile) info.fileResults = [fileResult(stored ?? info, spec.location)];
  state.listed.set(info.egressId, info);
  return wire(info);
}

// Moves an egress through statuses, one webhook each, in order.
function lifecycle(info, ...steps) {
  return Promise.all(
    steps.map(([event, status]) =>
      webhook({ event, egressId: info.egressId, status, withFile: status === EgressStatus.EGRESS_COMPLETE }),
    ),
  );
}

function fileResult(info, location) {
  const name = filename(info.fakeFilepath ?? '{room_name}-{time}.mp4', info.roomName);
  const started = info.startedAt || nowNs();
  return new FileInfo({
    filename: name,
    startedAt: started,
    endedAt: started + 61_500_000_000n,
    duration: 61_500_000_000n,
    size: 1_048_576n,
    location: location ?? '',
  });
}

function statusOf(value) {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number') return value;
  const status = EgressStatus[value];
  if (status === undefined) throw new Error(`unknown egress status ${value}`);
  return status;
}

// Builds, signs and delivers one webhook; resolves to onair's answer.
function webhook(spec) {
  const key = spec.egressId ?? '';
  const previous = state.chains.get(key) ?? Promise.resolve();
  const next = previous.then(() => deliver(spec)).catch((e) => ({ status: 0, body: String(e) }));
  state.chains.set(key, next);
  return next;
}

async function deliver(spec) {
  const url = spec.url ?? state.webhookUrl;
  if (!url) throw new Error('no webhook URL configured');
  let body = spec.rawBody;
  let event = spec.event ?? 'egress_updated';
  if (body === undefined) {
    let egressInfo;
    if (spec.egressId !== undefined) {
      const stored = state.egresses.get(spec.egressId);
      egressInfo = stored
        ? EgressInfo.fromJson(stored.toJson())
        : new EgressInfo({ egressId: spec.egressId, roomName: spec.roomName ?? '' });
      const status = statusOf(spec.status);
      if (status !== undefined) egressInfo.status = status;
      if (spec.roomName !== undefined) egressInfo.roomName = spec.roomName;
      egressInfo.updatedAt = spec.updatedAt !== undefined ? BigInt(spec.updatedAt) : nowNs();
      if (egressInfo.status === EgressStatus.EGRESS_ACTIVE && !egressInfo.startedAt) {
        egressInfo.startedAt = egressInfo.updatedAt;
      }
      if (egressInfo.status >= EgressStatus.EGRESS_COMPLETE) {
        egressInfo.endedAt = egressInfo.updatedAt;
      }
      if (spec.error !== undefined) egressInfo.error = spec.error;
      if (spec.withFile) {
        egressInfo.fileResults = [fileResult(stored ?? egressInfo, spec.location)];
      }
      if (stored && !spec.noStore) {
        stored.status = egressInfo.status;
        stored.updatedAt = egressInfo.updatedAt;
        stored.startedAt = egressInfo.startedAt;
      }
    }
    body = new WebhookEvent({
      event,
      id: spec.id ?? id('EV_'),
      createdAt: BigInt(Math.floor(Date.now() / 1000)),
      egressInfo,
    }).toJsonString();
  } else {
    try {
      event = JSON.parse(body).event ?? '';
    } catch {
      event = '';
    }
  }
  const token = await sign(body, spec);
  const sent = spec.sign === 'tampered_body' ? body.replace('"event":"', '"event": "') : body;
  // What LiveKit's own WebhookReceiver, holding onair's key and secret, makes of it.
  let sdkVerdict;
  try {
    await receiver.receive(sent, token ?? undefined);
    sdkVerdict = 'accepted';
  } catch (e) {
    sdkVerdict = `rejected: ${e.message}`;
  }
  const headers = { 'Content-Type': 'application/webhook+json' };
  if (token !== null) headers.Authorization = token;
  const response = await fetch(url, { method: 'POST', headers, body: sent });
  const text = await response.text();
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = text;
  }
  const delivery = {
    event,
    egressId: spec.egressId ?? null,
    status: response.status,
    body: answer,
    requestBody: sent,
    token,
    sdkVerdict,
  };
  state.deliveries.push(delivery);
  return delivery;
}

function sha256(body) {
  return createHash('sha256').update(body).digest('base64');
}

// Signs as LiveKit's server does, or forges on purpose.
async function sign(body, spec) {
  const key = spec.apiKey ?? apiKey;
  const secret = spec.apiSecret ?? apiSecret;
  const sha = spec.sha256 ?? sha256(body);
  const now = Math.floor(Date.now() / 1000);
  const raw = (claims, signWith = secret) =>
    new jose.SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(signWith));
  switch (spec.sign ?? 'livekit') {
    case 'livekit':
    case 'tampered_body': {
      const token = new AccessToken(key, secret, { ttl: '5m' });
      token.sha256 = sha;
      return token.toJwt();
    }
    case 'sdk_default': {
      // Exactly as LiveKit's WebhookReceiver test signs its vector.
      const token = new AccessToken(key, secret);
      token.sha256 = sha;
      return token.toJwt();
    }
    case 'no_auth':
      return null;
    case 'bearer': {
      const token = new AccessToken(key, secret, { ttl: '5m' });
      token.sha256 = sha;
      return `Bearer ${await token.toJwt()}`;
    }
    case 'wrong_secret': {
      const token = new AccessToken(key, `${secret}-not`, { ttl: '5m' });
      token.sha256 = sha;
      return token.toJwt();
    }
    case 'wrong_key': {
      const token = new AccessToken(`${key}-other`, secret, { ttl: '5m' });
      token.sha256 = sha;
      return token.toJwt();
    }
    case 'no_sha':
      return new AccessToken(key, secret, { ttl: '5m' }).toJwt();
    case 'expired':
      return raw({ iss: key, nbf: now - 900, exp: now - 600, sha256: sha });
    case 'old':
      // Still before its exp, but made 10 minutes ago: outside the replay window.
      return raw({ iss: key, nbf: now - 600, exp: now + 300, sha256: sha });
    case 'no_exp':
      return raw({ iss: key, nbf: now, sha256: sha });
    case 'alg_none': {
      const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
      return `${part({ alg: 'none', typ: 'JWT' })}.${part({ iss: key, nbf: now, exp: now + 300, sha256: sha })}.`;
    }
    default:
      throw new Error(`unknown signing mode ${spec.sign}`);
  }
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, value) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function twirp(req, res, method) {
  const spec = methods[method];
  if (!spec) throw new TwirpError(404, 'bad_route', `no handler for ${method}`);
  const raw = await readBody(req);
  const call = { method, raw: null, request: null, claims: null, status: 200, error: null };
  state.calls.push(call);
  try {
    call.raw = JSON.parse(raw);
  } catch {
    throw new TwirpError(400, 'malformed', 'the body is not JSON');
  }
  const auth = req.headers.authorization ?? '';
  if (!auth.startsWith('Bearer ')) {
    throw Object.assign(new TwirpError(401, 'unauthenticated', 'no bearer token'), { call });
  }
  try {
    call.claims = await verifier.verify(auth.slice('Bearer '.length));
  } catch (e) {
    throw Object.assign(new TwirpError(401, 'unauthenticated', `invalid token: ${e.message}`), { call });
  }
  let request;
  try {
    request = spec.request.fromJson(call.raw);
  } catch (e) {
    throw Object.assign(new TwirpError(400, 'malformed', e.message), { call });
  }
  call.request = request.toJson({ useProtoFieldName: true });
  if (request instanceof SendDataRequest) {
    call.dataText = Buffer.from(request.data).toString('utf8');
  }
  if (!spec.allowed(call.claims.video, request)) {
    throw Object.assign(new TwirpError(403, 'permission_denied', 'permissions denied'), { call });
  }
  const failures = state.failures.get(method) ?? [];
  if (failures.length > 0) {
    const failure = failures.shift();
    throw Object.assign(new TwirpError(failure.status, failure.code, failure.msg), { call });
  }
  try {
    return await spec.handle(request);
  } catch (e) {
    throw Object.assign(e, { call });
  }
}

async function control(req, res, path) {
  const input = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
  switch (`${req.method} ${path}`) {
    case 'POST config':
      for (const key of ['webhookUrl', 'auto', 'webhooksBeforeStartReply']) {
        if (input[key] !== undefined) state[key] = input[key];
      }
      return {};
    case 'POST rooms': {
      const room = new Room({
        sid: id('RM_'),
        name: input.name,
        metadata: input.metadata ?? '',
        creationTime: BigInt(Math.floor(Date.now() / 1000)),
        emptyTimeout: 300,
      });
      state.rooms.set(room.name, room);
      return wire(room);
    }
    case 'POST fail': {
      const queue = state.failures.get(input.method) ?? [];
      for (let i = 0; i < (input.times ?? 1); i++) {
        queue.push({ status: input.status ?? 503, code: input.code ?? 'unavailable', msg: input.msg ?? 'unavailable' });
      }
      state.failures.set(input.method, queue);
      return {};
    }
    case 'POST list':
      return list(input);
    case 'POST webhook':
      return webhook(input);
    case 'GET calls':
      return state.calls;
    case 'GET egresses':
      return [...state.egresses.values()].map((info) => wire(info));
    case 'GET deliveries':
      return state.deliveries;
    default:
      throw new TwirpError(404, 'bad_route', `no control endpoint ${req.method} ${path}`);
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (url.pathname.startsWith('/_fake/')) {
      send(res, 200, await control(req, res, url.pathname.slice('/_fake/'.length)));
    } else if (req.method === 'POST' && url.pathname.startsWith('/twirp/livekit.')) {
      send(res, 200, await twirp(req, res, url.pathname.slice('/twirp/livekit.'.length)));
    } else {
      throw new TwirpError(404, 'bad_route', `no route ${req.method} ${url.pathname}`);
    }
  } catch (e) {
    if (e.call) {
      e.call.status = e.status ?? 500;
      e.call.error = e.code ?? 'internal';
    }
    if (!(e instanceof TwirpError)) console.error(e);
    send(res, e.status ?? 500, { code: e.code ?? 'internal', msg: e.message });
  }
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

// The test that started us holds our stdin; when it goes, so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
