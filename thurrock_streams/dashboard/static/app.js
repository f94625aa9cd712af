// Thurrock Streams operators' dashboard. Plain JavaScript written for this project: no
// framework, no external request (the server's Content-Security-Policy forbids them).
"use strict";

const CFG = document.body.dataset;
const STALE = { traffic: Number(CFG.staleTraffic || 180), air: Number(CFG.staleAir || 1200) };

// DAQI index colours 1..10 (UK-AIR's, as given in openair-project/ukaq; DOMAIN.md §9).
const DAQI_COLOURS = ["#9CFF9C", "#31FF00", "#31CF00", "#FFFF00", "#FFCF00", "#FF9A00",
  "#FF6464", "#FF0000", "#990000", "#CE30FF"];
// Lower bounds (µg/m³) of DAQI indices 2..10 per pollutant, on its DAQI period (DOMAIN.md §1,
// Defra): NO2 1-hour, SO2 15-minute, O3 8-hour running, PM2.5 and PM10 24-hour running.
const DAQI_BOUNDS = {
  o3: [34, 67, 101, 121, 141, 161, 188, 214, 241],
  no2: [68, 135, 201, 268, 335, 401, 468, 535, 601],
  so2: [89, 178, 267, 355, 444, 533, 711, 888, 1065],
  pm25: [12, 24, 36, 42, 48, 54, 59, 65, 71],
  pm10: [17, 34, 51, 59, 67, 76, 84, 92, 101],
};
const DAQI_PERIOD = { o3: "8h", no2: "1h", so2: "15m", pm25: "24h", pm10: "24h" };
const POLLUTANT_NAMES = { no2: "NO₂", o3: "O₃", so2: "SO₂", pm25: "PM2.5", pm10: "PM10", co: "CO" };
const UNIT = { co: "mg/m³" };
// Congestion bands: the project's own, set on the alert rules' congestion thresholds
// (clear below 0.3, raise at 0.5, escalate at 0.75; docs/alerts.md).
const CONGESTION = [
  { below: 0.3, word: "Free flow", colour: "#1a9641" },
  { below: 0.5, word: "Busy", colour: "#fdd835" },
  { below: 0.75, word: "Congested", colour: "#f57c00" },
  { below: Infinity, word: "Severe", colour: "#c62828" },
];
// GOV.UK's health advice for the DAQI bands is official wording that must not be
// paraphrased (DOMAIN.md), and the project does not copy others' prose: the panel names
// the band and points to the advice, with its source and date.
const ADVICE_SOURCE = "GOV.UK, “Health advice for the Daily Air Quality Index (DAQI)”, " +
  "published 19 December 2025 (www.gov.uk, “Health effects of air pollution”)";
const LINE_COLOURS = ["#0b57d0", "#c62828", "#2e7d32", "#6a1b9a"];

const state = { sites: new Map(), roads: null, selected: null, series: {}, alerts: null,
  asOf: null, boot: null, redrawPending: false };

// ---------- small helpers ----------
function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "circle", "rect", "path", "text", "line", "polyline", "title",
    "tspan"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") {  // through the CSSOM: the CSP forbids style attributes
      for (const decl of String(v).split(";")) {
        const [prop, val] = decl.split(":");
        if (prop && val) el.style.setProperty(prop.trim(), val.trim());
      }
    }
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const fmt = (v, d) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));
function utc(ts) {
  if (ts === null || ts === undefined) return "—";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
function ago(ts) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}
function bandOfIndex(i) { return i <= 3 ? "Low" : i <= 6 ? "Moderate" : i <= 9 ? "High" : "Very High"; }
function congestion(ci) { return CONGESTION.find((b) => ci < b.below); }
function isStale(site) {
  return site.last_seen === null || Date.now() / 1000 - site.last_seen > STALE[site.kind];
}
function siteHash(id) { return "#site=" + encodeURIComponent(id); }
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}
function setConn(kind, text) {
  const el = document.getElementById("conn");
  el.className = "conn conn-" + kind;
  el.textContent = text;
}
function noteAsOf(ts) {
  if (ts !== null && ts !== undefined && (state.asOf === null || ts > state.asOf)) {
    state.asOf = ts;
    const t = document.getElementById("as-of");
    t.textContent = utc(ts);
    t.setAttribute("datetime", new Date(ts * 1000).toISOString());
  }
}

