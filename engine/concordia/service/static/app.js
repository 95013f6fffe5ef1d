// Concordia's page: draws the runs list, a run, and a saga from the JSON API.
// Plain JavaScript, no build step. Text from the API is set with textContent, never as
// HTML; the only markup inserted is the diagram SVG the server draws (its text escaped).
// Every API call carries the API token (or JWT) as an Authorization header; the token
// lives in this tab's sessionStorage, never in a cookie, so no other site can use it.
"use strict";

const ACTIVE = new Set(["running", "waiting", "suspended"]);
const REFRESH_MS = 2000;
const TOKEN_KEY = "concordia.token";
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// A token handed over in the address's fragment (/ui/#token=..., never sent to a server)
// is kept for this tab and taken out of the address, its history and its bookmarks.
function tokenFromAddress() {
  const match = location.hash.match(/^#token=([A-Za-z0-9\-._~+/]+=*)$/);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, match[1]);
  history.replaceState(null, "", location.pathname + location.search);
}

class SignInNeeded extends Error {}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, accept) {
  const headers = { Accept: accept || "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { headers, credentials: "omit" });
  if (response.status === 401) {
    let detail = "this server needs an API token";
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    signIn(token() ? `The token was refused: ${detail}` : "");
    throw new SignInNeeded(detail);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return accept && accept !== "application/json" ? response.text() : response.json();
}

function badge(status) {
  return el("span", { class: `status status-${status}`, "data-status": status }, status);
}

function time(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? text : d.toISOString().replace("T", " ");  // to the millisecond, UTC
}

function short(value, n) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > n ? text.slice(0, n - 1) + "…" : text || "";
}

function main() { return document.getElementById("main"); }

function repeat(fn) {
  if (timer) clearTimeout(timer);
  timer = setTimeout(fn, REFRESH_MS);
}

function fail(error) {
  if (error instanceof SignInNeeded) return;  // the sign-in form is showing
  main().replaceChildren(el("p", { class: "error" }, String(error.message || error)));
}

// -- the token ------------------------------------------------------------------------

function signIn(message) {
  if (timer) clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  showSignOut();
  // Several calls refused at once: the first one's message stays.
  if (document.getElementById("token-form") && !message) return;
  const input = el("input", { type: "password", id: "token-input", name: "token", size: 48,
                              autocomplete: "off", required: "", "aria-label": "API token" });
  const form = el("form", { id: "token-form", class: "sign-in" },
    el("h1", {}, "API token"),
    el("p", { class: "muted" }, "This server needs an API token or a JWT with the ",
       el("code", {}, "concordia.read"), " scope (",
       el("code", {}, "concordia.operate"), " to start, cancel and retry runs). It is kept " +
       "in this tab only, and sent as an Authorization header."),
    message ? el("p", { class: "error", id: "token-error" }, message) : null,
    el("p", {}, input, " ", el("button", { type: "submit" }, "Use it")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    showSignOut();
    navigation();
    route();
  });
  main().replaceChildren(form);
  input.focus();
}

function showSignOut() {
  const link = document.getElementById("sign-out");
  link.hidden = !token();
}

// -- the runs list --------------------------------------------------------------------

async function runsPage() {
  const params = new URLSearchParams(location.search);
  const sagas = (await api("/sagas")).sagas;
  const statuses = ["running", "waiting", "suspended", "completed", "compensated", "failed",
                    "cancelled", "compensation_failed", "stuck"];
  const select = (name, values) => el("select", { name, id: `filter-${name}` },
    el("option", { value: "" }, `any ${name}`),
    values.map((v) => el("option", Object.assign({ value: v },
                                                  params.get(name) === v ? { selected: "" } : {}), v)));
  const corr = el("input", { name: "correlation_id", id: "filter-correlation_id",
                             placeholder: "correlation id", size: 38,
                             value: params.get("correlation_id") || "" });
  const form = el("form", { class: "filters", id: "filters" },
    select("saga", sagas.map((s) => s.name)), select("status", statuses), corr,
    el("button", { type: "submit" }, "Filter"), el("span", { class: "live", id: "live" }, ""));
  form.addEventListener("change", (e) => { if (e.target !== corr) form.requestSubmit(); });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) next.set(k, v);
    history.replaceState(null, "", `/ui/?${next}`);
    route();
  });
  const body = el("tbody", { id: "runs" });
  const more = el("p", { id: "more" });
  main().replaceChildren(el("h1", {}, "Runs"), form,
    el("table", { id: "runs-table" }, el("thead", {}, el("tr", {},
      ["run", "saga", "status", "state", "correlation id", "started", "updated"].map(
        (h) => el("th", {}, h)))), body), more);

  async function refresh() {
    const query = new URLSearchParams(location.search);
    query.set("limit", "50");
    try {
      const page = await api(`/runs?${query}`);
      body.replaceChildren(...page.runs.map((r) => el("tr", { id: `run-${r.id}`, "data-status": r.status },
        el("td", { class: "mono" }, el("a", { href: `/ui/runs/${r.id}` }, r.id)),
        el("td", {}, el("a", { href: `/ui/sagas/${r.saga}` }, `${r.saga} v${r.version}`)),
        el("td", {}, badge(r.status)), el("td", {}, r.state),
        el("td", { class: "mono" }, r.correlation_id), el("td", {}, time(r.created_at)),
        el("td", {}, time(r.updated_at)))));
      if (!page.runs.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no runs")));
      more.replaceChildren(page.next ? el("a", { href: "/ui/?" + page.next.split("?")[1], id: "older" }, "older runs →") : "");
      document.getElementById("live").textContent = `live · ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (error instanceof SignInNeeded) return;  // no more refreshes until it has one
      document.getElementById("live").textContent = String(error.message);
    }
    if (!query.get("before")) repeat(refresh);
  }
  await refresh();
}

// -- one run ----------------------------------------------------------------------------

function detailText(kind, d) {
  if (!d) return "";
  if (d.error) return d.error;
  if (kind === "policy.decided") return `${d.decision}: ${d.reason || ""} (rule ${d.rule || "-"})`;
  if (kind === "state") return `${d.from} → ${d.to} (${d.event})`;
  if (d.result !== undefined) return "result " + short(d.result, 160);
  if (d.event_id || d.event) return `event ${d.type || d.event || ""} ${d.event_id || ""}`.trim();
  if (d.reason) return d.reason;
  if (d.input !== undefined) return "input " + short(d.input, 160);
  return short(d, 160);
}

function timeline(run) {
  const rows = run.history.map((h, i) => el("tr", {
      class: `timeline-entry kind-${h.kind.replace(".", "-")}`, "data-kind": h.kind,
      id: `entry-${i}` },
    el("td", {}, time(h.at)), el("td", { class: "mono kind" }, h.kind),
    el("td", { class: "nowrap" }, h.step || ""), el("td", {}, h.attempt || ""),
    el("td", { class: h.detail && h.detail.error ? "error" : "wrap" }, detailText(h.kind, h.detail))));
  return el("table", { id: "timeline" }, el("thead", {}, el("tr", {},
    ["time", "what", "step", "attempt", "detail"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function eventsTable(run) {
  const rows = run.events.map(({ event, direction, causation_chain }) => el("tr", {
      class: `event event-${direction}`, "data-type": event.type, "data-direction": direction },
    el("td", {}, time(event.time)), el("td", {}, direction === "in" ? "received" : "emitted"),
    el("td", { class: "mono" }, event.type),
    el("td", { class: "mono" }, event.id), el("td", { class: "mono" }, event.correlationid || ""),
    el("td", { class: "mono" }, event.causationid || ""),
    el("td", { class: "mono" }, causation_chain.map((c) => c.type).join(" → "))));
  return el("table", { id: "events" }, el("thead", {}, el("tr", {},
    ["time", "", "type", "id", "correlation id", "causation id", "causation chain"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "none"))));
}

function stepsTable(run) {
  return el("table", { id: "steps" }, el("thead", {}, el("tr", {},
    ["step", "status", "attempts", "compensation", "error"].map((h) => el("th", {}, h)))),
    el("tbody", {}, run.steps.map((s) => el("tr", { "data-step": s.name },
      el("td", { class: "nowrap" }, s.name), el("td", { class: "nowrap" }, s.status),
      el("td", {}, s.attempt),
      el("td", { class: "nowrap" }, s.compensation ? `${s.compensation.status} (${s.compensation.attempt})` : ""),
      el("td", { class: "error" }, s.error || (s.compensation && s.compensation.error) || "")))));
}

function decisionsTable(run) {
  if (!run.decisions.length) return el("p", { class: "muted" }, "none");
  return el("table", { id: "decisions" }, el("thead", {}, el("tr", {},
    ["policy", "decision", "rule", "reason"].map((h) => el("th", {}, h)))),
    el("tbody", {}, run.decisions.map((d) => el("tr", {},
      el("td", {}, `${d.policy} v${d.policy_version}`), el("td", {}, d.decision),
      el("td", {}, d.rule || ""), el("td", {}, d.reason || "")))));
}

async function runPage(id) {
  async function refresh() {
    let run, svg;
    try {
      [run, svg] = await Promise.all([api(`/runs/${encodeURIComponent(id)}`),
                                      api(`/runs/${encodeURIComponent(id)}/graph?format=svg`, "image/svg+xml")]);
    } catch (error) { fail(error); return; }
    const diagram = el("div", { class: "diagram", id: "diagram" });
    diagram.innerHTML = svg;  // drawn by the server, every text escaped there
    const facts = el("dl", { class: "facts" },
      el("dt", {}, "status"), el("dd", { id: "run-status" }, badge(run.status)),
      el("dt", {}, "state"), el("dd", { id: "run-state" }, run.state),
      el("dt", {}, "correlation id"), el("dd", { class: "mono", id: "correlation" }, run.correlation_id),
      el("dt", {}, "causation id"), el("dd", { class: "mono" }, run.causation_id || "—"),
      el("dt", {}, "started"), el("dd", {}, time(run.created_at)),
      el("dt", {}, "updated"), el("dd", {}, time(run.updated_at)),
      el("dt", {}, "error"), el("dd", { class: "error" }, run.error || "—"),
      el("dt", {}, "input"), el("dd", { class: "mono" }, short(run.input, 400)));
    main().replaceChildren(
      el("h1", {}, el("a", { href: `/ui/sagas/${run.saga}` }, `${run.saga} v${run.version}`),
         " · run ", el("span", { class: "mono" }, run.id), " ", badge(run.status)),
      el("h2", {}, "Diagram"), diagram,
      el("div", { class: "cols" },
        el("section", {}, el("h2", {}, "Run"), facts,
           el("h2", {}, "Policy decisions"), decisionsTable(run)),
        el("section", {}, el("h2", {}, "Steps"), stepsTable(run))),
      el("h2", {}, "Timeline"), timeline(run),
      el("h2", {}, "Events"), eventsTable(run));
    if (ACTIVE.has(run.status)) repeat(refresh);
  }
  await refresh();
}

// -- one saga ---------------------------------------------------------------------------

async function sagaPage(name) {
  let saga;
  try { saga = await api(`/sagas/${encodeURIComponent(name)}`); } catch (error) { fail(error); return; }
  const params = new URLSearchParams(location.search);
  const version = Number(params.get("version")) || saga.latest;
  const chosen = saga.versions.find((v) => v.version === version) || saga.versions[0];
  const svg = await api(`/sagas/${encodeURIComponent(name)}/graph?format=svg&version=${chosen.version}`, "image/svg+xml");
  const diagram = el("div", { class: "diagram", id: "diagram" });
  diagram.innerHTML = svg;  // drawn by the server, every text escaped there
  const versions = el("p", {}, "versions: ", saga.versions.map((v) =>
    v.version === chosen.version ? el("strong", {}, ` v${v.version} `)
      : el("a", { href: `/ui/sagas/${name}?version=${v.version}` }, ` v${v.version} `)),
    " · ", el("a", { href: `/ui/?saga=${encodeURIComponent(name)}` }, "its runs"));
  main().replaceChildren(el("h1", {}, `${saga.name} v${chosen.version}`),
    el("p", { class: "muted" }, chosen.description || ""), versions,
    el("h2", {}, "Diagram"), diagram,
    el("h2", {}, "YAML"), el("pre", { class: "yaml", id: "yaml" }, chosen.yaml));
  document.dispatchEvent(new CustomEvent("concordia:saga-page", { detail: { name, version: chosen.version } }));
}

// -- routing ----------------------------------------------------------------------------

async function navigation() {
  showSignOut();
  try {
    const sagas = (await api("/sagas")).sagas;
    document.getElementById("saga-links").replaceChildren(...sagas.map((s) =>
      el("a", { href: `/ui/sagas/${s.name}` }, s.name)));
  } catch (error) { /* the page itself says what failed */ }
}

async function route() {
  if (timer) clearTimeout(timer);
  const path = decodeURIComponent(location.pathname);
  try {
    let match;
    if ((match = path.match(/^\/ui\/runs\/(.+)$/))) await runPage(match[1]);
    else if ((match = path.match(/^\/ui\/sagas\/(.+)$/))) await sagaPage(match[1]);
    else await runsPage();
  } catch (error) { fail(error); }
}

document.addEventListener("DOMContentLoaded", () => {
  tokenFromAddress();
  document.getElementById("sign-out").addEventListener("click", (e) => {
    e.preventDefault();
    signIn("");
  });
  navigation();
  route();
});
