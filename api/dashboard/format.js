/* Numbers, times and words as the page shows them ("—" for a missing number). */

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);
export const num = (v) => (isNum(v) ? v : typeof v === "string" && v.trim() !== "" && Number.isFinite(+v) ? +v : null);

export function fmtNum(v, digits = 4) {
  if (!isNum(v)) return "—";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 1) return v.toFixed(Math.max(0, digits - 1 - Math.floor(Math.log10(a))));
  if (a === 0) return "0";
  return v.toPrecision(Math.max(1, digits - 1));
}
export const pct = (v) => (isNum(v) ? `${(v * 100).toFixed(1).replace(/\.0$/, "")}%` : "—");
export function points(d) {
  if (!isNum(d)) return "—";
  const p = (d * 100).toFixed(1).replace(/\.0$/, "");
  return `${d > 0 ? "+" : ""}${p} pts`;
}
export function fmtTime(unix) {
  if (!isNum(unix)) return "—";
  return new Date(unix * 1000).toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}
export function fmtDuration(seconds) {
  if (!isNum(seconds) || seconds < 0) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
}
export const nowUnix = () => Date.now() / 1000;
export const humanize = (id) => String(id || "").replace(/_/g, " ");
export function listWords(items, max = 12) {
  const shown = items.slice(0, max).map(String);
  const more = items.length - shown.length;
  if (shown.length === 0) return "";
  if (more > 0) return `${shown.join(", ")} and ${more} more`;
  if (shown.length === 1) return shown[0];
  return `${shown.slice(0, -1).join(", ")} and ${shown[shown.length - 1]}`;
}

export const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

export function fmtBytes(n) {
  if (!isNum(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
