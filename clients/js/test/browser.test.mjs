// The page in a real browser: Debian's Chromium driven by playwright-core.
// Screenshots of every step land in test-artifacts/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

import { admin, roomName, root, signedToken, startServer } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const ARTIFACTS = resolve(root, "test-artifacts");
const DESKTOP = { width: 1100, height: 800 };
const PHONE = { width: 390, height: 844 };
const WAIT_MS = 5000;

let browser;
let profiles;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (test.sh does)`);
  // playwright gives every launch a fresh temporary profile; keep its other files apart too.
  profiles = mkdtempSync(join(tmpdir(), "onair-chromium-"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    downloadsPath: profiles,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (profiles) rmSync(profiles, { recursive: true, force: true });
});

/** A page in a context of its own (its own cookies and storage), with its problems recorded. */
async function openPage(viewport) {
  const context = await browser.newContext({ viewport, reducedMotion: "reduce" });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(`page error: ${e.message}`));
  // A normal use of the page makes no request that fails: any console error
  // (Chromium logs every failed request as one) is a problem.
  page.on("console", (m) => {
    if (m.type() === "error") page.problems.push(`console: ${m.text()}`);
  });
  return page;
}

async function shot(page, name, fullPage = true) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage });
}

/** Waits until the element's text matches. */
async function waitText(page, selector, pattern) {
  try {
    await page.waitForFunction(
      ([sel, source, flags]) => {
        const el = document.querySelector(sel);
        return el && new RegExp(source, flags).test(el.textContent);
      },
      [selector, pattern.source, pattern.flags],
      { timeout: WAIT_MS },
    );
  } catch {
    const text = await page.locator(selector).textContent().catch(() => "(absent)");
    assert.fail(`${selector} should match ${pattern}, has ${JSON.stringify(text)}`);
  }
}

/** Waits until the recording light shows `status` in both pages. */
async function bothShow(pages, status, words) {
  for (const page of pages) {
    await page.waitForSelector(`#light[data-status="${status}"]`, { timeout: WAIT_MS });
    await waitText(page, "#light-text", words);
  }
}

/** Joins through the development-mode form. */
async function devJoin(page, url, { name, room, role }) {
  await page.goto(`${url}/?room=${room}`);
  await page.waitForSelector("#dev-form:not([hidden])", { timeout: WAIT_MS });
  await page.fill("#dev-name", name);
  assert.equal(await page.inputValue("#dev-room"), room, "?room= fills in the room");
  await page.selectOption("#dev-role", role);
  await page.click("#dev-form button[type=submit]");
  await page.waitForSelector("#room:not([hidden])", { timeout: WAIT_MS });
}

function personRow(page, name) {
  return page.locator("#people li", { hasText: name });
}

