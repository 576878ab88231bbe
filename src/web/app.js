// The onair page: join a room, see its recording light, give or withdraw
// consent, and (moderators) start and stop recordings. Built on the same
// client developers use, served by onair at /onair-client.js.

import { OnairClient, OnairError, decodeToken, describeError } from "/onair-client.js";

const $ = (id) => document.getElementById(id);

/** @type {OnairClient|null} */
let client = null;
/** The participant token, kept in memory only (for the recordings API). */
let token = null;
/** "start" or "stop" while a request is on its way, so the light answers at once. */
let pending = null;
let pendingTimer = null;
let tick = null;
/** Recordings from the catalog (`GET /v1/recordings`), by id; `null` when there is none. */
let catalog = null;
let catalogNote = "";

const ROLE_NAMES = { moderator: "Moderator", user: "Participant", guest: "Guest" };

// ---- joining ---------------------------------------------------------------

async function init() {
  $("alert-close").addEventListener("click", hideAlert);
  $("dev-form").addEventListener("submit", onDevJoin);
  $("token-form").addEventListener("submit", onTokenJoin);
  $("start").addEventListener("click", onStart);
  $("stop").addEventListener("click", onStop);
  $("consent").addEventListener("change", (e) => client?.setConsent(e.target.checked));
  $("leave").addEventListener("click", leave);

  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("dev-room").value = params.get("room");
  const linked = params.get("token");
  if (linked) {
    // Keep the token out of the history, bookmarks and screenshots of the address bar.
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.size ? `?${params}` : ""));
  }

  const dev = await isDevMode();
  $("checking").hidden = true;
  $("dev-form").hidden = !dev;
  $("token-box").open = !dev;
  if (dev) $("dev-name").focus();
  if (linked) {
    $("token").value = linked;
    $("token-box").open = true;
    await join(linked);
  }
}

/** Whether the server runs in development mode (and so serves `POST /v1/dev/token`). */
async function isDevMode() {
  try {
    const response = await fetch("/v1/server");
    if (!response.ok) return false;
    const server = await response.json();
    return server.dev_mode === true;
  } catch {
    return false;
  }
}

async function onDevJoin(event) {
  event.preventDefault();
  hideAlert();
  const form = event.target;
  const body = {
    name: form.name.value.trim(),
    room: form.room.value.trim(),
    role: form.role.value,
  };
  setBusy(form, true);
  try {
    const response = await fetch("/v1/dev/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      showAlert(answer.code === "invalid_room"
        ? "That room name is not allowed. Use letters, digits, dots, dashes and underscores."
        : answer.code === "invalid_name"
          ? "Please enter a name of at most 100 characters."
          : `The server refused to give a token: ${answer.message ?? response.status}.`);
      return;
    }
    const params = new URLSearchParams({ room: body.room });
    history.replaceState(null, "", `${location.pathname}?${params}`);
    await join(answer.token);
  } catch {
    showAlert(describeError("connection_failed"));
  } finally {
    setBusy(form, false);
  }
}

async function onTokenJoin(event) {
  event.preventDefault();
  hideAlert();
  const value = $("token").value.trim();
  const claims = decodeToken(value);
  if (!claims) {
    showAlert("That does not look like an access token. Copy the whole token and try again.");
    return;
  }
  setBusy(event.target, true);
  try {
    await join(value);
  } finally {
    setBusy(event.target, false);
  }
}

async function join(jwt) {
  client?.close();
  token = jwt;
  catalog = null;
  catalogNote = "";
  client = new OnairClient({ token: jwt });
  client.addEventListener("change", render);
  client.addEventListener("status", onStatus);
  client.addEventListener("error", onClientError);
  client.addEventListener("connection", renderConnection);
  client.addEventListener("recordingDeleted", (e) => {
    catalog?.delete(e.detail.recordingId);
  });
  try {
    await client.connect();
  } catch (error) {
    client = null;
    token = null;
    renderConnection();
    showAlert(error instanceof OnairError ? describeError(error.code) : String(error));
    return;
  }
  $("join").hidden = true;
  $("room").hidden = false;
  $("room-title").focus();
  render();
  loadCatalog();
}

function leave() {
  client?.close();
  client = null;
  token = null;
  clearPending();
  clearInterval(tick);
  tick = null;
  $("room").hidden = true;
  $("join").hidden = false;
  document.title = "onair";
  $("consent").checked = false;
  renderConnection();
}

// ---- recording -------------------------------------------------------------

function onStart() {
  hideAlert();
  setPending("start");
  client.start();
}

function onStop() {
  hideAlert();
  setPending("stop");
  client.stop();
}

function setPending(what) {
  pending = what;
  clearTimeout(pendingTimer);
  // If the server never answers, stop pretending after a while.
  pendingTimer = setTimeout(() => { pending = null; render(); }, 15000);
  render();
}

function clearPending() {
  pending = null;
  clearTimeout(pendingTimer);
}

