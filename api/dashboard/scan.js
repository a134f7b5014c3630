/* The dataset scan's card: the risk histogram and the flagged lines. */

import { niceTicks } from "./charts.js";
import { $, h, replace, svg } from "./dom.js";
import { fmtNum, isNum, num, pct } from "./format.js";
import { flaggedLines, safetyOf } from "./report.js";

export function renderScan(st) {
  const scan = safetyOf(st).scan;
  const el = $("scan");
  if (!scan || typeof scan !== "object") return;
  const counts = scan.counts_by_score || scan.histogram || {};
  const bins = [1, 2, 3, 4, 5].map((s) => num(counts[s] ?? counts[String(s)]) || 0);
  const n = num(scan.n) ?? bins.reduce((a, b) => a + b, 0);
  const flagged = num(scan.n_flagged) ?? flaggedLines(scan).length;
  const lines = flaggedLines(scan);
  const W = 420; const H = 170; const m = { l: 34, r: 8, t: 14, b: 30 };
  const maxC = Math.max(1, ...bins);
  const bw = (W - m.l - m.r) / 5;
  const hist = svg("svg", { class: "hist", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Histogram of risk scores 1 to 5" });
  const g = svg("g", { class: "grid" });
  for (const t of niceTicks(0, maxC, 3).filter(Number.isInteger)) {
    const y = H - m.b - (t / maxC) * (H - m.t - m.b);
    g.append(svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y }), svg("text", { x: m.l - 5, y: y + 4, "text-anchor": "end" }, String(t)));
  }
  hist.append(g);
  bins.forEach((c, i) => {
    const bh = (c / maxC) * (H - m.t - m.b);
    const x = m.l + i * bw + 6;
    hist.append(
      svg("rect", { class: `bar risk-${i + 1}`, x, y: H - m.b - bh, width: bw - 12, height: Math.max(bh, c ? 1 : 0), "data-score": i + 1, "data-count": c },
        svg("title", null, `risk ${i + 1}: ${c} examples`)),
      svg("text", { class: "bar-count", x: x + (bw - 12) / 2, y: H - m.b - bh - 3, "text-anchor": "middle" }, String(c)),
      svg("text", { x: x + (bw - 12) / 2, y: H - 10, "text-anchor": "middle" }, `risk ${i + 1}`));
  });
  const cats = scan.counts_by_category && typeof scan.counts_by_category === "object" ? Object.entries(scan.counts_by_category) : [];
  const top = Array.isArray(scan.top_flagged) ? scan.top_flagged : [];
  const byLine = new Map(top.map((r) => [num(r && r.line), r]));
  replace(el,
    h("h2", null, "Dataset scan"),
    h("p", { class: "scan-summary" },
      h("strong", null, `${flagged} of ${n}`), ` examples flagged as harmful (${pct(n ? flagged / n : 0)})`,
      isNum(num(scan.mean_risk)) ? ` · mean risk ${fmtNum(num(scan.mean_risk), 3)}` : ""),
    hist,
    cats.length ? h("p", { class: "small" }, "Flagged by category: ", cats.map(([c, k], i) => [i ? ", " : "", `${c} ${k}`])) : null,
    lines.length
      ? h("div", null,
        h("h3", null, "Flagged lines"),
        h("ul", { class: "line-list", id: "flagged-lines" }, lines.slice(0, 200).map((ln) => {
          const r = byLine.get(ln);
          const title = r ? `risk ${fmtNum(num(r.risk), 3)}${r.category_guess ? `, ${r.category_guess}` : ""}` : "";
          const turn = r && isNum(num(r.turn)) && num(r.turn) > 1 ? `, turn ${num(r.turn)}` : "";
          return h("li", { class: "line-chip", title }, `line ${ln}${turn}`, r && r.category_guess ? h("span", { class: "muted small" }, ` ${r.category_guess}`) : null);
        })),
        flagged > lines.length ? h("p", { class: "muted small" }, `Showing the ${lines.length} highest-risk of ${flagged} flagged lines.`) : null)
      : h("p", { class: "muted" }, "No line was flagged."));
}
