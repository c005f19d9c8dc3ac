// eddy console: the browser front-end of the control API (docs/api.md).
//
// Plain modern JavaScript, one ES module, no framework, no build step. The node serves this
// page with a strict Content-Security-Policy, and the page shows untrusted text (guest
// output, queue payloads, names), so:
// - the DOM is only ever built with createElement + textContent (see `h`); no HTML strings;
// - every URL path segment is encoded (see `path`); links are only ever `#/...` hashes;
// - nothing stores the token: sign-in trades it once for an HttpOnly cookie
//   (POST /v1/session) and forgets it; every later request relies on that cookie;
// - every request that is not a GET carries `x-eddy-console: 1`, which the node requires of
//   cookie-authenticated changes (CSRF defence).

const REFRESH_MS = 5000;
const FUNCTION_REFRESH_MS = 10000;
// A function's versions, triggers and limits change only on a deploy or a rollback.
const FUNCTION_DETAILS_REFRESH_MS = 30000;
const COST_REFRESH_MS = 30000;
const WEBSOCKETS_REFRESH_MS = 15000;
const LOG_ROWS_MAX = 200;
// The live log's retries: after a refused stream, and after the node's 429.
const LOG_RETRY_MS = 5000;
const LOG_RETRY_MAX_MS = 30000;
// The audit trail: pages of AUDIT_PAGE entries, at most AUDIT_PAGES_MAX of them; the newest
// AUDIT_KEEP are kept.
const AUDIT_PAGE = 1000;
const AUDIT_PAGES_MAX = 20;
const AUDIT_KEEP = 5000;
const AUDIT_ROWS_DRAWN = 1000;
const CHART_HEIGHT = 190;
const CHART_POINTS_MAX = 360;
const STATS_WINDOW_MS = 300000;

const app = {
  session: null, // the answer of GET/POST /v1/session
  page: null, // the Page being shown
};

// ---------------------------------------------------------------------------------------
// DOM building: the only way this file makes elements.

const REFUSED_ATTRIBUTES = /^(?:on|style$|srcdoc$|src$|action$|formaction$|xlink:|innerhtml$|outerhtml$)/i;

/**
 * `h('a', {href: '#/x', class: 'c', text: 'untrusted'}, child, ...)`: builds an element.
 * `text` sets textContent, `data` sets data-* attributes, `on` adds listeners, `value` sets
 * the property. Strings among the children become text nodes. `href` must be a `#/` hash.
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') el.textContent = String(value);
      else if (key === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : String(value);
      else if (key === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
      else if (key === 'data') {
        for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[k] = String(v);
      } else if (key === 'value') el.value = String(value);
      else if (key === 'href') {
        const href = String(value);
        if (!/^#(?:\/|main$)/.test(href)) throw new Error(`refusing a link to ${href}`);
        el.setAttribute('href', href);
      } else if (REFUSED_ATTRIBUTES.test(key)) throw new Error(`refusing the attribute ${key}`);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  appendChildren(el, children);
  return el;
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    // Element.append with a string makes a Text node: never parsed as HTML.
    el.append(child instanceof Node ? child : String(child));
  }
}

let uidCounter = 0;
const uid = (prefix) => `${prefix}-${++uidCounter}`;
const $ = (selector, root = document) => root.querySelector(selector);

/** A path whose interpolated parts are each percent-encoded: path`/v1/functions/${name}`. */
function path(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => {
    out += encodeURIComponent(String(value)) + strings[i + 1];
  });
  return out;
}

const fnHref = (name) => `#/functions/${encodeURIComponent(name)}`;

/** Replaces a container's children, keeping keyboard focus on the element with the same
 * `data-focus-key` (refreshes must not yank focus away from a keyboard user). */
function replaceKeepingFocus(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : undefined;
  container.replaceChildren();
  appendChildren(container, children);
  if (key) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

// ---------------------------------------------------------------------------------------
// Formatting.

const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const sig2 = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 2 });
const usdSmall = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'USD', maximumSignificantDigits: 5 });
const usdUnits = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 4 });
const usdLarge = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 2 });
const usdExact = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'USD', maximumSignificantDigits: 12 });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const clockFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const shortFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false });

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
// The node may answer -0.0 (a sum of nothing); Intl would print "-0".
const z = (v) => (v === 0 ? 0 : v);
const fmtInt = (n) => (isNum(n) ? nf0.format(z(n)) : '—');
const fmtMs = (ms) => (isNum(ms) ? `${nf2.format(z(ms))} ms` : '—');
/** A rate: 2 decimals from 0.1/s up, else 2 significant digits ("0.05/s", "0.0033/s"). */
function fmtRate(perSecond) {
  if (!isNum(perSecond)) return '—';
  const v = z(perSecond);
  if (v === 0) return '0/s';
  return `${Math.abs(v) >= 0.1 ? nf2.format(v) : sig2.format(v)}/s`;
}

/**
 * The seconds a window of the node's covers: from its `since` (the start of the minute the
 * window reaches into) to now; `nominalMs` when `since` is missing or not in the past.
 */
function windowSeconds(since, nominalMs) {
  const start = parseTime(since);
  const span = start === null ? NaN : (Date.now() - start) / 1000;
  return Number.isFinite(span) && span > 0 ? span : nominalMs / 1000;
}
const fmtPct = (fraction) => (isNum(fraction) ? `${nf1.format(z(fraction * 100))}%` : '—');

/** A total duration: ms with 2 decimals below a second, then s, min, h, d. */
function fmtDuration(ms) {
  if (!isNum(ms)) return '—';
  ms = z(ms);
  if (ms < 1000) return `${nf2.format(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${nf2.format(s)} s`;
  if (s < 7200) return `${nf1.format(s / 60)} min`;
  if (s < 172800) return `${nf1.format(s / 3600)} h`;
  return `${nf1.format(s / 86400)} d`;
}

/** USD: 5 significant digits below $1, up to 4 decimals below $100, then cents. */
function fmtUsd(v) {
  if (!isNum(v)) return '—';
  if (v === 0) return usdLarge.format(0);
  const a = Math.abs(v);
  if (a < 1) return usdSmall.format(v);
  return a < 100 ? usdUnits.format(v) : usdLarge.format(v);
}

/** A configured time (timeouts, waits): whole seconds as "30 s", else ms. */
function fmtLimitMs(ms) {
  if (!isNum(ms)) return '—';
  if (ms >= 1000 && ms % 1000 === 0) return `${nf0.format(ms / 1000)} s`;
  return `${nf0.format(ms)} ms`;
}

/** An age such as the oldest message's: "42 s", "3 min 5 s", "2.5 h". */
function fmtAge(ms) {
  if (!isNum(ms)) return '—';
  if (ms < 1000) return `${nf0.format(ms)} ms`;
  return relText(Date.now() + ms).replace(/^in /, '');
}

