"use strict";
// The live dashboard: one tile per USB port, refreshed from /api/ports whenever /api/stream reports an event.

const EVENT_KINDS = [
  "station.started", "station.stopping", "device.attached", "device.detached", "device.done", "device.forgotten",
  "job.started", "job.resumed", "job.retried", "job.interrupted", "step.started", "step.progress",
  "step.finished", "step.waiting", "step.retrying", "step.failed", "step.interrupted", "step.held", "port.changed",
  "batch.done", "operator.retry", "operator.skip", "operator.forget", "device.identified", "report.queued",
  "report.done", "report.retrying", "report.failed",
];

const STATUS_WORDS = {
  empty: "Empty", busy: "Busy", waiting: "Waiting", held: "On hold", done: "Done", failed: "Needs a hand",
};

const STEP_WORDS = {
  identify: "Reading the iPad", charge: "Checking the charge", erase: "Erasing", activate: "Activating",
  supervise: "Supervising", wifi: "Joining Wi-Fi", profiles: "Installing profiles", apps: "Installing apps",
  enroll: "Enrolling in MDM", name: "Naming", report: "Finishing", assignment: "Checking Apple School Manager",
};

const REPORT_WORDS = { done: "✓", pending: "pending", failed: "failed" };

const ICONS = {
  done: [["path", { d: "M5 12.5l4.5 4.5L19 7.5" }]],
  busy: [["path", { d: "M12 3a9 9 0 1 0 9 9" }]],
  waiting: [["circle", { cx: 12, cy: 12, r: 9 }], ["path", { d: "M12 7v5l3.5 2" }]],
  failed: [["path", { d: "M12 3l10 18H2z" }], ["path", { d: "M12 10v5" }], ["path", { d: "M12 18v.01" }]],
  held: [["path", { d: "M9 5v14" }], ["path", { d: "M15 5v14" }]],
  empty: [["circle", { cx: 12, cy: 12, r: 9, "stroke-dasharray": "3 3" }]],
};

const LOW_BATTERY = 20;
const DEBOUNCE_MS = 150;
const POLL_MS = 30000;
const FLEET_MS = 5000; // the fleet view and the database's health, asked again
const RECONNECT_MS = 3000;

const tiles = new Map();
let clockOffset = 0;
let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;

function $(id) {
  return document.getElementById(id);
}

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function icon(status) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  for (const [tag, attributes] of ICONS[status] || ICONS.empty) {
    const shape = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes)) shape.setAttribute(name, value);
    svg.appendChild(shape);
  }
  return svg;
}