// ---------- what a marker says ----------
function markerText(site) {
  if (site.last_seen === null) return "no data";
  if (isStale(site)) return `stale, last seen ${ago(site.last_seen)}`;
  if (site.kind === "traffic") {
    if (site.congestion_index === null || site.congestion_index === undefined)
      return `${fmt(site.flow_vph, 0)} veh/h, no speed`;
    return `${fmt(site.congestion_index, 2)} ${congestion(site.congestion_index).word}`;
  }
  if (site.daqi === null || site.daqi === undefined) return "no DAQI yet";
  return `${site.daqi} ${site.band}`;
}
function markerColour(site) {
  if (isStale(site) || site.last_seen === null) return "#9e9e9e";
  if (site.kind === "traffic") {
    return site.congestion_index === null || site.congestion_index === undefined
      ? "#ffffff" : congestion(site.congestion_index).colour;
  }
  return site.daqi ? DAQI_COLOURS[site.daqi - 1] : "#ffffff";
}
function markerLabel(site) {
  const what = site.kind === "traffic" ? "traffic site" : "air monitor";
  let figures;
  if (site.kind === "traffic") {
    figures = site.congestion_index === null || site.congestion_index === undefined ? ""
      : `congestion index ${fmt(site.congestion_index, 2)}, ${congestion(site.congestion_index).word}, ` +
        `flow ${fmt(site.flow_vph, 0)} vehicles per hour`;
  } else {
    figures = site.daqi ? `DAQI ${site.daqi}, ${site.band}, set by ${POLLUTANT_NAMES[site.pollutant] || site.pollutant}` : "";
  }
  const status = site.last_seen === null ? "no data yet"
    : isStale(site) ? `stale, last seen ${ago(site.last_seen)}` : `updated ${ago(site.last_seen)}`;
  return `${site.name} (${what}): ${figures ? figures + "; " : ""}${status}`;
}