function fmtBytes(n) {
  if (!isNum(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${nf0.format(v)} B` : `${Number.isInteger(v) ? nf0.format(v) : nf1.format(v)} ${units[i]}`;
}

function fmtCount(n) {
  if (!isNum(n)) return '—';
  n = z(n);
  if (Math.abs(n) < 1e6) return nf0.format(n);
  const units = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M']];
  for (const [size, unit] of units) if (Math.abs(n) >= size) return `${nf1.format(n / size)}${unit}`;
  return nf0.format(n);
}

function parseTime(value) {
  if (value === null || value === undefined || value === '') return null;
  const ms = typeof value === 'number' ? value : Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

/** "in 42 s", "3 min ago", "now". */
function relText(atMs, now = Date.now()) {
  const d = atMs - now;
  const a = Math.abs(d);
  if (a < 1000) return 'now';
  let t;
  if (a < 60e3) t = `${Math.round(a / 1000)} s`;
  else if (a < 600e3) {
    const m = Math.floor(a / 60e3);
    const s = Math.round((a - m * 60e3) / 1000);
    t = s ? `${m} min ${s} s` : `${m} min`;
  } else if (a < 3600e3) t = `${Math.round(a / 60e3)} min`;
  else if (a < 48 * 3600e3) t = `${nf1.format(a / 3600e3)} h`;
  else t = `${nf0.format(a / 86400e3)} d`;
  return d > 0 ? `in ${t}` : `${t} ago`;
}

/** A <time> showing a relative time, kept fresh by the ticker, the absolute one as a tooltip. */
function relTime(value, empty = '—') {
  const ms = parseTime(value);
  if (ms === null) return h('span', { class: 'muted', text: empty });
  const iso = new Date(ms).toISOString();
  return h('time', { class: 'rel-time', datetime: iso, title: dateTime.format(ms), data: { atMs: ms }, text: relText(ms) });
}

/** A <time> with the clock time (and the date when it is not today). */
function clockTime(value) {
  const ms = parseTime(value);
  if (ms === null) return h('span', { class: 'muted', text: '—' });
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const text = sameDay ? `${clockFmt.format(d)}.${String(d.getMilliseconds()).padStart(3, '0')}` : shortFmt.format(d);
  return h('time', { datetime: d.toISOString(), title: dateTime.format(d), text });
}

function startRelativeTicker() {
  setInterval(() => {
    if (document.visibilityState !== 'visible') return;
    const now = Date.now();
    for (const el of document.querySelectorAll('time.rel-time')) {
      const ms = Number(el.dataset.atMs);
      if (Number.isFinite(ms)) {
        const text = relText(ms, now);
        if (el.textContent !== text) el.textContent = text;
      }
    }
  }, 1000);
}

// ---------------------------------------------------------------------------------------
// The control API.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Thrown after a 401 has sent the user back to the sign-in view. */
class SessionLost extends Error {}

const isQuiet = (e) => e instanceof SessionLost || e?.name === 'AbortError';

/** The node's own words for an error, with its status and code. */
function describe(e) {
  if (e instanceof ApiError) {
    const tag = [e.status || null, e.code || null].filter(Boolean).join(' ');
    return tag ? `${e.message} (${tag})` : e.message;
  }
  return e?.message || String(e);
}

async function errorFrom(res) {
  let code = '';
  let message = '';
  let text = '';
  try {
    text = await res.text();
    const body = JSON.parse(text);
    code = String(body?.error?.code ?? '');
    message = String(body?.error?.message ?? '');
  } catch {
    message = text.trim().slice(0, 300);
  }
  if (!message) message = `${res.status} ${res.statusText || 'error'}`;
  const retry = res.headers.get('retry-after');
  if (res.status === 429 && retry) message += ` Try again in ${retry} s.`;
  return new ApiError(res.status, code, message);
}

/**
 * A control-API call with the session cookie. `json` is sent as the JSON body. Every method
 * but GET carries `x-eddy-console: 1`. A 401 ends the session: back to the sign-in view.
 */
async function api(url, { method = 'GET', json, signal } = {}) {
  const headers = { accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error', signal };
  if (method !== 'GET' && method !== 'HEAD') headers['x-eddy-console'] = '1';
  if (json !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `Could not reach the node (${e?.message || e}).`);
  }
  if (res.status === 401) {
    const err = await errorFrom(res);
    sessionLost(`You were signed out: ${err.message}`);
    throw new SessionLost(err.message);
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** `fn` over `items`, at most `limit` at once, results in order. */
async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Resolves to `{error}` instead of rejecting, except for a lost session or an abort. */
const settle = (promise) => promise.catch((e) => (isQuiet(e) ? Promise.reject(e) : { error: e }));

// ---------------------------------------------------------------------------------------
// Permissions: action buttons are drawn only for the permissions the session has.

const can = (permission) => Boolean(app.session?.permissions?.includes(permission));

/** Whether the token's scope (`functions`, `queues`) names `name` (an empty list: all). */
function inScope(kind, name) {
  const list = app.session?.[kind];
  return !Array.isArray(list) || list.length === 0 || list.includes('*') || list.includes(name);
}

// ---------------------------------------------------------------------------------------
// Status messages (aria-live) and confirmation.

let statusTimer = 0;
function announce(message, kind = 'ok') {
  const el = $('#status');
  clearTimeout(statusTimer);
  el.className = `status status-${kind}`;
  el.textContent = message;
  if (kind === 'ok' && message) statusTimer = setTimeout(() => { el.textContent = ''; }, 12000);
}

/** A modal confirmation (<dialog>); resolves true when the user confirms. */
function confirmAction({ title, body, confirmLabel }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const bodyId = uid('dialog-body');
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': titleId, 'aria-describedby': bodyId });
    const cancel = h('button', { type: 'button', value: 'cancel', text: 'Cancel', on: { click: () => dialog.close('cancel') } });
    const ok = h('button', { type: 'button', value: 'confirm', class: 'primary', text: confirmLabel, on: { click: () => dialog.close('confirm') } });
    dialog.append(h('h2', { id: titleId, text: title }), h('p', { id: bodyId, text: body }), h('div', { class: 'dialog-buttons' }, cancel, ok));
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'confirm');
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

// ---------------------------------------------------------------------------------------
// Pages: each route renders into <main> with a Page that owns its timers, requests,
// streams and charts, all ended when the user leaves.

class Page {
  constructor(name) {
    this.name = name;
    this.alive = true;
    this.controller = new AbortController();
    this.cleanups = [];
  }

  get signal() {
    return this.controller.signal;
  }

  /** Runs `fn` when the page closes; at once if it has closed already (nothing may leak). */
  onCleanup(fn) {
    if (!this.alive) {
      try {
        fn();
      } catch {
        // as in close()
      }
      return;
    }
    this.cleanups.push(fn);
  }

  /**
   * Runs `fn` every `ms` while the tab is visible (and at once when it becomes visible).
   * Nothing is started for a page that has closed already (a first load that outlived it).
   */
  every(ms, fn) {
    if (!this.alive) return;
    let running = false;
    const run = async () => {
      if (!this.alive || running || document.visibilityState !== 'visible') return;
      running = true;
      try {
        await fn();
      } catch (e) {
        if (!isQuiet(e) && this.alive) announce(describe(e), 'error');
      } finally {
        running = false;
      }
    };
    const timer = setInterval(run, ms);
    const onVisible = () => {
      if (document.visibilityState === 'visible') run();
    };
    document.addEventListener('visibilitychange', onVisible);
    this.onCleanup(() => {
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    });
  }

  close() {
    this.alive = false;
    this.controller.abort();
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        // a cleanup failing must not stop the others
      }
    }
  }
}

/** A titled panel; `body` receives the content, `errors` the last load error. */
function panel(title, { level = 2, tools } = {}) {
  const headingId = uid('h');
  const heading = h(`h${level}`, { id: headingId, text: title });
  const errors = h('div', { class: 'panel-errors' });
  const body = h('div', { class: 'panel-body' });
  const el = h('section', { class: 'panel', 'aria-labelledby': headingId }, h('div', { class: 'panel-head' }, heading, tools), errors, body);
  return { el, body, errors, heading };
}

/** Runs a loader; its error (if any) is shown in `errors` until the next success. */
async function guarded(page, errors, what, fn) {
  try {
    await fn();
    if (page.alive) errors.replaceChildren();
  } catch (e) {
    if (!page.alive || isQuiet(e)) return;
    errors.replaceChildren(h('p', { class: 'error', text: `${what}: ${describe(e)}` }));
  }
}

function note(text) {
  return h('p', { class: 'note', text });
}

/** A table inside a horizontally scrolling, keyboard-focusable wrapper. */
function dataTable(label, columns, className) {
  const tbody = h('tbody');
  const table = h(
    'table',
    { class: className },
    h('caption', { class: 'visually-hidden', text: label }),
    h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null, title: c.title }, c.label)))),
    tbody,
  );
  const wrap = h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
  return { wrap, tbody, table };
}

const td = (content, cls) => h('td', { class: cls }, content);
const tdNum = (content, cls) => h('td', { class: ['num', cls] }, content);

function badge(text, kind) {
  return h('span', { class: ['badge', kind && `badge-${kind}`], text });
}

function facts(pairs) {
  const dl = h('dl', { class: 'facts' });
  for (const [term, value] of pairs) {
    if (value === undefined) continue;
    dl.append(h('div', { class: 'fact' }, h('dt', { text: term }), h('dd', null, value ?? '—')));
  }
  return dl;
}

function card(label, value, detail, attrs) {
  return h('div', { class: 'card', ...attrs }, h('div', { class: 'card-label', text: label }), h('div', { class: 'card-value' }, value), detail ? h('div', { class: 'card-detail' }, detail) : null);
}

// ---------------------------------------------------------------------------------------
// Charts (uPlot).

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

const SERIES_COLORS = ['--c1', '--c2', '--c3', '--c4', '--c5', '--c6', '--c7', '--c8'];
const FALLBACK_COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d'];
const seriesColor = (i) => cssVar(SERIES_COLORS[i % SERIES_COLORS.length], FALLBACK_COLORS[i % FALLBACK_COLORS.length]);

/**
 * A chart card: heading, text summary, and a uPlot chart that follows its container's
 * width. `set({xs, series, summary, points, fmt})` draws; `xs` are seconds since the epoch.
 */
function chartCard(page, title) {
  const headingId = uid('chart');
  const summary = h('p', { class: 'chart-summary' });
  const box = h('div', { class: 'chart', data: { points: 0 }, 'aria-hidden': 'true' });
  const el = h('section', { class: 'chart-card', 'aria-labelledby': headingId }, h('h3', { id: headingId, text: title }), summary, box);
  let plot = null;
  let key = '';
  const width = () => Math.max(200, Math.floor(box.clientWidth || box.parentElement?.clientWidth || 600));
  const observer = new ResizeObserver(() => {
    if (!plot) return;
    const w = width();
    if (w !== plot.width) plot.setSize({ width: w, height: CHART_HEIGHT });
  });
  observer.observe(box);
  page.onCleanup(() => {
    observer.disconnect();
    plot?.destroy();
    plot = null;
  });

  function options(series, fmt, stepLabel) {
    const axis = cssVar('--fg-muted', '#555');
    const grid = cssVar('--grid', 'rgba(0,0,0,0.08)');
    const axisCommon = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    return {
      width: width(),
      height: CHART_HEIGHT,
      cursor: { drag: { x: true, y: false } },
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => uPlot.rangeNum(0, isNum(max) && max > 0 ? max : 1, 0.1, true) },
      },
      axes: [
        { ...axisCommon },
        {
          ...axisCommon,
          values: (u, splits) => splits.map((v) => fmt.axis(v)),
          // Wide enough for the longest label (7 px a character at the axis font).
          size: (u, values) => Math.max(40, 16 + 7 * Math.max(0, ...(values || []).map((v) => String(v).length))),
          ...(fmt.integer ? { incrs: INTEGER_INCREMENTS } : {}),
        },
      ],
      series: [
        { label: stepLabel ? `Time (${stepLabel} steps)` : 'Time', value: (u, v) => (v === null || v === undefined ? '—' : dateTime.format(v * 1000)) },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color || seriesColor(i),
          width: 1.5,
          fill: s.fill ? `${s.color || seriesColor(i)}22` : undefined,
          spanGaps: false,
          points: s.points ? { show: true, size: 4 } : undefined,
          value: (u, v) => (v === null || v === undefined ? '—' : fmt.value(v)),
        })),
      ],
    };
  }

  return {
    el,
    set({ xs, series, summary: text, points, fmt, stepLabel }) {
      box.dataset.points = String(points ?? 0);
      summary.textContent = text;
      if (typeof window.uPlot !== 'function') {
        box.replaceChildren(h('p', { class: 'note', text: 'Charts are unavailable: uPlot did not load.' }));
        return;
      }
      const data = [xs, ...series.map((s) => s.values)];
      const newKey = `${stepLabel}\u0000${series.map((s) => s.label).join('\u0000')}`;
      if (plot && newKey === key) {
        plot.setData(data);
        return;
      }
      plot?.destroy();
      key = newKey;
      plot = new uPlot(options(series, fmt, stepLabel), data, box);
    },
  };
}

const INTEGER_INCREMENTS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9];
const countFmt = { axis: (v) => fmtCount(v), value: (v) => fmtInt(v), integer: true };
const msFmt = { axis: (v) => (v >= 1000 ? `${nf1.format(v / 1000)} s` : `${nf0.format(v)} ms`), value: (v) => fmtMs(v) };
const durationFmt = { axis: (v) => fmtDuration(v).replace(/\.00 /, ' '), value: (v) => fmtDuration(v) };
const usdFmt = { axis: (v) => fmtUsd(v), value: (v) => fmtUsd(v) };

// ---------------------------------------------------------------------------------------
// Session: sign in, sign out, the header.

function showSignIn(message, kind = 'error') {
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close('cancel');
  app.page?.close();
  app.page = null;
  app.session = null;
  $('#nav').replaceChildren();
  $('#who').hidden = true;
  document.title = 'Sign in · eddy console';
  const main = $('#main');
  main.dataset.page = 'sign-in';
  main.dataset.state = 'ready';

  const inputId = uid('token');
  const helpId = uid('token-help');
  const messageBox = h('p', { class: ['sign-in-message', message && `status-${kind}`], role: 'status', 'aria-live': 'polite', text: message || '' });
  // No `name` attribute: even if the form were ever submitted natively, the token would not be.
  const input = h('input', { id: inputId, type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, 'aria-describedby': helpId });
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = h(
    'form',
    { id: 'sign-in', class: 'sign-in', novalidate: true },
    h('h1', { text: 'Sign in to eddy' }),
    h('label', { for: inputId, text: 'Access token' }),
    input,
    h('p', { id: helpId, class: 'hint', text: 'A token made with “eddy token create”, or the node’s admin token (the file admin-token in its state directory). It is sent once; the node then keeps you signed in with a cookie that scripts cannot read.' }),
    submit,
    messageBox,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let token = input.value.trim();
    input.value = '';
    if (!token) {
      messageBox.className = 'sign-in-message status-error';
      messageBox.textContent = 'Paste a token first.';
      input.focus();
      return;
    }
    submit.disabled = true;
    messageBox.className = 'sign-in-message';
    messageBox.textContent = 'Signing in…';
    let res;
    try {
      res = await fetch('/v1/session', {
        method: 'POST',
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
        headers: { authorization: `Bearer ${token}`, 'x-eddy-console': '1', accept: 'application/json' },
      });
    } catch (e) {
      res = null;
      messageBox.className = 'sign-in-message status-error';
      messageBox.textContent = e instanceof TypeError && /header/i.test(e.message) ? 'That is not a token: it holds characters a token never has.' : `Could not reach the node (${e?.message || e}).`;
    } finally {
      token = null; // dropped: from here on the HttpOnly cookie speaks for us
    }
    submit.disabled = false;
    if (!res) return;
    if (res.ok) {
      app.session = await res.json();
      enterApp({ focus: true });
      return;
    }
    const err = await errorFrom(res);
    messageBox.className = 'sign-in-message status-error';
    messageBox.textContent = res.status === 401 ? `The node refused this token: ${err.message}` : describe(err);
    input.focus();
  });
  main.replaceChildren(form);
  input.focus();
}

function sessionLost(message) {
  if (!app.session) return;
  showSignIn(message || 'Your session ended. Sign in again.');
}

async function signOut() {
  // Stop every refresh and stream first: nothing may race the DELETE with a 401.
  app.page?.close();
  app.page = null;
  try {
    await api('/v1/session', { method: 'DELETE' });
  } catch (e) {
    if (e instanceof SessionLost) return; // already shown the sign-in view
    render();
    announce(`Could not sign out: ${describe(e)}`, 'error');
    return;
  }
  // The next person to sign in starts at the overview, not on this session's page.
  history.replaceState(null, '', `${location.pathname}${location.search}#/`);
  showSignIn('You are signed out.', 'ok');
}

const NAV = [
  { page: 'overview', href: '#/', label: 'Overview' },
  { page: 'queues', href: '#/queues', label: 'Queues', allowed: () => can('queues:read') },
  { page: 'websockets', href: '#/websockets', label: 'WebSockets', allowed: () => can('functions:read') },
  { page: 'cost', href: '#/cost', label: 'Cost', allowed: () => can('cost:read') },
  { page: 'cron', href: '#/cron', label: 'Cron', allowed: () => can('functions:read') },
  { page: 'access', href: '#/access', label: 'Access', allowed: () => can('tokens:manage') || can('audit:read') },
];

function enterApp({ focus = false } = {}) {
  const s = app.session;
  $('#who-name').textContent = s.name ?? '';
  $('#who-role').textContent = s.role ?? '';
  $('#who').hidden = false;
  const list = h('ul');
  for (const item of NAV) {
    if (item.allowed && !item.allowed()) continue;
    list.append(h('li', null, h('a', { href: item.href, data: { page: item.page }, text: item.label })));
  }
  $('#nav').replaceChildren(list);
  render({ focus });
}

// ---------------------------------------------------------------------------------------
// Routing.

const PAGES = ['overview', 'function', 'queues', 'websockets', 'cost', 'cron', 'access'];

function parseRoute() {
  const raw = (location.hash || '#/').slice(1).split('?')[0];
  let segments;
  try {
    segments = raw.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return { page: 'notfound' };
  }
  if (segments.length === 0) return { page: 'overview' };
  if (segments[0] === 'functions' && segments.length === 2) return { page: 'function', name: segments[1] };
  if (segments.length === 1 && PAGES.includes(segments[0]) && segments[0] !== 'function' && segments[0] !== 'overview') return { page: segments[0] };
  return { page: 'notfound' };
}

function render({ focus = true } = {}) {
  if (!app.session) return;
  app.page?.close();
  announce('');
  const route = parseRoute();
  const page = new Page(route.page);
  app.page = page;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === route.page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = $('#main');
  main.replaceChildren();
  main.dataset.page = route.page;
  main.dataset.state = 'loading';
  const nav = NAV.find((n) => n.page === route.page);
  const view = nav?.allowed && !nav.allowed() ? viewNotPermitted : VIEWS[route.page] || viewNotFound;
  let done;
  try {
    done = Promise.resolve(view(page, main, route)); // runs up to its first await: the heading is there
  } catch (e) {
    done = Promise.reject(e);
  }
  const h1 = main.querySelector('h1');
  document.title = `${h1?.textContent || 'eddy'} · eddy console`;
  if (focus && h1) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  done.then(
    () => {
      if (page.alive) main.dataset.state = 'ready';
    },
    (e) => {
      if (!page.alive || isQuiet(e)) return;
      main.append(h('p', { class: 'error', text: describe(e) }));
      main.dataset.state = 'error';
    },
  );
}

// ---------------------------------------------------------------------------------------
// Overview: functions with their last 5 minutes, this month's cost, the nodes.

function monthSinceMs() {
  const now = new Date();
  const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  return Math.max(60000, now.getTime() - start);
}

async function viewOverview(page, main) {
  main.append(h('h1', { text: 'Overview' }));
  const cards = h('div', { class: 'cards', 'aria-label': 'At a glance', role: 'group' });
  main.append(cards);
  const cardSlots = { functions: h('div'), rps: h('div'), errors: h('div'), cost: h('div') };
  cards.append(...Object.values(cardSlots));

  const loaders = []; // refreshed every REFRESH_MS
  const slowLoaders = []; // refreshed every COST_REFRESH_MS: the cost report is costly to make

  if (can('functions:read')) {
    const fns = panel('Functions', { tools: h('span', { class: 'muted', text: 'last 5 minutes' }) });
    main.append(fns.el);
    const table = dataTable('Functions', [
      { label: 'Function' },
      { label: 'Live' },
      { label: 'Requests/s', num: true },
      { label: 'Requests', num: true },
      { label: 'Errors', num: true },
      { label: 'p50', num: true },
      { label: 'p99', num: true },
      { label: 'CPU / wall', num: true },
      { label: 'Waiting', num: true, title: 'Share of wall time not spent on CPU: what a wall-clock biller charges for, and eddy does not' },
      { label: 'Instances', num: true },
    ], 'functions');
    const empty = note('No functions are deployed yet: `eddy deploy NAME component.wasm`.');
    const waitingHint = h('p', { class: 'hint', text: 'Waiting is the share of wall time spent not on the CPU (I/O, timers): what a wall-clock biller such as Lambda charges for, and eddy does not.' });
    fns.body.append(table.wrap, waitingHint);

    loaders.push(() =>
      guarded(page, fns.errors, 'Could not load the functions', async () => {
        const [{ functions = [] }, all] = await Promise.all([
          api('/v1/functions', { signal: page.signal }),
          api(`/v1/stats?since_ms=${STATS_WINDOW_MS}`, { signal: page.signal }),
        ]);
        // One answer for every function the token may read; the others are not in it.
        const byName = new Map((all.functions || []).map((s) => [s.function, s]));
        const stats = functions.map((fn) =>
          byName.get(fn.name) || { error: new ApiError(403, 'forbidden', 'outside this token’s scope') });
        if (!page.alive) return;
        let total = 0;
        let totalRate = 0;
        let errors = 0;
        let rejected = 0;
        const rows = functions.map((fn, i) => {
          const s = stats[i] || {};
          if (s.error) {
            // Outside the token's scope is not a fault: say so quietly.
            const refused = s.error instanceof ApiError && s.error.status === 403;
            return h('tr', { class: 'function-row', data: { function: fn.name, invocations: '' } },
              h('th', { scope: 'row' }, h('a', { href: fnHref(fn.name), text: fn.name, data: { focusKey: `fn:${fn.name}` } })),
              td(`v${fn.live_version}`),
              h('td', { colspan: '8', class: refused ? 'muted' : 'error-cell', text: refused ? `not shown: ${s.error.message}` : describe(s.error) }));
          }
          // Over the window the node counted: from the start of the minute it reaches into.
          const rate = (s.invocations || 0) / windowSeconds(s.since, STATS_WINDOW_MS);
          total += s.invocations || 0;
          totalRate += rate;
          errors += s.errors || 0;
          rejected += s.rejected || 0;
          const wall = s.wall_ms_total;
          const cpu = s.cpu_ms_total;
          const waiting = isNum(wall) && wall > 0 && isNum(cpu) ? Math.max(0, 1 - cpu / wall) : null;
          return h('tr', { class: 'function-row', data: { function: fn.name, invocations: s.invocations ?? 0 } },
            h('th', { scope: 'row' }, h('a', { href: fnHref(fn.name), text: fn.name, data: { focusKey: `fn:${fn.name}` } })),
            td(`v${fn.live_version}`),
            tdNum(fmtRate(rate)),
            tdNum(fmtInt(s.invocations)),
            tdNum(s.rejected ? `${fmtInt(s.errors)} (+${fmtInt(s.rejected)} rejected)` : fmtInt(s.errors), s.errors ? 'bad' : null),
            tdNum(fmtMs(s.latency_ms_p50)),
            tdNum(fmtMs(s.latency_ms_p99)),
            tdNum(`${fmtDuration(cpu)} / ${fmtDuration(wall)}`),
            tdNum(fmtPct(waiting)),
            tdNum(fmtInt(s.instances_live)));
        });
        replaceKeepingFocus(table.tbody, rows);
        table.wrap.hidden = functions.length === 0;
        waitingHint.hidden = functions.length === 0;
        if (functions.length === 0) fns.body.prepend(empty);
        else empty.remove();
        cardSlots.functions.replaceChildren(card('Functions', fmtInt(functions.length)));
        cardSlots.rps.replaceChildren(card('Requests/s', fmtRate(totalRate), `${fmtInt(total)} in 5 min`));
        cardSlots.errors.replaceChildren(card('Errors', fmtInt(errors), rejected ? `${fmtInt(rejected)} rejected` : 'in 5 min', { class: errors ? 'card bad' : 'card' }));
      }),
    );
  } else {
    main.append(note('This token may not read functions (functions:read).'));
  }

  if (can('cost:read')) {
    const cost = panel('Cost this month');
    main.append(cost.el);
    const table = dataTable('Cost this month by price sheet', [
      { label: 'Price sheet' },
      { label: 'Kind' },
      { label: 'Month so far', num: true },
      { label: 'Projected', num: true },
      { label: 'Range', num: true },
    ], 'sheets');
    const lead = h('p', { class: 'lead' });
    cost.body.append(lead, table.wrap);
    slowLoaders.push(() =>
      guarded(page, cost.errors, 'Could not load the cost report', async () => {
        const report = await api(`/v1/cost?since_ms=${monthSinceMs()}`, { signal: page.signal });
        if (!page.alive) return;
        const sheets = report?.sheets || [];
        const first = sheets[0];
        if (first) {
          const f = first.forecast || {};
          lead.replaceChildren(
            'On ', h('strong', { text: first.title || first.sheet }), ': ',
            h('strong', { class: 'money', text: fmtUsd(f.month_to_date_usd) }), ` so far in ${report.month || 'this month'}, projected `,
            h('strong', { class: 'money', text: fmtUsd(f.projected_usd) }), ' by its end.',
          );
          cardSlots.cost.replaceChildren(card(`This month (${first.sheet})`, fmtUsd(f.month_to_date_usd), `projected ${fmtUsd(f.projected_usd)}`));
        } else {
          lead.textContent = 'No price sheets.';
        }
        replaceKeepingFocus(table.tbody, sheets.map((s) => {
          const f = s.forecast || {};
          return h('tr', { class: 'sheet-row', data: { sheet: s.sheet } },
            h('th', { scope: 'row', title: s.title || null, text: s.sheet }),
            td(s.kind || '—'),
            tdNum(fmtUsd(f.month_to_date_usd)),
            tdNum(fmtUsd(f.projected_usd)),
            tdNum(isNum(f.low_usd) && isNum(f.high_usd) ? `${fmtUsd(f.low_usd)} – ${fmtUsd(f.high_usd)}` : '—'));
        }));
      }),
    );
  }

  if (can('nodes:read')) {
    const nodes = panel('Nodes');
    nodes.el.hidden = true;
    main.append(nodes.el);
    const table = dataTable('Nodes', [
      { label: 'Node' }, { label: 'State' }, { label: 'Version' }, { label: 'In flight', num: true },
      { label: 'Capacity', num: true }, { label: 'Instances', num: true }, { label: 'Functions', num: true }, { label: 'Seen' },
    ], 'nodes');
    nodes.body.append(table.wrap);
    loaders.push(() =>
      guarded(page, nodes.errors, 'Could not load the nodes', async () => {
        const { nodes: list = [] } = await api('/v1/nodes', { signal: page.signal });
        if (!page.alive) return;
        nodes.el.hidden = list.length <= 1;
        replaceKeepingFocus(table.tbody, list.map((n) =>
          h('tr', { class: 'node-row', data: { node: n.name } },
            h('th', { scope: 'row' }, n.name, n.this ? h('span', { class: 'muted', text: ' (this node)' }) : null),
            td(badge(n.state, n.state === 'live' ? 'ok' : 'warn')),
            td(n.version),
            tdNum(fmtInt(n.in_flight)),
            tdNum(fmtInt(n.concurrency_max)),
            tdNum(fmtInt(n.instances)),
            tdNum(fmtInt(n.functions)),
            td(relTime(n.seen_at)))));
      }),
    );
  }

  const refresh = () => Promise.all(loaders.map((load) => load()));
  const refreshSlow = () => Promise.all(slowLoaders.map((load) => load()));
  await Promise.all([refresh(), refreshSlow()]);
  page.every(REFRESH_MS, refresh);
  if (slowLoaders.length) page.every(COST_REFRESH_MS, refreshSlow);
}

// ---------------------------------------------------------------------------------------
// Function page.

const WINDOWS = [
  { label: '15 min', ms: 15 * 60e3 },
  { label: '1 h', ms: 3600e3 },
  { label: '6 h', ms: 6 * 3600e3 },
  { label: '24 h', ms: 24 * 3600e3 },
  { label: '7 d', ms: 7 * 24 * 3600e3 },
];
let chosenWindowMs = 3600e3;

/** A step, a whole number of minutes, that keeps the window within CHART_POINTS_MAX points. */
const stepFor = (windowMs) => Math.max(60000, Math.ceil(windowMs / CHART_POINTS_MAX / 60000) * 60000);
const stepLabelFor = (stepMs) => (stepMs % 3600e3 === 0 ? `${stepMs / 3600e3} h` : `${stepMs / 60000} min`);

async function viewFunction(page, main, { name }) {
  const liveBadge = h('span', { id: 'live-version', class: 'badge badge-live' });
  const heading = h('h1', null, h('span', { text: name }), ' ', liveBadge);
  const meta = h('p', { class: 'meta' });
  const metaErrors = h('div', { class: 'panel-errors' });
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/', text: 'Overview' }), h('span', { 'aria-hidden': 'true', text: ' / ' }), h('span', { text: name })),
    heading,
    meta,
    metaErrors,
  );

  let fn;
  try {
    fn = await api(path`/v1/functions/${name}`, { signal: page.signal });
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      main.append(note(`There is no function named “${name}”.`));
      return;
    }
    throw e;
  }
  if (!page.alive) return;

  function setLive(version) {
    liveBadge.textContent = `v${version} live`;
    liveBadge.dataset.liveVersion = String(version);
    heading.dataset.liveVersion = String(version);
  }
  function showMeta() {
    setLive(fn.live_version);
    meta.replaceChildren(
      h('span', { class: 'mono', text: fn.route }), ' · ', h('span', { class: 'mono', text: fn.url }),
      ' · ', `${fmtInt(fn.versions)} version${fn.versions === 1 ? '' : 's'}`, ' · updated ', relTime(fn.updated_at),
    );
  }
  showMeta();

  const canWrite = can('functions:write') && inScope('functions', name);
  let versions = null; // the last GET …/versions

  // Activity: stats and charts over a chosen window.
  const activity = panel('Activity');
  const picker = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Time window' });
  activity.el.querySelector('.panel-head').append(picker);
  const statCards = h('div', { class: 'cards' });
  const charts = {
    requests: chartCard(page, 'Requests'),
    errors: chartCard(page, 'Errors by outcome'),
    latency: chartCard(page, 'Latency p50 / p99'),
    cpu: chartCard(page, 'CPU vs wall time'),
    cold: chartCard(page, 'Cold starts'),
  };
  const grid = h('div', { class: 'chart-grid' }, Object.values(charts).map((c) => c.el));
  activity.body.append(statCards, grid);

  const windowButtons = WINDOWS.map((w) =>
    h('button', {
      type: 'button',
      class: 'window-choice',
      'aria-pressed': String(w.ms === chosenWindowMs),
      data: { windowMs: w.ms },
      text: w.label,
      on: {
        click: () => {
          chosenWindowMs = w.ms;
          for (const b of windowButtons) b.setAttribute('aria-pressed', String(Number(b.dataset.windowMs) === w.ms));
          loadActivity();
        },
      },
    }));
  picker.append(...windowButtons);

  let activitySeq = 0;
  const loadActivity = () =>
    guarded(page, activity.errors, 'Could not load the activity', async () => {
      const seq = ++activitySeq;
      const windowMs = chosenWindowMs;
      const win = WINDOWS.find((w) => w.ms === windowMs);
      const step = stepFor(windowMs);
      const [stats, series] = await Promise.all([
        api(path`/v1/functions/${name}/stats` + `?since_ms=${windowMs}`, { signal: page.signal }),
        api(path`/v1/functions/${name}/series` + `?since_ms=${windowMs}&step_ms=${step}`, { signal: page.signal }),
      ]);
      if (!page.alive || seq !== activitySeq) return;
      renderStats(stats, win);
      renderCharts(series, win, step);
    });

  function renderStats(s, win) {
    const secs = windowSeconds(s.since, win.ms);
    const wall = s.wall_ms_total;
    const cpu = s.cpu_ms_total;
    const waiting = isNum(wall) && wall > 0 && isNum(cpu) ? Math.max(0, 1 - cpu / wall) : null;
    const list = [
      card('Requests', fmtInt(s.invocations), `${fmtRate((s.invocations || 0) / secs)} over ${win.label}`, { data: { stat: 'invocations', value: s.invocations ?? 0 } }),
      card('Errors', fmtInt(s.errors), s.rejected ? `${fmtInt(s.rejected)} rejected` : 'none rejected', { class: s.errors ? 'card bad' : 'card' }),
      card('Latency p50', fmtMs(s.latency_ms_p50), `p99 ${fmtMs(s.latency_ms_p99)}`),
      card('CPU / wall', `${fmtDuration(cpu)} / ${fmtDuration(wall)}`, waiting === null ? null : `${fmtPct(waiting)} waiting: what a wall-clock biller charges`),
      card('Cold starts', fmtInt(s.cold_starts), `instantiation ${fmtDuration(s.instantiate_ms_total)}`),
      card('Now', `${fmtInt(s.instances_live)} live`, `${fmtInt(s.in_flight)} in flight, ${fmtInt(s.queued)} queued`),
    ];
    if (Array.isArray(s.nodes) && s.nodes.length > 1) {
      list.push(card('By node', h('span', null, s.nodes.map((n, i) => [i ? ', ' : '', `${n.node}: ${fmtInt(n.invocations)}`]))));
    }
    statCards.replaceChildren(...list);
  }

  function renderCharts(series, win, step) {
    const points = Array.isArray(series?.points) ? series.points : [];
    const xs = points.map((p) => (isNum(p.at_ms) ? p.at_ms : Date.parse(p.at)) / 1000);
    const active = points.filter((p) => (p.invocations || 0) > 0).length;
    const stepLabel = stepLabelFor(series?.step_ms || step);
    const sum = (key) => points.reduce((acc, p) => acc + (p[key] || 0), 0);
    const maxAt = (values) => {
      let best = -Infinity;
      let at = null;
      values.forEach((v, i) => {
        if (isNum(v) && v > best) {
          best = v;
          at = xs[i];
        }
      });
      return at === null ? null : { value: best, at: at * 1000 };
    };
    const when = (ms) => shortFmt.format(ms);

    const invocations = points.map((p) => p.invocations || 0);
    const total = sum('invocations');
    const peak = maxAt(invocations);
    charts.requests.set({
      xs, points: active, stepLabel, fmt: countFmt,
      series: [{ label: `requests per ${stepLabel}`, values: invocations, fill: true }],
      summary: total
        ? `${fmtInt(total)} requests in the last ${win.label} (${fmtRate(total / windowSeconds(series?.since, win.ms))}); busiest ${stepLabel}: ${fmtInt(peak.value)} at ${when(peak.at)}.`
        : `No requests in the last ${win.label}.`,
    });

    // Failed outcomes; rejections (also under `outcomes.rejected`) have their own series.
    const failed = (k) => k !== 'ok' && k !== 'rejected';
    const outcomes = new Set();
    for (const p of points) for (const [k, v] of Object.entries(p.outcomes || {})) if (failed(k) && v > 0) outcomes.add(k);
    const errorSeries = [...outcomes].sort().map((k) => ({ label: k, values: points.map((p) => p.outcomes?.[k] || 0) }));
    // `errors` also counts a function's own 5xx answers, whose outcome is `ok`.
    const answered5xx = points.map((p) => {
      const failures = Object.entries(p.outcomes || {}).reduce((acc, [k, v]) => (failed(k) ? acc + (v || 0) : acc), 0);
      return Math.max(0, (p.errors || 0) - failures);
    });
    errorSeries.push({ label: '5xx answered', values: answered5xx });
    errorSeries.push({ label: 'rejected', values: points.map((p) => p.rejected || 0) });
    const rejected = sum('rejected');
    const errTotal = sum('errors');
    const parts = errorSeries
      .filter((s) => s.label !== 'rejected')
      .map((s) => [s.label, s.values.reduce((a, b) => a + b, 0)])
      .filter(([, n]) => n > 0)
      .map(([label, n]) => `${label} ${fmtInt(n)}`);
    charts.errors.set({
      xs, points: active, stepLabel, fmt: countFmt, series: errorSeries,
      summary: errTotal || rejected
        ? `${fmtInt(errTotal)} errors${parts.length ? ` (${parts.join(', ')})` : ''} and ${fmtInt(rejected)} rejected in the last ${win.label}.`
        : `No errors and no rejections in the last ${win.label}.`,
    });

    const p50 = points.map((p) => (isNum(p.latency_ms_p50) ? p.latency_ms_p50 : null));
    const p99 = points.map((p) => (isNum(p.latency_ms_p99) ? p.latency_ms_p99 : null));
    const worst = maxAt(p99);
    const lastIndex = p50.findLastIndex((v) => v !== null);
    charts.latency.set({
      xs, points: active, stepLabel, fmt: msFmt,
      series: [{ label: 'p50', values: p50, points: true }, { label: 'p99', values: p99, points: true }],
      summary: worst
        ? `Latest ${stepLabel} with traffic: p50 ${fmtMs(p50[lastIndex])}, p99 ${fmtMs(p99[lastIndex])}; highest p99 ${fmtMs(worst.value)} at ${when(worst.at)}.`
        : `No latency to show: nothing ran in the last ${win.label}.`,
    });

    const cpuTotal = sum('cpu_ms');
    const wallTotal = sum('wall_ms');
    charts.cpu.set({
      xs, points: active, stepLabel, fmt: durationFmt,
      series: [{ label: 'wall', values: points.map((p) => p.wall_ms || 0), fill: true }, { label: 'CPU', values: points.map((p) => p.cpu_ms || 0) }],
      summary: wallTotal > 0
        ? `CPU ${fmtDuration(cpuTotal)} of ${fmtDuration(wallTotal)} wall time: ${fmtPct(Math.max(0, 1 - cpuTotal / wallTotal))} of it was waiting, which a wall-clock biller charges and eddy does not.`
        : `No wall time in the last ${win.label}.`,
    });

    const colds = sum('cold_starts');
    charts.cold.set({
      xs, points: active, stepLabel, fmt: countFmt,
      series: [{ label: `cold starts per ${stepLabel}`, values: points.map((p) => p.cold_starts || 0) }],
      summary: total ? `${fmtInt(colds)} cold starts for ${fmtInt(total)} requests (${fmtPct(colds / total)}).` : `No cold starts in the last ${win.label}.`,
    });
  }

  // Versions, with rollback.
  const versionsPanel = panel('Versions');
  const versionsTable = dataTable('Versions, newest first', [
    { label: 'Version' }, { label: 'Created' }, { label: 'Digest' }, { label: 'Size', num: true }, { label: 'Route' },
    { label: 'Memory', num: true }, { label: 'Timeout', num: true }, { label: 'Environment' },
    ...(canWrite ? [{ label: 'Action' }] : []),
  ], 'versions');
  versionsPanel.body.append(versionsTable.wrap);

  const loadVersions = () =>
    guarded(page, versionsPanel.errors, 'Could not load the versions', async () => {
      const list = await api(path`/v1/functions/${name}/versions`, { signal: page.signal });
      if (!page.alive) return;
      versions = list;
      setLive(list.live_version);
      replaceKeepingFocus(versionsTable.tbody, (list.versions || []).map((v) => {
        const env = [...(v.env_keys || [])];
        const secrets = Object.entries(v.secrets || {}).map(([k, s]) => `${k} ← ${s}`);
        // Focusable by script (not a Tab stop): a rollback moves the focus to the live row.
        return h('tr', { class: ['version', v.live && 'is-live'], tabindex: '-1', data: { version: v.version, live: v.live ? 'true' : 'false', focusKey: `version:${v.version}` } },
          h('th', { scope: 'row' }, `v${v.version}`, v.live ? [' ', badge('live', 'live')] : null),
          td(relTime(v.created_at)),
          td(h('span', { class: 'mono', title: v.digest, text: shortDigest(v.digest) })),
          tdNum(fmtBytes(v.size_bytes)),
          td(h('span', { class: 'mono', text: v.route })),
          tdNum(fmtBytes(v.memory_bytes_max)),
          tdNum(fmtLimitMs(v.timeout_ms)),
          td(env.length || secrets.length ? [...env, ...secrets].join(', ') : h('span', { class: 'muted', text: 'none' })),
          canWrite ? td(v.live ? h('span', { class: 'muted', text: 'live' }) : rollbackButton(v.version)) : null);
      }));
    });

  function rollbackButton(version) {
    const button = h('button', {
      type: 'button',
      class: 'action',
      data: { action: 'rollback', version, focusKey: `rollback:${version}` },
      text: `Roll back to v${version}`,
    });
    button.addEventListener('click', async () => {
      const live = versions?.live_version;
      const ok = await confirmAction({
        title: `Make v${version} of ${name} live?`,
        body: `Requests go to version ${version} at once${live ? `, instead of v${live}` : ''}. No version is deleted: you can roll forward again the same way.`,
        confirmLabel: `Roll back to v${version}`,
      });
      if (!ok || !page.alive) return;
      button.disabled = true;
      try {
        const result = await api(path`/v1/functions/${name}/rollback`, { method: 'POST', json: { version } });
        const adjusted = Array.isArray(result?.adjusted) && result.adjusted.length ? ` Note: ${result.adjusted.join('; ')}` : '';
        announce(`${name}: v${result.live_version} is live${result.previous_version ? ` (was v${result.previous_version})` : ''}.${adjusted}`);
        if (!page.alive) return;
        await reloadFunction();
        // The button is gone with the redrawn table: the focus goes to the new live version.
        if (page.alive) versionsTable.tbody.querySelector('tr.version[data-live="true"]')?.focus();
      } catch (e) {
        if (isQuiet(e)) return;
        announce(`Could not roll back ${name}: ${describe(e)}`, 'error');
        button.disabled = false;
        if (page.alive && button.isConnected) button.focus();
      }
    });
    return button;
  }

  // Triggers and limits.
  const triggersPanel = panel('Triggers');
  const limitsPanel = panel('Limits');

  const loadTriggers = () =>
    guarded(page, triggersPanel.errors, 'Could not load the triggers', async () => {
      const live = versions?.versions?.find((v) => v.live) || {};
      // The function's JSON names its schedule (absent: none); the schedules route adds the
      // ticks. A node whose JSON does not name triggers (no `websocket` field) is asked too.
      const own = fn.schedule ?? live.schedule;
      const needTicks = own !== undefined || fn.websocket === undefined;
      const [schedules, queues, sockets] = await Promise.all([
        needTicks ? settle(api('/v1/schedules', { signal: page.signal })) : null,
        can('queues:read') ? settle(api('/v1/queues', { signal: page.signal })) : null,
        // A function without WebSockets on its route has no connections to list.
        fn.websocket === false ? null : settle(api(path`/v1/functions/${name}/websockets`, { signal: page.signal })),
      ]);
      if (!page.alive) return;

      let schedule;
      const mine = (schedules?.schedules || []).find((s) => s.function === name);
      if (mine) schedule = h('span', { class: 'schedule-ticks' }, scheduleText(mine), ' · next ', relTime(mine.next_tick, 'not scheduled'));
      else if (own) schedule = scheduleText(own);
      else if (schedules?.error) schedule = h('span', { class: 'error', text: describe(schedules.error) });
      else schedule = h('span', { class: 'muted', text: 'none' });

      let queueCell;
      if (!queues) queueCell = h('span', { class: 'muted', text: 'not shown (this token lacks queues:read)' });
      else if (queues.error) queueCell = h('span', { class: 'error', text: describe(queues.error) });
      else {
        const bound = (queues.queues || []).filter((q) => q.consumer?.function === name);
        queueCell = bound.length
          ? h('span', null, bound.map((q, i) => [i ? ', ' : '', h('a', { href: '#/queues', text: q.name, data: { focusKey: `queue:${q.name}` } }), ` (batch ${fmtInt(q.consumer.batch_size)}, up to ${fmtInt(q.consumer.max_concurrency)} at once${q.consumer.breaker ? `, breaker ${q.consumer.breaker}` : ''})`]))
          : h('span', { class: 'muted', text: 'none' });
      }

      const flag = fn.websocket !== undefined ? fn.websocket : live.websocket;
      let socketCell;
      const open = sockets && !sockets.error ? (sockets.connections || []).length : null;
      if (flag !== undefined) socketCell = h('span', null, flag ? 'enabled on the route' : 'off', open !== null && (flag || open) ? ` · ${fmtInt(open)} open now` : '');
      else if (sockets?.error) socketCell = h('span', { class: 'error', text: describe(sockets.error) });
      else socketCell = open ? `${fmtInt(open)} connections open now` : h('span', { class: 'muted', text: 'no connections open' });

      const publish = fn.publish !== undefined ? fn.publish : live.publish;
      // Redrawn every 30 s: a focused link keeps the focus.
      replaceKeepingFocus(triggersPanel.body, facts([
        ['HTTP', h('span', null, h('span', { class: 'mono', text: fn.route }), ' → ', h('span', { class: 'mono', text: fn.url }))],
        ['Schedule', schedule],
        ['Queues consumed', queueCell],
        ['WebSocket', socketCell],
        ['Publishes to', publish === undefined ? undefined : publish?.length ? publish.join(', ') : h('span', { class: 'muted', text: 'no queue' })],
      ]));

      limitsPanel.body.replaceChildren(facts([
        ['Memory', fmtBytes(fn.memory_bytes_max)],
        ['Timeout', fmtLimitMs(fn.timeout_ms)],
        ['Max concurrency', fn.max_concurrency ?? h('span', { class: 'muted', text: 'node default' })],
        ['Max queue', fn.max_queue ?? h('span', { class: 'muted', text: 'node default' })],
        ['Max wait', isNum(fn.max_wait_ms) ? fmtLimitMs(fn.max_wait_ms) : h('span', { class: 'muted', text: 'node default' })],
        ['Reserved concurrency', fmtInt(fn.reserved_concurrency ?? 0)],
        ['Instance reuse', fn.reuse ? `up to ${fmtInt(fn.reuse.max_requests)} requests, idle ${fmtLimitMs(fn.reuse.idle_timeout_ms)}` : 'off: a fresh instance per request'],
        ['Outbound hosts', fn.allow_outbound?.length ? fn.allow_outbound.join(', ') : h('span', { class: 'muted', text: 'none' })],
        ['Environment', live.env_keys?.length ? live.env_keys.join(', ') : h('span', { class: 'muted', text: 'none' })],
      ]));
    });

  const loadMeta = () =>
    guarded(page, metaErrors, 'Could not refresh the function', async () => {
      const next = await api(path`/v1/functions/${name}`, { signal: page.signal });
      if (!page.alive) return;
      fn = next;
      showMeta();
    });

  /** The function, its versions, triggers and limits again (after a rollback; every 30 s). */
  async function reloadFunction() {
    await loadMeta();
    await loadVersions();
    await loadTriggers();
  }

  // The invocation log: the last 50, then live over server-sent events.
  const logPanel = panel('Invocation log');
  const liveState = h('span', { class: 'live-state', data: { state: 'connecting' }, text: 'connecting…' });
  logPanel.el.querySelector('.panel-head').append(liveState);
  const logList = h('ol', { class: 'log-list', 'aria-label': `Invocations of ${name}, newest first` });
  const logEmpty = note('No invocation records yet.');
  logPanel.body.append(logEmpty, logList);
  const seen = new Set();
  let lastId = 0;

  function addEntry(entry, fresh) {
    const id = Number(entry?.id);
    if (!Number.isFinite(id) || seen.has(id)) return;
    seen.add(id);
    lastId = Math.max(lastId, id);
    logEmpty.remove();
    const row = invocationRow(entry, fresh);
    let before = null;
    for (const child of logList.children) {
      if (Number(child.dataset.id) < id) {
        before = child;
        break;
      }
    }
    logList.insertBefore(row, before);
    while (logList.children.length > LOG_ROWS_MAX) {
      const last = logList.lastElementChild;
      seen.delete(Number(last.dataset.id));
      last.remove();
    }
  }

  let source = null;
  let retry = 0;
  let refusals = 0; // streams refused in a row
  let tailLoaded = false; // whether lastId is where the shown log ends
  function setLiveState(state, text) {
    liveState.dataset.state = state;
    liveState.textContent = text;
  }
  function connect() {
    if (!page.alive) return;
    // Without the first records (their load failed), start at the newest record now rather
    // than at the first one ever written.
    const after = tailLoaded || lastId > 0 ? `?after=${lastId}` : '';
    source = new EventSource(path`/v1/functions/${name}/logs/stream` + after);
    source.addEventListener('open', () => {
      refusals = 0;
      setLiveState('live', 'live');
    });
    source.addEventListener('invocation', (event) => {
      let entry;
      try {
        entry = JSON.parse(event.data);
      } catch {
        return;
      }
      addEntry(entry, true);
    });
    source.addEventListener('error', () => {
      if (!page.alive || !source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The node refused the stream; EventSource does not say with which status, so
        // checkThenConnect asks. Refused again and again while the function answers, it is
        // most likely the node's limit of open log streams (429): wait longer each time.
        source.close();
        source = null;
        const wait = Math.min(LOG_RETRY_MAX_MS, LOG_RETRY_MS * 2 ** refusals);
        refusals += 1;
        setLiveState('stopped', refusals > 1
          ? `the node refused the live log again (its limit of open log streams may be reached); retrying in ${Math.round(wait / 1000)} s`
          : `disconnected; retrying in ${Math.round(wait / 1000)} s`);
        retry = setTimeout(checkThenConnect, wait);
      } else {
        setLiveState('connecting', 'reconnecting…');
      }
    });
  }
  /** Asks the node about the function: gone, out of scope, signed out, or busy; else retries. */
  async function checkThenConnect() {
    if (!page.alive) return;
    try {
      await api(path`/v1/functions/${name}`, { signal: page.signal });
    } catch (e) {
      if (isQuiet(e) || !page.alive) return; // a 401 has shown the sign-in view
      if (e instanceof ApiError && e.status === 404) {
        setLiveState('ended', 'stopped: the function was removed');
        return;
      }
      if (e instanceof ApiError && e.status === 403) {
        setLiveState('ended', `stopped: this token may not read ${name}`);
        return;
      }
      if (e instanceof ApiError && e.status === 429) {
        setLiveState('stopped', `the node's limit was reached (${e.message}); retrying in ${LOG_RETRY_MAX_MS / 1000} s`);
        retry = setTimeout(checkThenConnect, LOG_RETRY_MAX_MS);
        return;
      }
      // Another failure (the node unreachable, say): try the stream again.
    }
    if (!page.alive) return;
    setLiveState('connecting', 'connecting…');
    connect();
  }
  page.onCleanup(() => {
    clearTimeout(retry);
    source?.close();
    source = null;
  });

  // The last 50 records; the stream connects after them, even when they could not be read.
  const loadLog = async () => {
    await guarded(page, logPanel.errors, 'Could not load the invocation log', async () => {
      const pageOfLogs = await api(path`/v1/functions/${name}/logs` + '?tail=50', { signal: page.signal });
      if (!page.alive) return;
      for (const entry of pageOfLogs?.entries || []) addEntry(entry, false);
      if (isNum(pageOfLogs?.last_id)) lastId = Math.max(lastId, pageOfLogs.last_id);
      tailLoaded = true;
    });
    connect();
  };

  main.append(activity.el, versionsPanel.el, triggersPanel.el, limitsPanel.el, logPanel.el);
  document.title = `${name} · eddy console`;

  await Promise.all([loadActivity(), loadVersions().then(loadTriggers), loadLog()]);
  page.every(FUNCTION_REFRESH_MS, loadActivity);
  page.every(FUNCTION_DETAILS_REFRESH_MS, reloadFunction);
}

