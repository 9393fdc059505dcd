// ClusterTwin live view: network, cluster overview and site drill-down, updated from the
// worker's server-sent events (/view/api/events). No framework: the page is small, and every
// figure element carries data-figure / data-value so a test can read the exact number shown.
"use strict";

const API = "/view/api";
const SITES_PER_PAGE = 25;
const state = { route: null, source: null, cluster: null, site: null, page: 0, sitePage: 0,
                charts: {}, seriesKey: null, seriesAt: 0, lastEvent: 0 };

// -- small DOM helpers (text only: nothing from the server is parsed as HTML) ---------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const fmt = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
  : Number(v).toLocaleString("en-GB", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const sig = (v) => (v === null || v === undefined) ? "–"
  : Number(v).toLocaleString("en-GB", { maximumSignificantDigits: 6 });
const SCOPE_LABELS = { tco2e_s1: "Scope 1", tco2e_s2_location: "Scope 2 (location-based)",
  tco2e_s2_market: "Scope 2 (market-based)", tco2e_s3_upstream: "Scope 3 (upstream of fuels and power)" };
const words = (id) => String(id).replaceAll("_", " ");
// tonnes: one decimal from 10 t, three significant digits below (CH4 and N2O are small)
const tonnes = (v) => (v === null || v === undefined) ? "–" : v === 0 ? "0"
  : Math.abs(v) >= 10 ? fmt(v, 1) : Number(v).toLocaleString("en-GB", { maximumSignificantDigits: 3 });
const GASES = [["co2_t", "CO2 (fossil)", "t CO2"], ["ch4_t", "CH4", "t CH4"], ["n2o_t", "N2O", "t N2O"],
  ["co2e_other_t", "Other gases (given as CO2e)", "t CO2e"]];
// data qualities: the JSON's own keys (the contract's vocabulary), never a list of our own
const label = (id) => words(id).replace(/^./, (c) => c.toUpperCase());
const pct = (v) => (v === null || v === undefined) ? "–" : `${fmt(v, 1)} %`;
const share = (v) => (v === null || v === undefined) ? "–" : pct(100 * v);
const when = (ms) => (ms === null || ms === undefined || ms < 0) ? "–"
  : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
const age = (s) => s === null || s === undefined ? "–"
  : s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${fmt(s / 3600, 1)} h`;

function figure(name, label, value, text, sub, explain) {
  return el("div", { class: "card figure", "data-figure": name, "data-value": value ?? "" },
    el("div", { class: "label" }, label,
      explain ? el("button", { class: "why", type: "button", "data-explain": explain.figure,
                               onclick: () => showExplain(explain) }, "why?") : null),
    el("div", { class: "value" }, text),
    sub ? el("div", { class: "sub" }, sub) : null);
}

async function getJSON(path) {
  const r = await fetch(API + path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// -- routing -----------------------------------------------------------------------------------
function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "c" && parts[1] && parts[2] === "s" && parts[3]) return { view: "site", cluster: parts[1], site: parts[3] };
  if (parts[0] === "c" && parts[1]) return { view: "cluster", cluster: parts[1] };
  return { view: "network" };
}

function crumbs(route) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(el("a", { href: "#/" }, "Network"));
  if (route.cluster) nav.append("› ", el("a", { href: `#/c/${encodeURIComponent(route.cluster)}` }, route.cluster));
  if (route.site) nav.append("› ", el("span", {}, route.site));
}

function setLive(s, text) {
  const live = document.getElementById("live");
  live.dataset.state = s;
  live.textContent = text;
}

function listen(cluster, site, page) {
  if (state.source) state.source.close();
  const q = new URLSearchParams({ cluster });
  if (site) { q.set("site", site); q.set("page", String(page)); }
  const source = new EventSource(`${API}/events?${q}`);
  state.source = source;
  source.addEventListener("open", () => setLive("live", "live"));
  source.addEventListener("error", () => setLive("lost", "reconnecting"));
  source.addEventListener("cluster", (e) => { state.lastEvent = Date.now(); onCluster(JSON.parse(e.data)); });
  source.addEventListener("site", (e) => { state.lastEvent = Date.now(); onSite(JSON.parse(e.data)); });
}

