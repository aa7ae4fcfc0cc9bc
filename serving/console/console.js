// The referral-ml console: plain JavaScript over the service's own API (no framework, no CDN).
// Every figure shown comes from an endpoint that checks the key's role; the key lives in this
// tab's sessionStorage only. Text from the API is always set as text (never as HTML).
"use strict";

const KEY_STORAGE = "referral-ml-key";
const PAGE_ORDER = ["worklist", "referral", "models"];
const DONE_OUTCOMES = new Set(["reached", "confirmed", "rescheduled", "transport_arranged", "cancelled"]);
const SHORTCUTS = { m: "left_message", r: "reached", s: "rescheduled", t: "transport_arranged" };
const OUTCOME_WORDS = {
  reached: "reached", confirmed: "confirmed", left_message: "left a message",
  no_answer: "no answer", wrong_number: "wrong number", rescheduled: "rescheduled",
  cancelled: "cancelled", transport_arranged: "transport arranged", declined: "declined",
};

const state = { key: null, me: null, catalog: null, worklist: [], selected: -1, modelsShown: false };

// ---------------------------------------------------------------------------------- helpers

function $(id) { return document.getElementById(id); }

function h(tag, attrs, ...children) {
  const svg = ["svg", "circle", "line", "text", "g", "title", "rect", "path"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setStatus(text) { $("status").textContent = text || ""; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function problemText(body, status) {
  if (body && Array.isArray(body.errors)) {
    return body.errors.map((e) => `${e.field}: ${e.problem}`).join("\n");
  }
  if (body && body.error) return body.error;
  return `the service answered ${status}`;
}

async function api(method, path, body, { text = false } = {}) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "the service cannot be reached");
  }
  if (response.ok && text) return response.text();
  let payload = null;
  try { payload = await response.json(); } catch (err) { payload = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/whoami") signOut("Your key is no longer valid: sign in again.");
    throw new ApiError(response.status, problemText(payload, response.status));
  }
  return payload;
}