function shortDigest(digest) {
  if (typeof digest !== 'string') return '—';
  const hex = digest.replace(/^sha256:/, '');
  return hex.length > 12 ? `${hex.slice(0, 12)}…` : hex;
}

function scheduleText(s) {
  const bits = [s.cron];
  if (s.timezone && s.timezone !== 'UTC') bits.push(s.timezone);
  else bits.push('UTC');
  const extra = [];
  if (s.overlap) extra.push(`overlap ${s.overlap}`);
  if (s.missed) extra.push(`missed ${s.missed}`);
  if (s.path) extra.push(`path ${s.path}`);
  return h('span', null, h('code', { text: s.cron }), ` (${bits.slice(1).join(' ')}${extra.length ? `; ${extra.join(', ')}` : ''})`);
}

function outcomeKind(outcome) {
  if (outcome === 'ok') return 'ok';
  if (outcome === 'rejected') return 'warn';
  return 'bad';
}

function invocationRow(e, fresh) {
  const status = isNum(e.status) ? e.status : null;
  const statusKind = status === null ? 'warn' : status >= 500 ? 'bad' : status >= 400 ? 'warn' : 'ok';
  const head = h('div', { class: 'inv-head' },
    clockTime(e.at),
    badge(status === null ? 'no status' : String(status), statusKind),
    badge(e.outcome || '?', outcomeKind(e.outcome)),
    h('span', { class: 'inv-request mono', text: `${e.method || ''} ${e.path || ''}`.trim() }),
    h('span', { class: 'inv-metric', title: 'wall time' }, fmtMs(e.duration_ms)),
    h('span', { class: 'inv-metric', title: 'CPU time' }, `cpu ${fmtMs(e.cpu_ms)}`),
    e.fresh_instance ? h('span', { class: 'inv-metric', title: `instantiation ${fmtMs(e.instantiate_ms)}`, text: 'cold' }) : null,
    isNum(e.version) ? h('span', { class: 'inv-metric', text: `v${e.version}` }) : null,
    e.node ? h('span', { class: 'inv-metric', title: 'node', text: `on ${e.node}` }) : null,
  );
  const out = typeof e.log === 'string' && e.log.length ? h('pre', { class: 'inv-log', text: e.log }) : null;
  return h('li', { class: ['invocation', fresh && 'fresh', e.outcome !== 'ok' && 'failed'], data: { id: e.id } }, head, out);
}

