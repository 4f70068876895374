// The live dashboard: training sessions, models, loss chart and the migration panel.
// ?client=legacy runs it as an old-protocol client (old payload shapes) so old and
// new clients can be watched side by side; ?endpoint= picks the WebSocket endpoint.
"use strict";

const params = new URLSearchParams(location.search);
const format = params.get("client") === "legacy" ? "legacy" : "envelope";
const endpoint = params.get("endpoint") || "/ws";
const sessions = new Map();
const lossSeries = new Map();
const models = [];

document.getElementById("client-format").textContent =
  format === "legacy" ? "old protocol" : "new protocol";
document.getElementById("client-endpoint").textContent = endpoint;

// Old payloads come in "varying structures": find the event type and its fields.
function normalize(message) {
  if (format !== "legacy" && message.type && message.data && typeof message.data === "object") {
    return {type: message.type, data: message.data};
  }
  let data = message;
  if (message.payload && typeof message.payload === "object") data = {...message, ...message.payload};
  if (message.data && typeof message.data === "object") data = {...message, ...message.data};
  const type = message.type || message.event || (data.progress !== undefined ? "training_update" : "unknown");
  return {type, data};
}

// The session an event belongs to; old payloads name it task_id (training_started)
// or session (bare progress). null for phase bookkeeping (training_update from the
// old producer, phase_change, phase_complete, status), which no session owns.
function sessionKey(data) {
  const id = data.session_id || data.task_id || data.session;
  return id ? String(id) : null;
}

function percent(value) {
  const number = Number(value);
  if (!Number.isFinite(number)) return null;
  return number <= 1 ? number * 100 : Math.min(number, 100);
}

function onMessage(message) {
  const {type, data} = normalize(message);
  if (["connection_established", "subscribed", "unsubscribed", "pong", "heartbeat", "error"].includes(type)) return;
  if (type.includes("model")) {
    const id = data.model_id || data.id || data.name;
    if (id && !models.some((m) => m.id === id)) {
      models.unshift({id, name: data.model_name || data.name || (data.model_info && data.model_info.name) || id});
      renderModels();
    }
    return;
  }
  const progress = percent(data.progress !== undefined ? data.progress : data.percentage);
  const key = sessionKey(data);
  if (key === null) {
    // Not a session's event: show it as the latest phase report, not as a session row
    // (it would otherwise stay "running" forever under its phase's name).
    showPhaseReport(type, data, progress);
    return;
  }
  const session = sessions.get(key) || {key, progress: 0, status: "running"};
  if (progress !== null) session.progress = progress;
  if (data.phase_name || data.phase) session.phase = data.phase_name || data.phase;
  if (data.current_epoch !== undefined) session.epoch = data.current_epoch;
  if (data.epoch !== undefined) session.epoch = data.epoch;
  if (data.loss !== undefined && data.loss !== null) {
    session.loss = Number(data.loss);
    const series = lossSeries.get(key) || [];
    series.push(session.loss);
    if (series.length > 200) series.shift();
    lossSeries.set(key, series);
  }
  const eta = data.estimated_time_remaining !== undefined ? data.estimated_time_remaining : data.eta;
  if (eta !== undefined && eta !== null) session.eta = Number(eta);
  if (type.includes("completed") || type.includes("complete")) { session.status = "completed"; session.progress = 100; }
  if (type.includes("failed") || data.status === "failed" || data.status === "error") session.status = "failed";
  sessions.set(key, session);
  renderSessions();
}

function showPhaseReport(type, data, progress) {
  const phase = data.phase_name || data.phase || data.to_phase;
  const parts = [data.message || [type.replace(/_/g, " "), phase].filter(Boolean).join(": ")];
  if (progress !== null) parts.push(`${progress.toFixed(1)}%`);
  document.getElementById("phase-report").textContent = `latest phase report: ${parts.join(" · ")}`;
}

