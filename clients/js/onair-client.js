// onair-client.js: a small, dependency-free client for the onair signaling
// protocol (see protocol/README.md). An ES module for browsers and Node 20+.
//
//   import { OnairClient } from "./onair-client.js";
//   const client = new OnairClient({ url: "http://127.0.0.1:7800", token });
//   client.addEventListener("change", () => render(client.room));
//   await client.connect();           // resolves with the join_success payload
//   client.setConsent(true);
//   client.start();                   // moderators only
//
// The client keeps a live `room` (participants with their consent, the
// recording state, recordings announced on the socket) and reconnects with
// backoff when the connection drops: it re-joins, replaces its view of the
// room with the new `join_success`, and sends its consent again (consent
// belongs to a connection, and a new connection starts without it).

/** The subprotocol onair speaks (OpenTalk's name for it). */
export const SUBPROTOCOL = "opentalk-signaling-json-v1.0";

/**
 * A participant as the client keeps it.
 * @typedef {object} Participant
 * @property {string} id           Per connection: the same person in two tabs is two participants.
 * @property {string} displayName
 * @property {"moderator"|"user"|"guest"} role
 * @property {"user"|"guest"} kind  `participation_kind`.
 * @property {string|null} joinedAt RFC 3339.
 * @property {boolean} consents     Whether this participant consents to being recorded.
 * @property {boolean} self         Whether this is the client's own participant.
 */

/**
 * The room's recording, as far as this client knows.
 * @typedef {object} Recording
 * @property {"inactive"|"initializing"|"recording"|"stopping"|"failed"} status
 * @property {string|null} recordingId
 * @property {string|null} provider  The backend, from `status` events.
 * @property {string|null} reason    Why, for `failed` (and `inactive` after a start timeout).
 * @property {number|null} since     `Date.now()` when this client saw the status begin;
 *                                   `null` when it began before this client joined.
 */

/**
 * A finished recording, from `recording_available`.
 * @typedef {object} RecordingFile
 * @property {string} recordingId
 * @property {string} name
 * @property {number} durationS
 * @property {number} sizeBytes
 * @property {string} url
 */

/**
 * The live view of the room.
 * @typedef {object} Room
 * @property {string|null} name      The room id.
 * @property {string|null} selfId    This connection's participant id.
 * @property {string|null} role      This participant's role.
 * @property {boolean} consent       This participant's own consent.
 * @property {Map<string, Participant>} participants  Everyone, this participant included; in a
 *   large room (`headcount` set) a non-moderator knows only the moderators and itself.
 * @property {{count: number, consenting: number}|null} headcount  Set while `participants` is not
 *   the whole room (a non-moderator in a large room, over the server's `large_room_threshold`):
 *   how many are in the room and how many consent. `null` when the list is the whole room.
 * @property {Recording} recording
 * @property {Map<string, RecordingFile>} recordings  Announced on the socket since joining.
 */

/**
 * Connection states, in `client.state`:
 * `idle` (not connected yet), `connecting`, `joined`, `reconnecting`, `closed`.
 * @typedef {"idle"|"connecting"|"joined"|"reconnecting"|"closed"} ConnectionState
 */

/** Plain words for every error value onair sends, and for the client's own. */
const ERROR_TEXT = {
  // recording namespace
  insufficient_permissions: "Only moderators can start or stop a recording.",
  already_recording: "A recording is already running in this room.",
  invalid_recording_id: "That recording is no longer the one running; the page has been updated.",
  recorder_timeout: "The recorder did not start in time. Nothing is being recorded; you can try again.",
  recording_disabled: "Recording is switched off on this server.",
  backend_unavailable: "The recorder cannot be reached right now. Try again in a moment.",
  not_supported: "Recording is started from the video call itself on this server, not here.",
  invalid_payload: "The server did not understand a request from this page.",
  // control namespace
  invalid_json: "The server did not understand a message from this page.",
  invalid_namespace: "The server did not understand a message from this page.",
  not_yet_joined: "You are not in the room yet.",
  already_joined: "You are already in the room.",
  invalid_display_name: "That name cannot be used: it is too long or contains invisible control characters.",
  rate_limited: "Too many actions at once; slow down for a moment.",
  // the client's own (namespace "connection")
  invalid_token: "Your access token is not valid (it may have expired). Get a new one and join again.",
  token_expired: "Your access token has expired. Get a new one and join again.",
  room_mismatch: "This token is for a different room.",
  connection_failed: "Cannot reach the server. Check the address and your connection.",
  connection_lost: "The connection to the server was lost. Reconnecting…",
  connection_closed: "The connection to the server was closed. Join again to continue.",
  not_connected: "You are not connected to the room.",
};

