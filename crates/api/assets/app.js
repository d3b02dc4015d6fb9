// The page: what a running Shoal daemon shows and lets a person do. It asks the
// daemon's API with the session the login link opened, and updates itself from the
// event stream, without polling and without reloading.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let me = null;
let current = null; // the conflict shown
const progress = new Map(); // peer -> {done, total}
let peers = [];

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrf) headers["x-csrf-token"] = csrf;
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(data && data.error ? data.error.message : r.statusText);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const short = (id) => (id || "").slice(0, 10);

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "—";
}

function shown(v) {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "object" && v.blob !== undefined) return `blob ${v.blob.length / 2} bytes`;
  return typeof v === "string" ? v : JSON.stringify(v);
}

async function loadStatus() {
  const s = await api("GET", "/v1/status");
  me = s.device;
  $("device").textContent = `${s.name ? `${s.name} · ` : ""}this device ${short(s.device)}`;
  $("device").title = s.device;
  const words = { up_to_date: "Up to date", syncing: "Syncing", offline: "Offline" };
  $("state").textContent = s.sync === "syncing"
    ? `Syncing · ${s.peers_up_to_date} of ${s.peers} up to date`
    : `${words[s.sync]} · ${s.peers_connected} of ${s.peers} connected`;
  $("state").className = `badge ${s.sync}`;
  renderGroups(s.groups);
  $("tables").textContent = s.tables.length
    ? `Tracked tables: ${s.tables.map((t) => `${t.name} (${t.policy})`).join(", ")}`
    : "No table is tracked yet: `shoal track DB TABLE`.";
}

async function loadPeers() {
  peers = await api("GET", "/v1/peers");
  renderPeers();
}

function renderPeers() {
  const body = $("peers").querySelector("tbody");
  body.replaceChildren(...peers.map((p) => el("tr", { "data-device": p.device },
    el("td", { class: "id", title: p.device }, short(p.device)),
    el("td", { class: p.connected ? "on" : "off" }, p.connected ? `connected, ${p.path || "?"}` : "not connected"),
    el("td", {}, p.rtt_ms == null ? "—" : `${p.rtt_ms.toFixed(1)} ms`),
    el("td", {}, p.last_sync_ms ? `synced ${ago(p.last_sync_ms)}` : "never synced"),
    el("td", {}, p.pending_out),
    el("td", {}, p.pending_in))));
  if (!peers.length) body.append(el("tr", {}, el("td", { colspan: 6 }, "No other device yet: invite one below.")));
}

function renderGroups(groups) {
  $("group-list").replaceChildren(...groups.map((g) => {
    const members = g.members.map((m) => el("li", {},
      el("span", { class: "id", title: m.device }, short(m.device)), ` ${m.role}`,
      m.device === me ? " (this device)" : "",
      m.device === me ? "" : el("button", { type: "button", class: "danger", "aria-label": `Revoke ${short(m.device)}`,
        onclick: () => askRevoke(g, m) }, "Revoke")));
    return el("div", { class: "group" },
      el("h3", {}, g.name, " ", el("span", { class: "muted id", title: g.id }, short(g.id))),
      el("p", { class: "muted" }, `${g.pending_conflicts} conflict(s) waiting, ${g.held_changes} change(s) held`),
      el("ul", {}, ...members),
      el("button", { type: "button", onclick: () => openInvite(g) }, "Invite a device…"));
  }));
  if (!groups.length) $("group-list").textContent = "This device is in no group yet: `shoal group DB create NAME --table T` makes one.";
}

async function loadConflicts() {
  const page = await api("GET", "/v1/conflicts?limit=200");
  const chips = Object.entries(page.by_table).map(([t, n]) => el("span", { class: "chip" }, `${t}: ${n}`));
  $("by-table").replaceChildren(...(chips.length ? chips : ["No conflict waiting."]));
  $("conflicts").replaceChildren(...page.items.map((c) => el("li", {},
    el("button", { type: "button", "data-id": c.id, onclick: () => showConflict(c.id) },
      `${c.table} ${c.key}: ${c.kind.replace("_", " ")} on ${c.columns.join(", ")} (${c.status})`))));
  if (current && !page.items.some((c) => c.id === current)) showConflict(current);
}

