// The page's files as onair serves them: types, security headers, caching.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

import { root, startServer } from "./support.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

const files = [
  ["/", "text/html; charset=utf-8"],
  ["/app.js", "text/javascript; charset=utf-8"],
  ["/style.css", "text/css; charset=utf-8"],
  ["/favicon.svg", "image/svg+xml"],
  ["/onair-client.js", "text/javascript; charset=utf-8"],
];

for (const [path, type] of files) {
  test(`GET ${path} is ${type}, same-origin only, revalidated`, async () => {
    const response = await fetch(`${server.url}${path}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), type);
    const csp = response.headers.get("content-security-policy");
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /connect-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:|\*/);
    assert.equal(response.headers.get("cache-control"), "no-cache");
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    const etag = response.headers.get("etag");
    assert.ok(etag);
    await response.arrayBuffer();

    const again = await fetch(`${server.url}${path}`, { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
  });
}

test("the page loads the very client in clients/js", async () => {
  const served = await fetch(`${server.url}/onair-client.js`).then((r) => r.text());
  assert.equal(served, readFileSync(resolve(root, "onair-client.js"), "utf8"));
  const page = await fetch(`${server.url}/`).then((r) => r.text());
  assert.match(page, /<script type="module" src="\/app.js">/);
  // Nothing from elsewhere, nothing inline.
  assert.doesNotMatch(page, /(src|href)="(https?:)?\/\//);
  assert.doesNotMatch(page, /<script>(?!<\/script>)|<style>|style="/);
});