function renderSessions() {
  const root = document.getElementById("sessions");
  root.textContent = "";
  for (const s of [...sessions.values()].slice(-8)) {
    const div = document.createElement("div");
    div.className = `session ${s.status}`;
    div.dataset.session = s.key;
    const label = document.createElement("div");
    label.className = "label";
    const left = document.createElement("span");
    left.textContent = `${s.key.slice(0, 12)} · ${s.phase || "-"} · epoch ${s.epoch ?? "-"}`;
    const right = document.createElement("span");
    const loss = s.loss !== undefined ? ` · loss ${s.loss.toFixed(4)}` : "";
    const eta = s.eta !== undefined ? ` · ETA ${Math.round(s.eta)} s` : "";
    right.textContent = `${s.progress.toFixed(1)}%${loss}${eta}`;
    right.className = "progress-text";
    label.append(left, right);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${s.progress}%`;
    bar.append(fill);
    div.append(label, bar);
    root.append(div);
  }
  drawLoss();
}

function drawLoss() {
  const canvas = document.getElementById("loss-chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const all = [...lossSeries.values()].flat();
  if (!all.length) return;
  const max = Math.max(...all) || 1;
  const colors = ["#3b82f6", "#16a34a", "#d97706", "#7c3aed", "#dc2626"];
  let i = 0;
  for (const series of lossSeries.values()) {
    ctx.strokeStyle = colors[i++ % colors.length];
    ctx.beginPath();
    series.forEach((value, x) => {
      const px = (x / Math.max(series.length - 1, 1)) * (canvas.width - 10) + 5;
      const py = canvas.height - 5 - (value / max) * (canvas.height - 10);
      if (x === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
  }
}

function renderModels() {
  const list = document.getElementById("model-list");
  list.textContent = "";
  for (const m of models.slice(0, 20)) {
    const li = document.createElement("li");
    li.textContent = `${m.name} (${String(m.id).slice(0, 8)})`;
    list.append(li);
  }
}

function onState(state, detail) {
  const el = document.getElementById("conn-state");
  el.textContent = state;
  el.className = `state ${state}`;
  document.getElementById("conn-detail").textContent = detail;
}

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${endpoint}`;
// With authentication on, open the page as /#token=<JWT>: the fragment never leaves the browser.
const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token");
// Stage buttons call /ops/stage, which needs the operator token (WS_MIGRATION_OPS_TOKEN):
// open the page as /#ops_token=<token> (beside token=<JWT>: /#token=...&ops_token=...).
// Without it the panel is read-only; its data comes from the public /api/migration.
const opsToken = fragment.get("ops_token");
const OPS_HINT = "changing stages needs the operator token: open this page as /#ops_token=<WS_MIGRATION_OPS_TOKEN>";
const client = new WsClient(wsUrl, {topics: ["training", "models"], format, token, onMessage, onState});
window.dashboardClient = client;
setInterval(() => {
  document.getElementById("received").textContent = client.received;
  document.getElementById("gaps").textContent = client.gaps;
}, 500);

async function post(url, body, headers) {
  const response = await fetch(url, {method: "POST", headers: {"content-type": "application/json", ...headers}, body: JSON.stringify(body || {})});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

document.getElementById("start-training").onclick = () => post("/api/training/start", {}).catch(showError);
document.getElementById("create-model").onclick = () => post("/api/models", {name: `model-${Date.now() % 100000}`}).catch(showError);

function showError(err) {
  document.getElementById("migration-error").textContent = String(err.message || err);
}

const STAGES = ["legacy", "shadow", "live", "new"];
// Rows are built once per endpoint and updated in place: rebuilding the tables every
// second would swap the stage buttons under the pointer and lose a click.
const stageRows = new Map();
const diffRows = new Map();

function tableRow(rows, tbody, name, width, build) {
  let row = rows.get(name);
  if (!row) {
    const tr = document.createElement("tr");
    tr.dataset.endpoint = name;
    const cells = Array.from({length: width}, () => tr.appendChild(document.createElement("td")));
    cells[0].textContent = name;
    row = {tr, cells, ...(build ? build(tr, name) : {})};
    rows.set(name, row);
    tbody.append(tr);
  }
  return row;
}

function stageButtons(tr, name) {
  const actions = tr.appendChild(document.createElement("td"));
  const buttons = {};
  for (const stage of STAGES) {
    const button = actions.appendChild(document.createElement("button"));
    button.textContent = stage;
    if (!opsToken) button.title = OPS_HINT;
    button.onclick = () => post("/ops/stage", {endpoint: name, stage}, {authorization: `Bearer ${opsToken}`})
      .then(refreshMigration).catch(showError);
    buttons[stage] = button;
  }
  return {buttons};
}

async function refreshMigration() {
  try {
    const response = await fetch("/api/migration");
    if (!response.ok) throw new Error(`/api/migration: HTTP ${response.status}`);
    const state = await response.json();
    const stages = document.querySelector("#stages tbody");
    for (const [name, info] of Object.entries(state.endpoints)) {
      const row = tableRow(stageRows, stages, name, 4, stageButtons);
      row.cells[1].textContent = info.stage;
      row.cells[1].className = `stage stage-${info.stage}`;
      row.cells[2].textContent = String(info.clients.legacy);
      row.cells[3].textContent = String(info.clients.new);
      for (const [stage, button] of Object.entries(row.buttons)) {
        button.disabled = stage === info.stage || !state.editable || !opsToken;
      }
    }
    const diff = document.querySelector("#diff tbody");
    for (const [name, c] of Object.entries(state.diff)) {
      const row = tableRow(diffRows, diff, name, 8);
      [c.compared, c.matched, c.missing, c.extra, c.field, c.order, c.expected].forEach((value, i) => {
        row.cells[i + 1].textContent = String(value ?? 0);
      });
    }
    document.getElementById("migration-error").textContent = "";
  } catch (err) {
    showError(err);
  }
}
refreshMigration();
setInterval(refreshMigration, 1000);