function side(title, s, c, winner) {
  const dl = el("dl");
  for (const col of c.columns) {
    const cls = c.differing.includes(col) ? "differs" : "";
    dl.append(el("dt", { class: cls }, col), el("dd", { class: cls, "data-column": col },
      s.values ? shown(s.values[col]) : "(deleted)"));
  }
  return [el("h4", { class: winner ? "winner" : "" }, title),
    el("p", { class: "muted" }, `by ${s.device ? short(s.device) : "—"}${s.device === me ? " (this device)" : ""}, ${when(s.at_ms)}`), dl];
}

async function showConflict(id) {
  let c;
  try { c = await api("GET", `/v1/conflicts/${id}`); } catch (e) { $("conflict").hidden = true; return; }
  current = c.id;
  $("conflict").hidden = false;
  $("conflict-title").textContent = `${c.table} ${c.key}`;
  $("conflict-meta").textContent = `${c.kind.replace("_", " ")} · ${c.status}${c.resolution ? ` · ${c.resolution}` : ""}${c.detail ? ` · ${c.detail}` : ""}`;
  $("mine").replaceChildren(...side("Mine", c.local, c, c.winner === "local"));
  $("theirs").replaceChildren(...side("Theirs", c.remote, c, c.winner === "remote"));
  const open = c.status === "pending" || c.status === "auto";
  for (const b of ["keep-mine", "keep-theirs", "edit"]) $(b).disabled = !open;
  $("edit-form").hidden = true;
  $("conflict-error").textContent = "";
  const winner = c.winner === "local" ? c.local : c.remote;
  $("edit-fields").replaceChildren(...c.columns.map((col) => el("label", {}, col, " ",
    el("input", { name: col, value: winner.values ? shown(winner.values[col]) : "" }))));
}

async function resolve(body) {
  try {
    await api("POST", `/v1/conflicts/${current}/resolve`, body);
    await Promise.all([loadConflicts(), loadStatus()]);
    await showConflict(current);
  } catch (e) { $("conflict-error").textContent = e.message; }
}

function openInvite(g) {
  const d = $("invite-dialog");
  d.dataset.group = g.id;
  $("invite-h").textContent = `Invite a device to ${g.name}`;
  $("invite-out").hidden = true;
  $("invite-error").textContent = "";
  d.showModal();
}

function askRevoke(g, m) {
  const d = $("revoke-dialog");
  d.dataset.group = g.id;
  d.dataset.device = m.device;
  $("revoke-text").textContent = `${short(m.device)} (${m.role}) will be cut off from ${g.name}: every member refuses its later commits, for good.`;
  $("revoke-error").textContent = "";
  d.showModal();
}

function describe(e) {
  const p = short(e.peer);
  switch (e.event) {
    case "peer_connected": return `connected to ${p} (${e.path || "?"})`;
    case "peer_lost": return `lost ${p}: ${e.reason}`;
    case "local_commits": return `sealed ${e.changes} change(s) made here`;
    case "changes_applied": return `applied ${e.changes} change(s) from ${p} (${e.name})`;
    case "synced": return `synced with ${p}: ${e.pushed} out, ${e.pulled} in`;
    case "conflict_found": return `conflict in ${e.table} (${e.kind.replace("_", " ")})`;
    case "conflict_closed": return `conflict ${short(e.id)} closed`;
    case "refused": return `refused (${p}): ${e.reason}`;
    case "not_sealed": return `not sealed (${e.table}): ${e.reason}`;
    case "clock_ahead": return "this device's clock ran ahead";
    case "held_for_clock": return `${e.commits} commit(s) from ${p} held: their clock runs ahead`;
    default: return e.event;
  }
}

function renderProgress() {
  const parts = [...progress.entries()].map(([peer, p]) =>
    p.total ? `Syncing ${p.done} / ${p.total} with ${short(peer)}` : `Syncing ${p.done} with ${short(peer)}`);
  $("progress").textContent = parts.join(" · ");
}