// ---------------------------------------------------------------------------------------
// Queues.

/** The queue a redrive of `q` takes messages from: its consumer's dead-letter queue when a
 * consumer is bound, else the queue's own (as the node does). */
const deadLetterQueueOf = (q) => q.consumer?.dead_letter ?? q.dead_letter_queue;

async function viewQueues(page, main) {
  main.append(h('h1', { text: 'Queues' }));
  const queuesPanel = panel('Queues and consumers');
  const dlqPanel = panel('Dead-letter queues');
  const results = h('div', { class: 'results', 'aria-live': 'polite' });
  const peekArea = h('div', { class: 'peek-area' });
  main.append(results, queuesPanel.el, peekArea, dlqPanel.el);

  const canWrite = can('queues:write');
  const table = dataTable('Queues', [
    { label: 'Queue' }, { label: 'Depth', num: true }, { label: 'Ready', num: true }, { label: 'In flight', num: true },
    { label: 'Delayed', num: true }, { label: 'Oldest', num: true }, { label: 'Consumer' }, { label: 'Concurrency', num: true, title: 'adaptive concurrency now / the most allowed' },
    { label: 'Breaker' }, { label: 'Dead-lettered', num: true, title: 'messages moved to the dead-letter queue since the queue was made' },
    { label: 'In DLQ', num: true, title: 'messages in its dead-letter queue now' }, ...(canWrite ? [{ label: 'Actions' }] : []),
  ], 'queues');
  const dlqTable = dataTable('Dead-letter queues', [
    { label: 'Dead-letter queue' }, { label: 'Of' }, { label: 'Depth', num: true }, { label: 'Oldest', num: true },
  ], 'dlqs');
  queuesPanel.body.append(table.wrap);
  dlqPanel.body.append(dlqTable.wrap);
  const empty = note('No queues yet: `eddy queue create NAME`.');

  let openPeek = null; // the queue whose dead letters are shown

  const load = () =>
    guarded(page, queuesPanel.errors, 'Could not load the queues', async () => {
      const { queues = [] } = await api('/v1/queues', { signal: page.signal });
      if (!page.alive) return;
      const byName = new Map(queues.map((q) => [q.name, q]));
      const main_ = queues.filter((q) => !q.dead_letter_of);
      const dlqs = queues.filter((q) => q.dead_letter_of);
      if (main_.length === 0) queuesPanel.body.prepend(empty);
      else empty.remove();
      table.wrap.hidden = main_.length === 0;
      replaceKeepingFocus(table.tbody, main_.map((q) => {
        const dlqName = deadLetterQueueOf(q);
        const dlq = dlqName ? byName.get(dlqName) : null;
        const deadNow = dlq ? dlq.depth : null;
        const hasDead = deadNow !== null ? deadNow > 0 : (q.dead_lettered || 0) > 0;
        const c = q.consumer;
        const breaker = c?.breaker;
        const actions = [];
        if (canWrite && hasDead && dlqName && inScope('queues', q.name)) {
          actions.push(
            h('button', { type: 'button', class: 'action', data: { action: 'peek', queue: q.name, focusKey: `peek:${q.name}` }, text: 'Peek dead letters', on: { click: () => peek(q) } }),
            h('button', { type: 'button', class: 'action', data: { action: 'redrive', queue: q.name, focusKey: `redrive:${q.name}` }, text: 'Redrive', on: { click: (ev) => redrive(q, ev.currentTarget) } }),
          );
        }
        return h('tr', { class: 'queue', data: { queue: q.name, depth: q.depth, deadLetters: deadNow ?? '', deadLetterQueue: dlqName } },
          h('th', { scope: 'row' }, q.name),
          tdNum(fmtInt(q.depth)),
          tdNum(fmtInt(q.ready)),
          tdNum(fmtInt(q.in_flight)),
          tdNum(fmtInt(q.delayed)),
          tdNum(q.depth ? fmtAge(q.oldest_age_ms) : '—'),
          td(c ? h('span', null, h('a', { href: fnHref(c.function), text: c.function }), c.paused_by_budget ? [' ', badge('paused', 'warn')] : null) : h('span', { class: 'muted', text: 'none' })),
          tdNum(c ? `${fmtInt(q.consumer_concurrency)} / ${fmtInt(c.max_concurrency)}` : '—'),
          td(breaker ? badge(breaker.replace('_', ' '), breaker === 'closed' ? 'ok' : breaker === 'open' ? 'bad' : 'warn') : '—'),
          tdNum(fmtInt(q.dead_lettered)),
          tdNum(deadNow === null ? '—' : fmtInt(deadNow), deadNow ? 'bad' : null),
          canWrite ? td(actions.length ? h('div', { class: 'button-row' }, actions) : h('span', { class: 'muted', text: '—' })) : null);
      }));
      const paused = main_.filter((q) => q.consumer?.paused_by_budget);
      for (const q of paused) {
        table.tbody.querySelector(`tr[data-queue="${CSS.escape(q.name)}"] .badge-warn`)?.setAttribute('title', q.consumer.paused_by_budget);
      }
      dlqPanel.el.hidden = dlqs.length === 0;
      replaceKeepingFocus(dlqTable.tbody, dlqs.map((q) =>
        h('tr', { class: 'dlq', data: { queue: q.name, depth: q.depth } },
          h('th', { scope: 'row' }, q.name),
          td(q.dead_letter_of),
          tdNum(fmtInt(q.depth), q.depth ? 'bad' : null),
          tdNum(q.depth ? fmtAge(q.oldest_age_ms) : '—'))));
    });

  async function peek(q, { focus = true } = {}) {
    const dlq = deadLetterQueueOf(q);
    openPeek = q;
    const p = panel(`Dead letters of ${q.name}`, {
      tools: h('button', { type: 'button', text: 'Close', on: { click: () => { openPeek = null; peekArea.replaceChildren(); } } }),
    });
    p.el.classList.add('peek');
    p.el.dataset.queue = q.name;
    p.body.append(h('p', { class: 'muted', text: `The oldest 50 messages of ${dlq}.` }));
    peekArea.replaceChildren(p.el);
    await guarded(page, p.errors, 'Could not read the dead letters', async () => {
      const { messages = [] } = await api(path`/v1/queues/${dlq}/messages` + '?limit=50', { signal: page.signal });
      if (!page.alive || openPeek !== q) return;
      const list = h('div', { class: 'messages' });
      for (const m of messages) list.append(messageView(m));
      p.body.replaceChildren(h('p', { class: 'muted', text: `${fmtInt(messages.length)} message${messages.length === 1 ? '' : 's'} (oldest first, at most 50) in ${dlq}.` }), messages.length ? list : note('No dead letters.'));
    });
    if (!focus || !page.alive || openPeek !== q) return;
    p.heading.tabIndex = -1;
    p.heading.focus();
  }

  async function redrive(q, button) {
    const dlq = deadLetterQueueOf(q);
    const ok = await confirmAction({
      title: `Redrive ${dlq}?`,
      body: `Every message of ${dlq} goes back into ${q.name} with its attempts reset${q.consumer ? ', and its consumer receives it again' : ''}.`,
      confirmLabel: 'Redrive',
    });
    if (!ok || !page.alive) return;
    if (button) button.disabled = true;
    // The result message takes the focus: the button goes (or is disabled) with the redraw.
    const show = (message) => {
      message.tabIndex = -1;
      results.replaceChildren(message);
      message.focus();
    };
    try {
      const result = await api(path`/v1/queues/${q.name}/redrive`, { method: 'POST' });
      if (!page.alive) return;
      const moved = result?.moved ?? 0;
      const text = `Moved ${fmtInt(moved)} message${moved === 1 ? '' : 's'} from ${result?.from || dlq} back into ${q.name}.`;
      show(h('p', { class: 'redrive-result status-ok', data: { queue: q.name, moved }, text }));
      announce(text);
      if (openPeek?.name === q.name) peek(q, { focus: false });
      await load();
    } catch (e) {
      if (isQuiet(e) || !page.alive) return;
      show(h('p', { class: 'status-error', text: `Could not redrive ${q.name}: ${describe(e)}` }));
      announce(`Could not redrive ${q.name}: ${describe(e)}`, 'error');
      if (button) button.disabled = false;
    }
  }

  await load();
  page.every(REFRESH_MS, load);
}