function duration(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function stepWords(step) {
  return STEP_WORDS[step] || step || "";
}

function createTile() {
  const root = element("article", "tile");
  const head = element("header", "tile-head", root);
  const port = element("h2", "port", head);
  const badge = element("span", "badge", head);
  const word = element("span", "word", badge);
  const serial = element("p", "serial", root);
  const name = element("p", "name", root);
  const battery = element("p", "battery", root);
  const step = element("p", "step", root);
  const reports = element("p", "reports", root);
  const problem = element("div", "problem", root);
  const errorTitle = element("p", "error-title", problem);
  const errorMessage = element("p", "error-message", problem);
  const progress = element("div", "progress", root);
  const bar = element("div", "bar", progress);
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", "Steps done");
  bar.setAttribute("aria-valuemin", "0");
  const fill = element("span", "", bar);
  const fraction = element("span", "fraction", progress);
  const elapsed = element("span", "elapsed", progress);
  return {
    root, port, badge, word, serial, name, battery, step, reports, problem, errorTitle, errorMessage, progress, bar,
    fill,
    fraction, elapsed, status: null, startedAt: null, finishedAt: null,
  };
}

function stepLine(port) {
  if (port.status === "done") return "Ready to unplug";
  if (port.status === "failed") return port.step ? `Stopped while ${stepWords(port.step).toLowerCase()}` : "";
  if (port.status === "waiting") {
    return port.restarting ? "Erasing and restarting, leave it plugged in" : "Waiting for the iPad to come back";
  }
  if (port.status === "busy") return stepWords(port.step) || "Starting";
  if (port.status === "held") return port.error_message || "Waiting; it goes on by itself";
  return "Free: plug an iPad in";
}

function reportLine(port) {
  const reports = Object.entries(port.reports || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!reports.length) return "";
  const parts = reports.map(([name, report]) => {
    const word = `${name} ${REPORT_WORDS[report.status] || report.status}`;
    return report.status === "failed" && report.message ? `${word}: ${report.message}` : word;
  });
  return `Reported: ${parts.join(" · ")}`;
}

// The charge as the iPad last reported it: "Battery 64 % · charging" (or "not charging" on a port without power).
function batteryLine(battery) {
  if (!battery) return "";
  const state = battery.charging === true ? " · charging" : battery.charging === false ? " · not charging" : "";
  return `Battery ${battery.level} %${state}`;
}

function fillTile(tile, port) {
  const device = port.device || {};
  if (tile.status !== port.status) {
    tile.root.className = `tile s-${port.status}`;
    tile.badge.replaceChildren(icon(port.status), tile.word);
    tile.status = port.status;
  }
  tile.word.textContent = STATUS_WORDS[port.status] || port.status;
  tile.port.textContent = port.label;
  tile.root.setAttribute("aria-label", `${port.label}: ${STATUS_WORDS[port.status] || port.status}`);
  tile.serial.textContent = device.serial || (port.device ? "Reading serial…" : "");
  tile.name.textContent = [device.name, device.model].filter(Boolean).join(" · ");
  tile.battery.textContent = port.device ? batteryLine(port.battery) : "";
  tile.battery.classList.toggle("low", Boolean(port.battery && port.battery.level < LOW_BATTERY));
  tile.step.textContent = stepLine(port);
  tile.reports.textContent = reportLine(port);
  tile.reports.hidden = !tile.reports.textContent;
  tile.problem.hidden = port.status !== "failed";
  tile.errorTitle.textContent = port.error_title || "";
  tile.errorMessage.textContent = port.error_message || "";
  tile.progress.hidden = !port.device;
  const total = port.steps_total || 0;
  const done = port.steps_done || 0;
  tile.fill.style.width = total ? `${Math.round((100 * done) / total)}%` : "0%";
  tile.bar.setAttribute("aria-valuemax", String(total));
  tile.bar.setAttribute("aria-valuenow", String(done));
  tile.fraction.textContent = total ? `${done}/${total}` : "";
  tile.startedAt = port.started_at;
  tile.finishedAt = port.finished_at;
  tick(tile);
}

function tick(tile) {
  if (!tile.startedAt || tile.status === "empty") {
    tile.elapsed.textContent = "";
    return;
  }
  const end = tile.finishedAt || (Date.now() + clockOffset) / 1000;
  const took = duration(end - tile.startedAt);
  tile.elapsed.textContent = tile.finishedAt ? `took ${took}` : took;
}

function renderCounts(counts) {
  const busy = counts.busy + counts.waiting + counts.held; // a held iPad (charging, ...) is not finished
  $("count-done").textContent = counts.done;
  $("count-busy").textContent = busy;
  $("count-failed").textContent = counts.failed;
  const finished = counts.done + counts.failed;
  const banner = $("banner");
  if (busy === 0 && finished > 0) {
    banner.textContent = counts.failed
      ? `All finished: ${counts.done} done, ${counts.failed} ${counts.failed === 1 ? "needs" : "need"} a hand`
      : `All ${counts.done} done`;
    banner.className = counts.failed ? "banner s-failed" : "banner s-done";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  const station = $("station").textContent;
  document.title = `${counts.done} done · ${busy} busy · ${counts.failed} need a hand · ${station}`;
}

function render(data) {
  clockOffset = data.now * 1000 - Date.now();
  renderCounts(data.counts);
  const grid = $("ports");
  const seen = new Set();
  data.ports.forEach((port, index) => {
    const key = port.location || port.label;
    seen.add(key);
    let tile = tiles.get(key);
    if (!tile) {
      tile = createTile();
      tiles.set(key, tile);
    }
    fillTile(tile, port);
    if (grid.children[index] !== tile.root) grid.insertBefore(tile.root, grid.children[index] || null);
  });
  for (const [key, tile] of tiles) {
    if (!seen.has(key)) {
      tile.root.remove();
      tiles.delete(key);
    }
  }
  $("empty").hidden = data.ports.length > 0;
}

async function fetchJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    render(await fetchJSON("/api/ports"));
  } catch (error) {
    setConnection(false);
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      scheduleRefresh();
    }
  }
}

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, DEBOUNCE_MS);
}