let refreshing = null;
function refresh() {
  clearTimeout(refreshing);
  refreshing = setTimeout(() => { loadStatus(); loadPeers(); loadConflicts(); }, 150);
}

function follow() {
  const events = new EventSource("/v1/events");
  const on = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.event === "sync_progress") {
      const done = e.pushed + e.pulled;
      progress.set(e.peer, { done, total: Math.max(e.total || 0, done) });
      renderProgress();
      return;
    }
    if (e.event === "synced" || e.event === "peer_lost") { progress.delete(e.peer); renderProgress(); }
    const feed = $("feed");
    feed.prepend(el("li", { "data-event": e.event }, `${new Date().toLocaleTimeString()} ${describe(e)}`));
    while (feed.children.length > 50) feed.lastChild.remove();
    refresh();
  };
  for (const kind of ["peer_connected", "peer_lost", "local_commits", "changes_applied", "sync_progress",
    "synced", "conflict_found", "conflict_closed", "refused", "not_sealed", "clock_ahead", "held_for_clock"]) {
    events.addEventListener(kind, on);
  }
  events.addEventListener("missed", () => refresh());
}

async function start() {
  try {
    const s = await api("GET", "/v1/session");
    csrf = s.csrf;
  } catch (e) {
    $("signin").hidden = false;
    for (const id of ["sync", "groups", "inbox", "feed-s"]) $(id).hidden = true;
    $("device").textContent = "not signed in";
    return;
  }
  $("sync-now").addEventListener("click", async () => {
    $("progress").textContent = "Syncing…";
    try { await api("POST", "/v1/sync", {}); $("progress").textContent = ""; }
    catch (e) { $("progress").textContent = e.message; }
    refresh();
  });
  $("auto").addEventListener("change", async (ev) => {
    try { await api("PUT", "/v1/sync/auto", { on: ev.target.checked }); }
    catch (e) { ev.target.checked = !ev.target.checked; $("progress").textContent = e.message; }
  });
  $("keep-mine").addEventListener("click", () => resolve({ keep: "local" }));
  $("keep-theirs").addEventListener("click", () => resolve({ keep: "remote" }));
  $("edit").addEventListener("click", () => { $("edit-form").hidden = false; $("edit-fields").querySelector("input")?.focus(); });
  $("edit-cancel").addEventListener("click", () => { $("edit-form").hidden = true; });
  $("edit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const set = {};
    for (const input of $("edit-fields").querySelectorAll("input")) {
      const v = input.value;
      set[input.name] = v === "NULL" ? null : (v.trim() !== "" && !isNaN(Number(v)) ? Number(v) : v);
    }
    resolve({ set });
  });
  $("invite-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const d = $("invite-dialog");
    try {
      const inv = await api("POST", "/v1/invites", {
        group: d.dataset.group, role: $("invite-role").value, uses: Number($("invite-uses").value) || 1,
      });
      $("invite-qr").src = `data:image/svg+xml;base64,${btoa(inv.qr_svg)}`;
      $("invite-ticket").value = inv.ticket;
      $("invite-out").hidden = false;
      $("invite-ticket").focus();
      $("invite-ticket").select();
    } catch (e) { $("invite-error").textContent = e.message; }
  });
  $("invite-copy").addEventListener("click", () => navigator.clipboard?.writeText($("invite-ticket").value));
  for (const b of document.querySelectorAll("dialog .close")) b.addEventListener("click", (ev) => ev.target.closest("dialog").close());
  $("revoke-yes").addEventListener("click", async () => {
    const d = $("revoke-dialog");
    try {
      await api("DELETE", `/v1/groups/${d.dataset.group}/members/${d.dataset.device}`);
      d.close();
      refresh();
    } catch (e) { $("revoke-error").textContent = e.message; }
  });
  const auto = await api("GET", "/v1/sync/auto");
  $("auto").checked = auto.on;
  follow();
  await Promise.all([loadStatus(), loadPeers(), loadConflicts()]);
  // "synced 3 min ago" grows older by itself; this touches no server.
  setInterval(renderPeers, 30000);
}

start();
