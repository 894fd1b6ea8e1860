// The Fornax dashboard: plain ES modules over the same REST API and WebSocket as any client.
// Pages: /ui/ (services), /ui/services/<id>, /ui/versions/<id>[#L<n>], /ui/signin. The token lives in
// sessionStorage only (gone when the tab closes).
import { LogView } from "./logview.js";

const main = document.getElementById("main");
const banner = document.getElementById("error");
const STAGES = ["clone", "integration", "pre_build", "build", "push", "tag", "post_build", "deploy"];
const ACTIVE = ["pending", "queued", "running"];
let config = null;
let cleanup = [];      // what the current page must stop when another one is shown
let refreshTimer = null;

// -- session and API -------------------------------------------------------------------------------------
const session = {
  get token() { return sessionStorage.getItem("fornax.token"); },
  get user() { return sessionStorage.getItem("fornax.user"); },
  set(token, user) { sessionStorage.setItem("fornax.token", token); sessionStorage.setItem("fornax.user", user); },
  clear() { sessionStorage.removeItem("fornax.token"); sessionStorage.removeItem("fornax.user"); },
};

class ApiError extends Error {
  constructor(status, message, field) { super(message); this.status = status; this.field = field; }
}

async function api(method, path, body, token = session.token) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new ApiError(0, "The Fornax server is not answering (is it down, or is the network away?).");
  }
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.message || `HTTP ${resp.status}`, err.field);
  }
  return data;
}

const userPath = (rest) => `/api/v1/${encodeURIComponent(session.user)}/${rest}`;

function explain(err, what = "") {
  if (err.status === 401) {
    session.clear();
    return "Your token is invalid, expired or revoked: sign in again.";
  }
  if (err.status === 404) return `${what || "This"} was not found (it does not exist, or it is not yours).`;
  if (err.status === 403) return "That belongs to another user.";
  if (err.status === 0) return err.message;
  return `${err.message}${err.field ? ` (field: ${err.field})` : ""}`;
}

function showError(message) {
  banner.textContent = message;
  banner.hidden = !message;
}

// -- small helpers ---------------------------------------------------------------------------------------
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const pill = (status) => `<span class="pill ${esc(status)}">${esc(status || "none")}</span>`;
const short = (sha) => (sha ? `<code>${esc(String(sha).slice(0, 8))}</code>` : '<span class="muted">-</span>');

function seconds(start, end) {
  if (!start) return null;
  const a = Date.parse(start);
  const b = end ? Date.parse(end) : Date.now();
  return Number.isNaN(a) || Number.isNaN(b) ? null : Math.max(0, (b - a) / 1000);
}

function duration(s) {
  if (s == null) return "-";
  if (s < 60) return `${s.toFixed(1)}s`;
  return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
}

function timeline(stages) {
  const spans = (stages || []).map((st) => {
    const s = seconds(st.start, st.end) ?? 0;
    return `<span class="${esc(st.status)}" style="flex:${Math.max(s, 0.2)}" title="${esc(st.name)}: ${esc(st.status)} ${duration(s)}" data-stage="${esc(st.name)}"></span>`;
  });
  return `<div class="timeline">${spans.join("")}</div>`;
}

function go(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-nav]");
  if (a && !ev.ctrlKey && !ev.metaKey && ev.button === 0) {
    ev.preventDefault();
    go(a.getAttribute("href"));
  }
});
window.addEventListener("popstate", () => route());

function crumbs(items) {
  document.getElementById("crumbs").innerHTML = items.map(([href, text]) =>
    href ? `<a href="${esc(href)}" data-nav>${esc(text)}</a>` : esc(text)).join(" / ");
}

function who() {
  const el = document.getElementById("who");
  if (!session.token) { el.innerHTML = ""; return; }
  el.innerHTML = `${esc(session.user)} <button id="signout">Sign out</button>`;
  el.querySelector("#signout").onclick = () => { session.clear(); go("/ui/signin"); };
}