async function loadStation() {
  try {
    const station = await fetchJSON("/api/station");
    $("station").textContent = station.id;
    $("organization").textContent = station.organization || "";
    renderOutage(station.store || { reachable: true });
    fleetShown = Boolean(station.fleet);
    if (fleetShown) refreshFleet();
  } catch (error) {
    setConnection(false);
  }
}

function renderOutage(store) {
  const outage = $("outage");
  if (store.reachable && !store.waiting) {
    outage.hidden = true;
    return;
  }
  const since = store.since ? ` since ${new Date(store.since * 1000).toLocaleTimeString()}` : "";
  outage.textContent = store.reachable
    ? `Fleet database back: delivering ${store.waiting} writes from this station's journal`
    : `Fleet database unreachable${since}: iPads in progress carry on, new iPads wait; ` +
      `${store.waiting} writes wait in this station's journal`;
  outage.hidden = false;
}

let fleetShown = false;

function renderFleet(data) {
  $("fleet-name").textContent = `Fleet ${data.fleet}`;
  const holder = $("fleet-stations");
  holder.replaceChildren();
  for (const station of data.stations) {
    const card = element("article", station.reachable ? "station" : "station unreachable", holder);
    const title = element("h3", "", card);
    title.textContent = station.self ? `${station.id} (this station)` : station.id;
    const counts = station.counts || {};
    const line = element("p", "station-counts", card);
    line.textContent = station.reachable
      ? `${counts.done || 0} done · ${(counts.busy || 0) + (counts.waiting || 0)} busy · ${counts.failed || 0} need a hand`
      : "not answering";
    const dots = element("div", "dots", card);
    for (const port of station.ports || []) {
      const dot = element("span", `dot s-${port.status}`, dots);
      dot.title = `${port.label}: ${port.status}${port.device && port.device.serial ? ` (${port.device.serial})` : ""}`;
    }
  }
  $("fleet").hidden = false;
}

async function refreshFleet() {
  if (!fleetShown) return;
  try {
    renderFleet(await fetchJSON("/api/fleet"));
  } catch (error) {
    $("fleet").hidden = true;
  }
}

function setConnection(live) {
  const connection = $("connection");
  connection.textContent = live ? "Live" : "Reconnecting…";
  connection.className = live ? "connection live" : "connection lost";
}

function connect() {
  const source = new EventSource("/api/stream");
  source.onopen = () => {
    setConnection(true);
    loadStation();
    scheduleRefresh();
  };
  source.onerror = () => {
    setConnection(false);
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, RECONNECT_MS);
  };
  for (const kind of EVENT_KINDS) source.addEventListener(kind, scheduleRefresh);
  source.onmessage = scheduleRefresh;
}

document.addEventListener("DOMContentLoaded", () => {
  loadStation();
  refresh();
  connect();
  setInterval(() => tiles.forEach(tick), 1000);
  setInterval(refresh, POLL_MS);
  setInterval(loadStation, FLEET_MS);
});