function messageView(m) {
  const payload = typeof m.data === 'string'
    ? h('pre', { class: 'payload', text: m.data })
    : typeof m.data_base64 === 'string'
      ? [h('p', { class: 'muted', text: 'Not UTF-8; base64:' }), h('pre', { class: 'payload', text: m.data_base64 })]
      : h('p', { class: 'muted', text: 'no payload' });
  return h('article', { class: 'dead-letter', data: { id: m.id } },
    facts([
      ['Id', h('span', { class: 'mono', text: m.id })],
      ['Attempts', fmtInt(m.attempts)],
      ['First enqueued', relTime(m.first_enqueued_at)],
      ['Dead-lettered', relTime(m.enqueued_at)],
      ['Content type', m.content_type || '—'],
    ]),
    m.last_error ? [h('p', { class: 'label', text: 'Last error' }), h('pre', { class: 'last-error', text: m.last_error })] : null,
    h('p', { class: 'label', text: 'Payload' }),
    payload);
}

// ---------------------------------------------------------------------------------------
// WebSockets.

async function viewWebsockets(page, main) {
  main.append(h('h1', { text: 'WebSockets' }));
  const summary = panel('Connections by function');
  const details = h('div');
  main.append(summary.el, details);
  const table = dataTable('Connections by function', [
    { label: 'Function' }, { label: 'Connections', num: true }, { label: 'Channels' },
    { label: 'Closed connection time', num: true, title: 'connection_seconds_closed' }, { label: 'Queued to send', num: true },
  ], 'websockets');
  summary.body.append(table.wrap);
  const quiet = h('p', { class: 'note' });
  summary.body.append(quiet);

  const load = () =>
    guarded(page, summary.errors, 'Could not load the WebSocket connections', async () => {
      const { functions = [] } = await api('/v1/functions', { signal: page.signal });
      // Only a function with WebSockets on its route (`websocket: true`) holds connections.
      const withSockets = functions.filter((fn) => fn.websocket === true);
      const lists = await mapLimit(withSockets, 6, (fn) =>
        inScope('functions', fn.name) ? settle(api(path`/v1/functions/${fn.name}/websockets`, { signal: page.signal })) : {});
      if (!page.alive) return;
      const shown = withSockets.map((fn, i) => [fn, lists[i] || {}]);
      const idle = functions.length - withSockets.length;
      table.wrap.hidden = shown.length === 0;
      quiet.textContent = shown.length === 0
        ? 'No function serves WebSockets (deploy with `--websocket` to accept them).'
        : idle ? `${fmtInt(idle)} other function${idle === 1 ? ' does' : 's do'} not serve WebSockets.` : '';
      replaceKeepingFocus(table.tbody, shown.map(([fn, l]) => {
        const fnLink = h('a', { href: fnHref(fn.name), text: fn.name, data: { focusKey: `ws:${fn.name}` } });
        if (l.error) {
          const refused = l.error instanceof ApiError && l.error.status === 403;
          return h('tr', { class: 'ws-function', data: { function: fn.name } }, h('th', { scope: 'row' }, fnLink), h('td', { colspan: '4', class: refused ? 'muted' : 'error-cell', text: refused ? `not shown: ${l.error.message}` : describe(l.error) }));
        }
        const conns = l.connections || [];
        const channels = new Map();
        for (const c of conns) for (const ch of c.channels || []) channels.set(ch, (channels.get(ch) || 0) + 1);
        const queued = conns.reduce((a, c) => a + (c.queued_bytes || 0), 0);
        return h('tr', { class: 'ws-function', data: { function: fn.name, connections: conns.length } },
          h('th', { scope: 'row' }, fnLink),
          tdNum(fmtInt(conns.length)),
          td(channels.size ? [...channels].sort((a, b) => b[1] - a[1]).map(([ch, n]) => `${ch} (${fmtInt(n)})`).join(', ') : h('span', { class: 'muted', text: 'none' })),
          tdNum(fmtDuration((l.connection_seconds_closed || 0) * 1000)),
          tdNum(fmtBytes(queued)));
      }));
      const sections = [];
      for (const [fn, l] of shown) {
        const conns = l.connections || [];
        if (!conns.length) continue;
        const p = panel(`${fn.name}: ${fmtInt(conns.length)} open connection${conns.length === 1 ? '' : 's'}`, { level: 2 });
        const t = dataTable(`Connections of ${fn.name}`, [
          { label: 'Connection' }, { label: 'Opened' }, { label: 'Channels' }, { label: 'Queued to send', num: true },
        ], 'connections');
        const max = 200;
        t.tbody.append(...conns.slice(0, max).map((c) =>
          h('tr', { class: 'ws-connection', data: { id: c.id } },
            h('th', { scope: 'row', class: 'mono', text: c.id }),
            td(relTime(c.opened_at)),
            td(c.channels?.length ? c.channels.join(', ') : h('span', { class: 'muted', text: 'none' })),
            tdNum(fmtBytes(c.queued_bytes)))));
        appendChildren(p.body, [t.wrap, conns.length > max ? note(`The first ${max} of ${fmtInt(conns.length)} are listed.`) : null]);
        sections.push(p.el);
      }
      details.replaceChildren(...sections);
    });

  await load();
  page.every(WEBSOCKETS_REFRESH_MS, load);
}