async function badgeUrl(service) {
  // A private service's badge needs the token, which an <img> cannot send: fetch it and show a blob.
  try {
    const resp = await fetch(`/badges/${encodeURIComponent(session.user)}/${encodeURIComponent(service.name)}.svg`,
      { headers: { Authorization: `Bearer ${session.token}` } });
    if (!resp.ok) return null;
    return URL.createObjectURL(await resp.blob());
  } catch (e) { return null; }
}

// -- pages ---------------------------------------------------------------------------------------------
async function signinPage(message = "") {
  crumbs([[null, "Sign in"]]);
  main.innerHTML = `<form class="signin" id="signin">
      <h1>Sign in to Fornax</h1>
      <p class="muted">Paste your API token (<code>fornax user create NAME</code> prints one). It is kept in this
      browser tab only.</p>
      <input id="token" type="password" autocomplete="off" placeholder="fx_…" required>
      <button class="primary" type="submit">Sign in</button>
      <p id="signin-msg" class="muted">${esc(message)}</p></form>`;
  document.getElementById("signin").onsubmit = async (ev) => {
    ev.preventDefault();
    const token = document.getElementById("token").value.trim();
    try {
      const me = await api("GET", "/api/v1/me", null, token);
      session.set(token, me.user_id);
      showError("");
      go("/ui/");
    } catch (err) {
      document.getElementById("signin-msg").textContent = err.status === 401 ?
        "That token is not valid (or it was revoked)." : explain(err);
    }
  };
}

async function servicesPage() {
  crumbs([[null, "Services"]]);
  const data = await api("GET", userPath("services?limit=500"));
  const rows = await Promise.all(data.services.map(async (s) => {
    let latest = null;
    try {
      latest = (await api("GET", userPath(`services/${s.service_id}/versions?limit=1`))).versions[0] || null;
    } catch (e) { /* shown as none */ }
    return { s, latest, badge: await badgeUrl(s) };
  }));
  main.innerHTML = `<h1>Services</h1>` + (rows.length ? `<table id="services"><thead><tr><th>Service</th><th>Repository</th>
    <th>Latest version</th><th>Status</th><th>Badge</th></tr></thead><tbody>${rows.map(({ s, latest, badge }) => `
    <tr data-service="${esc(s.name)}"><td><a href="/ui/services/${esc(s.service_id)}" data-nav>${esc(s.name)}</a></td>
    <td class="mono">${esc(s.repository?.url)}</td>
    <td>${latest ? `<a href="/ui/versions/${esc(latest.version_id)}" data-nav>${esc(latest.name)}</a>` : '<span class="muted">none yet</span>'}</td>
    <td class="latest-status">${pill(latest?.status)}</td>
    <td>${badge ? `<img alt="build status" src="${badge}">` : ""}</td></tr>`).join("")}</tbody></table>` :
    `<p class="muted">No services yet. Create one with <code>fornax service create NAME --repo URL</code>.</p>`);
  if (rows.some(({ latest }) => latest && ACTIVE.includes(latest.status))) refresh(servicesPage, 3000);
}