async function route() {
  const r = parseRoute();
  state.route = r; state.cluster = r.cluster || null; state.site = r.site || null;
  state.page = 0; state.sitePage = 0; state.seriesKey = null; state.charts = {};
  if (state.poll) { clearInterval(state.poll); state.poll = null; }
  crumbs(r);
  document.getElementById("explain").hidden = true;
  const main = document.getElementById("main");
  main.replaceChildren(el("p", { class: "empty" }, "loading…"));
  try {
    if (r.view === "network") {
      if (state.source) { state.source.close(); state.source = null; }
      await showNetwork();
      state.poll = setInterval(() => showNetwork().catch(() => setLive("lost", "reconnecting")), 3000);
    } else {
      main.replaceChildren(...skeleton(r));
      listen(r.cluster, r.site, 0);
    }
  } catch (err) {
    main.replaceChildren(el("p", { class: "bad", role: "alert" }, String(err.message || err)));
  }
}

// -- network -----------------------------------------------------------------------------------
async function showNetwork() {
  const data = await getJSON("/network");
  state.lastEvent = Date.now();
  setLive("live", "live");
  if (parseRoute().view !== "network") return;
  const rows = data.clusters.map((c) => el("tr", { "data-cluster": c.cluster },
    el("td", {}, el("a", { href: `#/c/${encodeURIComponent(c.cluster)}` }, c.cluster)),
    el("td", { class: "num", "data-field": "ytd_tco2e", "data-value": c.ytd_tco2e ?? "" }, fmt(c.ytd_tco2e)),
    el("td", { class: "num", "data-field": "budget_to_date_tco2e", "data-value": c.budget_to_date_tco2e ?? "" }, fmt(c.budget_to_date_tco2e)),
    c.comparable === false
      ? el("td", { class: "num warn", title: `readings only since ${when(c.data_since_ms)}` }, "partial year")
      : el("td", { class: "num " + (c.on_track === false ? "bad" : c.on_track ? "good" : "") }, pct(c.ytd_vs_budget_pct)),
    el("td", { class: "num" }, fmt(c.projected_gap_tco2e)),
    el("td", { class: "num", "data-field": "now_tco2e_per_h", "data-value": c.now_tco2e_per_h ?? "" }, fmt(c.now_tco2e_per_h, 2)),
    el("td", { class: "num" }, fmt(c.pathway_tco2e_per_h, 2)),
    el("td", { class: "num" }, pct(c.current_pct)),
    el("td", { class: "num" }, c.sites),
    el("td", { class: "num" }, c.open_alerts)));
  document.getElementById("main").replaceChildren(
    el("h1", {}, `The network (twin “${data.twin}”)`),
    el("p", { class: "sub" }, "Year to date and budget in the scopes each cluster's target counts; last hour in scope 1 + 2 (location-based)."),
    el("div", { class: "card" }, el("table", { id: "network" },
      el("thead", {}, el("tr", {}, ["Cluster", "Year to date (t)", "Budget to date (t)", "vs budget",
        "Projected gap (t)", "Last hour (t/h)", "Pathway (t/h)", "Meters current", "Sites", "Open alerts"]
        .map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
      el("tbody", {}, rows))));
}

// -- cluster and site --------------------------------------------------------------------------
function skeleton(r) {
  const parts = [el("h1", { id: "title" }, r.site ? `${r.site} (${r.cluster})` : r.cluster),
    el("div", { class: "cards", id: "figures" }, el("p", { class: "empty" }, "waiting for the first update…")),
    el("div", { class: "card" }, el("h2", {}, r.site ? "Hourly emissions of the site (t/h)" : "Hourly emissions against the pathway (t/h)"),
      el("div", { class: "chart", id: "chart" })),
    el("div", { class: "cards" },
      el("div", { class: "card" }, el("h2", {}, "Scope 1 by gas (year to date)"), el("div", { id: "gases" })),
      el("div", { class: "card" }, el("h2", {}, "Data quality of the year to date"), el("div", { id: "quality" })))];
  if (r.site) {
    parts.push(el("div", { class: "card" }, el("h2", {}, "Meters"), el("div", { id: "meters" })));
  } else {
    parts.push(el("div", { class: "card" }, el("h2", {}, "Open alerts"), el("div", { id: "alerts" })));
    parts.push(el("div", { class: "card" }, el("h2", {}, "By site (year to date)"), el("div", { id: "sites" })));
    parts.push(el("div", { class: "card" }, el("h2", {}, "By site: scope 1 by gas and data quality (year to date)"),
      el("div", { id: "site-gases" })));
    parts.push(el("div", { class: "cards" },
      el("div", { class: "card" }, el("h2", {}, "By carrier (year to date)"), el("div", { id: "carriers" })),
      el("div", { class: "card" }, el("h2", {}, "By scope (year to date)"), el("div", { id: "scopes" }))));
  }
  return parts;
}

function onCluster(c) {
  if (c.cluster !== state.cluster) return;
  refreshSeries(c);
  if (state.site) return;
  const ytd = c.ytd, now = c.now, comp = c.completeness;
  const track = ytd.on_track === undefined ? "" : ytd.on_track ? "on track" : "over budget";
  const partial = ytd.comparable === false && ytd.budget_to_date_tco2e !== undefined;
  const since = ytd.data_since_ms ? `readings only since ${when(ytd.data_since_ms).slice(0, 10)}` : "no stored hour yet";
  const ytdSub = ytd.budget_to_date_tco2e === undefined ? "no target plan"
    : partial ? `${since} (${pct(ytd.year_covered_pct)} of the year so far): not comparable with the budget of ${fmt(ytd.budget_to_date_tco2e)} t from 1 January`
    : `budget ${fmt(ytd.budget_to_date_tco2e)} t · ${pct(ytd.ytd_vs_budget_pct)} · ${track}`;
  const explainC = (f) => ({ cluster: c.cluster, site: null, figure: f });
  document.getElementById("figures").replaceChildren(
    figure("now_tco2e_per_h", "Last complete hour (scope 1 + 2 location)", now.tco2e_per_h, `${fmt(now.tco2e_per_h, 2)} t/h`,
      now.pathway_tco2e_per_h ? `pathway ${fmt(now.pathway_tco2e_per_h, 2)} t/h (${pct(now.vs_pathway_pct)})` : when(now.hour_start), explainC("now")),
    figure("ytd_tco2e", `Year to date ${ytd.year ?? ""} (scope ${ytd.scopes ?? "1"})`, ytd.ytd_tco2e, `${fmt(ytd.ytd_tco2e)} t`,
      ytdSub, explainC("ytd")),
    figure("projected_year_end_tco2e", "Projected year end (at the year-to-date pace)", ytd.projected_year_end_tco2e, `${fmt(ytd.projected_year_end_tco2e)} t`,
      (ytd.pathway_tco2e_year !== undefined ? `pathway ${fmt(ytd.pathway_tco2e_year)} t` : "") + (partial ? " · partial year: not comparable" : "")),
    figure("projected_gap_tco2e", "Projected gap to pathway", ytd.projected_gap_tco2e, `${fmt(ytd.projected_gap_tco2e)} t`,
      partial ? "partial year: not comparable" : ytd.projected_gap_tco2e > 0 ? "overshoot" : ytd.projected_gap_tco2e !== undefined ? "within pathway" : ""),
    figure("current_pct", "Data completeness", comp.current_pct, pct(comp.current_pct),
      `${comp.current} of ${comp.meters} meters current (≤ ${comp.current_within_s / 60} min) · ` +
      Object.entries(comp.quality).map(([q, n]) => `${words(q)} ${n}`).join(" · ")),
    figure("clock_ms", "Cluster clock (event time)", c.clock_ms, when(c.clock_ms),
      `${c.alerts.length} open alert(s)`));
  renderGases(ytd.figures || {});
  renderQuality(c.ytd_quality, "the cluster's: its sites' tonnes summed, then shared");
  renderAlerts(c.alerts);
  renderSites(c);
  document.getElementById("carriers").replaceChildren(table(["Carrier", "t CO2e (scope 1 + 2 location)", "MWh"],
    c.by_carrier.map((r) => [words(r.carrier), [r.ytd_tco2e, 1], [r.energy_mwh, 1]]), "carriers"),
    el("p", { class: "sub" }, "A carrier with energy and no tonnes here is a transfer inside the cluster (counted where it is burnt) or has a zero factor."));
  document.getElementById("scopes").replaceChildren(table(["Scope", "t CO2e"],
    Object.entries(c.by_scope).map(([k, v]) => [SCOPE_LABELS[k] || k, [v, 1]]), "scopes"));
}

function table(headers, rows, id) {
  return el("table", { id: `table-${id}` },
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v, i) => Array.isArray(v)
      ? el("td", { class: "num", "data-value": v[0] ?? "" }, fmt(v[0], v[1]))
      : el("td", { class: i ? "num" : "" }, v))))));
}