test("moderator and participant in one room: consent, start, stop", async () => {
  const server = await startServer();
  const room = roomName("browser");
  const mod = await openPage(DESKTOP);
  const part = await openPage(PHONE);
  try {
    await mod.goto(server.url);
    await mod.waitForSelector("#dev-form:not([hidden])", { timeout: WAIT_MS });
    await shot(mod, "01-join-form");

    await devJoin(mod, server.url, { name: "Ada", room, role: "moderator" });
    await devJoin(part, server.url, { name: "Grace", room, role: "user" });
    await bothShow([mod, part], "inactive", /^Not recording$/);
    await waitText(mod, "#room-name", new RegExp(`^${room}$`));

    // Roles and consent as the moderator sees them; consent is off by default.
    await waitText(mod, "#people-count", /\(2\)/);
    assert.match(await personRow(mod, "Ada (you)").textContent(), /Moderator.*No consent/);
    await mod.waitForFunction(() => document.querySelectorAll("#people li").length === 2);
    assert.match(await personRow(mod, "Grace").textContent(), /Participant.*No consent/);
    assert.equal(await part.isChecked("#consent"), false);

    // Only the moderator has the buttons.
    assert.equal(await mod.isVisible("#start"), true);
    assert.equal(await mod.isEnabled("#start"), true);
    assert.equal(await mod.isEnabled("#stop"), false);
    assert.equal(await part.isVisible("#start"), false);
    assert.equal(await part.isVisible("#stop"), false);

    // The participant consents, with the keyboard; the moderator's list shows it.
    await part.focus("#consent");
    await part.keyboard.press("Space");
    assert.equal(await part.isChecked("#consent"), true);
    await waitText(mod, "#people li:nth-child(2)", /Grace.*✓ Consents to recording/);
    assert.equal(await personRow(mod, "Grace").locator("[data-consent]").getAttribute("data-consent"), "true");
    await waitText(part, "#people li:first-child", /Grace \(you\).*✓ Consents/);
    await shot(mod, "02-moderator-sees-consent");

    // The moderator starts; both pages show the red light with the time.
    await mod.click("#start");
    await bothShow([mod, part], "recording", /^Recording$/);
    for (const page of [mod, part]) {
      await waitText(page, "#light-time", /^\d\d:\d\d$/);
      assert.equal(await page.title(), "● Recording · onair");
    }
    assert.equal(await mod.isEnabled("#stop"), true);
    assert.equal(await mod.isEnabled("#start"), false);
    // Grace consented, so no warning for her; Ada did not, so she is warned.
    assert.equal(await part.isVisible("#consent-warning"), false);
    assert.equal(await mod.isVisible("#consent-warning"), true);
    await mod.waitForTimeout(1100); // let the clock tick once for the screenshot
    await shot(mod, "03-moderator-recording");
    await shot(part, "03-participant-recording-phone");

    // The moderator stops; both are idle again.
    await mod.click("#stop");
    await bothShow([mod, part], "inactive", /^Not recording$/);
    assert.equal(await mod.title(), "onair");
    await shot(part, "04-participant-idle-phone");

    // A recording handed in by the manual recorder appears in both pages.
    {
      // The file itself is handed in (multipart), so the page plays it from onair.
      const form = new FormData();
      form.set("recording_id", "11111111-2222-4333-8444-555555555555");
      form.set("duration_s", "75.5");
      form.set("file", new Blob([new Uint8Array(1234567)], { type: "video/mp4" }), "standup.mp4");
      const handedIn = await fetch(`${server.url}/v1/rooms/${room}/recordings`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.adminKey}` },
        body: form,
      });
      assert.equal(handedIn.status, 201, await handedIn.text());
      for (const page of [mod, part]) {
        await waitText(page, "#recordings", /standup\.mp4.*01:15.*1\.2 MB/);
      }
      assert.equal(await mod.locator("#recordings button", { hasText: "Delete" }).count(), 1);
      assert.equal(await part.locator("#recordings button", { hasText: "Delete" }).count(), 0);
      // Playing it uses a signed media URL: a <video> cannot send the token.
      await part.locator("#recordings button", { hasText: "Play" }).click();
      const video = part.locator("#recordings video");
      await video.waitFor({ timeout: 10_000 });
      assert.match(await video.getAttribute("src"), /\/media\?expires=\d+&signature=[0-9a-f]+$/);
    }

    // The moderator's page on a phone.
    await mod.setViewportSize(PHONE);
    await shot(mod, "05-moderator-phone");

    // The participant leaves; the moderator's list follows.
    await part.click("#leave");
    await part.waitForSelector("#join:not([hidden])", { timeout: WAIT_MS });
    await waitText(mod, "#people-count", /\(1\)/);

    assert.deepEqual([...mod.problems, ...part.problems], []);
  } finally {
    await mod.context().close();
    await part.context().close();
    await server.stop();
  }
});

test("a recorder that confirms: starting, failed with the reason, stopping", async () => {
  const server = await startServer({ env: { ONAIR_RECORDING__MANUAL_CONFIRM: "true" } });
  const room = roomName("confirm");
  const mod = await openPage(DESKTOP);
  const part = await openPage(PHONE);
  const report = (status, extra = {}) =>
    admin(server, "POST", `/v1/rooms/${room}/recording/status`, { status, ...extra });
  const recordingId = async () => {
    const snapshot = await admin(server, "GET", `/v1/rooms/${room}`);
    return JSON.stringify(snapshot.body).match(/"recording_id":"([^"]+)"/)?.[1];
  };
  try {
    await devJoin(mod, server.url, { name: "Ada", room, role: "moderator" });
    await devJoin(part, server.url, { name: "Linus", room, role: "guest" });

    await mod.click("#start");
    await bothShow([mod, part], "initializing", /^Starting the recording…$/);
    await shot(part, "06-participant-starting-phone");
    const id = await recordingId();
    assert.ok(id, "the room snapshot names the recording");

    assert.equal((await report("recording", { recording_id: id })).status, 200);
    await bothShow([mod, part], "recording", /^Recording$/);

    assert.equal((await report("failed", { recording_id: id, reason: "disk full" })).status, 200);
    await bothShow([mod, part], "failed", /^The recording failed$/);
    for (const page of [mod, part]) await waitText(page, "#light-reason", /^Reason: disk full\.$/);
    await shot(mod, "07-moderator-failed");
    await shot(part, "07-participant-failed-phone");
    // After a failure the moderator can start again.
    assert.equal(await mod.isEnabled("#start"), true);

    await mod.click("#start");
    await bothShow([mod, part], "initializing", /^Starting/);
    const second = await recordingId();
    await report("recording", { recording_id: second });
    await bothShow([mod, part], "recording", /^Recording$/);
    await mod.click("#stop");
    await bothShow([mod, part], "stopping", /^Stopping the recording…$/);
    await report("stopped", { recording_id: second });
    await bothShow([mod, part], "inactive", /^Not recording$/);

    assert.deepEqual([...mod.problems, ...part.problems], []);
  } finally {
    await mod.context().close();
    await part.context().close();
    await server.stop();
  }
});

test("without development mode: a token link joins, and errors are in words", async () => {
  const secret = "a-test-secret-that-is-long-enough-for-hs256";
  const server = await startServer({ env: { ONAIR_AUTH__JWT_SECRET: secret } });
  const room = roomName("token");
  const page = await openPage(PHONE);
  try {
    // A pasted token that is not one.
    await page.goto(server.url);
    await page.waitForSelector("#token-box[open]", { timeout: WAIT_MS });
    assert.equal(await page.isVisible("#dev-form"), false, "no token minting outside development mode");
    await page.fill("#token", "hello");
    await page.click("#token-form button[type=submit]");
    await waitText(page, "#alert-text", /does not look like an access token/);

    // A token that does not verify.
    const forged = signedToken("some-other-secret-that-is-long-enough", { room, name: "Eve" });
    await page.fill("#token", forged);
    await page.click("#token-form button[type=submit]");
    await waitText(page, "#alert-text", /access token is not valid/);
    await shot(page, "08-token-refused-phone");
    // That refusal is the one failed request here, on purpose; nothing else failed.
    assert.deepEqual(page.problems, [
      "console: Failed to load resource: the server responded with a status of 401 (Unauthorized)",
    ]);
    page.problems.length = 0;

    // A link with ?token= joins at once and drops the token from the address bar.
    const token = signedToken(secret, { room, name: "Grace", role: "user" });
    await page.goto(`${server.url}/?token=${token}`);
    await page.waitForSelector("#room:not([hidden])", { timeout: WAIT_MS });
    assert.equal(new URL(page.url()).search, "");
    await waitText(page, "#whoami", /You are Grace, participant\./);
    await waitText(page, "#light-text", /^Not recording$/);
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});
