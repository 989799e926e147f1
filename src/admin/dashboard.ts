/**
 * `GET /dashboard`: one self-contained HTML page (inline CSS and JS, no build step, no external
 * asset) that polls `/tunnels` and `/stats?format=json` every `pollMs` and shows the nodes,
 * clusters and tunnels, the request rate (from counter deltas), errors, handshake failures and
 * ping round trips. It falls back to the text `/stats` (`name: value` lines) when the JSON form is
 * not there.
 *
 * The page holds no data, so it is served without the admin token (a browser cannot send a bearer
 * token when it navigates); every request it makes carries `authorization: Bearer <token>` when the
 * URL has a `#token=` fragment (a fragment never leaves the browser, so it is in no access log) or
 * when the operator types the token into the prompt shown after a 401.
 *
 * Security: the script and the style carry a per-response nonce, and the CSP allows nothing else
 * (`default-src 'none'`), no framing and no form targets; every value reaches the DOM through
 * `textContent`, never as HTML.
 */
import { randomBytes } from 'node:crypto';

/** How often the page polls, ms (the issue asks for 1–2 s). */
export const dashboardPollMs = 1500;

export interface DashboardPage {
  readonly html: string;
  readonly csp: string;
}

/** The page, with a fresh nonce for its script and style. */
export function dashboardPage(): DashboardPage {
  const nonce = randomBytes(16).toString('base64');
  const csp = [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html: html(nonce), csp };
}

