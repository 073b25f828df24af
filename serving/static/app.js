/* dealcast dashboard: plain JS over the JSON API, charts drawn as inline SVG.
 *
 * The API key lives in sessionStorage (this tab only) and goes out as
 * `Authorization: Bearer <key>`. GET /v1/me decides the views: leader and ops see the
 * forecast, accuracy/anomalies and deals; a rep sees their own deals (and numbers).
 * Every value from the API is put in the page as text (textContent), never as HTML.
 */
"use strict";

(() => {
  const STORE = "dealcast.key";
  const SVGNS = "http://www.w3.org/2000/svg";
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const UNKNOWN_KEY =
    "Unknown key: the server does not recognise this API key. Check it, or ask for a new one " +
    "(dealcast keys add).";
  const METHODS = [
    { id: "dealcast", label: "dealcast", cls: "m-dealcast" },
    { id: "stage_weighted_hist", label: "Stage-weighted (historical win rates)", cls: "m-hist" },
    { id: "stage_weighted_crm", label: "Stage-weighted (CRM stage %)", cls: "m-crm" },
  ];
  const STAFF = new Set(["leader", "ops"]);

  const state = {
    key: null,
    me: null,
    view: null,
    loaded: {},
    owners: null,
    accuracy: null,
    fan: null,
    tokens: { accuracy: 0, priorities: 0, deal: 0 },
  };

  /* ---------- DOM helpers ---------- */

  const $ = (id) => document.getElementById(id);

  function setAttrs(el, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  function fill(id, ...children) {
    const el = $(id);
    el.replaceChildren();
    return append(el, children);
  }

  const loading = (...ids) => ids.forEach((id) => fill(id, h("p", { class: "empty" }, "Loading…")));
  const empty = (text) => h("p", { class: "empty" }, text);

  /* ---------- formatting ---------- */

  function fmtMoney(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    const a = Math.abs(v);
    let text;
    if (a >= 999995000) text = (a / 1e9).toFixed(2) + "B";
    else if (a >= 999995) text = (a / 1e6).toFixed(2) + "M";
    else if (a >= 999.95) text = (a / 1e3).toFixed(1) + "K";
    else text = a.toFixed(0);
    return v < 0 && text !== "0" ? "−" + text : text;
  }

  function fmtAxis(v) {
    const a = Math.abs(v);
    const trim = (x) => String(Number(x.toFixed(2))).replace("-", "−");
    if (a >= 1e9) return trim(v / 1e9) + "B";
    if (a >= 1e6) return trim(v / 1e6) + "M";
    if (a >= 1e3) return trim(v / 1e3) + "K";
    return trim(v);
  }

  const fmtFull = (v) =>
    v === null || v === undefined ? "" : Math.round(v).toLocaleString("en-US");

  function fmtPct(v, digits = 0) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    const text = Math.abs(v * 100).toFixed(digits);
    return (v < 0 && Number(text) !== 0 ? "−" : "") + text + "%";
  }

  function fmtSignedPct(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    return (v >= 0 ? "+" : "−") + Math.abs(v * 100).toFixed(1) + "%";
  }

  const fmtPoints = (effect) => (effect >= 0 ? "+" : "−") + Math.abs(effect * 100).toFixed(1) + " pts";

  function fmtValue(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    if (Math.abs(v) >= 1000) return fmtMoney(v);
    return String(Number(v.toFixed(2)));
  }

  function ym(iso) {
    const [y, m] = iso.slice(0, 7).split("-").map(Number);
    return { y, m };
  }

  const monthLabel = (iso) => (iso ? `${MONTHS[ym(iso).m - 1]} ${ym(iso).y}` : "—");
  const quarterLabel = (iso) => `Q${Math.floor((ym(iso).m - 1) / 3) + 1} ${ym(iso).y}`;
  const fmtDate = (iso) => (iso ? iso.slice(0, 10) : "—");
  const fmtInstant = (iso) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  const flagLabel = (flag) => flag.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
  const byMonth = (key) => (a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0);

  /* ---------- API ---------- */

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, key = state.key) {
    if (!/^[\x21-\x7e]+$/.test(key || "")) throw new ApiError(401, "unknown key");
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, `Cannot reach the dealcast server (${err.message}).`);
    }
    if (response.ok) return response.json();
    let detail = response.statusText || `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.detail !== undefined) {
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) {
      /* not JSON: keep the status text */
    }
    throw new ApiError(response.status, detail);
  }

  /* ---------- errors ---------- */

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  function clearError() {
    const el = $("error");
    el.hidden = true;
    el.textContent = "";
  }

  function failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      showError(UNKNOWN_KEY);
      return;
    }
    const prefix = err instanceof ApiError && err.status ? `Error ${err.status}: ` : "";
    showError(prefix + (err.message || String(err)));
  }

  /* ---------- session ---------- */

  const isStaff = () => state.me !== null && STAFF.has(state.me.role);
  const allowedViews = () => (isStaff() ? ["forecast", "ops", "deals"] : ["deals"]);

  function roleLabel(me) {
    if (me.role === "leader") return "Leader";
    if (me.role === "ops") return "Ops";
    return `Rep · ${me.owner_id || me.role.replace(/^rep:/, "")}`;
  }

  function showLogin() {
    $("login").hidden = false;
    $("session").hidden = true;
    $("tabs").hidden = true;
    document.querySelectorAll("section.view").forEach((section) => {
      section.hidden = true;
    });
    $("key").focus();
  }

  async function signIn(key) {
    clearError();
    let me;
    try {
      me = await api("/v1/me", key);
    } catch (err) {
      sessionStorage.removeItem(STORE);
      showLogin();
      showError(err.status === 401 ? UNKNOWN_KEY : err.message);
      return;
    }
    sessionStorage.setItem(STORE, key);
    Object.assign(state, { key, me, loaded: {}, owners: null, accuracy: null });
    $("key").value = "";
    $("login").hidden = true;
    $("session").hidden = false;
    $("tabs").hidden = false;
    $("role").textContent = roleLabel(me);
    $("role").className = `role role-${me.role.split(":")[0]}`;
    $("provenance").textContent = "";
    const wanted = location.hash.replace(/^#/, "");
    showView(allowedViews().includes(wanted) ? wanted : allowedViews()[0]);
  }

  function signOut() {
    sessionStorage.removeItem(STORE);
    Object.assign(state, { key: null, me: null, view: null, loaded: {}, owners: null, accuracy: null, fan: null });
    for (const id of ["fan-chart", "fan-legend", "forecast-table", "region-table", "accuracy-chart",
      "accuracy-legend", "accuracy-table", "anomalies", "priorities-table", "deal-detail",
      "my-forecast", "owner", "forecast-sub", "anomalies-sub"]) {
      $(id).replaceChildren();
    }
    $("deal-detail").hidden = true;
    $("my-forecast-card").hidden = true;
    $("owner-control").hidden = true;
    clearError();
    showLogin();
  }

  function provenance(body) {
    $("provenance").textContent = `As of ${fmtInstant(body.as_of)} · ${body.version}`;
    $("provenance").title = `Published ${fmtInstant(body.published_at)}`;
  }

  /* ---------- views ---------- */

  const LOADERS = { forecast: loadForecast, ops: loadOps, deals: loadDeals };

  function showView(view) {
    const allowed = allowedViews();
    if (!allowed.includes(view)) view = allowed[0];
    state.view = view;
    document.querySelectorAll(".tab").forEach((tab) => {
      tab.hidden = !allowed.includes(tab.dataset.view);
      tab.setAttribute("aria-selected", String(tab.dataset.view === view));
    });
    document.querySelectorAll("section.view").forEach((section) => {
      section.hidden = section.dataset.view !== view;
    });
    if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
    if (!state.loaded[view]) {
      state.loaded[view] = true;
      LOADERS[view]().catch((err) => {
        state.loaded[view] = false;
        failed(err);
      });
    } else {
      redraw();
    }
  }

  // Charts follow their container's width: redraw the visible ones from the last answers.
  function redraw() {
    if (state.view === "forecast" && state.fan) renderFan(state.fan.months, state.fan.actuals);
    if (state.view === "ops") renderAccuracy();
  }

  /* ---------- tables ---------- */

  // columns: {label, num, title, value(row) -> string | Node, cls(row), col}
  function table(columns, rows, { rowAttrs, className } = {}) {
    const head = h("tr", null, columns.map((c) =>
      h("th", { class: c.num ? "num" : null, title: c.title, scope: "col" }, c.label)));
    const body = rows.map((row) =>
      h("tr", rowAttrs ? rowAttrs(row) : null, columns.map((c) => {
        const cls = [c.num ? "num" : null, c.cls ? c.cls(row) : null].filter(Boolean).join(" ");
        return h("td", { class: cls || null, "data-col": c.col, title: c.tip ? c.tip(row) : null },
          c.value(row));
      })));
    return h("table", { class: className || "grid" }, h("thead", null, head), h("tbody", null, body));
  }

  const money = (key, label, extra = {}) => ({
    label, num: true, col: key, value: (r) => fmtMoney(r[key]), tip: (r) => fmtFull(r[key]), ...extra,
  });

  function forecastColumns(first) {
    return [
      first,
      money("p10", "P10"),
      money("p50", "P50", { cls: () => "strong" }),
      money("p90", "P90"),
      money("booked_to_date", "Booked so far", { title: "Already booked in the period at the as-of" }),
      money("pipeline_mean", "Open pipeline", { title: "Expected from deals open at the as-of" }),
      money("newbiz_mean", "Not yet created", { title: "Expected from deals not yet created" }),
      money("target", "Target"),
      money("gap", "Gap", {
        title: "Target − P50: positive means short of target",
        cls: (r) => (r.gap === null ? null : r.gap > 0 ? "bad" : "good"),
      }),
      {
        label: "P(reach target)", num: true, col: "p_reach_target",
        value: (r) => fmtPct(r.p_reach_target),
        cls: (r) => {
          const p = r.p_reach_target;
          return p === null ? null : p >= 0.5 ? "good" : p >= 0.2 ? "warn" : "bad";
        },
      },
    ];
  }

  /* ---------- charts ---------- */

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((st) => st >= raw * 0.999);
    const ticks = [];
    for (let v = Math.floor(lo / step) * step; ; v += step) {
      ticks.push(Number(v.toPrecision(12)));
      if (v >= hi - step * 1e-9 || ticks.length > 50) break;
    }
    return ticks;
  }

  const r1 = (v) => Math.round(v * 10) / 10;
  const pathOf = (points) => "M" + points.map(([px, py]) => `${r1(px)},${r1(py)}`).join("L");

  // A month axis with a y scale: the shared frame of both charts.
  // Drawn at the container's pixel width, so text keeps its size whatever the screen.
  function frame({ container, xs, ticks, yFmt, height = 300, label }) {
    const width = Math.max(560, Math.round($(container).clientWidth || 960));
    const m = { top: 30, right: 16, bottom: 46, left: 58 };
    const step = (width - m.left - m.right) / xs.length;
    const lo = ticks[0];
    const hi = ticks[ticks.length - 1];
    const x = (i) => m.left + step * (i + 0.5);
    const y = (v) => m.top + (height - m.top - m.bottom) * (1 - (v - lo) / (hi - lo));
    const svg = s("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": label,
    });
    const grid = s("g", { class: "grid-lines" });
    for (const t of ticks) {
      grid.append(
        s("line", { class: t === 0 ? "axis-zero" : "gridline", x1: m.left, x2: width - m.right, y1: r1(y(t)), y2: r1(y(t)) }),
        s("text", { class: "tick y", x: m.left - 10, y: r1(y(t)) + 4, "text-anchor": "end" }, yFmt(t)),
      );
    }
    const every = Math.ceil(xs.length / 16);
    xs.forEach((iso, i) => {
      if (i % every !== 0 && i !== xs.length - 1) return;
      const { y: year, m: month } = ym(iso);
      grid.append(s("text", { class: "tick x", x: r1(x(i)), y: height - m.bottom + 18, "text-anchor": "middle" },
        MONTHS[month - 1]));
      if (i === 0 || month === 1) {
        grid.append(s("text", { class: "tick x year", x: r1(x(i)), y: height - m.bottom + 34, "text-anchor": "middle" },
          String(year)));
      }
    });
    svg.append(grid);
    return { svg, x, y, step, m, width, height };
  }

  function legendItem(cls, text) {
    return h("span", { class: "legend-item" }, h("span", { class: `swatch ${cls}` }), text);
  }

  function renderFan(months, actuals) {
    state.fan = { months, actuals };
    const first = months.length ? months[0].target_month : null;
    const past = actuals.filter((a) => first === null || a.month < first).slice(-12);
    const xs = [...past.map((a) => a.month), ...months.map((f) => f.target_month)];
    fill("fan-legend",
      legendItem("sw-actual", "Actual bookings"),
      legendItem("sw-p50", "P50 forecast"),
      legendItem("sw-band", "P10–P90 range"),
      legendItem("sw-target", "Target"));
    if (!xs.length) {
      fill("fan-chart", empty("Nothing to chart: the publication holds no monthly forecast."));
      return;
    }
    const values = [
      ...past.flatMap((a) => [a.bookings, a.target]),
      ...months.flatMap((f) => [f.p10, f.p50, f.p90, f.target]),
    ].filter((v) => Number.isFinite(v));
    const ticks = niceTicks(0, Math.max(1, ...values) * 1.04, 5);
    const { svg, x, y, step, m, width, height } = frame({
      container: "fan-chart", xs, ticks, yFmt: fmtAxis, label: "Monthly bookings: actuals, forecast range and targets",
    });
    const n = past.length;

    if (months.length) {
      const x0 = m.left + step * n;
      svg.append(
        s("rect", { class: "zone", x: r1(x0), y: m.top, width: r1(width - m.right - x0), height: height - m.top - m.bottom }),
        s("text", { class: "zone-label", x: r1(x0 + 8), y: m.top - 10 }, "Forecast"),
      );
      if (n) {
        svg.append(
          s("line", { class: "asof-line", x1: r1(x0), x2: r1(x0), y1: m.top - 4, y2: height - m.bottom }),
          s("text", { class: "zone-label", x: r1(x0 - 8), y: m.top - 10, "text-anchor": "end" }, "Actual"),
        );
      }
      let upper = months.map((f, j) => [x(n + j), y(f.p90)]);
      let lower = months.map((f, j) => [x(n + j), y(f.p10)]);
      if (months.length === 1) {
        const [px] = upper[0];
        upper = [[px - step * 0.3, upper[0][1]], [px + step * 0.3, upper[0][1]]];
        lower = [[px - step * 0.3, lower[0][1]], [px + step * 0.3, lower[0][1]]];
      }
      svg.append(s("path", { class: "band", d: pathOf([...upper, ...lower.reverse()]) + "Z" },
        s("title", null, "P10–P90: 8 in 10 outcomes fall in this range")));
    }

    // Targets under the lines: a short bar at each month's target.
    const targets = [
      ...past.map((a, i) => [i, a.target, a.month]),
      ...months.map((f, j) => [n + j, f.target, f.target_month]),
    ].filter(([, t]) => t !== null && t !== undefined);
    for (const [i, t, iso] of targets) {
      svg.append(s("line", {
        class: "target-marker", x1: r1(x(i) - step * 0.3), x2: r1(x(i) + step * 0.3), y1: r1(y(t)), y2: r1(y(t)),
      }, s("title", null, `${monthLabel(iso)} target: ${fmtMoney(t)}`)));
    }

    if (n) {
      svg.append(s("path", { class: "actual-line", d: pathOf(past.map((a, i) => [x(i), y(a.bookings)])) }));
    }
    if (n && months.length) {
      svg.append(s("path", {
        class: "connector", d: pathOf([[x(n - 1), y(past[n - 1].bookings)], [x(n), y(months[0].p50)]]),
      }));
    }
    if (months.length) {
      svg.append(s("path", { class: "p50-line", d: pathOf(months.map((f, j) => [x(n + j), y(f.p50)])) }));
    }
    past.forEach((a, i) => {
      const tip = `${monthLabel(a.month)}: booked ${fmtMoney(a.bookings)}` +
        (a.target !== null ? `, target ${fmtMoney(a.target)}` : "");
      svg.append(s("circle", { class: "actual-point", cx: r1(x(i)), cy: r1(y(a.bookings)), r: 3.5 },
        s("title", null, tip)));
    });
    months.forEach((f, j) => {
      const tip = `${monthLabel(f.target_month)} forecast: P50 ${fmtMoney(f.p50)} ` +
        `(P10 ${fmtMoney(f.p10)} – P90 ${fmtMoney(f.p90)})` +
        (f.target !== null ? `, target ${fmtMoney(f.target)}` : "");
      svg.append(s("circle", {
        class: "p50-point", cx: r1(x(n + j)), cy: r1(y(f.p50)), r: 5, "data-month": f.target_month,
      }, s("title", null, tip)));
    });
    fill("fan-chart", svg);
  }

  function renderLines(containerId, xs, series, { ticks, yFmt, label }) {
    const { svg, x, y } = frame({ container: containerId, xs, ticks, yFmt, label, height: 280 });
    const index = new Map(xs.map((iso, i) => [iso, i]));
    for (const line of series) {
      const points = line.points
        .filter((p) => Number.isFinite(p.v) && index.has(p.x))
        .map((p) => ({ ...p, i: index.get(p.x) }))
        .sort((a, b) => a.i - b.i);
      if (points.length > 1) {
        svg.append(s("path", { class: `series ${line.cls}`, d: pathOf(points.map((p) => [x(p.i), y(p.v)])) }));
      }
      for (const p of points) {
        svg.append(s("circle", { class: `series-point ${line.cls}`, cx: r1(x(p.i)), cy: r1(y(p.v)), r: 4 },
          s("title", null, p.title)));
      }
    }
    fill(containerId, svg);
  }

  /* ---------- forecast view ---------- */

  async function loadForecast() {
    loading("fan-chart", "forecast-table", "region-table");
    const [total, regions] = await Promise.all([api("/v1/forecasts"), api("/v1/forecasts?by=region")]);
    provenance(total);
    $("forecast-sub").textContent =
      `As of ${fmtInstant(total.as_of)} · publication ${total.version} · models ${total.model_version}`;
    const rows = total.forecasts.filter((f) => f.segment === "total");
    const months = rows.filter((f) => f.period === "month").sort(byMonth("target_month"));
    const quarters = rows.filter((f) => f.period === "quarter").sort(byMonth("target_month"));
    const actuals = total.actuals.filter((a) => a.segment === "total").sort(byMonth("month"));
    renderFan(months, actuals);

    const period = {
      label: "Period", col: "period",
      value: (r) => (r.period === "month" ? (r.horizon === 0 ? "This month" : `Month +${r.horizon}`) : "Quarter"),
    };
    const when = {
      label: "Month", col: "month",
      value: (r) => (r.period === "month" ? monthLabel(r.target_month) : quarterLabel(r.target_month)),
    };
    const rowAttrs = (r) => ({
      class: r.period === "quarter" ? "total-row" : null,
      "data-period": r.period, "data-horizon": r.horizon, "data-month": r.target_month,
    });
    fill("forecast-table", months.length || quarters.length
      ? table([period, when, ...forecastColumns(null).slice(1)], [...months, ...quarters], { rowAttrs })
      : empty("The publication holds no forecast."));

    const regional = regions.forecasts
      .filter((f) => f.period === "quarter")
      .sort((a, b) => byMonth("target_month")(a, b) || b.p50 - a.p50);
    const region = { label: "Region", col: "segment", value: (r) => r.segment };
    const quarter = { label: "Quarter", col: "quarter", value: (r) => quarterLabel(r.target_month) };
    const all = quarters.map((q) => ({ ...q, segment: "All regions" }));
    fill("region-table", regional.length
      ? table([region, ...forecastColumns(quarter)], [...regional, ...all], {
        rowAttrs: (r) => ({ class: r.segment === "All regions" ? "total-row" : null, "data-segment": r.segment }),
      })
      : empty("No regional forecast is published."));
  }

  /* ---------- ops view ---------- */

  async function loadOps() {
    loading("accuracy-chart", "accuracy-table", "anomalies");
    const results = await Promise.allSettled([loadAccuracy(), loadAnomalies()]);
    const failure = results.find((r) => r.status === "rejected");
    if (failure) throw failure.reason;
  }

  async function loadAccuracy() {
    const token = ++state.tokens.accuracy;
    const horizon = $("horizon").value;
    const body = await api(`/v1/accuracy?horizon=${encodeURIComponent(horizon)}`);
    if (token !== state.tokens.accuracy) return;
    provenance(body);
    state.accuracy = body;
    renderAccuracy();
  }

  function renderAccuracy() {
    const body = state.accuracy;
    if (!body) return;
    const metric = $("metric").value;
    const metricLabel = metric === "wape" ? "WAPE" : "Accuracy";
    const rows = body.by_month.filter((r) => r.period === "month" && r.segment === null);
    fill("accuracy-legend", METHODS.map((mth) => legendItem(`sw-line ${mth.cls}`, mth.label)));
    if (!rows.length) {
      fill("accuracy-chart", empty(
        "No forecast has had its month close yet: accuracy appears here once a forecasted month is over."));
    } else {
      const xs = [...new Set(rows.map((r) => r.target_month))].sort();
      const values = rows.map((r) => r[metric]).filter((v) => Number.isFinite(v));
      const lo = metric === "wape" ? 0 : Math.min(0, ...values);
      const hi = metric === "wape" ? Math.max(0.1, ...values) : Math.max(1, ...values);
      const series = METHODS.map((mth) => ({
        cls: mth.cls,
        points: rows.filter((r) => r.method === mth.id).map((r) => ({
          x: r.target_month, v: r[metric],
          title: `${monthLabel(r.target_month)} · ${mth.label}: ${metricLabel.toLowerCase()} ${fmtPct(r[metric], 1)}`,
        })),
      }));
      renderLines("accuracy-chart", xs, series, {
        ticks: niceTicks(lo, hi, 5), yFmt: (v) => fmtPct(v),
        label: `${metricLabel} per closed month, dealcast against the stage-weighted pipeline`,
      });
    }
    const order = (r) => (r.period === "month" ? 0 : 1) * 10 + METHODS.findIndex((mth) => mth.id === r.method);
    const summary = body.summary.filter((r) => r.segment === null).sort((a, b) => order(a) - order(b));
    const methodName = (id) => (METHODS.find((mth) => mth.id === id) || { label: id }).label;
    fill("accuracy-table", summary.length
      ? table([
        { label: "Period", col: "period", value: (r) => (r.period === "month" ? "Month" : "Quarter") },
        { label: "Method", col: "method", value: (r) => methodName(r.method), cls: (r) => (r.method === "dealcast" ? "strong" : null) },
        { label: "Accuracy", num: true, col: "accuracy", value: (r) => fmtPct(r.accuracy, 1), title: "1 − WAPE" },
        { label: "WAPE", num: true, col: "wape", value: (r) => fmtPct(r.wape, 1), title: "Weighted absolute percentage error" },
        { label: "Bias", num: true, col: "bias", value: (r) => fmtSignedPct(r.bias), title: "Forecast above (+) or below (−) actual" },
        { label: "P10–P90 coverage", num: true, col: "coverage", value: (r) => fmtPct(r.coverage), title: "Share of actuals inside the P10–P90 range (80% is ideal)" },
        { label: "Periods scored", num: true, col: "n", value: (r) => String(r.n) },
      ], summary, { rowAttrs: (r) => ({ "data-method": r.method, "data-period": r.period }) })
      : empty("No forecast has had its month close yet, so there is no accuracy to report."));
  }

  async function loadAnomalies() {
    // Deal risk flags live with each deal (deals view); this table is about KPIs, reps, data.
    const body = await api("/v1/anomalies?kind=kpi&kind=rep&kind=data_quality");
    provenance(body);
    $("anomalies-sub").textContent = body.detectors.length
      ? `Detectors that ran: ${body.detectors.join(", ")}.` : "";
    if (!body.detectors.length) {
      fill("anomalies", empty("No anomaly detector has run yet for this publication."));
      return;
    }
    if (!body.anomalies.length) {
      fill("anomalies", empty("The detectors ran and found no anomaly."));
      return;
    }
    fill("anomalies", table([
      { label: "Severity", col: "severity", value: (r) => h("span", { class: `badge sev-${r.severity}` }, r.severity) },
      { label: "Kind", col: "kind", value: (r) => r.kind.replace(/_/g, " ") },
      { label: "Metric", col: "metric", value: (r) => r.metric.replace(/_/g, " ") },
      { label: "Segment", col: "segment", value: (r) => (r.by ? `${r.by}: ${r.segment}` : r.segment) },
      {
        label: "Period", col: "period",
        value: (r) => (r.period_end && r.period_end !== r.period_start
          ? `${fmtDate(r.period_start)} – ${fmtDate(r.period_end)}` : fmtDate(r.period_start)),
      },
      { label: "Observed", num: true, col: "observed", value: (r) => fmtValue(r.observed) },
      {
        label: "Expected", num: true, col: "expected", value: (r) => fmtValue(r.expected),
        tip: (r) => (r.band_low !== null && r.band_high !== null ? `normal range ${fmtValue(r.band_low)} – ${fmtValue(r.band_high)}` : null),
      },
      {
        label: "Summary", col: "summary", value: (r) => r.summary,
        tip: (r) => r.drilldown.map((d) => `${d.what}${d.share !== null ? ` (${fmtPct(d.share)})` : ""}: ${d.detail}`).join("\n") || null,
      },
    ], body.anomalies, { rowAttrs: (r) => ({ "data-anomaly-id": r.anomaly_id }) }));
  }

  /* ---------- deals view ---------- */

  async function loadDeals() {
    loading("priorities-table");
    $("deal-detail").hidden = true;
    if (isStaff()) {
      $("owner-control").hidden = false;
      if (!state.owners) {
        const body = await api("/v1/forecasts?by=owner_id");
        state.owners = [...new Set(body.forecasts.map((f) => f.segment))].sort();
        const select = $("owner");
        const previous = select.options.length ? select.value : null;
        select.replaceChildren(
          ...state.owners.map((o) => h("option", { value: o }, o)),
          h("option", { value: "" }, "All reps (ranked together)"),
        );
        const keep = previous === "" || state.owners.includes(previous);
        select.value = keep ? previous : state.owners[0] || "";
      }
    } else {
      $("my-forecast-card").hidden = false;
      loadMyForecast().catch(failed);
    }
    await loadPriorities();
  }

  async function loadMyForecast() {
    loading("my-forecast");
    const body = await api("/v1/forecasts");
    const rows = body.forecasts
      .filter((f) => f.segment === state.me.owner_id)
      .sort((a, b) => (a.period === b.period ? byMonth("target_month")(a, b) : a.period === "month" ? -1 : 1));
    if (!rows.length) {
      fill("my-forecast", empty("No forecast is published for you."));
      return;
    }
    fill("my-forecast", rows.map((f) => h("div", { class: "stat", "data-period": f.period, "data-month": f.target_month },
      h("div", { class: "stat-label" }, f.period === "month" ? monthLabel(f.target_month) : `${quarterLabel(f.target_month)} (quarter)`),
      h("div", { class: "stat-value", title: fmtFull(f.p50) }, fmtMoney(f.p50)),
      h("div", { class: "stat-sub" }, `P10 ${fmtMoney(f.p10)} – P90 ${fmtMoney(f.p90)}`),
      h("div", { class: "stat-sub" }, f.target === null
        ? "no target"
        : `target ${fmtMoney(f.target)} · ${fmtPct(f.p_reach_target)} chance to reach`))));
  }

  function flagBadges(flags) {
    if (!flags.length) return h("span", { class: "muted" }, "—");
    return h("div", { class: "badges" }, flags.map((f) => h("span", {
      class: `badge flag ${f.severity >= 3 ? "sev-high" : f.severity >= 1.5 ? "sev-medium" : "sev-low"}`,
      title: f.evidence, "data-flag": f.flag,
    }, flagLabel(f.flag))));
  }

  function reasonList(reasons) {
    if (!reasons.length) return h("span", { class: "muted" }, "—");
    return h("ul", { class: "reasons" }, reasons.map((r) => h("li", null,
      h("span", { class: `effect ${r.effect >= 0 ? "good" : "bad"}` }, fmtPoints(r.effect)),
      h("span", null, r.text))));
  }

  async function loadPriorities() {
    const token = ++state.tokens.priorities;
    const owner = isStaff() ? $("owner").value : "";
    loading("priorities-table");
    $("deal-detail").hidden = true;
    const query = owner ? `&owner=${encodeURIComponent(owner)}` : "";
    const body = await api(`/v1/deals/priorities?limit=50${query}`);
    if (token !== state.tokens.priorities) return;
    provenance(body);
    const who = body.owner ? body.owner : "all reps";
    $("priorities-sub").textContent = `${body.total} open deals of ${who}` +
      (body.total > body.deals.length ? `, the first ${body.deals.length} shown` : "") +
      ". The ones to work first are on top; click a deal for its stage history.";
    if (!body.deals.length) {
      fill("priorities-table", empty("No open deal."));
      return;
    }
    const columns = [
      { label: "#", num: true, col: "rank", value: (d) => String(d.rank) },
      { label: "Deal", col: "deal", cls: () => "nowrap", value: (d) => [h("div", { class: "strong" }, d.deal_id), h("div", { class: "muted small" }, d.product || "")] },
      { label: "Account", col: "account", value: (d) => d.account_id || "—", cls: () => "nowrap" },
      !body.owner ? { label: "Rep", col: "owner", value: (d) => d.owner_id } : null,
      { label: "Stage", col: "stage", value: (d) => h("span", { class: "stage" }, d.stage) },
      money("amount", "Amount"),
      { label: "P(won)", num: true, col: "p_won", value: (d) => fmtPct(d.p_won) },
      money("expected_value", "Expected value", { title: "P(won) × amount" }),
      { label: "Likely close", col: "likely_close_month", value: (d) => monthLabel(d.likely_close_month), cls: () => "nowrap" },
      { label: "P(slip)", num: true, col: "p_slip", value: (d) => fmtPct(d.p_slip), title: "P(not closing this month | won)", cls: (d) => (d.p_slip >= 0.5 ? "warn" : null) },
      { label: "Risk flags", col: "flags", value: (d) => flagBadges(d.flags) },
      { label: "Top reasons", col: "reasons", value: (d) => reasonList(d.reasons) },
    ].filter(Boolean);
    const grid = table(columns, body.deals, {
      className: "grid deals",
      rowAttrs: (d) => ({ "data-deal-id": d.deal_id, tabindex: 0, class: "clickable", title: "Show the deal's stage history" }),
    });
    grid.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-deal-id]");
      if (row) selectDeal(row);
    });
    grid.addEventListener("keydown", (event) => {
      const row = event.target.closest("tr[data-deal-id]");
      if (row && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        selectDeal(row);
      }
    });
    fill("priorities-table", grid);
  }

  function selectDeal(row) {
    row.closest("tbody").querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
    row.classList.add("selected");
    loadDeal(row.dataset.dealId).catch(failed);
  }

  async function loadDeal(id) {
    const token = ++state.tokens.deal;
    const card = $("deal-detail");
    card.hidden = false;
    fill("deal-detail", empty(`Loading ${id}…`));
    const body = await api(`/v1/deals/${encodeURIComponent(id)}`);
    if (token !== state.tokens.deal) return;
    renderDeal(body);
    card.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function renderDeal(body) {
    const d = body.deal;
    const fact = (label, value) => h("div", { class: "fact" }, h("dt", null, label), h("dd", null, value));
    const where = [d.owner_id, d.region, d.team, d.segment].filter(Boolean).join(" · ");
    const history = [...body.stage_history].sort(byMonth("changed_at"));
    const asOf = Date.parse(body.as_of);
    const daysIn = (i) => {
      const start = Date.parse(history[i].changed_at);
      const end = i + 1 < history.length ? Date.parse(history[i + 1].changed_at) : asOf;
      const days = Math.max(0, Math.round((end - start) / 86400000));
      return `${days} day${days === 1 ? "" : "s"}${i + 1 === history.length ? " (so far)" : ""}`;
    };
    fill("deal-detail",
      h("div", { class: "card-head" },
        h("div", null,
          h("h2", null, `${d.deal_id}`, h("span", { class: "muted title-sub" }, ` ${d.account_id || ""}`)),
          h("p", { class: "muted" }, where)),
        h("button", { type: "button", class: "btn ghost", onclick: () => { $("deal-detail").hidden = true; } }, "Close")),
      h("dl", { class: "facts" },
        fact("Stage", d.stage),
        fact("Amount", fmtMoney(d.amount)),
        fact("P(won)", fmtPct(d.p_won)),
        fact("P(this month)", fmtPct(d.p_this_month)),
        fact("P(slip)", fmtPct(d.p_slip)),
        fact("Expected value", fmtMoney(d.expected_value)),
        fact("Expected this quarter", fmtMoney(d.expected_this_period)),
        fact("Likely close", monthLabel(d.likely_close_month)),
        fact("Expected close (CRM)", fmtDate(d.expected_close_date)),
        fact("Forecast category", d.forecast_category || "—"),
        fact("Days in stage", d.days_in_stage === null ? "—" : String(Math.round(d.days_in_stage))),
        fact("Product", d.product || "—")),
      h("div", { class: "two-col" },
        h("div", null, h("h3", null, "Why this probability"), reasonList(d.reasons)),
        h("div", null, h("h3", null, "Risk flags"), d.flags.length
          ? h("ul", { class: "flag-list" }, d.flags.map((f) => h("li", null, flagBadges([f]), " ", f.evidence)))
          : h("p", { class: "muted" }, "No risk flag."))),
      h("h3", null, "Stage history"),
      history.length
        ? table([
          { label: "Changed", col: "changed_at", value: (c) => fmtInstant(c.changed_at) },
          { label: "Stage", col: "stage", value: (c) => h("span", { class: "stage" }, c.stage) },
          { label: "Time in stage", num: true, col: "time", value: (c) => daysIn(history.indexOf(c)) },
          money("amount", "Amount"),
          { label: "Expected close", col: "expected_close_date", value: (c) => fmtDate(c.expected_close_date) },
        ], history, { rowAttrs: () => ({ "data-testid": "stage-change" }) })
        : empty("No stage change is recorded for this deal."));
  }

  /* ---------- wiring ---------- */

  function init() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (key) signIn(key);
    });
    $("sign-out").addEventListener("click", signOut);
    $("refresh").addEventListener("click", () => {
      clearError();
      Object.assign(state, { loaded: {}, owners: null, accuracy: null });
      showView(state.view);
    });
    document.querySelectorAll(".tab").forEach((tab) => {
      tab.addEventListener("click", () => showView(tab.dataset.view));
    });
    window.addEventListener("hashchange", () => {
      if (state.me) showView(location.hash.replace(/^#/, ""));
    });
    $("horizon").addEventListener("change", () => {
      loading("accuracy-chart", "accuracy-table");
      loadAccuracy().catch(failed);
    });
    $("metric").addEventListener("change", renderAccuracy);
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (state.me) redraw();
      }, 150);
    });
    $("owner").addEventListener("change", () => loadPriorities().catch(failed));

    const key = sessionStorage.getItem(STORE);
    if (key) signIn(key);
    else showLogin();
  }

  init();
})();