/**
 * Plain words for an error value, for showing to a person.
 * @param {string} code  An `error` value from either namespace, or a client error.
 * @returns {string}
 */
export function describeError(code) {
  return ERROR_TEXT[code] ?? `Something went wrong (${code}).`;
}

/**
 * Reads the claims of a JWT without checking it (the server checks it).
 * @param {string} token
 * @returns {Record<string, unknown>|null}  `null` when it is not a JWT.
 */
export function decodeToken(token) {
  const part = String(token).split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** An error the client raises itself; `code` is a value `describeError` knows. */
export class OnairError extends Error {
  /**
   * @param {string} code
   * @param {string} [detail]
   */
  constructor(code, detail) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = "OnairError";
    /** @type {string} */
    this.code = code;
    /** @type {string|undefined} */
    this.detail = detail;
  }
}

const INACTIVE = Object.freeze({
  status: "inactive",
  recordingId: null,
  provider: null,
  reason: null,
  since: null,
});

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSE_CODES = new Set([1009]);

/** Client errors after which retrying with the same credentials cannot help. */
const PERMANENT_ERRORS = new Set(["invalid_token", "token_expired", "room_mismatch", "invalid_room"]);

/**
 * A connection to one onair room.
 *
 * Events (all `CustomEvent`s; `detail` as listed):
 * - `joinSuccess` `{payload, reconnected}` — joined (again, after a reconnect).
 * - `joined` `{participant}`, `left` `{participant}`, `update` `{participant, previous}`.
 * - `headcount` `{count, consenting}` — a large room's `participant_count` (at most once a second).
 * - `started` `{recordingId}`, `stopped` `{recordingId}`.
 * - `status` `{recording, previous}` — the recording state changed (onair's `status` extension).
 * - `recordingAvailable` `{recording}`, `recordingDeleted` `{recordingId}`.
 * - `error` `{namespace, error, detail, message}` — `namespace` is `control`, `recording`
 *   or `connection` (the client's own); `message` is `describeError(error)`.
 * - `connection` `{state}` — `state` changed.
 * - `change` — anything in `room` or `state` changed (handy for re-rendering).
 * - `frame` `{frame}` — every frame from the server, parsed.
 */