// ---------- the map ----------
function projector(points) {
  const lats = points.map((p) => p[0]), lons = points.map((p) => p[1]);
  const minLat = Math.min(...lats) - 0.006, maxLat = Math.max(...lats) + 0.006;
  const minLon = Math.min(...lons) - 0.012, maxLon = Math.max(...lons) + 0.03;
  const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
  const width = 720, scale = width / ((maxLon - minLon) * k);
  const height = Math.round((maxLat - minLat) * scale);
  return { width, height, p: (lat, lon) => [(lon - minLon) * k * scale, (maxLat - lat) * scale] };
}
function drawMap() {
  const svg = document.getElementById("map");
  const located = [...state.sites.values()].filter((s) => s.lat !== null && s.lon !== null);
  const pts = located.map((s) => [s.lat, s.lon]);
  for (const r of state.roads.roads) pts.push(...r.points);
  const proj = projector(pts);
  svg.setAttribute("viewBox", `0 0 ${proj.width} ${proj.height}`);
  svg.replaceChildren();
  const roads = h("g", { "aria-hidden": "true" });
  for (const r of state.roads.roads) {
    const xy = r.points.map(([la, lo]) => proj.p(la, lo));
    roads.append(h("polyline", { class: `road ${r.class}`, points: xy.map((q) => q.join(",")).join(" ") }));
    const mid = xy[Math.floor(xy.length / 2)];
    roads.append(h("text", { class: "road-label", x: mid[0] + 6, y: mid[1] - 8 }, r.label || r.ref));
  }
  svg.append(roads);
  // Markers: a symbol at the site, a label box beside it; boxes that would overlap are
  // moved down, with a leader line back to the site.
  const order = located.slice().sort((a, b) => a.lat === b.lat ? a.lon - b.lon : b.lat - a.lat);
  const placed = order.map((site) => {  // every symbol is an obstacle for the labels
    const [x, y] = proj.p(site.lat, site.lon);
    return { x: x - 7, y: y - 7, w: 14, h: 14 };
  });
  const markers = h("g", {});
  for (const site of order) {
    const [x, y] = proj.p(site.lat, site.lon);
    const text = markerText(site);
    const w = 14 + text.length * 6.6, hgt = 18;
    let bx = x + 10, by = y - hgt / 2;
    for (let tries = 0; tries < 60 && placed.some((b) => bx < b.x + b.w + 2 && b.x < bx + w + 2
      && by < b.y + b.h + 2 && b.y < by + hgt + 2); tries++) by += hgt + 3;
    placed.push({ x: bx, y: by, w, h: hgt });
    const stale = site.last_seen === null || isStale(site);
    const g = h("g", { class: `marker ${site.kind}${stale ? " stale" : ""}${state.selected === site.site_id ? " selected" : ""}`,
      tabindex: 0, role: "button", "data-site": site.site_id, "aria-label": markerLabel(site),
      onclick: () => select(site.site_id),
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(site.site_id); } } },
    h("title", {}, markerLabel(site)));
    if (Math.abs(by + hgt / 2 - y) > 1) g.append(h("line", { class: "leader", x1: x, y1: y, x2: bx, y2: by + hgt / 2 }));
    g.append(site.kind === "traffic"
      ? h("circle", { class: "symbol", cx: x, cy: y, r: 6, fill: markerColour(site) })
      : h("rect", { class: "symbol", x: x - 6, y: y - 6, width: 12, height: 12, fill: markerColour(site) }));
    g.append(h("rect", { class: "label-box", x: bx, y: by, width: w, height: hgt, rx: 3 }));
    g.append(h("rect", { x: bx + 3, y: by + 4, width: 10, height: 10, fill: markerColour(site), stroke: "#333" }));
    g.append(h("text", { class: "label value", x: bx + 17, y: by + 13 }, text));
    markers.append(g);
  }
  svg.append(markers);
  const bottom = Math.max(proj.height, ...placed.map((b) => b.y + b.h + 4));
  svg.setAttribute("viewBox", `0 0 ${proj.width} ${Math.ceil(bottom)}`);
}
function drawLegend() {
  const el = document.getElementById("legend");
  el.replaceChildren(
    h("span", {}, "Traffic (congestion index):"),
    ...CONGESTION.map((b, i) => h("span", {}, h("span", { class: "sw", style: `background:${b.colour}` }),
      `${b.word} (${i ? CONGESTION[i - 1].below : 0}–${b.below === Infinity ? 1 : b.below})`)),
    h("span", {}, "Air (DAQI 1–10):"),
    ...DAQI_COLOURS.map((c, i) => h("span", {}, h("span", { class: "sw", style: `background:${c}` }),
      `${i + 1} ${bandOfIndex(i + 1)}`)),
    h("span", {}, h("span", { class: "sw", style: "background:#9e9e9e" }), "stale or no data"));
}
function drawTable() {
  const body = document.querySelector("#sites-table tbody");
  body.replaceChildren(...[...state.sites.values()].map((s) => h("tr", { "data-site": s.site_id },
    h("td", {}, h("a", { href: siteHash(s.site_id) }, s.name), s.registered ? "" : " (not in the registry)"),
    h("td", {}, s.kind === "traffic" ? "traffic" : "air"),
    h("td", { class: "latest" }, s.last_seen === null ? "no data" : s.kind === "traffic"
      ? `congestion ${fmt(s.congestion_index, 2)}, flow ${fmt(s.flow_vph, 0)} veh/h, mean ${fmt(s.mean_speed_kph, 1)} km/h`
      : s.daqi ? `DAQI ${s.daqi} ${s.band} (${POLLUTANT_NAMES[s.pollutant] || s.pollutant})` : "no DAQI yet"),
    h("td", {}, utc(s.last_window_end)),
    h("td", { class: "status" }, s.last_seen === null ? "no data" : isStale(s) ? `stale, last seen ${ago(s.last_seen)}` : `live, ${ago(s.last_seen)}`))));
}

