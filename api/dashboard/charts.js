/* The training charts (per-step metrics as SVG line charts) and the training summary tiles. */

import { $, clear, h, replace, svg } from "./dom.js";
import { cap, fmtNum, humanize, isNum, num, pct } from "./format.js";
import { safetyOf } from "./report.js";

const MAX_POINT_MARKS = 400; // above this, charts draw the line only

const CHARTS = [
  { key: "train_loss", title: "Train loss", series: "training batch",
    note: "SFT loss on the batch, and on the validation file at checkpoint steps (a job with one)",
    extra: [{ key: "valid_loss", label: "validation", joined: true }] },
  { key: "kl", title: "KL to the reference", note: "KL(P_ref ‖ P_θ) per token" },
  { key: "kl_weight", title: "KL weight", domain: [0, 1], series: "all examples",
    note: "w_kl = clamp((risk − 2) / 3, 0.1, 0.9) of each example: the step's mean, and the mean of its flagged and of its unflagged examples",
    extra: [{ key: "kl_weight_flagged", label: "flagged" }, { key: "kl_weight_unflagged", label: "unflagged" }] },
  { key: "risk", title: "Batch risk", note: "mean risk score of the step's examples, 1–5", domain: [1, 5] },
];

/** The empty chart figures of a job page, one per metric (drawn by renderCharts). */
export function chartFigures() {
  return CHARTS.map((c) => h("figure", { class: "chart", id: `chart-${c.key}`, "data-metric": c.key },
    h("figcaption", null, h("span", { class: "chart-title" }, c.title), " ",
      h("span", { class: "chart-latest", id: `latest-${c.key}` })),
    svg("svg", { class: "plot", viewBox: "0 0 320 170", role: "img", "aria-label": c.title }),
    c.extra ? h("p", { class: "chart-legend small" }, h("span", { "data-series": c.key }, c.series),
      c.extra.map((e) => h("span", { "data-series": e.key }, e.label))) : null,
    h("p", { class: "chart-note muted small" }, c.note)));
}

export function niceTicks(lo, hi, count) {
  const span = hi - lo;
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const stepSize = (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / stepSize) * stepSize; v <= hi + stepSize * 1e-9; v += stepSize) ticks.push(+v.toPrecision(12));
  return ticks;
}

/** A chart of ``series`` (``[[step, value], …]``) and, drawn beside it, each of ``extras``
 * (``[{key, label, points}]``, e.g. the flagged / unflagged KL weights; a ``null`` value, a
 * step with no such examples, breaks that line; an extra measured only on some steps, like the
 * validation loss, comes without its ``null``s and so is one line). */