export class OnairClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url]  The server, `http(s)://host[:port][/prefix]` or `ws(s)://…`
   *   (defaults to the page's origin in a browser).
   * @param {string} [options.token]  A participant JWT. By default the client trades it for
   *   a single-use ticket (`POST /v1/rooms/{room}/start`) on every (re)connect, so the token
   *   never appears in a URL.
   * @param {string} [options.room]  The room for the ticket request (default: the token's `room` claim).
   * @param {() => Promise<string>} [options.getTicket]  Supplies a fresh ticket per connect instead.
   * @param {string} [options.ticket]  One ticket (single-use: without `token` or `getTicket`
   *   the client cannot reconnect).
   * @param {boolean} [options.tokenInQuery]  Send the token as `?token=` instead (it then
   *   appears in server and proxy logs).
   * @param {string} [options.displayName]  Sent with `join`; overrides the token's `name`.
   * @param {typeof WebSocket} [options.WebSocket]  The WebSocket constructor (default: the global one).
   * @param {typeof fetch} [options.fetch]  The fetch function (default: the global one).
   * @param {boolean} [options.reconnect]  Reconnect after a dropped connection (default true).
   * @param {number} [options.minDelayMs]  First reconnect delay (default 500).
   * @param {number} [options.maxDelayMs]  Longest reconnect delay (default 15000).
   * @param {number} [options.joinTimeoutMs]  How long to wait for `join_success` (default 10000).
   */
  constructor(options = {}) {
    super();
    const origin = globalThis.location?.origin;
    const url = options.url ?? origin;
    if (!url) throw new TypeError("OnairClient: `url` is required outside a browser");
    if (!options.token && !options.getTicket && !options.ticket) {
      throw new TypeError("OnairClient: one of `token`, `getTicket` or `ticket` is required");
    }
    // Keep a path prefix, for an onair behind a reverse proxy at e.g. /onair/.
    const base = new URL(url);
    const prefix = base.origin + base.pathname.replace(/\/+$/, "");
    /** @private */ this._http = prefix.replace(/^ws/, "http");
    /** @private */ this._ws = prefix.replace(/^http/, "ws");
    /** @private */ this._options = {
      reconnect: true,
      minDelayMs: 500,
      maxDelayMs: 15000,
      joinTimeoutMs: 10000,
      ...options,
    };
    /** @private */ this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    /** @private */ this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!this._WebSocket) {
      throw new TypeError("OnairClient: no global WebSocket; pass the `WebSocket` option");
    }
    /** @private */ this._claims = options.token ? decodeToken(options.token) : null;
    /** @private */ this._ticket = options.ticket ?? null;
    /** @private */ this._socket = null;
    /** @private */ this._attempt = 0;
    /** @private */ this._timer = null;
    /** @private */ this._closedByUser = false;
    /** @private */ this._everJoined = false;
    /** @private */ this._generation = 0;
    /** @private */ this._settle = null;

    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {Room} */
    this.room = {
      name: options.room ?? /** @type {string|undefined} */ (this._claims?.room) ?? null,
      selfId: null,
      role: null,
      consent: false,
      participants: new Map(),
      headcount: null,
      recording: { ...INACTIVE },
      recordings: new Map(),
    };
  }

  /** This participant, once joined. @returns {Participant|null} */
  get self() {
    return this.room.selfId ? this.room.participants.get(this.room.selfId) ?? null : null;
  }

  /** Whether this participant is a moderator who may start and stop recordings. */
  get canRecord() {
    return this.room.role === "moderator" && this._claims?.recording !== false;
  }

  /**
   * Connects and joins. Resolves with the `join_success` payload; rejects with an
   * {@link OnairError} if the first attempt fails (later drops reconnect by themselves).
   * @returns {Promise<object>}
   */
  connect() {
    if (this.state !== "idle" && this.state !== "closed") {
      return Promise.reject(new OnairError("already_joined", `the client is ${this.state}`));
    }
    this._closedByUser = false;
    this._everJoined = false;
    return this._open();
  }

  /**
   * Asks to start a recording (moderators only). The answer comes as events:
   * `started`/`status`, or `error`.
   * @param {{audioOnly?: boolean}} [options]
   */
  start(options = {}) {
    const payload = { action: "start" };
    if (options.audioOnly) payload.audio_only = true;
    this._send("recording", payload);
  }

  /**
   * Asks to stop a recording (moderators only); by default the room's current one.
   * @param {string} [recordingId]
   */
  stop(recordingId = this.room.recording.recordingId ?? undefined) {
    if (!recordingId) {
      this._emitError("recording", "invalid_recording_id", "no recording is running");
      return;
    }
    this._send("recording", { action: "stop", recording_id: recordingId });
  }

  /**
   * Gives (`true`) or withdraws (`false`) this participant's consent to being recorded.
   * The server tells only the others, so the client updates its own view at once.
   * @param {boolean} consent
   */
  setConsent(consent) {
    consent = Boolean(consent);
    this.room.consent = consent;
    const self = this.self;
    if (self) {
      const previous = { ...self };
      self.consents = consent;
      this._emit("update", { participant: { ...self }, previous });
    }
    if (this.state === "joined") this._send("recording", { action: "set_consent", consent });
    this._emit("change");
  }

  /** Leaves the room and stops reconnecting. */
  close() {
    this._closedByUser = true;
    this._generation += 1;
    clearTimeout(this._timer);
    this._timer = null;
    this._dropSocket();
    this._settle?.(new OnairError("not_connected", "closed by the application"));
    this._setState("closed");
  }

  // ---- connection ----------------------------------------------------------

  /**
   * One connection attempt: credentials, socket, `join`, until `join_success`.
   * Resolves with its payload; rejects when the attempt fails.
   * @private
   */
  _open() {
    this._setState(this._everJoined ? "reconnecting" : "connecting");
    const attempt = ++this._generation;
    const current = () => attempt === this._generation && !this._closedByUser;
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error, payload) => {
        if (settled) return;
        settled = true;
        clearTimeout(joinTimer);
        if (this._settle === settle) this._settle = null;
        if (error) reject(error);
        else resolve(payload);
      };
      this._settle = settle;
      const joinTimer = setTimeout(() => {
        this._generation += 1; // whatever this attempt still does is stale now
        this._dropSocket();
        this._failed(new OnairError("connection_failed", "no join_success in time"), settle);
      }, this._options.joinTimeoutMs);

      this._credentials()
        .then(({ url, protocols }) => {
          if (!current()) return;
          const socket = new this._WebSocket(url, protocols);
          this._socket = socket;
          socket.addEventListener("open", () => {
            if (socket !== this._socket) return;
            const join = { action: "join" };
            if (this._options.displayName) join.display_name = this._options.displayName;
            this._sendOn(socket, "control", join);
          });
          socket.addEventListener("message", (event) => {
            if (socket !== this._socket) return;
            this._onMessage(event.data, settle);
          });
          socket.addEventListener("close", (event) => {
            if (socket !== this._socket) return;
            this._socket = null;
            this._onClose(event, settle);
          });
          // An `error` event is always followed by `close`, which handles it.
          socket.addEventListener("error", () => {});
        })
        .catch((error) => {
          if (!current()) return;
          const failure =
            error instanceof OnairError
              ? error
              : new OnairError("connection_failed", String(error?.message ?? error));
          this._failed(failure, settle);
        });
    });
  }

  /**
   * The WebSocket URL and subprotocols for one connection attempt.
   * @private
   * @returns {Promise<{url: string, protocols: string[]}>}
   */
  async _credentials() {
    const url = `${this._ws}/signaling`;
    const o = this._options;
    const exp = /** @type {number|undefined} */ (this._claims?.exp);
    if (typeof exp === "number" && exp * 1000 <= Date.now()) {
      throw new OnairError("token_expired");
    }
    if (o.tokenInQuery && o.token) {
      return { url: `${url}?token=${encodeURIComponent(o.token)}`, protocols: [SUBPROTOCOL] };
    }
    let ticket;
    if (this._ticket) {
      ticket = this._ticket;
      this._ticket = null; // single-use
    } else if (o.getTicket) {
      ticket = await o.getTicket();
    } else if (o.token) {
      ticket = await this._fetchTicket();
    } else {
      throw new OnairError("invalid_token", "the ticket was used up and there is no token to get another");
    }
    return { url, protocols: [SUBPROTOCOL, `ticket#${ticket}`] };
  }

  /** @private */
  async _fetchTicket() {
    if (!this._fetch) throw new OnairError("connection_failed", "no fetch() available");
    if (!this.room.name) throw new OnairError("invalid_token", "the token names no room");
    let response;
    try {
      response = await this._fetch(
        `${this._http}/v1/rooms/${encodeURIComponent(this.room.name)}/start`,
        { method: "POST", headers: { authorization: `Bearer ${this._options.token}` } },
      );
    } catch (error) {
      throw new OnairError("connection_failed", String(error?.message ?? error));
    }
    const body = await response.json().catch(() => null);
    if (response.ok && typeof body?.ticket === "string") return body.ticket;
    const code = body?.code;
    if (response.status === 401) throw new OnairError("invalid_token", body?.message);
    if (code === "room_mismatch") throw new OnairError("room_mismatch", body?.message);
    if (response.status === 400 || response.status === 403) {
      throw new OnairError(code ?? "invalid_token", body?.message);
    }
    throw new OnairError("connection_failed", `HTTP ${response.status}`);
  }

  /**
   * An attempt failed before joining: reject the first connect, give up on a
   * credential that cannot work, or try again later.
   * @private
   */
  _failed(error, settle) {
    const permanent = PERMANENT_ERRORS.has(error.code);
    if (!this._everJoined || permanent || !this._options.reconnect) {
      // The first connect reports through its promise; a reconnect through an event.
      if (this._everJoined) this._emitError("connection", error.code, error.detail);
      this._setState("closed");
      settle(error);
      return;
    }
    settle(error);
    this._scheduleReconnect();
  }

  /** @private */
  _onClose(event, settle) {
    if (this._closedByUser) return;
    const wasJoined = this.state === "joined";
    const detail = `closed with ${event.code}${event.reason ? ` (${event.reason})` : ""}`;
    if (!wasJoined) {
      // Refused before join_success, or dropped on the way.
      this._failed(new OnairError("connection_failed", detail), settle);
      return;
    }
    if (!this._options.reconnect || FINAL_CLOSE_CODES.has(event.code)) {
      this._emitError("connection", "connection_closed", detail);
      this._setState("closed");
      return;
    }
    this._emitError("connection", "connection_lost", detail);
    this._scheduleReconnect();
  }

  /** @private */
  _scheduleReconnect() {
    this._setState("reconnecting");
    const { minDelayMs, maxDelayMs } = this._options;
    const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** this._attempt);
    // "Full jitter": spread reconnecting clients out after a server restart.
    const delay = minDelayMs / 2 + Math.random() * (ceiling - minDelayMs / 2);
    this._attempt += 1;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._closedByUser) this._open().catch(() => {});
    }, delay);
  }

  /** @private */
  _dropSocket() {
    const socket = this._socket;
    this._socket = null;
    if (socket && socket.readyState <= 1) socket.close(1000, "leaving");
  }

  /** @private */
  _send(namespace, payload) {
    if (this.state !== "joined" || !this._socket) {
      this._emitError("connection", "not_connected");
      return;
    }
    this._sendOn(this._socket, namespace, payload);
  }

  /** @private */
  _sendOn(socket, namespace, payload) {
    socket.send(JSON.stringify({ namespace, payload }));
  }

  // ---- incoming frames -----------------------------------------------------

  /** @private */
  _onMessage(data, settle) {
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch {
      return; // onair sends only JSON text; ignore anything else
    }
    const payload = frame?.payload;
    if (!payload || typeof payload.message !== "string") return;
    this._emit("frame", { frame });
    const handler = HANDLERS[`${frame.namespace}.${payload.message}`];
    if (handler) handler.call(this, payload, settle);
    // Unknown messages are ignored: onair may add more (protocol/README.md).
  }

  /** @private */
  _onJoinSuccess(p, settle) {
    const reconnected = this._everJoined;
    const previous = this.room.recording;
    this.room.selfId = p.id;
    this.room.role = p.role;
    this.room.participants = new Map();
    for (const raw of p.participants ?? []) {
      const participant = toParticipant(raw, false);
      this.room.participants.set(participant.id, participant);
    }
    this.room.participants.set(p.id, {
      id: p.id,
      displayName: p.display_name,
      role: p.role,
      kind: p.role === "guest" ? "guest" : "user",
      joinedAt: null,
      consents: this.room.consent,
      self: true,
    });
    // Consent is counted from the first `participant_count`, which follows within a second.
    this.room.headcount = p.participant_count > this.room.participants.size
      ? { count: p.participant_count, consenting: 0 }
      : null;
    this.room.recording = fromRecordingData(p.recording, previous);
    this._everJoined = true;
    this._attempt = 0;
    this._setState("joined");
    // A new connection starts without consent: give it again if this person had.
    if (this.room.consent) this._send("recording", { action: "set_consent", consent: true });
    if (!sameRecording(previous, this.room.recording)) {
      this._emit("status", { recording: { ...this.room.recording }, previous });
    }
    this._emit("joinSuccess", { payload: p, reconnected });
    this._emit("change");
    settle(null, p);
  }

  /** @private */
  _onJoined(p) {
    const participant = toParticipant(p, false);
    this.room.participants.set(participant.id, participant);
    this._emit("joined", { participant: { ...participant } });
    this._emit("change");
  }

  /** @private */
  _onLeft(p) {
    const participant = this.room.participants.get(p.id);
    if (!participant) return;
    this.room.participants.delete(p.id);
    this._emit("left", { participant });
    this._emit("change");
  }

  /** @private */
  _onUpdate(p) {
    const previous = this.room.participants.get(p.id);
    const participant = toParticipant(p, p.id === this.room.selfId);
    this.room.participants.set(participant.id, participant);
    this._emit("update", { participant: { ...participant }, previous: previous ?? null });
    this._emit("change");
  }

  /**
   * A large room's headcount. The room holds more than this client knows while it is large
   * and this client is no moderator: a room that just became large stops telling it about
   * other non-moderators, so those it knew are dropped and the list stays true (moderators and
   * itself). When the room is small again, `joined` brings them back and the next count is
   * no more than the list: `headcount` is `null` again.
   * @private
   */
  _onParticipantCount(p) {
    const partial = p.count > this.room.participants.size;
    if (partial && this.room.headcount === null && this.room.role !== "moderator") {
      for (const [id, participant] of this.room.participants) {
        if (!participant.self && participant.role !== "moderator") this.room.participants.delete(id);
      }
    }
    this.room.headcount = partial ? { count: p.count, consenting: p.consenting } : null;
    this._emit("headcount", { ...this.room.headcount });
    this._emit("change");
  }

  /** @private */
  _onStarted(p) {
    this._setRecording({ status: "recording", recordingId: p.recording_id });
    this._emit("started", { recordingId: p.recording_id });
    this._emit("change");
  }

  /** @private */
  _onStopped(p) {
    this._setRecording({ status: "inactive", recordingId: p.recording_id });
    this._emit("stopped", { recordingId: p.recording_id });
    this._emit("change");
  }

  /** @private */
  _onStatus(p) {
    this._setRecording({
      status: p.status,
      recordingId: p.recording_id ?? null,
      provider: p.provider ?? null,
      reason: p.reason ?? null,
    });
    this._emit("change");
  }

  /** @private */
  _onRecordingAvailable(p) {
    /** @type {RecordingFile} */
    const recording = {
      recordingId: p.recording_id,
      name: p.name,
      durationS: p.duration_s,
      sizeBytes: p.size_bytes,
      url: p.url,
    };
    this.room.recordings.set(recording.recordingId, recording);
    this._emit("recordingAvailable", { recording: { ...recording } });
    this._emit("change");
  }

  /** @private */
  _onRecordingDeleted(p) {
    this.room.recordings.delete(p.recording_id);
    this._emit("recordingDeleted", { recordingId: p.recording_id });
    this._emit("change");
  }

  /** @private */
  _onError(namespace, p) {
    this._emitError(namespace, p.error, p.detail);
  }

  /**
   * Moves the recording to a new status; emits `status` when something changed.
   * `since` is kept while the same recording stays in the same status.
   * @private
   */
  _setRecording(next) {
    const previous = this.room.recording;
    const status = next.status;
    const recordingId =
      status === "inactive" ? null : next.recordingId ?? previous.recordingId ?? null;
    const unchanged = previous.status === status && previous.recordingId === recordingId;
    const recording = {
      status,
      recordingId,
      provider: next.provider ?? previous.provider,
      reason: next.reason ?? (unchanged ? previous.reason : null),
      since: unchanged ? previous.since : Date.now(),
    };
    this.room.recording = recording;
    if (!sameRecording(previous, recording)) {
      this._emit("status", { recording: { ...recording }, previous });
    }
  }

  // ---- events --------------------------------------------------------------

  /** @private */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("connection", { state });
    this._emit("change");
  }

  /** @private */
  _emitError(namespace, error, detail) {
    this._emit("error", { namespace, error, detail: detail ?? null, message: describeError(error) });
  }

  /** @private */
  _emit(type, detail = null) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