// ---------- charts ----------
function chart(title, unit, lines, opts) {
  // lines: [{name, points: [[ts, value, extra]...]}]; opts.bands: DAQI shading bounds.
  const W = 640, H = 220, L = 52, R = 10, T = 10, B = 28;
  const all = lines.flatMap((l) => l.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]).filter((v) => v !== null);
  const fig = h("figure", { "data-chart": title });
  const csvBtn = h("button", { type: "button", onclick: () => downloadCSV(title, unit, lines) }, "Download CSV");
  fig.append(h("figcaption", {}, h("span", {}, `${title} (${unit})`), csvBtn));
  if (!ys.length) { fig.append(h("p", { class: "hint" }, "No data in the last 24 hours.")); return fig; }
  const x0 = Math.min(...xs), x1 = Math.max(Math.max(...xs), x0 + 60);
  let y1 = Math.max(...ys, opts && opts.yMax ? opts.yMax : 0) * 1.1 || 1;
  const y0 = 0;
  const X = (t) => L + (t - x0) / (x1 - x0) * (W - L - R);
  const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${title}: ${lines.map((l) => `${l.name}, ${l.points.length} points`).join("; ")}` });
  if (opts && opts.bands) {
    const b = [0, ...opts.bands];
    for (let i = 0; i < b.length; i++) {
      const lo = b[i], hi = i + 1 < b.length ? b[i + 1] : Infinity;
      if (lo >= y1) break;
      svg.append(h("rect", { x: L, width: W - L - R, y: Y(Math.min(hi, y1)),
        height: Y(lo) - Y(Math.min(hi, y1)), fill: DAQI_COLOURS[i], "fill-opacity": 0.35 }));
      svg.append(h("text", { class: "axis", x: W - R - 4, y: Y(lo) - 3, "text-anchor": "end" }, `DAQI ${i + 1}`));
    }
  }
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4;
    svg.append(h("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
    svg.append(h("text", { class: "axis", x: L - 4, y: Y(v) + 4, "text-anchor": "end" }, v >= 10 ? v.toFixed(0) : v.toFixed(2)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = x0 + (x1 - x0) * i / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg.append(h("text", { class: "axis", x: X(t), y: H - 8, "text-anchor": anchor }, new Date(t * 1000).toISOString().slice(11, 16)));
  }
  const drawOrder = lines.map((l, i) => [l, i]).sort((a, b) => (a[0].bold ? 1 : 0) - (b[0].bold ? 1 : 0));
  drawOrder.forEach(([l, i]) => {
    const colour = LINE_COLOURS[i % LINE_COLOURS.length];
    let d = "", pen = false;
    for (const [t, v] of l.points) {
      if (v === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${X(t).toFixed(1)},${Y(v).toFixed(1)}`;
      pen = true;
    }
    // coarser series (15-minute windows, running means) drawn thicker over the fine ones
    svg.append(h("path", { class: "series-line", d, stroke: colour, "stroke-width": l.bold ? 3 : 1.25,
      "stroke-dasharray": i % 2 ? "6 3" : null }));
    for (const p of l.points) {
      if (p[1] !== null && p[2] && p[2].valid === false)
        svg.append(h("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: "#fff", stroke: colour }));
    }
  });
  fig.append(svg);
  fig.append(h("div", { class: "chart-legend" }, ...lines.map((l, i) => h("span", {},
    h("span", { class: "sw", style: `background:${LINE_COLOURS[i % LINE_COLOURS.length]}` }), l.name))));
  if (opts && opts.note) fig.append(h("p", { class: "hint" }, opts.note));
  return fig;
}
function csvText(title, unit, lines) {
  const rows = ["series,window_end_utc,window_end_epoch_s,value,unit,capture_pct,valid"];
  for (const l of lines) {
    for (const [t, v, extra] of l.points) {
      const e = extra || {};
      rows.push([`"${l.name.replaceAll('"', '""')}"`, new Date(t * 1000).toISOString(), t,
        v === null ? "" : v, unit, e.capture_pct ?? "", e.valid === undefined ? "" : e.valid].join(","));
    }
  }
  return rows.join("\n") + "\n";
}
function downloadCSV(title, unit, lines) {
  const blob = new Blob([csvText(title, unit, lines)], { type: "text/csv" });
  const a = h("a", { href: URL.createObjectURL(blob),
    download: `${state.selected}-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
const pick = (recs, field) => recs.map((r) => [r.ts, r[field] === undefined ? null : r[field]]);

// ---------- the site panel ----------
function keepFocus(draw) {
  const a = document.activeElement;
  const key = a && a.closest ? a.closest("[data-site]") : null;
  const id = key ? key.getAttribute("data-site") : null;
  const inMap = a && a.closest && a.closest("#map");
  draw();
  if (id !== null) {
    const scope = inMap ? "#map" : "#sites-table";
    const again = [...document.querySelectorAll(`${scope} [data-site]`)].find((e) => e.getAttribute("data-site") === id);
    const target = again && !inMap ? again.querySelector("a") : again;
    if (target) target.focus({ preventScroll: true });
  }
}
async function select(siteId, fromHash, focus = !fromHash) {
  state.selected = siteId;
  if (!fromHash && location.hash !== siteHash(siteId)) history.replaceState(null, "", siteHash(siteId));
  const site = state.sites.get(siteId);
  const enc = encodeURIComponent(siteId);
  const windows = site && site.kind === "air" ? ["15m", "1h"] : ["1m", "15m"];
  try {
    const got = await Promise.all(windows.map((w) => getJSON(`/api/sites/${enc}/series?window=${w}`)));
    state.series = Object.fromEntries(windows.map((w, i) => [w, got[i]]));
  } catch (err) {
    state.series = {};
  }
  keepFocus(drawMap);
  drawPanel();
  if (focus) document.getElementById("panel").focus({ preventScroll: false });
}
function drawPanel() {
  const panel = document.getElementById("panel");
  const site = state.sites.get(state.selected);
  if (!site) { panel.replaceChildren(h("h2", { id: "panel-h" }, "Site panel"), h("p", {}, `Unknown site ${state.selected}.`)); return; }
  const head = [h("h2", { id: "panel-h" }, site.name),
    h("p", { class: "hint" }, `${site.site_id} · ${site.kind === "traffic" ? "traffic site" : "air monitor"} · ` +
      (site.last_seen === null ? "no data yet" : `${isStale(site) ? "STALE, " : ""}last aggregate arrived ${ago(site.last_seen)} (${utc(site.last_seen)}); last window end ${utc(site.last_window_end)}`))];
  panel.replaceChildren(...head, ...(site.kind === "traffic" ? trafficPanel(site) : airPanel(site)));
}
function trafficPanel(site) {
  const m = state.series["1m"] || [], q = state.series["15m"] || [];
  const latest = h("table", { class: "figures" }, h("caption", {}, `Last 1-minute window, ending ${utc(site.window_end)}`),
    h("tbody", {}, ...[["Vehicles", "count", 0, ""], ["Flow", "flow_vph", 0, "veh/h"], ["Mean speed", "mean_speed_kph", 1, "km/h"],
      ["V85 (85th percentile speed)", "p85_speed_kph", 1, "km/h"], ["Congestion index", "congestion_index", 2, "0–1"]].map(([label, f, d, u]) =>
      h("tr", {}, h("th", { scope: "row" }, label), h("td", { class: "num", "data-field": f }, fmt(site[f], d)), h("td", {}, u)))));
  return [latest,
    chart("Traffic flow", "veh/h", [{ name: "1-minute flow", points: pick(m, "flow_vph") }, { name: "15-minute flow", points: pick(q, "flow_vph"), bold: true }]),
    chart("Speed", "km/h", [{ name: "1-minute mean speed", points: pick(m, "mean_speed_kph") }, { name: "1-minute V85", points: pick(m, "p85_speed_kph") },
      { name: "15-minute mean speed", points: pick(q, "mean_speed_kph"), bold: true }, { name: "15-minute V85", points: pick(q, "p85_speed_kph"), bold: true }]),
    chart("Congestion index", "0–1", [{ name: "1-minute congestion index", points: pick(m, "congestion_index") }, { name: "15-minute congestion index", points: pick(q, "congestion_index"), bold: true }],
      { yMax: 1 / 1.1 }),
  ];
}
function airPanel(site) {
  const out = [];
  if (site.daqi) {
    const advice = ["Low", "Moderate", "High", "Very High"].includes(site.band);
    out.push(h("p", { class: "daqi-now" }, `DAQI ${site.daqi} (${site.band}), set by ${POLLUTANT_NAMES[site.pollutant] || site.pollutant}, for the hour ending ${utc(site.daqi_ts)}.`));
    if (advice) {
      out.push(h("div", { class: "advice", style: `border-left-color:${DAQI_COLOURS[site.daqi - 1]}` },
        h("h3", {}, `Health advice: ${site.band} air pollution`),
        h("p", {}, `The official advice for the ${site.band} band, for everyone and for ` +
          "at-risk groups (adults and children with heart or lung conditions, older people), " +
          "is published by GOV.UK: read it there before acting on this reading."),
        h("p", { class: "source" }, `Source: ${ADVICE_SOURCE}.`)));
    }
  } else out.push(h("p", {}, "No DAQI yet (it needs a valid mean of a DAQI pollutant)."));
  const lim = h("ul", { class: "limits" });
  for (const l of site.limits || []) {
    const what = l.rule === "limit:no2_1h" ? `NO₂ hours over ${l.threshold} µg/m³`
      : l.rule === "limit:pm10_24h" ? `PM10 days over ${l.threshold} µg/m³`
      : `${POLLUTANT_NAMES[l.pollutant] || l.pollutant} ${l.period} means over ${l.threshold} µg/m³`;
    lim.append(h("li", { "data-rule": l.rule }, `${what} ${l.year ? "in " + l.year : "this year"}: ${l.count} of ${l.allowed} allowed`));
  }
  out.push(h("h3", {}, "Legal limits (Air Quality Standards Regulations 2010)"), lim,
    h("p", { class: "hint" }, "Counted as the alert rules count: valid means rounded to a whole µg/m³ (halves up) strictly above the limit, per UTC calendar year, from the aggregates on the topic since 1 January."));
  const means = site.means || [];
  out.push(h("div", { class: "table-wrap" }, h("table", { class: "means" }, h("caption", {}, "Latest means: capture is the share of the window's minutes with a sample; valid needs at least 75%"),
    h("thead", {}, h("tr", {}, ...["Pollutant", "Period", "Mean", "Capture %", "Valid", "DAQI", "Window end (UTC)"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...means.map((r) => h("tr", { "data-mean": `${r.pollutant}/${r.period}` },
      h("td", {}, POLLUTANT_NAMES[r.pollutant] || r.pollutant), h("td", {}, r.period),
      h("td", { class: "num" }, r.mean === undefined ? "—" : `${fmt(r.mean, 1)} ${UNIT[r.pollutant] || "µg/m³"}`),
      h("td", { class: "num" }, fmt(r.capture_pct, 1)), h("td", {}, r.valid ? "yes" : "no"),
      h("td", {}, r.daqi ? `${r.daqi} ${bandOfIndex(r.daqi)}` : "—"), h("td", {}, utc(r.ts))))))));
  const hourly = (state.series["1h"] || []).filter((r) => r.measurement === "air_quality");
  const pollutants = [...new Set(hourly.map((r) => r.pollutant))].sort();
  for (const p of pollutants) {
    const ofPeriod = (per) => hourly.filter((r) => r.pollutant === p && r.period === per)
      .map((r) => [r.ts, r.mean === undefined ? null : r.mean, { capture_pct: r.capture_pct, valid: r.valid }]);
    const lines = [{ name: `${POLLUTANT_NAMES[p]} hourly mean`, points: ofPeriod("1h") }];
    const run = DAQI_PERIOD[p] === "8h" || p === "co" ? "8h" : DAQI_PERIOD[p] === "24h" ? "24h" : null;
    if (run) lines.push({ name: `${POLLUTANT_NAMES[p]} ${run} running mean`, points: ofPeriod(run), bold: true });
    const bands = DAQI_BOUNDS[p];
    const note = bands ? `Shading: DAQI bands of the ${DAQI_PERIOD[p] === "1h" ? "hourly" : DAQI_PERIOD[p]} mean (Defra). Hollow points: not valid (capture below 75%).`
      : "CO is not part of the DAQI. Hollow points: not valid (capture below 75%).";
    out.push(chart(`${POLLUTANT_NAMES[p]} means`, UNIT[p] || "µg/m³", lines, { bands, note }));
  }
  if (!pollutants.length) out.push(h("p", { class: "hint" }, "No hourly means in the last 24 hours."));
  return out;
}

// ---------- alerts ----------
function alertItem(e) {
  const site = state.sites.get(e.site_id);
  return h("li", { "data-alert": `${e.site_id}|${e.rule}|${e.state}` },
    h("span", { class: `sev sev-${e.severity}` }, e.severity), " ", `${e.state} `,
    h("code", {}, e.rule), " at ", h("a", { href: siteHash(e.site_id) }, site ? site.name : e.site_id),
    ` (${utc(e.ts)}): ${e.message}`);
}
function drawAlerts() {
  const a = state.alerts || { open: [], latest: [] };
  const open = document.getElementById("open-alerts"), latest = document.getElementById("latest-alerts");
  open.replaceChildren(...(a.open.length ? a.open.map(alertItem) : [h("li", { class: "none" }, "None.")]));
  latest.replaceChildren(...(a.latest.length ? a.latest.slice(0, 30).map(alertItem) : [h("li", { class: "none" }, "None yet.")]));
}

// ---------- live ----------
function redrawSoon() {
  if (state.redrawPending) return;
  state.redrawPending = true;
  setTimeout(() => {
    state.redrawPending = false;
    keepFocus(drawMap);
    keepFocus(drawTable);
    if (state.selected) drawPanel();
  }, 250);
}
async function refreshAll() {
  const [sites, alerts] = await Promise.all([getJSON("/api/sites"), getJSON("/api/alerts")]);
  state.sites = new Map(sites.map((s) => [s.site_id, s]));
  for (const s of sites) noteAsOf(s.last_window_end);
  state.alerts = alerts;
  drawAlerts();
  if (state.selected) await select(state.selected, true);
  else { keepFocus(drawMap); keepFocus(drawTable); }
}
function onAggregate(msg) {
  const site = msg.site;
  state.sites.set(site.site_id, site);
  noteAsOf(msg.record.ts);
  if (site.site_id === state.selected) {
    const rec = msg.record;
    const w = msg.kind === "traffic" ? rec.window : rec.period === "15m" ? "15m" : "1h";
    const list = state.series[w] || (state.series[w] = []);
    const same = (r) => r.ts === rec.ts && r.measurement === rec.measurement && r.pollutant === rec.pollutant && r.period === rec.period;
    const at = list.findIndex(same);
    if (at >= 0) list[at] = rec; else { list.push(rec); list.sort((a, b) => a.ts - b.ts); }
    const horizon = (state.asOf || rec.ts) - 86400;
    state.series[w] = list.filter((r) => r.ts >= horizon);
  }
  redrawSoon();
}
function onAlert(msg) {
  const e = msg.event;
  const a = state.alerts || (state.alerts = { open: [], latest: [] });
  a.open = a.open.filter((o) => !(o.site_id === e.site_id && o.rule === e.rule));
  if (e.state !== "cleared") a.open.unshift(e);
  a.latest.unshift(e);
  a.latest = a.latest.slice(0, 100).sort((x, y) => y.ts - x.ts);
  drawAlerts();
}
function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("hello", async (ev) => {
    state.boot = JSON.parse(ev.data).boot;
    try { await refreshAll(); setConn("live", "Live"); } catch (err) { setConn("reconnecting", "Reconnecting…"); }
  });
  es.addEventListener("aggregate", (ev) => onAggregate(JSON.parse(ev.data)));
  es.addEventListener("alert", (ev) => onAlert(JSON.parse(ev.data)));
  es.onerror = () => {
    setConn("reconnecting", "Reconnecting… (showing the last data received)");
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}
// The dashboard itself may be up while Kafka is not: say so (figures stop changing).
async function checkFeed() {
  const el = document.getElementById("conn");
  if (!el.classList.contains("conn-live") && !el.classList.contains("conn-nokafka")) return;
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    const h = await r.json();
    if (h.connected) setConn("live", "Live");
    else setConn("nokafka", "Live, but the dashboard has lost Kafka: figures may be old");
  } catch (err) { /* the stream's own error handler reports a lost dashboard */ }
}
function fromHash() {
  const m = location.hash.match(/^#site=(.+)$/);
  if (m) select(decodeURIComponent(m[1]), true, true);
}

async function start() {
  document.getElementById("stale-traffic").textContent = String(STALE.traffic);
  document.getElementById("stale-air").textContent = String(STALE.air);
  if (CFG.feed) {
    const mark = document.getElementById("feed-mark");
    mark.textContent = CFG.feed === "REPLAY" ? "REPLAY: recorded readings, not live sensors"
      : "SIMULATED: readings from sensors-sim, not real sensors";
    mark.hidden = false;
  }
  drawLegend();
  state.roads = await getJSON("/static/roads.json");
  window.addEventListener("hashchange", fromHash);
  fromHash();
  connect();
  setInterval(() => { keepFocus(drawTable); keepFocus(drawMap); checkFeed(); }, 5000);  // stale and "ago" as time passes
}
start();