async function servicePage(sid) {
  const [service, versions, deploys] = await Promise.all([
    api("GET", userPath(`services/${sid}`)),
    api("GET", userPath(`services/${sid}/versions?limit=50`)),
    api("GET", userPath(`services/${sid}/deployments?limit=50`)),
  ]).catch((err) => { throw Object.assign(err, { what: "This service" }); });
  crumbs([["/ui/", "Services"], [null, service.name]]);
  const badge = await badgeUrl(service);
  const ok = versions.versions.filter((v) => v.status === "success");
  main.innerHTML = `<h1>${esc(service.name)} ${badge ? `<img alt="build status" src="${badge}">` : ""}</h1>
    <p class="muted mono">${esc(service.repository?.url)} · repository ${esc(service.status)}</p>
    <h2>Versions</h2>
    <table id="versions"><thead><tr><th>Version</th><th>Status</th><th>Trigger</th><th>Commit</th><th>Branch</th>
      <th>Duration</th><th>Stages</th><th></th></tr></thead><tbody>
    ${versions.versions.map((v) => `<tr data-version="${esc(v.version_id)}">
      <td><a href="/ui/versions/${esc(v.version_id)}" data-nav>${esc(v.name)}</a></td><td class="status">${pill(v.status)}</td>
      <td>${esc(v.trigger)}</td><td>${short(v.commit)}</td><td>${esc(v.branch || "-")}</td>
      <td>${duration(seconds(v.started_at || v.created_at, v.finished_at))}</td><td>${timeline(v.stages)}</td>
      <td>${ACTIVE.includes(v.status) ? `<button class="danger cancel" data-id="${esc(v.version_id)}">Cancel</button>` : ""}</td>
    </tr>`).join("") || '<tr><td colspan="8" class="muted">No versions yet.</td></tr>'}</tbody></table>
    <h2>Deploy</h2>
    <form class="inline" id="deploy">
      <select id="deploy-version">${ok.map((v) => `<option value="${esc(v.version_id)}">${esc(v.name)}</option>`).join("")}</select>
      <input id="deploy-target" placeholder="target" value="${esc(deploys.targets[0]?.target || "local")}">
      <button class="primary" type="submit" ${ok.length ? "" : "disabled"}>Deploy</button>
      <span id="deploy-msg" class="muted"></span></form>
    <h2>Targets</h2>
    <table id="targets"><thead><tr><th>Target</th><th>Running</th><th>Pinned</th><th></th></tr></thead><tbody>
    ${deploys.targets.map((t) => `<tr data-target="${esc(t.target)}"><td>${esc(t.target)}</td>
      <td>${esc(nameOf(versions, t.current_version_id))}</td>
      <td class="pinned">${t.pinned ? `pinned${t.pin_reason ? ` (${esc(t.pin_reason)})` : ""}` : "no"}</td>
      <td><button class="rollback" data-target="${esc(t.target)}">Roll back</button></td></tr>`).join("") ||
      '<tr><td colspan="4" class="muted">Nothing deployed yet.</td></tr>'}</tbody></table>
    <h2>Deploy history</h2>
    <table id="history"><thead><tr><th>When</th><th>Kind</th><th>Version</th><th>Target</th><th>Status</th><th>Reason</th></tr></thead><tbody>
    ${deploys.deployments.map((d) => `<tr><td>${esc(d.requested_at)}</td><td>${esc(d.kind)}</td><td>${esc(d.version_name || d.version_id)}</td>
      <td>${esc(d.target)}</td><td>${pill(d.status)}</td><td>${esc(d.reason || "")}</td></tr>`).join("") ||
      '<tr><td colspan="6" class="muted">No deploys yet.</td></tr>'}</tbody></table>`;
  document.getElementById("deploy").onsubmit = (ev) => {
    ev.preventDefault();
    act("deploy-msg", () => api("POST", userPath(`services/${sid}/deploy`), {
      version_id: document.getElementById("deploy-version").value,
      target: document.getElementById("deploy-target").value.trim(),
    }), "Deploy requested.", () => servicePage(sid));
  };
  for (const b of main.querySelectorAll("button.rollback")) {
    b.onclick = () => act("deploy-msg", () => api("POST", userPath(`services/${sid}/rollback`), { target: b.dataset.target }),
      `Rollback of ${b.dataset.target} requested (the target is pinned until you deploy again).`, () => servicePage(sid));
  }
  for (const b of main.querySelectorAll("button.cancel")) {
    b.onclick = () => act("deploy-msg", () => api("POST", userPath(`versions/${b.dataset.id}/cancel`)), "Cancelling…",
      () => servicePage(sid));
  }
  const busy = versions.versions.some((v) => ACTIVE.includes(v.status)) ||
    deploys.deployments.some((d) => !["success", "failed", "skipped"].includes(d.status));
  refresh(() => servicePage(sid), busy ? 1500 : 5000);
}

function nameOf(versions, vid) {
  const v = versions.versions.find((x) => x.version_id === vid);
  return v ? v.name : vid || "-";
}

async function act(msgId, fn, done, then) {
  const msg = document.getElementById(msgId);
  try {
    await fn();
    if (msg) msg.textContent = done;
    showError("");
    setTimeout(() => then().catch(pageError), 600);
  } catch (err) {
    showError(explain(err));
  }
}