// A figure cell whose exact number a test can read (data-field, data-value).
const num = (field, v, text, cls) => el("td", { class: "num" + (cls ? ` ${cls}` : ""), "data-field": field, "data-value": v ?? "" }, text);

function renderGases(f) {
  const row = (field, label, unit, cls) => el("tr", { class: cls || null }, el("td", {}, label),
    num(field, f[field], tonnes(f[field])), el("td", {}, unit));
  document.getElementById("gases").replaceChildren(
    el("table", { id: "table-gases" },
      el("thead", {}, el("tr", {}, el("th", {}, "Gas"), el("th", { class: "num" }, "Quantity"), el("th", {}, "Unit"))),
      el("tbody", {}, GASES.map(([k, label, unit]) => row(k, label, unit)),
        row("tco2e_s1_gross", "Scope 1 gross (all gases)", "t CO2e", "total"),
        row("co2_captured_t", "CO2 captured (sent to storage), a separate line", "t CO2", "apart"),
        row("tco2e_s1", "Scope 1 net of the captured CO2", "t CO2e")),
      el("tbody", { class: "memo" },
        el("tr", {}, el("td", { colspan: 3, class: "memo-head" }, "Memo item, outside the scopes: in no total above")),
        row("co2_biogenic_t", "Biogenic CO2 (biomass)", "t CO2"))));
}