function html(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>revtun admin</title>
<style nonce="${nonce}">${style}</style>
</head>
<body>
<header>
  <h1>revtun <span id="role">…</span></h1>
  <span id="status" class="badge">connecting</span>
  <span id="ready" class="badge"></span>
  <span id="updated" class="muted"></span>
</header>
<section class="cards">
  <div class="card"><div class="label">Nodes</div><div class="value" id="nodes">–</div></div>
  <div class="card"><div class="label">Clusters</div><div class="value" id="clusters">–</div></div>
  <div class="card"><div class="label">Tunnels</div><div class="value" id="tunnels">–</div><div class="sub" id="tunnel-states"></div></div>
  <div class="card"><div class="label">Requests/s</div><div class="value" id="rate">–</div><div class="sub" id="requests"></div></div>
  <div class="card"><div class="label">Errors</div><div class="value" id="errors">–</div><div class="sub" id="error-rate"></div></div>
  <div class="card"><div class="label">Handshake failures</div><div class="value" id="handshake-failures">–</div></div>
  <div class="card"><div class="label">Ping RTT (ms)</div><div class="value" id="rtt">–</div><div class="sub" id="rtt-range"></div></div>
</section>
<section>
  <h2>Clusters</h2>
  <table id="cluster-table"><thead><tr><th>Cluster</th><th>Tenant</th><th>Nodes</th><th>Tunnels</th><th>Streams</th></tr></thead><tbody></tbody></table>
</section>
<section>
  <h2>Tunnels</h2>
  <table id="tunnel-table"><thead><tr><th>Node</th><th>Cluster</th><th>Tenant</th><th>Remote</th><th>Responder</th><th>State</th><th>Established</th><th class="num">Streams</th><th class="num">Sent</th><th class="num">Received</th><th class="num">RTT ms</th></tr></thead><tbody></tbody></table>
  <p id="empty" class="muted">No tunnels.</p>
</section>
<script nonce="${nonce}">${script}</script>
</body>
</html>
`;
}

const style = `
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;background:#f5f6f8;color:#1d2330}
header{display:flex;align-items:center;gap:12px;padding:10px 20px;background:#1d2330;color:#fff}
h1{font-size:18px;margin:0;font-weight:600}
h2{font-size:15px;margin:18px 20px 6px}
.badge{padding:2px 8px;border-radius:10px;background:#5a6270;font-size:12px}
.badge.ok{background:#2e7d32}.badge.bad{background:#c62828}.badge.warn{background:#b26a00}
.muted{color:#7a8290;font-size:12px}
header .muted{color:#b8bec8}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;padding:14px 20px 0}
.card{background:#fff;border-radius:6px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.label{font-size:12px;color:#5a6270;text-transform:uppercase;letter-spacing:.03em}
.value{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}
.value.alert{color:#c62828}
.sub{font-size:12px;color:#5a6270;min-height:16px}
table{margin:0 20px;width:calc(100% - 40px);border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);font-size:13px}
th,td{padding:5px 8px;text-align:left;border-bottom:1px solid #e6e8ec;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:220px}
th{background:#eceef2;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
.state-idle{color:#2e7d32}.state-in_use{color:#1565c0;font-weight:600}.state-draining{color:#b26a00}.state-connecting{color:#7a8290}
#empty{margin:8px 20px}
`;

/**
 * The page's script. Plain ES2020 in a template string: no build step. It must not use
 * innerHTML with data; cells are filled with textContent.
 */
const script = `
'use strict';
const pollMs = ${dashboardPollMs};
const fragment = new URLSearchParams(location.hash.slice(1));
let token = fragment.get('token') || sessionStorage.getItem('revtun-admin-token') || '';
let previous = null;
let prompted = false;
const $ = (id) => document.getElementById(id);

async function get(path) {
  const headers = token ? { authorization: 'Bearer ' + token } : {};
  const response = await fetch(path, { headers, cache: 'no-store' });
  if (response.status === 401) {
    if (prompted) throw new Error('unauthorized: open the page with #token=<admin token>');
    prompted = true;
    const typed = window.prompt('revtun admin token');
    if (typed) { token = typed.trim(); sessionStorage.setItem('revtun-admin-token', token); }
    throw new Error('unauthorized: open the page with #token=<admin token>');
  }
  return response;
}

/** Stats as a name → number map: the JSON form, else the text form. */
let jsonStats = true;
async function stats() {
  const map = new Map();
  if (jsonStats) {
    const json = await get('/stats?format=json');
    if (json.ok && (json.headers.get('content-type') || '').includes('json')) {
      const body = await json.json();
      for (const row of body.stats || []) {
        if (typeof row.value === 'number') map.set(row.name, row.value);
      }
      return map;
    }
    // A server without the JSON form (400): use the text form from now on.
    if (json.status === 400) jsonStats = false;
  }
  const text = await get('/stats');
  if (!text.ok) throw new Error('/stats answered ' + text.status);
  for (const line of (await text.text()).split('\\n')) {
    const at = line.lastIndexOf(': ');
    if (at < 0) continue;
    const value = Number(line.slice(at + 2));
    if (Number.isFinite(value)) map.set(line.slice(0, at), value);
  }
  return map;
}

function sum(map, pattern) {
  let total = 0;
  for (const [name, value] of map) if (pattern.test(name)) total += value;
  return total;
}

/** Requests: the HCM's downstream_rq_total where present, else the clusters' upstream_rq_total. */
function requestCount(map) {
  const downstream = /(^|\\.)downstream_rq_total$/;
  for (const name of map.keys()) if (downstream.test(name)) return sum(map, downstream);
  return sum(map, /(^|\\.)upstream_rq_total$/);
}
/**
 * Errors: the HCM's downstream_rq_5xx where present (every 5xx a caller got, the 503s for no
 * tunnel among them); else the clusters' refusals. Never both, or a refusal counts twice.
 */
function errorCount(map) {
  const downstream = /(^|\\.)downstream_rq_5xx$/;
  for (const name of map.keys()) if (downstream.test(name)) return sum(map, downstream);
  return sum(map, /(^|\\.)(upstream_rq_5xx|upstream_cx_none_healthy|upstream_cx_connect_fail|upstream_rq_timeout)$/);
}
const handshakeFailurePattern = /^reverse_tunnel\\.handshake\\.(parse_error|validation_failed|rejected|body_rejected|timeout|jwt_denied|auth_denied|tls_error|conflict)$|\\.result\\.failed(\\.|$)/;

function bytes(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return value.toFixed(1) + ' ' + units[unit];
}

function since(iso, now) {
  if (!iso) return '–';
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return seconds + ' s ago';
  if (seconds < 7200) return Math.round(seconds / 60) + ' min ago';
  return Math.round(seconds / 3600) + ' h ago';
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows);
}

function render(listing, map, now) {
  const tunnels = listing.tunnels;
  $('role').textContent = listing.role;
  const nodes = new Set(tunnels.map((t) => t.tenant + '\\u0000' + t.node));
  const clusters = new Map();
  const states = {};
  const rtts = [];
  for (const t of tunnels) {
    states[t.state] = (states[t.state] || 0) + 1;
    if (t.last_ping_rtt_ms !== null) rtts.push(t.last_ping_rtt_ms);
    const key = t.tenant + '\\u0000' + t.cluster;
    const entry = clusters.get(key) || { cluster: t.cluster, tenant: t.tenant, nodes: new Set(), tunnels: 0, streams: 0 };
    entry.nodes.add(t.node); entry.tunnels += 1; entry.streams += t.streams_in_flight;
    clusters.set(key, entry);
  }
  $('nodes').textContent = nodes.size;
  $('clusters').textContent = clusters.size;
  $('tunnels').textContent = tunnels.length;
  $('tunnel-states').textContent = Object.entries(states).map(([s, n]) => n + ' ' + s.replace('_', ' ')).join(', ');
  if (rtts.length > 0) {
    const avg = rtts.reduce((a, b) => a + b, 0) / rtts.length;
    $('rtt').textContent = avg.toFixed(1);
    $('rtt-range').textContent = 'min ' + Math.min(...rtts).toFixed(1) + ' / max ' + Math.max(...rtts).toFixed(1);
  } else { $('rtt').textContent = '–'; $('rtt-range').textContent = 'no ping yet'; }

  const requests = requestCount(map);
  const errors = errorCount(map);
  const failures = sum(map, handshakeFailurePattern);
  $('requests').textContent = requests + ' total';
  $('errors').textContent = errors;
  $('errors').classList.toggle('alert', errors > 0);
  $('handshake-failures').textContent = failures;
  $('handshake-failures').classList.toggle('alert', failures > 0);
  if (previous !== null && now > previous.at) {
    const seconds = (now - previous.at) / 1000;
    $('rate').textContent = (Math.max(0, requests - previous.requests) / seconds).toFixed(1);
    $('error-rate').textContent = (Math.max(0, errors - previous.errors) / seconds).toFixed(2) + ' /s';
  }
  previous = { at: now, requests, errors };

  fillTable('cluster-table', [...clusters.values()].map((c) => {
    const tr = document.createElement('tr');
    cell(tr, c.cluster); cell(tr, c.tenant || '–'); cell(tr, c.nodes.size, 'num'); cell(tr, c.tunnels, 'num'); cell(tr, c.streams, 'num');
    return tr;
  }));
  fillTable('tunnel-table', tunnels.map((t) => {
    const tr = document.createElement('tr');
    tr.dataset.node = t.node;
    cell(tr, t.node, 'node'); cell(tr, t.cluster); cell(tr, t.tenant || '–');
    cell(tr, t.remote_address); cell(tr, t.responder);
    cell(tr, t.state.replace('_', ' '), 'state-' + t.state);
    cell(tr, since(t.established_at, now)).title = t.established_at || '';
    cell(tr, t.streams_in_flight, 'num'); cell(tr, bytes(t.bytes_sent), 'num'); cell(tr, bytes(t.bytes_received), 'num');
    cell(tr, t.last_ping_rtt_ms === null ? '–' : t.last_ping_rtt_ms.toFixed(1), 'num');
    return tr;
  }));
  $('empty').hidden = tunnels.length > 0;
}

async function poll() {
  try {
    const [listingResponse, map, ready] = await Promise.all([get('/tunnels'), stats(), fetch('/ready', { cache: 'no-store' })]);
    if (!listingResponse.ok) throw new Error('/tunnels answered ' + listingResponse.status);
    const listing = await listingResponse.json();
    const now = Date.parse(listing.now) || Date.now();
    render(listing, map, now);
    $('status').textContent = 'live';
    $('status').className = 'badge ok';
    $('ready').textContent = ready.ok ? 'ready' : 'draining';
    $('ready').className = 'badge ' + (ready.ok ? 'ok' : 'warn');
    $('updated').textContent = 'updated ' + new Date(now).toLocaleTimeString();
  } catch (error) {
    $('status').textContent = String(error && error.message || error);
    $('status').className = 'badge bad';
  } finally {
    setTimeout(poll, pollMs);
  }
}
poll();
`;