async function versionPage(vid) {
  let version;
  // A link followed right after a push (a commit status, a chat message) may arrive before the version is
  // in the read model: a 404 is asked again for a few seconds before it counts.
  for (let delay = 50; ; delay *= 2) {
    try {
      version = await api("GET", userPath(`versions/${vid}`));
      break;
    } catch (err) {
      if (err.status !== 404 || delay > 1600) throw Object.assign(err, { what: "This version" });
      main.innerHTML = '<p class="muted">Waiting for the version…</p>';
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
  const service = await api("GET", userPath(`services/${version.service_id}`)).catch(() => null);
  crumbs([["/ui/", "Services"], [`/ui/services/${version.service_id}`, service ? service.name : "service"], [null, version.name]]);
  main.innerHTML = `<h1>${esc(version.name)} <span id="status">${pill(version.status)}</span></h1>
    <p class="muted" id="meta"></p>
    <div class="stages" id="stages"></div>
    <div class="toolbar">
      <label><input type="checkbox" id="follow" checked> Follow</label>
      <input id="search" placeholder="Search the log" size="28"> <button id="prev">↑</button><button id="next">↓</button>
      <span id="hits" class="muted"></span><span class="grow"></span>
      <span id="conn" class="muted"></span>
      <button id="download">Download raw log</button>
      ${ACTIVE.includes(version.status) ? '<button class="danger" id="cancel">Cancel</button>' : ""}
    </div>
    <div id="log"></div>`;
  const drawMeta = (v) => {
    document.getElementById("meta").innerHTML = `${esc(v.trigger)} · commit ${short(v.commit)} · branch ${esc(v.branch || "-")}
      · ${duration(seconds(v.started_at || v.created_at, v.finished_at))}`;
  };
  drawMeta(version);
  const drawStages = (v) => {
    document.getElementById("stages").innerHTML = STAGES.map((name) => {
      const st = (v.stages || []).find((s) => s.name === name);
      if (!st) return "";
      return `<span class="stage ${esc(st.status)}" data-stage="${esc(name)}" title="${esc(st.error || "")}">${esc(name)} · ${esc(st.status)} · ${duration(seconds(st.start, st.end))}</span>`;
    }).join("");
  };
  drawStages(version);
  const follow = document.getElementById("follow");
  const view = new LogView(document.getElementById("log"), { onFollowChange: (on) => { follow.checked = on; } });
  follow.onchange = () => view.setFollow(follow.checked);
  const search = document.getElementById("search");
  const hits = document.getElementById("hits");
  search.oninput = () => {
    const n = view.search(search.value);
    hits.textContent = search.value ? `${n} match${n === 1 ? "" : "es"}` : "";
  };
  search.onkeydown = (ev) => { if (ev.key === "Enter") view.next(ev.shiftKey ? -1 : 1); };
  document.getElementById("next").onclick = () => view.next(1);
  document.getElementById("prev").onclick = () => view.next(-1);
  document.getElementById("download").onclick = () => download(vid, version.name);
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.onclick = () => act("conn", () => api("POST", userPath(`versions/${vid}/cancel`)), "cancelling…", async () => {});
  const jump = () => {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (m) view.scrollToLine(Number(m[1]));
  };
  window.addEventListener("hashchange", jump);
  cleanup.push(() => window.removeEventListener("hashchange", jump));
  const stream = followLog(vid, view, {
    onFinal: async (status) => {
      document.getElementById("status").innerHTML = pill(status);
      if (cancel) cancel.remove();
      // The log's end comes straight from the broker and can be ahead of the read model: read the
      // version again until it shows the end too (at most 10 s), so the stages do not stay "running".
      for (let tries = 0; tries < 20; tries++) {
        try {
          const v = await api("GET", userPath(`versions/${vid}`));
          drawStages(v);
          drawMeta(v);
          if (!ACTIVE.includes(v.status)) break;
        } catch (e) { break; /* the status is shown already */ }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      jump();
    },
    onHistory: jump,
  });
  cleanup.push(stream.stop);
  // Stages change while the version runs: refresh them from the API, not the log.
  const poll = setInterval(async () => {
    if (stream.ended) return;
    try {
      const v = await api("GET", userPath(`versions/${vid}`));
      drawStages(v);
      drawMeta(v);
      document.getElementById("status").innerHTML = pill(v.status);
    } catch (e) { /* the log's connection state says enough */ }
  }, 2000);
  cleanup.push(() => clearInterval(poll));
}

// Follows /ws/versions/<id>/logs: history, then live lines; after a drop it reconnects with since=<last seq>.
function followLog(vid, view, { onFinal, onHistory }) {
  const conn = () => document.getElementById("conn");
  const state = { ended: false, stopped: false, ws: null, tries: 0, historyDone: false };
  const base = config.logstream_url || `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname}:8000`;
  const open = () => {
    if (state.stopped) return;
    const url = `${base}/ws/versions/${encodeURIComponent(vid)}/logs?since=${view.lastSeq}&token=${encodeURIComponent(session.token)}`;
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onopen = () => { state.tries = 0; if (conn()) conn().textContent = "live"; };
    ws.onmessage = (ev) => {
      const data = JSON.parse(ev.data);
      if (!Array.isArray(data) && data.final) {
        state.ended = true;
        if (conn()) conn().textContent = `ended: ${data.status}`;
        onFinal(data.status);
        return;
      }
      const lines = (Array.isArray(data) ? data : [data]).filter((l) => l.seq > view.lastSeq);
      view.append(lines);
      if (!state.historyDone) { state.historyDone = true; setTimeout(onHistory, 0); }
    };
    ws.onclose = (ev) => {
      if (state.ended || state.stopped) return;
      const refused = { 4401: "Your token is invalid, expired or revoked: sign in again.",
        4403: "This version belongs to another user.", 4404: "This version was not found." }[ev.code];
      if (refused) { showError(refused); if (conn()) conn().textContent = "refused"; return; }
      state.tries += 1;
      if (conn()) conn().textContent = state.tries > 3 ? "log server unreachable, retrying…" : "reconnecting…";
      setTimeout(open, Math.min(5000, 200 * 2 ** Math.min(state.tries, 5)));
    };
  };
  open();
  return {
    get ended() { return state.ended; },
    stop() { state.stopped = true; if (state.ws) state.ws.close(); },
  };
}

async function download(vid, name) {
  let since = 0;
  const parts = [];
  for (;;) {
    const page = await api("GET", userPath(`versions/${vid}/logs?since=${since}&limit=10000`));
    for (const l of page.lines) parts.push(l.text + "\n");
    if (!page.has_more || !page.lines.length) break;
    since = page.next_since;
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob(parts, { type: "text/plain" }));
  a.download = `${name}.log`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// -- routing ---------------------------------------------------------------------------------------------
function refresh(fn, ms) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => fn().catch(pageError), ms);
}

function pageError(err) {
  const message = explain(err, err.what);
  if (err.status === 401) { signinPage(message); who(); return; }
  showError(message);
  if (err.status === 0) main.innerHTML = '<p class="muted">Waiting for the server…</p>';
  else if (err.status === 404) main.innerHTML = `<p class="muted">${esc(message)} <a href="/ui/" data-nav>Your services</a></p>`;
}

async function route() {
  for (const stop of cleanup) stop();
  cleanup = [];
  clearTimeout(refreshTimer);
  showError("");
  who();
  const path = location.pathname.replace(/\/+$/, "") || "/ui";
  if (path === "/ui/signin" || !session.token) return signinPage();
  let m;
  try {
    if ((m = /^\/ui\/services\/([^/]+)$/.exec(path))) await servicePage(decodeURIComponent(m[1]));
    else if ((m = /^\/ui\/versions\/([^/]+)$/.exec(path))) await versionPage(decodeURIComponent(m[1]));
    else await servicesPage();
  } catch (err) {
    pageError(err);
  }
}

(async () => {
  try {
    config = await (await fetch("/ui/config.json")).json();
  } catch (e) {
    config = {};
    showError("The Fornax server is not answering (is it down?). Reload to try again.");
    return;
  }
  route();
})();
