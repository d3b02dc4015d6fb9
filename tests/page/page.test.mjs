// The page in a real browser against two real daemons: both devices connected, a
// write made by Python on the other device in the event feed, a conflict made by
// offline edits shown side by side and resolved with "Keep theirs", which the other
// device's database then holds, the keyboard, an invite made on the page that a third
// device joins with, and its revocation. Screenshots go to shots/ (not committed).
//
// Run by .ci/run after the build: node tests/page/page.test.mjs (SHOAL_BIN names the
// binary; target/debug/shoal by default).

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.SHOAL_BIN || resolve(here, "../../target/debug/shoal");
const dir = mkdtempSync(join(tmpdir(), "shoal-page-"));
const shots = join(here, "shots");
mkdirSync(shots, { recursive: true });
const env = { ...process.env, SHOAL_DATA_DIR: join(dir, "data"), NO_COLOR: "1" };
const db = (name) => join(dir, `${name}.db`);
const daemons = [];

function shoal(...args) {
  return execFileSync(bin, args, { env, encoding: "utf8" });
}

function python(name, script) {
  execFileSync("python3", ["-c",
    "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()",
    db(name), script]);
}

function query(name, sql) {
  return JSON.parse(execFileSync("python3", ["-c",
    "import sqlite3, sys, json\nc = sqlite3.connect(sys.argv[1])\nprint(json.dumps(c.execute(sys.argv[2]).fetchall()))",
    db(name), sql], { encoding: "utf8" }));
}

// `shoal up NAME`, resolved with the page's login link once it is up.
function up(name) {
  return new Promise((ok, fail) => {
    const child = spawn(bin, ["up", db(name)], { env, stdio: ["ignore", "pipe", "pipe"] });
    daemons.push(child);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^page (\S+)/m);
      if (m) ok({ child, link: m[1] });
    });
    child.stderr.on("data", () => {});
    child.on("exit", (code) => fail(new Error(`shoal up ${name} exited (${code}): ${out}`)));
  });
}