function addDays(isoDate, days) {
  const d = new Date(`${isoDate}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

function when(text) {
  if (!text) return "—";
  const [day, time] = text.split("T");
  return `${day} ${(time || "").slice(0, 5)}`;
}

function pct(x) { return `${(100 * x).toFixed(1)}%`; }

// A risk reduction in percentage points ("—": not estimated, or no outreach-uplift model).
function points(x) { return x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)} pts`; }

const ORDER_WORDS = {
  risk: "highest risk first",
  expected_benefit: "largest expected benefit of a call first (then risk)",
};

function fill(select, options, keep) {
  for (const [value, label] of options) select.append(h("option", { value }, label));
  if (keep !== undefined) select.value = keep;
}

// ---------------------------------------------------------------------------------- sign-in and pages

async function signIn(key) {
  state.key = key;
  try {
    state.me = await api("GET", "/whoami");
  } catch (err) {
    state.key = null;
    state.me = null;
    throw err;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("who-role").textContent = state.me.role;
  $("who").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) {
    link.hidden = !state.me.pages.includes(link.dataset.page);
  }
  $("nav").hidden = false;
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  Object.assign(state, { key: null, me: null, catalog: null, worklist: [], selected: -1, modelsShown: false });
  $("who").hidden = true;
  $("nav").hidden = true;
  $("models").replaceChildren();
  $("monitoring").replaceChildren();
  $("wl-table").hidden = true;
  $("rf-results").hidden = true;
  setStatus(message || "Signed out.");
  if (location.hash !== "#signin") location.hash = "#signin";
  else route();
}

function show(page) {
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function catalog() {
  if (!state.catalog) {
    state.catalog = await api("GET", "/catalog");
    prepareForms(state.catalog);
  }
  return state.catalog;
}

async function route() {
  const wanted = location.hash.replace("#", "");
  if (!state.me) {
    show("signin");
    $("api-key").focus();
    return;
  }
  const pages = state.me.pages;
  const page = wanted && wanted !== "signin" ? wanted : PAGE_ORDER.find((p) => pages.includes(p));
  if (!PAGE_ORDER.includes(page) || !pages.includes(page)) {
    $("forbidden-role").textContent = state.me.role;
    show("forbidden");
    return;
  }
  if (location.hash !== `#${page}`) { location.hash = `#${page}`; return; }
  show(page);
  try {
    if (page === "models") await showModels();
    else await catalog();
  } catch (err) {
    setStatus(err.message);
  }
}

// ---------------------------------------------------------------------------------- forms

function prepareForms(cat) {
  const today = cat.as_of.slice(0, 10);
  $("wl-start").value = today;
  $("wl-end").value = addDays(today, 2);
  const specialties = cat.specialties.map((s) => [s.code, `${s.name} (${s.code})`]);
  fill($("wl-specialty"), specialties);
  fill($("wl-organization"), cat.organizations.map((o) => [o.organization_id, `${o.name}, ${o.city}`]));
  fill($("rf-specialty"), cat.specialties.map((s) => [s.code, `${s.name} — ${s.specialists} accepting`]));
  fill($("rf-plan"), cat.plans.map((p) => [p.insurance_plan_id, `${p.plan_name} (${p.plan_type}, ${p.payer_type})`]));
  const languages = cat.languages.map((l) => [l, l]);
  fill($("rf-language"), languages, "en");
  fill($("rf-pref-language"), languages);
  $("rf-lat").value = cat.center.latitude;
  $("rf-lon").value = cat.center.longitude;
  const cardiology = cat.specialties.find((s) => s.code === "207RC0000X");
  if (cardiology) $("rf-specialty").value = cardiology.code;
  fillReasons();
}

function fillReasons() {
  const code = $("rf-specialty").value;
  const select = $("rf-reason");
  select.replaceChildren();
  const options = state.catalog.reasons.filter((r) => r.specialty === code).map((r) => [r.code, `${r.label} (${r.code})`]);
  fill(select, options);
}

// ---------------------------------------------------------------------------------- worklist

function worklistRequest(format) {
  const body = {
    start: $("wl-start").value,
    end: $("wl-end").value,
    capacity: Number($("wl-capacity").value),
    format,
    order: $("wl-order").value,
  };
  if ($("wl-specialty").value) body.specialty = $("wl-specialty").value;
  if ($("wl-organization").value) body.organization_id = $("wl-organization").value;
  return body;
}

async function loadWorklist(event) {
  event.preventDefault();
  $("wl-error").textContent = "";
  setStatus("Scoring the appointments…");
  try {
    const cat = await catalog();
    const answer = await api("POST", "/outreach/worklist", worklistRequest("json"));
    state.worklist = answer.rows;
    state.selected = answer.rows.length ? 0 : -1;
    renderWorklist(cat);
    const tiers = { high: 0, medium: 0, low: 0 };
    for (const row of answer.rows) tiers[row.tier] += 1;
    const models = answer.uplift_model_version === null
      ? `no-show model v${answer.model_version}; no outreach-uplift model loaded, so no benefit is shown`
      : `no-show model v${answer.model_version}, outreach-uplift model v${answer.uplift_model_version}`;
    $("wl-summary").textContent = answer.rows.length
      ? `${answer.rows.length} appointments (high ${tiers.high}, medium ${tiers.medium}, low ${tiers.low}), ${ORDER_WORDS[answer.order] || answer.order}; ${models}.`
      : "No upcoming appointments in this window.";
    setStatus("");
    if (answer.rows.length) selectRow(0);
  } catch (err) {
    $("wl-error").textContent = err.message;
    setStatus("");
  }
}

function contactsText(row) {
  if (!row.contact_attempts) return "none yet";
  const last = OUTCOME_WORDS[row.last_contact_outcome] || row.last_contact_outcome;
  return `${row.contact_attempts}: last ${last}`;
}

function renderWorklist(cat) {
  const body = $("wl-table").querySelector("tbody");
  body.replaceChildren();
  state.worklist.forEach((row, i) => {
    const factors = row.top_factors.map((f) => cat.factor_labels[f] || f.replaceAll("_", " "));
    const specialty = cat.specialties.find((s) => s.code === row.specialty);
    const buttons = Object.entries(SHORTCUTS).map(([key, outcome]) =>
      h("button", { type: "button", class: "small secondary", "data-outcome": outcome, title: `${OUTCOME_WORDS[outcome]} (${key})`,
        onclick: () => { selectRow(i); markContact(i, outcome); } }, OUTCOME_WORDS[outcome]));
    const tr = h("tr", { tabindex: "-1", "data-id": row.appointment_id, class: rowClass(row, i), onclick: () => selectRow(i) },
      h("td", {}, row.appointment_id),
      h("td", { class: "when" }, when(row.appointment_at)),
      h("td", {}, row.specialist_name || row.specialist_id || "—", specialty ? h("div", { class: "help" }, specialty.name) : null),
      h("td", { class: "num risk" }, pct(row.risk), h("span", { class: `bar w${Math.round(row.risk * 10)}`, "aria-hidden": "true" })),
      h("td", { class: "num benefit" }, points(row.expected_benefit)),
      h("td", {}, h("span", { class: `chip ${row.tier}` }, row.tier)),
      h("td", { class: "factors" }, factors.join("; ")),
      h("td", {}, row.recommended_action),
      h("td", { class: "contacts" }, contactsText(row)),
      h("td", {}, h("div", { class: "actions" }, buttons)));
    body.append(tr);
  });
  $("wl-table").hidden = state.worklist.length === 0;
}

function rowClass(row, i) {
  const names = [];
  if (i === state.selected) names.push("selected");
  if (DONE_OUTCOMES.has(row.last_contact_outcome)) names.push("done");
  return names.join(" ");
}

function selectRow(i) {
  const rows = $("wl-table").querySelectorAll("tbody tr");
  if (!rows.length) return;
  state.selected = Math.max(0, Math.min(rows.length - 1, i));
  rows.forEach((tr, j) => { tr.className = rowClass(state.worklist[j], j); });
  rows[state.selected].focus({ preventScroll: false });
}

async function markContact(i, outcome) {
  const row = state.worklist[i];
  if (!row) return;
  const channel = $("wl-channel").value;
  $("wl-error").textContent = "";
  try {
    await api("POST", "/outreach/contact", { appointment_id: row.appointment_id, channel, outcome });
    row.contact_attempts += 1;
    row.last_contact_outcome = outcome;
    const tr = $("wl-table").querySelectorAll("tbody tr")[i];
    tr.querySelector(".contacts").textContent = contactsText(row);
    tr.className = rowClass(row, i);
    setStatus(`Recorded for ${row.appointment_id}: ${OUTCOME_WORDS[outcome]} (${channel}).`);
    if (DONE_OUTCOMES.has(outcome) && i + 1 < state.worklist.length) selectRow(i + 1);
  } catch (err) {
    $("wl-error").textContent = `${row.appointment_id}: ${err.message}`;
  }
}

async function exportCsv() {
  $("wl-error").textContent = "";
  const form = $("worklist-form");
  if (!form.reportValidity()) return;
  try {
    const body = worklistRequest("csv");
    const csv = await api("POST", "/outreach/worklist", body, { text: true });
    const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
    const link = h("a", { href: url, download: `worklist_${body.start}_${body.end}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setStatus(`Exported ${Math.max(0, csv.trim().split("\n").length - 1)} rows as CSV.`);
  } catch (err) {
    $("wl-error").textContent = err.message;
  }
}

function onKey(event) {
  if ($("page-worklist").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const tag = (event.target.tagName || "").toLowerCase();
  if (["input", "select", "textarea"].includes(tag)) return;
  if (!state.worklist.length) return;
  const key = event.key;
  if (key === "j" || key === "ArrowDown") { selectRow(state.selected + 1); event.preventDefault(); }
  else if (key === "k" || key === "ArrowUp") { selectRow(state.selected - 1); event.preventDefault(); }
  else if (SHORTCUTS[key] && state.selected >= 0) { markContact(state.selected, SHORTCUTS[key]); event.preventDefault(); }
}

// ---------------------------------------------------------------------------------- referral

function referralRequest() {
  const patient = {
    age: Number($("rf-age").value),
    sex: $("rf-sex").value,
    language: $("rf-language").value,
    latitude: Number($("rf-lat").value),
    longitude: Number($("rf-lon").value),
    insurance_plan_id: $("rf-plan").value,
  };
  if ($("rf-patient").value.trim()) patient.patient_id = $("rf-patient").value.trim();
  const preferences = { allow_out_of_network: $("rf-oon").checked };
  if ($("rf-distance").value) preferences.max_distance_km = Number($("rf-distance").value);
  if ($("rf-pref-language").value) preferences.language = $("rf-pref-language").value;
  if ($("rf-pref-sex").value) preferences.sex = $("rf-pref-sex").value;
  return {
    referral: {
      patient,
      specialty: $("rf-specialty").value,
      reason_code: $("rf-reason").value,
      urgency: $("rf-urgency").value,
      preferences,
    },
    k: Number($("rf-k").value),
  };
}

async function recommend(event) {
  event.preventDefault();
  $("rf-error").textContent = "";
  setStatus("Ranking specialists…");
  const request = referralRequest();
  try {
    const answer = await api("POST", "/recommend", request);
    renderRecommendations(request, answer);
    setStatus("");
  } catch (err) {
    $("rf-results").hidden = true;
    $("rf-error").textContent = err.message;
    setStatus("");
  }
}

function renderRecommendations(request, answer) {
  $("rf-results").hidden = false;
  const n = answer.specialists.length;
  $("rf-summary").textContent = n
    ? `${n} of ${answer.candidates_considered} candidates within ${answer.radius_km} km, best first (ranker v${answer.model_version}).`
    : `No specialist found: ${answer.empty_reason}.`;
  $("rf-warnings").replaceChildren(...answer.warnings.map((w) => h("li", {}, w)));
  $("rf-list").replaceChildren(...answer.specialists.map((s) => h("li", { "data-specialist": s.specialist_id },
    h("div", {}, h("span", { class: "rank" }, s.rank), h("strong", {}, s.name), ` — ${s.specialty.name}`),
    h("div", { class: "facts" },
      h("span", {}, `${s.distance_km} km`),
      h("span", {}, s.next_available ? `next opening ${when(s.next_available)}` : "no opening known"),
      networkChip(s),
      h("span", {}, `score ${s.score.toFixed(3)}`)),
    h("ul", { class: "reasons" }, s.reasons.map((r) => h("li", {}, r))))));
  drawMap(request.referral.patient, answer);
}

function networkChip(s) {
  if (s.out_of_network) return h("span", { class: "chip warn" }, "out of network");
  if (s.in_network) return h("span", { class: "chip ok" }, "in network");
  if (s.accepts_plan) return h("span", { class: "chip ok" }, "accepts the plan");
  return h("span", { class: "chip warn" }, "network unknown");
}

function niceKm(x) {
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200];
  return steps.reduce((best, s) => (s <= x ? s : best), steps[0]);
}

// An equirectangular projection around the patient, in km, drawn as SVG: no tile server.
function drawMap(patient, answer) {
  const svg = $("rf-map");
  const W = 480, H = 420, pad = 28;
  const kmPerLat = 110.574;
  const kmPerLon = 111.32 * Math.cos((patient.latitude * Math.PI) / 180);
  const placed = answer.specialists.filter((s) => s.latitude !== null && s.longitude !== null).map((s) => ({
    s, x: (s.longitude - patient.longitude) * kmPerLon, y: (s.latitude - patient.latitude) * kmPerLat,
  }));
  const far = Math.max(1, ...placed.map((p) => Math.max(Math.abs(p.x), Math.abs(p.y))));
  const extent = far * 1.15;
  const radiusFits = answer.radius_km <= extent * 1.6;
  const half = radiusFits ? Math.max(extent, answer.radius_km * 1.05) : extent;
  const scale = (Math.min(W, H) / 2 - pad) / half;
  const cx = W / 2, cy = H / 2;
  const px = (x) => cx + x * scale, py = (y) => cy - y * scale;
  const title = h("title", { id: "rf-map-title" }, "Patient and recommended specialists");
  const children = [title];
  for (let g = -2; g <= 2; g += 1) {
    children.push(h("line", { class: "grid-line", x1: 0, x2: W, y1: cy + (g * H) / 5, y2: cy + (g * H) / 5 }));
    children.push(h("line", { class: "grid-line", y1: 0, y2: H, x1: cx + (g * W) / 5, x2: cx + (g * W) / 5 }));
  }
  if (radiusFits) children.push(h("circle", { class: "radius", cx, cy, r: answer.radius_km * scale }));
  else children.push(h("text", { class: "map-note", x: 8, y: 16 }, `search radius ${answer.radius_km} km (beyond the frame)`));
  for (const p of [...placed].reverse()) {
    children.push(h("g", { class: "spec-marker", "data-rank": p.s.rank },
      h("title", {}, `${p.s.rank}. ${p.s.name}, ${p.s.distance_km} km`),
      h("circle", { class: "spec", cx: px(p.x), cy: py(p.y), r: 9 }),
      h("text", { class: "spec-label", x: px(p.x), y: py(p.y) }, p.s.rank)));
  }
  children.push(h("g", { class: "patient-marker" }, h("title", {}, "the patient"),
    h("circle", { class: "patient", cx, cy, r: 7 })));
  const bar = niceKm(half / 2);
  const x0 = 16, y0 = H - 16;
  children.push(h("line", { class: "scale", x1: x0, x2: x0 + bar * scale, y1: y0, y2: y0 }));
  children.push(h("text", { class: "scale-text", x: x0, y: y0 - 6 }, `${bar} km`));
  children.push(h("text", { class: "scale-text", x: W - 16, y: 16, "text-anchor": "end" }, "N ↑"));
  svg.replaceChildren(...children);
}

// ---------------------------------------------------------------------------------- models

async function showModels() {
  if (state.modelsShown) return;
  $("models-error").textContent = "";
  setStatus("Reading the models…");
  try {
    const info = await api("GET", "/model_info");
    const container = $("models");
    container.replaceChildren(...info.models.map(modelCard));
    state.modelsShown = true;
    setStatus("");
    await Promise.all([showMonitoring(), ...info.models.map(loadPlots)]);
  } catch (err) {
    $("models-error").textContent = err.message;
    setStatus("");
  }
}

// Live monitoring (GET /monitoring, admin): weekly AUC and calibration gap, flags, worst drift.
const fixed = (v, d = 3) => (v === null || v === undefined ? "—" : v.toFixed(d));

async function showMonitoring() {
  const box = $("monitoring");
  box.replaceChildren(h("h3", {}, "Live monitoring"), h("p", { class: "help" }, "Reading the prediction log…"));
  try {
    const m = await api("GET", "/monitoring");
    box.replaceChildren(...monitoringView(m));
  } catch (err) {
    box.replaceChildren(h("h3", {}, "Live monitoring"), h("p", { class: "error" }, err.message));
  }
}

function monitoringView(m) {
  const out = [h("h3", {}, `Live monitoring, ${m.start} to ${m.end}`)];
  const raised = m.flags.filter((f) => f.raised);
  out.push(h("p", { class: raised.length ? "error" : "help" }, raised.length
    ? `Flags: ${raised.map((f) => `${f.name.replaceAll("_", " ")} (${fixed(f.value)} > ${fixed(f.threshold)})`).join("; ")}.`
    : m.flags.length ? "No flag raised." : "Nothing to compare yet."));
  for (const note of m.notes) out.push(h("p", { class: "help" }, note));
  const ns = m.no_show;
  if (ns) {
    out.push(h("p", {}, `No-show model: ${ns.with_outcome} of ${ns.scored} scored visits have an outcome; AUC ${fixed(ns.overall.auc)} (training ${fixed(ns.training_auc)}), calibration gap ${fixed(ns.overall.calibration_gap)}, ECE ${fixed(ns.overall.ece)}.`));
    out.push(h("div", { class: "table-wrap" }, h("table", { class: "grid monitoring" },
      h("thead", {}, h("tr", {}, ["ISO week", "visits with outcome", "no-show rate", "mean risk", "calibration gap", "AUC", "top-20% recall"]
        .map((c, i) => h("th", { scope: "col", class: i ? "num" : "" }, c)))),
      h("tbody", {}, ns.weeks.map((w) => h("tr", {}, h("th", { scope: "row" }, w.group),
        h("td", { class: "num" }, String(w.rows)), h("td", { class: "num" }, fixed(w.observed_rate)),
        h("td", { class: "num" }, fixed(w.mean_predicted)), h("td", { class: "num" }, fixed(w.calibration_gap)),
        h("td", { class: "num" }, fixed(w.auc)), h("td", { class: "num" }, fixed(w.top20_recall))))))));
  }
  if (m.ranker) {
    out.push(h("p", {}, `Ranker: ${m.ranker.referrals} referrals; completion when the chosen specialist was ` +
      m.ranker.groups.map((g) => `${g.group.replaceAll("_", " ")}: ${fixed(g.completion_rate, 2)} (${g.referrals})`).join(", ") + "."));
  }
  if (m.drift) {
    const worst = m.drift.features.slice(0, 5).map((f) => `${f.feature} ${fixed(f.psi)} (${f.status})`).join(", ");
    out.push(h("p", {}, `Input drift (PSI over ${m.drift.rows} visits, ${m.drift.status}): ${worst || "—"}.`));
    if (m.drift.note) out.push(h("p", { class: "help" }, m.drift.note));
  }
  return out;
}

function metricsTable(metrics) {
  const columns = Object.keys(metrics);
  if (!columns.length) return h("p", { class: "help" }, "No metrics were exported with this model (export it with `referral-ml export`).");
  const names = [...new Set(columns.flatMap((c) => Object.keys(metrics[c])))];
  return h("div", { class: "table-wrap" }, h("table", { class: "grid metrics" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "metric"), columns.map((c) => h("th", { scope: "col", class: "num" }, c.replaceAll("_", " "))))),
    h("tbody", {}, names.map((n) => h("tr", {}, h("th", { scope: "row" }, n),
      columns.map((c) => h("td", { class: "num" }, metrics[c][n] === undefined || metrics[c][n] === null ? "—" : metrics[c][n].toFixed(4))))))));
}

function plotOrder(name) {
  const first = ["calibration", "subgroup_calibration"];
  const i = first.indexOf(name);
  return i === -1 ? first.length : i;
}

function modelCard(m) {
  const plots = [...m.plots].sort((a, b) => plotOrder(a) - plotOrder(b) || a.localeCompare(b));
  return h("article", { class: "card model", "data-model": m.name },
    h("h3", {}, `${m.name} — version ${m.version}`),
    h("dl", {},
      h("dt", {}, "MLflow run"), h("dd", {}, m.run_id || "not recorded"),
      h("dt", {}, "trained"), h("dd", {}, m.trained_at || "not recorded"),
      h("dt", {}, "inputs"), h("dd", {}, `${m.features.length} features`)),
    h("h4", {}, "Test-window metrics"),
    metricsTable(m.metrics),
    h("h4", {}, "Plots"),
    plots.length ? h("div", { class: "plots" }, plots.map((p) => h("figure", { "data-plot": p },
      h("img", { alt: `${m.name}: ${p.replaceAll("_", " ")}` }), h("figcaption", {}, p.replaceAll("_", " ")))))
      : h("p", { class: "help" }, "No plots were exported with this model."),
    h("details", { open: true }, h("summary", {}, "Model card"),
      m.card_markdown ? markdown(m.card_markdown) : h("p", { class: "help" }, "No model card was exported with this model.")));
}

async function loadPlots(m) {
  const article = document.querySelector(`article[data-model="${m.name}"]`);
  for (const name of m.plots) {
    const plot = await api("GET", `/model_info/${encodeURIComponent(m.name)}/plots/${encodeURIComponent(name)}`);
    const img = article.querySelector(`figure[data-plot="${name}"] img`);
    img.src = `data:${plot.media_type};base64,${plot.data_base64}`;
  }
}

// A small Markdown reader for the model cards: headings, tables, lists, code, bold, italics.
function inline(text) {
  const out = [];
  const pattern = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*]+\*)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const token = match[0];
    if (token.startsWith("`")) out.push(h("code", {}, token.slice(1, -1)));
    else if (token.startsWith("**")) out.push(h("strong", {}, token.slice(2, -2)));
    else out.push(h("em", {}, token.slice(1, -1)));
    last = match.index + token.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split(/(?<!\\)\|/).map((c) => c.trim().replaceAll("\\|", "|"));
}

function markdown(source) {
  const root = h("div", { class: "card-md" });
  const lines = source.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) { root.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2]))); i += 1; continue; }
    if (line.startsWith("```")) {
      const code = [];
      i += 1;
      while (i < lines.length && !lines[i].startsWith("```")) { code.push(lines[i]); i += 1; }
      root.append(h("pre", {}, h("code", {}, code.join("\n"))));
      i += 1;
      continue;
    }
    if (line.trim().startsWith("|") && i + 1 < lines.length && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1])) {
      const head = cells(line);
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].trim().startsWith("|")) { rows.push(cells(lines[i])); i += 1; }
      root.append(h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, inline(c))))),
        h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, inline(c))))))));
      continue;
    }
    if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const list = h(ordered ? "ol" : "ul", {});
      while (i < lines.length && /^\s*([-*]|\d+\.)\s+/.test(lines[i])) {
        list.append(h("li", {}, inline(lines[i].replace(/^\s*([-*]|\d+\.)\s+/, ""))));
        i += 1;
      }
      root.append(list);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^(#|\||```|\s*[-*]\s|\s*\d+\.\s)/.test(lines[i])) { para.push(lines[i].trim()); i += 1; }
    if (!para.length) { para.push(line.trim()); i += 1; }
    root.append(h("p", {}, inline(para.join(" "))));
  }
  return root;
}

// ---------------------------------------------------------------------------------- start

function start() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("api-key").value.trim());
      $("api-key").value = "";
      setStatus(`Signed in as ${state.me.role}.`);
      await route();
    } catch (err) {
      $("signin-error").textContent = err.status === 401 ? "That key is not valid (or was revoked)." : err.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("worklist-form").addEventListener("submit", loadWorklist);
  $("wl-csv").addEventListener("click", exportCsv);
  $("referral-form").addEventListener("submit", recommend);
  $("rf-specialty").addEventListener("change", fillReasons);
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", route);
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    signIn(saved).then(route, () => { sessionStorage.removeItem(KEY_STORAGE); route(); });
  } else {
    route();
  }
}

document.addEventListener("DOMContentLoaded", start);