// ---------------------------------------------------------------------------------------
// Cost.

const COST_WINDOWS = [
  { label: 'This month', ms: null },
  { label: 'Last 24 h', ms: 24 * 3600e3 },
  { label: 'Last 7 days', ms: 7 * 24 * 3600e3 },
  { label: 'Last 30 days', ms: 30 * 24 * 3600e3 },
];
let chosenCostWindow = null;

async function viewCost(page, main) {
  main.append(h('h1', { text: 'Cost' }));
  const selectId = uid('cost-window');
  const select = h('select', { id: selectId }, COST_WINDOWS.map((w) => h('option', { value: w.ms ?? '', text: w.label })));
  select.value = chosenCostWindow === null ? '' : String(chosenCostWindow);
  select.addEventListener('change', () => {
    chosenCostWindow = select.value === '' ? null : Number(select.value);
    loadReport();
  });
  main.append(h('div', { class: 'toolbar' }, h('label', { for: selectId, text: 'Window' }), select));

  const usagePanel = panel('Usage');
  const sheetsPanel = panel('Price sheets');
  const chartPanel = panel('Cost over time');
  const breakPanel = panel('Break-even against the machine');
  const byFunctionPanel = panel('By function');
  const budgetsPanel = can('cost:read') ? panel('Budgets') : null;
  appendChildren(main, [usagePanel.el, sheetsPanel.el, chartPanel.el, breakPanel.el, byFunctionPanel.el, budgetsPanel?.el]);
  const chart = chartCard(page, 'Cost per time bucket, by price sheet');
  chartPanel.body.append(chart.el);

  const sheetsTable = dataTable('Price sheets', [
    { label: 'Sheet' }, { label: 'Kind' }, { label: 'Invocations', num: true }, { label: 'Cost', num: true },
    { label: 'Per invocation', num: true }, { label: 'Waiting costs', num: true, title: 'waiting_usd: what time spent waiting on I/O costs on this platform' },
    { label: 'Month so far', num: true }, { label: 'Projected', num: true }, { label: 'Range', num: true },
  ], 'sheets');
  sheetsPanel.body.append(sheetsTable.wrap, h('p', { class: 'hint', text: 'Projected: the calendar month (UTC) to its end, from up to 14 days of hourly history; the range is about a 90% interval.' }));
  const breakTable = dataTable('Break-even', [
    { label: 'Per-invocation sheet' }, { label: 'Machine sheet' }, { label: 'Per invocation', num: true },
    { label: 'Machine per month', num: true }, { label: 'Break-even per month', num: true }, { label: 'Break-even per second', num: true },
    { label: 'Observed per month', num: true }, { label: 'Machine capacity per month', num: true }, { label: 'Cheaper now' },
  ], 'break-even');
  breakPanel.body.append(breakTable.wrap, h('p', { class: 'hint', text: 'Above the break-even traffic, the dedicated machine is cheaper than the per-invocation platform.' }));

  let seq = 0;
  const loadReport = () =>
    guarded(page, usagePanel.errors, 'Could not load the cost report', async () => {
      const mySeq = ++seq;
      const url = chosenCostWindow === null ? '/v1/cost' : `/v1/cost?since_ms=${chosenCostWindow}`;
      const r = await api(url, { signal: page.signal });
      if (!page.alive || mySeq !== seq) return;
      const u = r.usage || {};
      const waitingShare = isNum(u.wall_ms) && u.wall_ms > 0 && isNum(u.waiting_ms) ? u.waiting_ms / u.wall_ms : null;
      usagePanel.body.replaceChildren(
        h('p', { class: 'muted' }, isNum(r.from_ms) && isNum(r.to_ms) ? `From ${dateTime.format(r.from_ms)} to ${dateTime.format(r.to_ms)}` : '', r.function ? ` · function ${r.function}` : ' · every function'),
        h('div', { class: 'cards' },
          card('Invocations', fmtInt(u.invocations)),
          card('Wall time', fmtDuration(u.wall_ms), isNum(u.billed_wall_ms) ? `billed ${fmtDuration(u.billed_wall_ms)} (rounded up per ms)` : null),
          card('CPU time', fmtDuration(u.cpu_ms)),
          card('Waiting', fmtPct(waitingShare), isNum(u.waiting_ms) ? `${fmtDuration(u.waiting_ms)} not on the CPU` : null),
        ),
      );

      const sheets = r.sheets || [];
      replaceKeepingFocus(sheetsTable.tbody, sheets.map((s) => {
        const f = s.forecast || {};
        return h('tr', { class: 'sheet-row', data: { sheet: s.sheet } },
          h('th', { scope: 'row' }, h('span', { text: s.sheet }), s.title ? h('div', { class: 'muted small', text: s.title }) : null),
          td(s.kind === 'machine' && isNum(s.usd_per_hour) ? `machine, ${fmtUsd(s.usd_per_hour)}/h` : s.kind || '—'),
          tdNum(fmtInt(s.invocations)),
          tdNum(h('span', { title: isNum(s.cost_usd) ? usdExact.format(s.cost_usd) : null, text: fmtUsd(s.cost_usd) })),
          tdNum(fmtUsd(s.usd_per_invocation)),
          tdNum(isNum(s.waiting_usd) ? fmtUsd(s.waiting_usd) : '—'),
          tdNum(fmtUsd(f.month_to_date_usd)),
          tdNum(fmtUsd(f.projected_usd)),
          tdNum(isNum(f.low_usd) && isNum(f.high_usd) ? `${fmtUsd(f.low_usd)} – ${fmtUsd(f.high_usd)}` : '—'));
      }));

      const be = r.break_even || [];
      breakPanel.el.hidden = be.length === 0;
      replaceKeepingFocus(breakTable.tbody, be.map((b) =>
        h('tr', { class: 'break-even-row', data: { sheet: b.sheet, machine: b.machine_sheet } },
          h('th', { scope: 'row', text: b.sheet }),
          td(b.machine_sheet),
          tdNum(fmtUsd(b.usd_per_invocation)),
          tdNum(fmtUsd(b.machine_usd_per_month)),
          tdNum(fmtCount(b.invocations_per_month)),
          tdNum(fmtRate(b.invocations_per_second)),
          tdNum(fmtCount(b.observed_invocations_per_month)),
          tdNum(fmtCount(b.machine_invocations_per_month_max)),
          td(b.machine_is_cheaper === true ? badge('machine', 'ok') : b.machine_is_cheaper === false ? badge(b.sheet, 'neutral') : '—'))));

      // Per function: one column per sheet.
      const fnNames = [...new Set(sheets.flatMap((s) => (s.functions || []).map((f) => f.function)))].sort();
      byFunctionPanel.el.hidden = fnNames.length === 0;
      const fnTable = dataTable('Cost by function and sheet', [{ label: 'Function' }, ...sheets.map((s) => ({ label: s.sheet, num: true }))], 'cost-by-function');
      fnTable.tbody.append(...fnNames.map((name) =>
        h('tr', { data: { function: name } },
          h('th', { scope: 'row' }, h('a', { href: fnHref(name), text: name })),
          sheets.map((s) => tdNum(fmtUsd((s.functions || []).find((f) => f.function === name)?.cost_usd))))));
      byFunctionPanel.body.replaceChildren(fnTable.wrap);

      const series = r.series;
      chartPanel.el.hidden = !(series && Array.isArray(series.sheets) && series.sheets.length);
      if (!chartPanel.el.hidden) {
        const xsSet = new Set();
        for (const s of series.sheets) for (const [t] of s.points || []) xsSet.add(t);
        const xsMs = [...xsSet].sort((a, b) => a - b);
        const index = new Map(xsMs.map((t, i) => [t, i]));
        const lines = series.sheets.map((s) => {
          const values = new Array(xsMs.length).fill(null);
          for (const [t, v] of s.points || []) values[index.get(t)] = v;
          return { label: s.sheet, values };
        });
        const bucket = isNum(series.bucket_ms) ? stepLabelFor(series.bucket_ms) : 'bucket';
        const totals = lines.map((l) => `${l.label} ${fmtUsd(l.values.reduce((a, v) => a + (v || 0), 0))}`);
        chart.set({
          xs: xsMs.map((t) => t / 1000),
          series: lines,
          points: xsMs.filter((t, i) => lines.some((l) => (l.values[i] || 0) > 0)).length,
          stepLabel: bucket,
          fmt: usdFmt,
          summary: xsMs.length ? `Cost per ${bucket} on each sheet; totals over the window: ${totals.join(', ')}.` : 'No cost in this window.',
        });
      }
    });

  const loadBudgets = budgetsPanel
    ? () =>
      guarded(page, budgetsPanel.errors, 'Could not load the budgets', async () => {
        const { budgets = [] } = await api('/v1/budgets', { signal: page.signal });
        if (!page.alive) return;
        if (!budgets.length) {
          budgetsPanel.body.replaceChildren(note('No budgets: `eddy budget set --monthly-usd 50 --sheet aws-lambda-x86`.'));
          return;
        }
        const t = dataTable('Budgets', [
          { label: 'Budget' }, { label: 'Sheet' }, { label: 'Monthly', num: true }, { label: 'Spent', num: true },
          { label: 'Used' }, { label: 'State' }, { label: 'Alerts at' }, { label: 'Hard cap' }, { label: 'Webhook' },
        ], 'budgets');
        t.tbody.append(...budgets.map((b) => {
          const pct = isNum(b.percent) ? b.percent : null;
          const state = b.state || 'ok';
          // `scope` is `node` or `function/NAME`; a function's budget also names it in `function`.
          return h('tr', { class: 'budget', data: { scope: b.scope, function: b.function, sheet: b.sheet, monthlyUsd: b.monthly_usd } },
            h('th', { scope: 'row' }, b.function ? ['function ', h('a', { href: fnHref(b.function), text: b.function })] : b.scope || 'node'),
            td(b.sheet),
            tdNum(fmtUsd(b.monthly_usd), 'monthly'),
            tdNum(fmtUsd(b.spent_usd)),
            td(h('span', { class: 'meter-cell' },
              h('progress', { max: '100', value: Math.min(100, Math.max(0, pct ?? 0)), 'aria-label': `${fmtPct((pct ?? 0) / 100)} of the monthly budget` }),
              ` ${pct === null ? '—' : `${nf1.format(z(pct))}%`}`)),
            td([badge(state, state === 'ok' ? 'ok' : state === 'refusing' ? 'bad' : 'warn'), b.problem ? h('div', { class: 'small error-text', text: b.problem }) : null]),
            td(Array.isArray(b.alert_percents) ? b.alert_percents.map((p) => `${p}%`).join(', ') : '—'),
            td(b.hard_cap ? `yes; background paused at ${fmtInt(b.pause_background_percent)}%` : 'no'),
            td(b.webhook ? h('span', { class: 'mono small', text: b.webhook }) : h('span', { class: 'muted', text: 'none' })));
        }));
        budgetsPanel.body.replaceChildren(t.wrap);
      })
    : async () => {};

  const refresh = () => Promise.all([loadReport(), loadBudgets()]);
  await refresh();
  page.every(COST_REFRESH_MS, refresh);
}