function drawChart(figure, spec, series, extras = []) {
  const plot = figure.querySelector("svg.plot");
  const W = 320; const H = 170;
  const m = { l: 38, r: 8, t: 8, b: 20 };
  clear(plot);
  plot.setAttribute("data-points", String(series.length));
  if (series.length === 0) {
    plot.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no steps yet"));
    return;
  }
  const xs = series.map((p) => p[0]);
  const ys = series.concat(...extras.map((e) => e.points)).map((p) => p[1]).filter((y) => y !== null);
  let x0 = Math.min(...xs); let x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  let [y0, y1] = spec.domain || [Math.min(...ys), Math.max(...ys)];
  if (spec.domain) { y0 = Math.min(y0, ...ys); y1 = Math.max(y1, ...ys); }
  if (y1 - y0 < 1e-12) { const pad = Math.abs(y1) * 0.1 || 1; y0 -= pad; y1 += pad; }
  else if (!spec.domain) { const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad; if (Math.min(...ys) >= 0 && y0 < 0) y0 = 0; }
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);

  const grid = svg("g", { class: "grid" });
  const yt = niceTicks(y0, y1, 4);
  const decimals = yt.length > 1 ? Math.max(0, Math.min(6, -Math.floor(Math.log10(yt[1] - yt[0] + 1e-15)))) : 2;
  for (const t of yt) {
    grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t) }));
    grid.append(svg("text", { x: m.l - 5, y: Y(t) + 3.5, "text-anchor": "end" }, t.toFixed(decimals)));
  }
  const xt = niceTicks(x0, x1, 5).filter((t) => Number.isInteger(t));
  for (const t of xt) grid.append(svg("text", { x: X(t), y: H - 5, "text-anchor": "middle" }, String(t)));
  plot.append(grid);
  if (spec.key === "risk") {
    // Below risk 2 the KL weight sits at its floor; above it, regularization grows.
    plot.append(svg("line", { class: "guide", x1: m.l, x2: W - m.r, y1: Y(2), y2: Y(2) },
      svg("title", null, "risk 2: above this the KL weight rises above its floor")));
  }
  const pathOf = (points) => points.map((p, i) => p[1] === null ? ""
    : `${i && points[i - 1][1] !== null ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ").trim();
  for (const e of extras) {
    const present = e.points.filter((p) => p[1] !== null);
    if (present.length === 0) continue;
    plot.append(svg("path", { class: "line extra", "data-series": e.key, d: pathOf(e.points) }));
    const marks = svg("g", { class: "marks" });
    for (const [x, y] of present) {
      marks.append(svg("circle", { class: "pt-extra", "data-series": e.key, cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: 1.6, "data-step": x },
        svg("title", null, `step ${x}, ${e.label}: ${fmtNum(y, 5)}`)));
    }
    if (present.length <= MAX_POINT_MARKS) plot.append(marks);
  }
  plot.append(svg("path", { class: "line", d: pathOf(series) }));
  if (series.length <= MAX_POINT_MARKS) {
    const marks = svg("g", { class: "marks" });
    for (const [x, y] of series) {
      marks.append(svg("circle", { class: "pt", cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: series.length > 120 ? 1.2 : 2.2, "data-step": x },
        svg("title", null, `step ${x}: ${fmtNum(y, 5)}`)));
    }
    plot.append(marks);
  }
}

export function renderCharts(st) {
  const steps = [...st.metrics.keys()].sort((a, b) => a - b);
  for (const spec of CHARTS) {
    const fig = $(`chart-${spec.key}`);
    if (!fig) continue;
    const pointsOf = (key) => steps.map((s) => [s, num(st.metrics.get(s)[key])]);
    const series = pointsOf(spec.key).filter((p) => p[1] !== null);
    const extras = (spec.extra || []).map((e) => {
      const points = pointsOf(e.key);
      return { ...e, points: e.joined ? points.filter((p) => p[1] !== null) : points };
    });
    drawChart(fig, spec, series, extras);
    const last = series[series.length - 1];
    $(`latest-${spec.key}`).textContent = last ? `${fmtNum(last[1], 4)} at step ${last[0]}` : "";
  }
  const summary = $("train-summary");
  if (summary) {
    const last = steps[steps.length - 1];
    if (steps.length === 0) summary.textContent = "Per-step metrics appear here while the job trains.";
    else {
      const total = num(st.metrics.get(last).total_steps);
      summary.textContent = `step ${last}${total ? ` of ${total}` : ""} · ${steps.length} points logged`;
    }
  }
}

export function renderTrainingReport(st) {
  const tr = safetyOf(st).training;
  const el = $("training-report");
  if (!tr || typeof tr !== "object") { clear(el); return; }
  const labels = {
    steps: ["Steps", fmtNum], mean_risk: ["Mean batch risk", fmtNum], regularized_share: ["Steps regularized", pct],
    final_kl: ["Final KL to the reference", fmtNum], mean_loss: ["Mean train loss", fmtNum],
    trained_tokens: ["Trained tokens", fmtNum],
    mean_kl_weight_flagged: ["Mean KL weight, flagged examples", fmtNum],
    mean_kl_weight_unflagged: ["Mean KL weight, unflagged examples", fmtNum],
  };
  const tiles = [];
  for (const [k, v] of Object.entries(tr)) {
    if (!(isNum(v) || typeof v === "boolean")) continue;
    const [label, f] = labels[k] || [cap(humanize(k)), fmtNum];
    tiles.push(h("div", { class: "tile" }, h("div", { class: "tile-value" }, typeof v === "boolean" ? (v ? "yes" : "no") : f(v)), h("div", { class: "tile-label" }, label)));
  }
  replace(el, tiles.length ? h("div", { class: "tiles" }, tiles) : null);
}