function renderQuality(q, how) {
  document.getElementById("quality").replaceChildren(
    el("table", { id: "table-quality" },
      el("thead", {}, el("tr", {}, ["Readings", "t CO2e", "Share"].map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
      el("tbody", {}, Object.entries(q).map(([k, v]) => el("tr", { "data-quality": k },
        el("td", { class: `quality-${k}` }, label(k)),
        num("tco2e", v.tco2e, fmt(v.tco2e)), num("share", v.share, share(v.share)))))),
    el("p", { class: "sub" }, `Shares of the year to date's t CO2e (scope 1 + 2 location) by the quality of the readings; ${how}. A transfer between sites counts where it is metered, without its tonnes.`));
}

function renderAlerts(alerts) {
  const box = document.getElementById("alerts");
  if (!alerts.length) { box.replaceChildren(el("p", { class: "empty" }, "no open alert")); return; }
  box.replaceChildren(el("table", { id: "table-alerts" },
    el("thead", {}, el("tr", {}, ["Severity", "Kind", "Where", "Value", "Threshold", "Opened", "Last update"].map((h) => el("th", {}, h)))),
    el("tbody", {}, alerts.map((a) => el("tr", { "data-alert": a.alert_id },
      el("td", { class: a.severity === "critical" ? "bad" : "warn" }, a.severity), el("td", {}, words(a.kind)),
      el("td", {}, [a.site, a.meter].filter(Boolean).join(" / ") || "cluster"),
      el("td", { class: "num" }, fmt(a.value, 2)), el("td", { class: "num" }, fmt(a.threshold, 2)),
      el("td", {}, when(a.since_ms)), el("td", {}, when(a.updated_ms)))))));
}

function renderSites(c) {
  const rows = c.by_site;
  const pages = Math.max(1, Math.ceil(rows.length / SITES_PER_PAGE));
  state.sitePage = Math.min(state.sitePage, pages - 1);
  const shown = rows.slice(state.sitePage * SITES_PER_PAGE, (state.sitePage + 1) * SITES_PER_PAGE);
  const body = shown.map((s) => el("tr", { "data-site": s.site },
    el("td", {}, el("a", { href: `#/c/${encodeURIComponent(c.cluster)}/s/${encodeURIComponent(s.site)}` }, s.site)),
    el("td", { class: "num", "data-field": "ytd_tco2e", "data-value": s.ytd_tco2e }, fmt(s.ytd_tco2e)),
    el("td", { class: "num", "data-field": "now_tco2e_per_h", "data-value": s.now_tco2e_per_h ?? "" }, fmt(s.now_tco2e_per_h, 2)),
    el("td", { class: "num" }, `${s.reporting} / ${s.meters}`),
    el("td", { class: "num" }, age(s.behind_s)),
    el("td", { class: "num" }, s.late), el("td", { class: "num" }, s.duplicates),
    el("td", {}, el("button", { class: "why", type: "button", onclick: () => showExplain({ cluster: c.cluster, site: s.site, figure: "ytd" }) }, "why?"))));
  document.getElementById("sites").replaceChildren(
    el("table", { id: "table-sites" },
      el("thead", {}, el("tr", {}, ["Site", "Year to date (t, scope 1 + 2 location)", "Last hour (t/h)", "Meters reporting", "Behind cluster clock", "Late", "Repeats", ""]
        .map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
      el("tbody", {}, body)),
    pager(state.sitePage, pages, rows.length, (p) => { state.sitePage = p; renderSites(c); }));
  const gasRows = shown.map((s) => el("tr", { "data-site": s.site }, el("td", {}, s.site),
    GASES.map(([k]) => num(k, s.ytd_by_gas[k], tonnes(s.ytd_by_gas[k]))),
    num("tco2e_s1_gross", s.ytd_by_gas.tco2e_s1_gross, tonnes(s.ytd_by_gas.tco2e_s1_gross), "total"),
    num("co2_captured_t", s.ytd_by_gas.co2_captured_t, tonnes(s.ytd_by_gas.co2_captured_t)),
    Object.entries(s.ytd_quality).map(([k, v]) => num(`${k}_share`, v.share, share(v.share))),
    num("co2_biogenic_t", s.ytd_by_gas.co2_biogenic_t, tonnes(s.ytd_by_gas.co2_biogenic_t), "memo")));
  document.getElementById("site-gases").replaceChildren(
    el("table", { id: "table-site-gases" },
      el("thead", {}, el("tr", {}, ["Site", "CO2 (t)", "CH4 (t)", "N2O (t)", "Other (t CO2e)", "Scope 1 gross (t CO2e)",
        "CO2 captured (t)", ...Object.keys(c.ytd_quality).map(label)].map((h, i) => el("th", { class: i ? "num" : "" }, h)),
        el("th", { class: "num memo" }, "Memo: biogenic CO2 (t)"))),
      el("tbody", {}, gasRows)),
    el("p", { class: "sub" }, "Gases in t of each gas (other gases as t CO2e); gross scope 1 before the CO2 captured is taken out. Shares: of each site's t CO2e by the quality of its readings. Biogenic CO2 is a memo item, in no scope. Same page as the table above."));
}

function pager(page, pages, total, go) {
  return el("div", { class: "pager" },
    el("button", { type: "button", disabled: page <= 0, onclick: () => go(page - 1) }, "‹ previous"),
    el("span", { "data-pager": "" }, `page ${page + 1} of ${pages} (${total})`),
    el("button", { type: "button", disabled: page >= pages - 1, onclick: () => go(page + 1) }, "next ›"));
}

function onSite(s) {
  if (s.site !== state.site) return;
  const f = s.ytd.figures;
  document.getElementById("figures").replaceChildren(
    figure("ytd_tco2e", "Year to date (scope 1 + 2 location)", f.tco2e, `${fmt(f.tco2e)} t`,
      `${fmt(f.energy_mwh)} MWh · ${f.readings} readings`, { cluster: s.cluster, site: s.site, figure: "ytd" }),
    figure("readings_accepted", "Readings accepted", s.readings_accepted, fmt(s.readings_accepted, 0),
      `${s.late} late · ${s.duplicates} repeats`),
    figure("watermark", "Newest reading", s.watermark, when(s.watermark), `cluster clock ${when(s.clock_ms)}`));
  renderGases(f);
  renderQuality(s.ytd.quality, "of the site's own meters");
  const m = s.meters;
  document.getElementById("meters").replaceChildren(
    el("table", { id: "table-meters" },
      el("thead", {}, el("tr", {}, ["Meter", "Carrier", "Latest value", "Unit", "Quality", "Reading time", "Behind cluster clock"]
        .map((h, i) => el("th", { class: [2, 6].includes(i) ? "num" : "" }, h)))),
      el("tbody", {}, m.rows.map((r) => el("tr", { "data-meter": r.meter, class: r.current ? "" : "stale" },
        el("td", {}, r.meter), el("td", {}, words(r.carrier)),
        el("td", { class: "num", "data-field": "value", "data-value": r.value ?? "", title: r.value ?? "" }, sig(r.value)),
        el("td", {}, r.unit),
        el("td", { class: `quality-${r.quality}` }, r.quality ? words(r.quality) : "no reading"),
        el("td", { "data-field": "ts", "data-value": r.ts ?? "" }, when(r.ts)),
        el("td", { class: "num " + (r.current ? "" : "warn") }, age(r.age_s)))))),
    pager(m.page, m.pages, m.total, (p) => { state.page = p; listen(s.cluster, s.site, p); }));
}

// -- chart ---------------------------------------------------------------------------------------
async function refreshSeries(c) {
  const key = `${c.cluster}|${state.site}|${c.now.hour_start}`;
  if (key === state.seriesKey && Date.now() - state.seriesAt < 60000) return;
  state.seriesKey = key; state.seriesAt = Date.now();
  const q = new URLSearchParams({ hours: "168" });
  if (state.site) q.set("site", state.site);
  let s;
  try { s = await getJSON(`/clusters/${encodeURIComponent(c.cluster)}/series?${q}`); }
  catch (err) { console.warn(String(err)); return; }
  const box = document.getElementById("chart");
  if (!box) return;
  box.dataset.points = String(s.t.length);
  const hasPath = s.pathway_tco2e_per_h.some((v) => v !== null);
  const data = hasPath ? [s.t, s.tco2e_per_h, s.pathway_tco2e_per_h] : [s.t, s.tco2e_per_h];
  const width = Math.max(320, box.clientWidth || 800);
  const opts = { width, height: 240, scales: { x: { time: true } },
    series: [{}, { label: "emissions (t/h)", stroke: "#1f5fbf", width: 2 },
             ...(hasPath ? [{ label: "pathway (t/h)", stroke: "#1b7f3b", dash: [6, 4], width: 2 }] : [])],
    axes: [{}, { label: "t CO2e per hour" }] };
  box.replaceChildren();
  if (!s.t.length) { box.append(el("p", { class: "empty" }, "no closed hour stored yet")); return; }
  state.charts.main = new uPlot(opts, data, box);
}

// -- explanations ----------------------------------------------------------------------------------
async function showExplain(x) {
  const aside = document.getElementById("explain");
  const body = document.getElementById("explain-body");
  aside.hidden = false;
  body.replaceChildren(el("p", { class: "empty" }, "asking the twin…"));
  const q = new URLSearchParams({ figure: x.figure });
  if (x.site) q.set("site", x.site);
  try {
    const e = await getJSON(`/clusters/${encodeURIComponent(x.cluster)}/explain?${q}`);
    if (e.no_data) { body.replaceChildren(el("p", {}, "no reading yet")); return; }
    const r = e.readings;
    body.replaceChildren(
      el("h2", {}, `Where “${x.figure === "now" ? "last complete hour" : "year to date"}” of ${x.site || x.cluster} comes from`),
      el("p", {}, `${fmt(r.readings, 0)} stored readings between ${when(e.start_ms)} and ${when(e.stop_ms)}:`),
      el("ul", { id: "explain-quality" }, Object.entries(r.counts).map(([q, n]) =>
        el("li", { class: `quality-${q}`, "data-quality": q, "data-value": n }, `${q}: ${fmt(n, 0)} (${pct(r.pct[q])})`))),
      el("h2", {}, "Factors"),
      el("table", { id: "explain-factors" },
        el("thead", {}, el("tr", {}, ["Factor (scope, version)", "Source and meters"].map((h) => el("th", {}, h)))),
        el("tbody", {}, e.factors.map((f) => el("tr", { "data-factor": f.factor },
          el("td", {}, el("code", {}, f.factor), el("div", { class: "sub" }, `${f.scope} · version ${f.version}`),
            el("div", { "data-field": "tco2e_per_unit", "data-value": f.tco2e_per_unit }, `${sig(f.tco2e_per_unit)} tCO2e/${f.unit}`)),
          el("td", {}, f.source + (f.note ? ` (${f.note})` : ""),
            el("div", { class: "sub" }, `${f.meters.length} meter(s): ${f.meters.join(", ")}`)))))));
  } catch (err) {
    body.replaceChildren(el("p", { class: "bad", role: "alert" }, String(err.message || err)));
  }
}

document.getElementById("explain-close").addEventListener("click", () => { document.getElementById("explain").hidden = true; });
window.addEventListener("hashchange", route);
setInterval(() => {
  if (state.source && state.lastEvent && Date.now() - state.lastEvent > 20000) setLive("lost", "no update for 20 s");
}, 5000);
route();