// ---------------------------------------------------------------------------------------
// Cron.

async function viewCron(page, main) {
  main.append(h('h1', { text: 'Cron schedules' }));
  const p = panel('Schedules');
  main.append(p.el);
  const table = dataTable('Cron schedules', [
    { label: 'Function' }, { label: 'Cron' }, { label: 'Time zone' }, { label: 'Overlap' }, { label: 'Missed' },
    { label: 'Path' }, { label: 'Last tick' }, { label: 'Next tick' },
  ], 'schedules');
  const empty = note('No function has a schedule. Deploy with `--schedule "*/5 * * * *"` to add one.');
  p.body.append(table.wrap);
  const load = () =>
    guarded(page, p.errors, 'Could not load the schedules', async () => {
      const { schedules = [] } = await api('/v1/schedules', { signal: page.signal });
      if (!page.alive) return;
      table.wrap.hidden = schedules.length === 0;
      if (schedules.length === 0) p.body.prepend(empty);
      else empty.remove();
      replaceKeepingFocus(table.tbody, schedules.map((s) =>
        h('tr', { class: 'schedule', data: { function: s.function, nextTick: s.next_tick } },
          h('th', { scope: 'row' }, h('a', { href: fnHref(s.function), text: s.function, data: { focusKey: `cron:${s.function}` } })),
          td(h('code', { text: s.cron })),
          td(s.timezone || 'UTC'),
          td(s.overlap || 'skip'),
          td(s.missed || 'skip'),
          td(s.path ? h('span', { class: 'mono', text: s.path }) : h('span', { class: 'muted', text: 'route' })),
          td(relTime(s.last_tick, 'never')),
          td(relTime(s.next_tick, 'none'), 'next-tick'))));
    });
  await load();
  page.every(REFRESH_MS * 2, load);
}

// ---------------------------------------------------------------------------------------
// Access: tokens and the audit trail.