const HANDLERS = {
  "control.join_success": OnairClient.prototype._onJoinSuccess,
  "control.joined": OnairClient.prototype._onJoined,
  "control.left": OnairClient.prototype._onLeft,
  "control.update": OnairClient.prototype._onUpdate,
  "control.participant_count": OnairClient.prototype._onParticipantCount,
  "control.error": function (p) { this._onError("control", p); },
  "recording.started": OnairClient.prototype._onStarted,
  "recording.stopped": OnairClient.prototype._onStopped,
  "recording.status": OnairClient.prototype._onStatus,
  "recording.recording_available": OnairClient.prototype._onRecordingAvailable,
  "recording.recording_deleted": OnairClient.prototype._onRecordingDeleted,
  "recording.error": function (p) { this._onError("recording", p); },
};

/** @returns {Participant} */
function toParticipant(raw, self) {
  return {
    id: raw.id,
    displayName: raw.control?.display_name ?? "",
    role: raw.control?.role ?? "user",
    kind: raw.control?.participation_kind ?? "user",
    joinedAt: raw.control?.joined_at ?? null,
    consents: Boolean(raw.recording?.consents_recording),
    self,
  };
}

/**
 * The recording from `join_success` (`null`, or `{status, recording_id?}`).
 * The start time is not sent, so `since` is kept only for the same recording.
 * @returns {Recording}
 */
function fromRecordingData(data, previous) {
  if (!data) return { ...INACTIVE, provider: previous.provider };
  const recordingId = data.recording_id ?? null;
  const same = previous.status === data.status && previous.recordingId === recordingId;
  return {
    status: data.status,
    recordingId,
    provider: previous.provider,
    reason: null,
    since: same ? previous.since : null,
  };
}

function sameRecording(a, b) {
  return a.status === b.status && a.recordingId === b.recordingId && a.reason === b.reason;
}