async function until(what, check, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function stop(child) {
  return new Promise((ok) => {
    if (child.exitCode !== null) return ok();
    child.removeAllListeners("exit");
    child.on("exit", ok);
    child.kill("SIGTERM");
  });
}

let browser;
let page;
try {
  for (const [k, v] of [["relay", "none"], ["mdns", "false"], ["api", "127.0.0.1:0"],
    ["backoff_min", "100ms"], ["backoff_max", "1s"]]) shoal("config", "set", k, v);
  for (const name of ["a", "b"]) {
    python(name, "CREATE TABLE todo (id TEXT PRIMARY KEY, title TEXT, done INTEGER);");
    shoal("init", db(name));
    shoal("track", db(name), "todo");
  }
  shoal("group", db("a"), "create", "home", "--table", "todo");
  const a = await up("a");
  const ticket = JSON.parse(shoal("invite", db("a"), "--no-qr", "--json")).ticket;
  let b = await up("b");
  shoal("join", db("b"), ticket);
  const bId = JSON.parse(shoal("status", db("b"), "--json")).device;

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    // launch() gives the browser a fresh, empty profile of its own.
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => console.log(`console: ${m.text()}`));
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const started = Date.now();
  await page.goto(a.link);
  await page.waitForSelector(`#peers tr[data-device="${bId}"] td.on`);
  const loadMs = await page.evaluate(() => {
    const n = performance.getEntriesByType("navigation")[0];
    return n ? n.loadEventEnd - n.startTime : 0;
  });
  if (new URL(page.url()).search !== "") throw new Error(`the login token stayed in the address: ${page.url()}`);
  await page.screenshot({ path: join(shots, "devices.png"), fullPage: true });
  console.log(`page: loaded in ${loadMs.toFixed(1)} ms; B shown connected ${Date.now() - started} ms after opening the link`);

  // A write by Python on B reaches the page's feed by itself, each of several.
  const applied = () => page.$$eval('#feed li[data-event="changes_applied"]', (l) => l.length);
  const latencies = [];
  for (let i = 1; i <= 7; i++) {
    const before = await applied();
    python("b", i === 1 ? "INSERT INTO todo VALUES ('t1', 'milk', 0);" : `INSERT INTO todo VALUES ('x${i}', 'more', 0);`);
    // Python has committed and exited: from here to the page showing it.
    const wrote = Date.now();
    await page.waitForFunction((n) =>
      document.querySelectorAll('#feed li[data-event="changes_applied"]').length > n, before, { polling: 5 });
    latencies.push(Date.now() - wrote);
  }
  const feed = await page.textContent("#feed");
  if (!/applied 1 change\(s\)/.test(feed)) throw new Error(`the feed does not count the change: ${feed}`);
  latencies.sort((x, y) => x - y);
  console.log(`page: a write by Python on B in A's feed after ${latencies[3]} ms (median of 7 from Python's commit; ${latencies.join(", ")} ms)`);
  await page.screenshot({ path: join(shots, "feed.png"), fullPage: true });

  // Apart, both edit t1; together again, the conflict is in the inbox.
  await stop(b.child);
  await page.waitForSelector(`#peers tr[data-device="${bId}"] td.off`);
  python("a", "UPDATE todo SET title = 'oat milk' WHERE id = 't1';");
  python("b", "UPDATE todo SET title = 'almond milk' WHERE id = 't1';");
  b = await up("b");
  // The list redraws itself on events: a locator finds the button again each time.
  const item = page.locator("#conflicts button").first();
  await item.waitFor();
  if (!/todo/.test(await page.textContent("#by-table"))) throw new Error("no count by table");
  await item.click();
  await page.waitForSelector("#conflict:not([hidden])");
  const mine = await page.textContent("#mine");
  const theirs = await page.textContent("#theirs");
  if (!mine.includes("oat milk") || !theirs.includes("almond milk")) {
    throw new Error(`both versions are not shown: mine ${mine}; theirs ${theirs}`);
  }
  if (!(await page.$('#mine dd.differs[data-column="title"]'))) throw new Error("the differing column is not marked");
  await page.screenshot({ path: join(shots, "conflict.png"), fullPage: true });
  await page.click("#keep-theirs");
  await until("the conflict resolved on the page", async () => /resolved/.test(await page.textContent("#conflict-meta")));
  await until("B holding the resolution", () => {
    const rows = query("b", "SELECT title FROM todo WHERE id = 't1'");
    const open = JSON.parse(shoal("conflicts", db("b"), "list", "--json"));
    return rows.length === 1 && rows[0][0] === "almond milk" && open.length === 0;
  });
  const onA = query("a", "SELECT title FROM todo WHERE id = 't1'")[0][0];
  if (onA !== "almond milk") throw new Error(`A holds ${onA}`);

  // Keyboard: from "Sync now", Tab reaches the auto-sync switch and Space turns it
  // off, and on again, on the daemon.
  await page.focus("#sync-now");
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  if (focused !== "auto") throw new Error(`Tab from Sync now reaches ${focused}`);
  const asked = page.waitForResponse((r) => r.url().endsWith("/v1/sync/auto") && r.request().method() === "PUT");
  await page.keyboard.press("Space");
  const answer = await (await asked).json();
  if (answer.on !== false) throw new Error(`the switch did not turn auto-sync off: ${JSON.stringify(answer)}`);
  const back = page.waitForResponse((r) => r.url().endsWith("/v1/sync/auto") && r.request().method() === "PUT");
  await page.keyboard.press("Space");
  if ((await (await back).json()).on !== true) throw new Error("the switch did not turn auto-sync on again");
  // An invite made on the page lets a third device in, and the page revokes it.
  await page.click("#group-list button:has-text('Invite a device')");
  await page.selectOption("#invite-role", "reader");
  await page.click("#invite-make");
  await page.waitForSelector("#invite-out:not([hidden])");
  const pageTicket = await page.inputValue("#invite-ticket");
  if (!pageTicket.startsWith("shoalinvite")) throw new Error(`the dialog shows no ticket: ${pageTicket}`);
  if (!(await page.getAttribute("#invite-qr", "src")).startsWith("data:image/svg+xml")) throw new Error("no QR code");
  await page.screenshot({ path: join(shots, "invite.png"), fullPage: true });
  await page.click("#invite-dialog button.close");
  python("c", "CREATE TABLE todo (id TEXT PRIMARY KEY, title TEXT, done INTEGER);");
  shoal("init", db("c"));
  shoal("track", db("c"), "todo");
  shoal("join", db("c"), pageTicket);
  const cId = JSON.parse(shoal("status", db("c"), "--json")).device;
  const revokeC = `#group-list button[aria-label="Revoke ${cId.slice(0, 10)}"]`;
  await page.waitForSelector(revokeC);
  if (!(await page.textContent("#group-list")).includes("reader")) throw new Error("C is not shown as a reader");
  await page.click(revokeC);
  await page.waitForSelector("#revoke-dialog[open]");
  await page.click("#revoke-yes");
  await page.waitForSelector(revokeC, { state: "detached" });
  const members = JSON.parse(shoal("group", db("a"), "show", "home", "--json")).members;
  const c = members.find((m) => m.device === cId);
  if (!c || c.role !== null) {
    throw new Error(`A's group still counts C as a member: ${JSON.stringify(members)}`);
  }

  // A phone-sized window.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(shots, "phone.png"), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) throw new Error(`the page is ${overflow} px wider than a phone`);
  if (errors.length) throw new Error(`the page threw: ${errors.join("; ")}`);
  console.log("page: ok (screenshots in tests/page/shots)");
} catch (e) {
  console.error(`page test failed: ${e.stack || e}`);
  if (page) {
    await page.screenshot({ path: join(shots, "failed.png"), fullPage: true }).catch(() => {});
    console.error(`the feed said: ${await page.textContent("#feed").catch(() => "?")}`);
    console.error(`the devices: ${await page.textContent("#peers").catch(() => "?")}`);
  }
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  for (const d of daemons) await stop(d);
  rmSync(dir, { recursive: true, force: true });
}