const ROLES = ['reader', 'deployer', 'publisher', 'admin'];
const EXPIRIES = [
  { label: 'Never', ms: null },
  { label: '1 day', ms: 86400e3 },
  { label: '7 days', ms: 7 * 86400e3 },
  { label: '30 days', ms: 30 * 86400e3 },
  { label: '90 days', ms: 90 * 86400e3 },
  { label: '1 year', ms: 365 * 86400e3 },
];

async function viewAccess(page, main) {
  main.append(h('h1', { text: 'Access' }));
  const loads = [];
  if (can('tokens:manage')) loads.push(tokensSection(page, main));
  if (can('audit:read')) loads.push(auditSection(page, main));
  await Promise.all(loads);
}

async function tokensSection(page, main) {
  const p = panel('Tokens');
  main.append(p.el);
  const created = h('div', { class: 'created-token', 'aria-live': 'polite' });
  const table = dataTable('Tokens', [
    { label: 'Name' }, { label: 'Role' }, { label: 'Scope' }, { label: 'Created' }, { label: 'Expires' }, { label: 'Last used' }, { label: 'Action' },
  ], 'tokens');

  // The create form.
  const nameId = uid('token-name');
  const roleId = uid('token-role');
  const fnsId = uid('token-functions');
  const queuesId = uid('token-queues');
  const expiresId = uid('token-expires');
  const nameInput = h('input', { id: nameId, type: 'text', required: true, pattern: '[a-z][a-z0-9\\-]{0,62}', autocomplete: 'off', spellcheck: 'false' });
  const roleSelect = h('select', { id: roleId }, ROLES.map((r) => h('option', { value: r, text: r })));
  roleSelect.value = 'reader';
  const fnsInput = h('input', { id: fnsId, type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'all' });
  const queuesInput = h('input', { id: queuesId, type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'all' });
  const expiresSelect = h('select', { id: expiresId }, EXPIRIES.map((e) => h('option', { value: e.ms ?? '', text: e.label })));
  const submit = h('button', { type: 'submit', class: ['action', 'primary'], data: { action: 'create-token' }, text: 'Create token' });
  const formError = h('p', { class: 'form-error', 'aria-live': 'polite' });
  const form = h('form', { class: 'create-token', novalidate: true },
    h('h3', { text: 'New token' }),
    h('div', { class: 'form-grid' },
      h('div', { class: 'field' }, h('label', { for: nameId, text: 'Name' }), nameInput),
      h('div', { class: 'field' }, h('label', { for: roleId, text: 'Role' }), roleSelect),
      h('div', { class: 'field' }, h('label', { for: fnsId, text: 'Functions (comma-separated; empty: all)' }), fnsInput),
      h('div', { class: 'field' }, h('label', { for: queuesId, text: 'Queues (comma-separated; empty: all)' }), queuesInput),
      h('div', { class: 'field' }, h('label', { for: expiresId, text: 'Expires' }), expiresSelect)),
    submit, formError);
  const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    formError.textContent = '';
    const name = nameInput.value.trim();
    if (!name) {
      formError.textContent = 'Give the token a name.';
      nameInput.focus();
      return;
    }
    const body = { name, role: roleSelect.value };
    if (list(fnsInput.value).length) body.functions = list(fnsInput.value);
    if (list(queuesInput.value).length) body.queues = list(queuesInput.value);
    if (expiresSelect.value) body.expires_in_ms = Number(expiresSelect.value);
    submit.disabled = true;
    try {
      const result = await api('/v1/tokens', { method: 'POST', json: body });
      if (!page.alive) return;
      form.reset();
      roleSelect.value = 'reader';
      showCreated(result);
      await load();
    } catch (e) {
      if (isQuiet(e)) return;
      formError.textContent = `Could not create the token: ${describe(e)}`;
    } finally {
      submit.disabled = false;
    }
  });

  function showCreated(result) {
    const fieldId = uid('new-token');
    const field = h('input', { id: fieldId, type: 'text', readonly: true, class: 'mono token-value', autocomplete: 'off', spellcheck: 'false' });
    field.value = result.token;
    const copy = h('button', { type: 'button', text: 'Copy' });
    copy.addEventListener('click', async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        announce('Token copied.');
      } catch {
        announce('Select the token and copy it with your keyboard (Ctrl+C / ⌘C).', 'error');
      }
    });
    const done = h('button', { type: 'button', text: 'Done: I have copied it' });
    done.addEventListener('click', () => {
      field.value = '';
      created.replaceChildren();
    });
    created.replaceChildren(h('div', { class: 'warning-box' },
      h('p', null, h('strong', { text: 'Copy this token now. ' }), `It will not be shown again. Token “${result.name}” (${result.role}):`),
      h('label', { for: fieldId, class: 'visually-hidden', text: `New token ${result.name}` }),
      h('div', { class: 'token-row' }, field, copy, done)));
    field.focus();
    field.select();
  }

  p.body.append(created, form, table.wrap);

  const load = () =>
    guarded(page, p.errors, 'Could not load the tokens', async () => {
      const { tokens = [] } = await api('/v1/tokens', { signal: page.signal });
      if (!page.alive) return;
      replaceKeepingFocus(table.tbody, tokens.map((t) => {
        const scope = [];
        if (t.functions?.length) scope.push(`functions: ${t.functions.join(', ')}`);
        if (t.queues?.length) scope.push(`queues: ${t.queues.join(', ')}`);
        if (t.secrets?.length) scope.push(`secrets: ${t.secrets.join(', ')}`);
        return h('tr', { class: 'token', data: { name: t.name, role: t.role, bootstrap: t.bootstrap ? 'true' : 'false' } },
          h('th', { scope: 'row' }, t.name, t.bootstrap ? [' ', badge('bootstrap', 'neutral')] : null, t.name === app.session?.name ? [' ', badge('you', 'live')] : null),
          td(t.role),
          td(scope.length ? scope.join('; ') : h('span', { class: 'muted', text: 'everything' })),
          td(t.bootstrap && !t.created_at ? h('span', { class: 'muted', text: 'at first start' }) : relTime(t.created_at)),
          td(t.expired ? [badge('expired', 'bad'), ' ', relTime(t.expires_at)] : relTime(t.expires_at, 'never')),
          td(relTime(t.last_used_at, 'never')),
          td(t.bootstrap ? h('span', { class: 'muted', text: 'rotate it on the node' }) : revokeButton(t.name)));
      }));
    });

  function revokeButton(name) {
    const button = h('button', { type: 'button', class: ['action', 'danger'], data: { action: 'revoke', token: name, focusKey: `revoke:${name}` }, text: 'Revoke' });
    button.addEventListener('click', async () => {
      const ok = await confirmAction({
        title: `Revoke the token “${name}”?`,
        body: 'Its next call is refused, on every node. This cannot be undone: make a new token if it is needed again.',
        confirmLabel: 'Revoke',
      });
      if (!ok || !page.alive) return;
      button.disabled = true;
      try {
        await api(path`/v1/tokens/${name}`, { method: 'DELETE' });
        announce(`Token “${name}” revoked.`);
        await load();
      } catch (e) {
        if (isQuiet(e)) return;
        announce(`Could not revoke “${name}”: ${describe(e)}`, 'error');
        button.disabled = false;
      }
    });
    return button;
  }

  await load();
}

async function auditSection(page, main) {
  const refreshButton = h('button', { type: 'button', text: 'Refresh' });
  const p = panel('Audit trail (last 24 h)', { tools: refreshButton });
  main.append(p.el);
  const filterId = uid('audit-filter');
  const filter = h('input', { id: filterId, type: 'search', autocomplete: 'off', spellcheck: 'false' });
  const count = h('span', { class: 'muted' });
  const truncatedNote = h('p', { class: 'note audit-truncated', hidden: true });
  const table = dataTable('Audit trail, newest first', [
    { label: 'When' }, { label: 'Token' }, { label: 'Source' }, { label: 'Request' }, { label: 'Permission' }, { label: 'Status', num: true }, { label: 'Outcome' },
  ], 'audit');
  p.body.append(h('div', { class: 'toolbar' }, h('label', { for: filterId, text: 'Filter' }), filter, count), truncatedNote, table.wrap);
  let entries = [];

  function show() {
    const q = filter.value.trim().toLowerCase();
    const rows = q ? entries.filter((e) => `${e.token} ${e.source} ${e.request} ${e.action} ${e.status} ${e.outcome}`.toLowerCase().includes(q)) : entries;
    const drawn = Math.min(rows.length, AUDIT_ROWS_DRAWN);
    count.textContent = `${fmtInt(rows.length)} of ${fmtInt(entries.length)} entries${drawn < rows.length ? `; the newest ${fmtInt(drawn)} are listed (filter to find others)` : ''}`;
    table.tbody.replaceChildren(...rows.slice(0, drawn).map((e) =>
      h('tr', { class: ['audit', e.status >= 400 && 'refused'], data: { id: e.id, status: e.status } },
        td(relTime(e.at)),
        td(e.token),
        td(h('span', { class: 'mono small', text: e.source })),
        td(h('span', { class: 'mono', text: e.request })),
        td(e.action),
        tdNum(String(e.status), e.status >= 400 ? 'bad' : null),
        td(e.outcome))));
  }
  filter.addEventListener('input', show);

  let loadSeq = 0;
  const load = () =>
    guarded(page, p.errors, 'Could not load the audit trail', async () => {
      const seq = ++loadSeq;
      // Oldest first, paged with after=last_id: read to the end (the newest entries), keeping
      // the newest AUDIT_KEEP of them.
      let kept = [];
      let read = 0;
      let after = null;
      let reachedEnd = false;
      for (let i = 0; i < AUDIT_PAGES_MAX; i++) {
        const q = after === null ? '' : `&after=${after}`;
        const pageOf = await api(`/v1/audit?since_ms=86400000&limit=${AUDIT_PAGE}${q}`, { signal: page.signal });
        if (!page.alive || seq !== loadSeq) return;
        const got = pageOf?.entries || [];
        read += got.length;
        kept.push(...got);
        if (kept.length > AUDIT_KEEP) kept = kept.slice(kept.length - AUDIT_KEEP);
        if (got.length < AUDIT_PAGE || !isNum(pageOf.last_id)) {
          reachedEnd = true;
          break;
        }
        after = pageOf.last_id;
      }
      entries = kept.reverse();
      if (!reachedEnd) {
        truncatedNote.textContent = `The trail of the last 24 h holds more than ${fmtInt(AUDIT_PAGE * AUDIT_PAGES_MAX)} entries: these are the newest ${fmtInt(entries.length)} of the first ${fmtInt(read)}, and later ones are not shown. \`eddy audit\` lists them all.`;
      } else if (read > entries.length) {
        truncatedNote.textContent = `Only the newest ${fmtInt(entries.length)} of the ${fmtInt(read)} entries of the last 24 h are kept here; \`eddy audit\` lists them all.`;
      } else {
        truncatedNote.textContent = '';
      }
      truncatedNote.hidden = !truncatedNote.textContent;
      truncatedNote.dataset.read = String(read);
      show();
    });
  refreshButton.addEventListener('click', load);
  await load();
}

// ---------------------------------------------------------------------------------------

function viewNotFound(page, main) {
  main.append(h('h1', { text: 'Not found' }), note('There is no such page in the console.'), h('p', null, h('a', { href: '#/', text: 'Go to the overview' })));
}

function viewNotPermitted(page, main) {
  main.append(h('h1', { text: 'Not permitted' }), note(`This token (role ${app.session?.role}) may not see this page.`), h('p', null, h('a', { href: '#/', text: 'Go to the overview' })));
}

const VIEWS = {
  overview: viewOverview,
  function: viewFunction,
  queues: viewQueues,
  websockets: viewWebsockets,
  cost: viewCost,
  cron: viewCron,
  access: viewAccess,
  notfound: viewNotFound,
};

// ---------------------------------------------------------------------------------------
// Start.

async function boot() {
  $('.skip-link').addEventListener('click', (event) => {
    event.preventDefault(); // the hash belongs to the router
    const main = $('#main');
    main.focus();
    main.scrollIntoView();
  });
  $('#sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => render());
  startRelativeTicker();

  let res;
  try {
    res = await fetch('/v1/session', { credentials: 'same-origin', cache: 'no-store', redirect: 'error', headers: { accept: 'application/json' } });
  } catch (e) {
    showSignIn(`Could not reach the node (${e?.message || e}).`);
    return;
  }
  if (res.ok) {
    app.session = await res.json();
    enterApp();
  } else if (res.status === 401) {
    showSignIn();
  } else {
    showSignIn(describe(await errorFrom(res)));
  }
}

boot();