function onStatus(event) {
  clearPending();
  const { recording } = event.detail;
  $("announce").textContent = lightWords(recording).text;
  if (recording.status === "inactive" && recording.reason) {
    showAlert(recording.reason === "recorder_timeout"
      ? describeError("recorder_timeout")
      : `The recording ended: ${recording.reason}.`);
  }
}

function onClientError(event) {
  const { namespace, error, message } = event.detail;
  if (namespace === "recording") clearPending();
  // The room's status event explains a timeout to everyone; the error adds nothing.
  if (error === "recorder_timeout") return;
  showAlert(message);
}

// ---- recordings --------------------------------------------------------------

/** Loads the room's recordings; says so plainly when the server has no catalog. */
async function loadCatalog() {
  const room = client?.room.name;
  if (!room) return;
  try {
    const response = await fetch(`/v1/recordings?room=${encodeURIComponent(room)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    if (response.status === 404) {
      catalogNote = "This server has no recordings catalog, so recordings cannot be listed here.";
    } else if (response.status === 401 || response.status === 403) {
      catalogNote = "Your access does not allow listing this room's recordings.";
    } else if (!response.ok) {
      catalogNote = `The recordings could not be loaded (error ${response.status}).`;
    } else {
      const body = await response.json();
      const list = Array.isArray(body) ? body : body.recordings ?? [];
      catalog = new Map(list.map((r) => {
        const file = {
          recordingId: r.recording_id ?? r.id,
          name: r.name,
          durationS: r.duration_s,
          sizeBytes: r.size_bytes,
          url: r.url ?? `/v1/recordings/${encodeURIComponent(r.recording_id ?? r.id)}/media`,
        };
        return [file.recordingId, file];
      }));
      catalogNote = "";
    }
  } catch {
    catalogNote = "The recordings could not be loaded.";
  }
  render();
}

/**
 * A signed, expiring media URL for a recording: `<video>` and download links
 * cannot send the token, so the page asks the server for a URL that needs none.
 */
async function signedUrl(file) {
  try {
    const response = await fetch(`/v1/recordings/${encodeURIComponent(file.recordingId)}/url`, {
      headers: { authorization: `Bearer ${token}` },
    });
    if (response.ok) return (await response.json()).url;
    showAlert(response.status === 404
      ? "That recording is gone."
      : "You are not allowed to play this recording.");
  } catch {
    showAlert("The recording could not be reached. Check your connection and try again.");
  }
  return null;
}

async function deleteRecording(file) {
  if (!confirm(`Delete the recording “${file.name}”? This cannot be undone.`)) return;
  try {
    const response = await fetch(`/v1/recordings/${encodeURIComponent(file.recordingId)}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${token}` },
    });
    if (response.status === 401 || response.status === 403) {
      showAlert("You are not allowed to delete this recording.");
    } else if (response.status === 404) {
      showAlert("That recording is already gone, or this server cannot delete recordings.");
    } else if (!response.ok) {
      showAlert(`The recording could not be deleted (error ${response.status}).`);
    } else {
      catalog?.delete(file.recordingId);
      client?.room.recordings.delete(file.recordingId);
      render();
    }
  } catch {
    showAlert(describeError("connection_failed"));
  }
}

// ---- rendering ---------------------------------------------------------------

function render() {
  if (!client) return;
  const { room } = client;
  $("room-name").textContent = room.name ?? "";
  const self = client.self;
  $("whoami").textContent = self
    ? `You are ${self.displayName}, ${ROLE_NAMES[self.role]?.toLowerCase() ?? self.role}.`
    : "";
  renderLight();
  renderControls();
  $("consent").checked = room.consent;
  const warning = $("consent-warning");
  const { status } = room.recording;
  warning.hidden = room.consent || !(status === "recording" || status === "initializing");
  warning.textContent = status === "initializing"
    ? "A recording is starting and you have not consented to being recorded."
    : "A recording is running and you have not consented to being recorded.";
  renderPeople();
  renderRecordings();
}

function lightWords(recording) {
  if (pending === "start" && ["inactive", "failed"].includes(recording.status)) {
    return { status: "initializing", text: "Starting the recording…" };
  }
  if (pending === "stop" && recording.status === "recording") {
    return { status: "stopping", text: "Stopping the recording…" };
  }
  switch (recording.status) {
    case "initializing": return { status: "initializing", text: "Starting the recording…" };
    case "recording": return { status: "recording", text: "Recording" };
    case "stopping": return { status: "stopping", text: "Stopping the recording…" };
    case "failed": return { status: "failed", text: "The recording failed" };
    default: return { status: "inactive", text: "Not recording" };
  }
}

function renderLight() {
  const recording = client.room.recording;
  const { status, text } = lightWords(recording);
  $("light").dataset.status = status;
  $("light-text").textContent = text;
  const reason = $("light-reason");
  if (status === "failed") {
    reason.hidden = false;
    reason.textContent = `Reason: ${recording.reason ?? "the recorder did not say"}.`;
  } else {
    reason.hidden = true;
  }
  document.title = status === "recording" ? "● Recording · onair" : "onair";
  clearInterval(tick);
  tick = null;
  if (status === "recording") {
    renderTime();
    tick = setInterval(renderTime, 1000);
  } else {
    $("light-time").textContent = "";
  }
}

function renderTime() {
  const since = client?.room.recording.since;
  $("light-time").textContent = since == null
    ? "started before you joined"
    : elapsed(Date.now() - since);
}

function elapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  return h ? `${h}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}` : `${two(Math.floor(s / 60))}:${two(s % 60)}`;
}

function renderControls() {
  const box = $("moderator");
  box.hidden = !client.canRecord;
  if (box.hidden) return;
  const { status } = client.room.recording;
  const joined = client.state === "joined";
  const idle = status === "inactive" || status === "failed";
  $("start").disabled = !joined || !idle || pending !== null;
  $("stop").disabled = !joined || !(status === "recording" || status === "initializing") || pending !== null;
}

function renderPeople() {
  const list = $("people");
  const people = [...client.room.participants.values()]
    .sort((a, b) => Number(b.self) - Number(a.self));
  const headcount = client.room.headcount;
  // A large room shows a non-moderator only the moderators: say how many are there in all.
  $("people-count").textContent = headcount && headcount.count > people.length
    ? `(${headcount.count}, ${headcount.consenting} consenting; moderators shown)`
    : `(${people.length})`;
  list.replaceChildren(...people.map((p) => {
    const li = document.createElement("li");
    li.dataset.id = p.id;
    const name = span("name", p.self ? `${p.displayName} (you)` : p.displayName);
    const role = span("badge role", ROLE_NAMES[p.role] ?? p.role);
    const consent = span(
      `badge ${p.consents ? "consent-yes" : "consent-no"}`,
      p.consents ? "✓ Consents to recording" : "✕ No consent",
    );
    consent.dataset.consent = String(p.consents);
    const badges = span("badges", "");
    badges.append(role, consent);
    li.append(name, badges);
    return li;
  }));
}

function renderRecordings() {
  const files = new Map(catalog ?? []);
  for (const [id, file] of client.room.recordings) files.set(id, file);
  const note = $("recordings-note");
  note.textContent = catalogNote
    || (files.size ? "" : catalog ? "No recordings yet." : "Loading…");
  if (catalogNote && files.size) {
    note.textContent += " Recordings that finished while you were here are listed below.";
  }
  const list = $("recordings");
  const keep = new Map([...list.children].map((li) => [li.dataset.id, li]));
  list.replaceChildren(...[...files.values()].map((file) => {
    // Keep an open player playing across re-renders.
    const existing = keep.get(file.recordingId);
    if (existing) return existing;
    const li = document.createElement("li");
    li.dataset.id = file.recordingId;
    li.append(
      span("name", file.name),
      span("badge", formatDuration(file.durationS)),
      span("badge", formatSize(file.sizeBytes)),
    );
    const play = button("Play", async () => {
      if (li.querySelector("video")) return;
      const src = await signedUrl(file);
      if (!src || li.querySelector("video")) return;
      const video = document.createElement("video");
      video.controls = true;
      video.preload = "metadata";
      video.src = src;
      video.setAttribute("aria-label", `Recording ${file.name}`);
      li.append(video);
      video.focus();
    });
    const download = button("Download", async () => {
      const src = await signedUrl(file);
      if (!src) return;
      const link = document.createElement("a");
      link.href = src;
      link.download = file.name;
      link.click();
    });
    li.append(play, download);
    if (client.canRecord) li.append(button("Delete", () => deleteRecording(file), "danger"));
    return li;
  }));
}

function renderConnection() {
  const el = $("connection");
  const state = client?.state ?? "idle";
  el.dataset.state = state;
  el.textContent = {
    idle: "",
    connecting: "Connecting…",
    joined: "Connected",
    reconnecting: "Reconnecting…",
    closed: client ? "Disconnected" : "",
  }[state];
  if (client && state === "joined") hideAlertIf(describeError("connection_lost"));
}

// ---- small helpers -----------------------------------------------------------

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function button(text, onClick, className = "") {
  const el = document.createElement("button");
  el.type = "button";
  el.className = className;
  el.textContent = text;
  el.addEventListener("click", onClick);
  return el;
}

function formatDuration(seconds) {
  return typeof seconds === "number" ? elapsed(seconds * 1000) : "length unknown";
}

function formatSize(bytes) {
  if (typeof bytes !== "number") return "size unknown";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function setBusy(form, busy) {
  for (const el of form.querySelectorAll("button, input, select, textarea")) el.disabled = busy;
}

function showAlert(text) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
}

function hideAlert() {
  $("alert").hidden = true;
}

function hideAlertIf(text) {
  if ($("alert-text").textContent === text) hideAlert();
}

init();
