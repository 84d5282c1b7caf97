// A self-contained HTML report: Chart.js is inlined, so the file opens anywhere offline.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { StreamScore } from '../tta/run-stream.ts';
import { packageRoot } from '../util/package-root.ts';

function chartJsSource(): string {
  const require = createRequire(import.meta.url);
  const main = require.resolve('chart.js'); // .../chart.js/dist/chart.cjs
  return readFileSync(join(dirname(main), 'chart.umd.min.js'), 'utf8');
}

const escape = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** Moving average over `w` batches, so the curve shows trends rather than batch noise. */
function smooth(xs: number[], w: number): number[] {
  const out: number[] = [];
  let s = 0;
  for (let i = 0; i < xs.length; i++) {
    s += xs[i]!;
    if (i >= w) s -= xs[i - w]!;
    out.push(s / Math.min(i + 1, w));
  }
  return out;
}

/** What produced a report, so that a reader can rerun it and knows which versions gave these numbers. */
export interface ReportProvenance {
  /** The exact command line (process.argv), each argument as the shell would need it quoted. */
  command: string;
  refit: string;
  node: string;
  onnxruntime: string;
}

/** A POSIX-shell quoting of one argument: bare when it is safe, else in single quotes. */
const shellQuote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

const versionOf = (packageJson: string) => (JSON.parse(readFileSync(packageJson, 'utf8')) as { version?: string }).version ?? 'unknown';

/** The command line and versions of this process: refit's and onnxruntime-node's from their package.json. */
export function runProvenance(argv: readonly string[] = process.argv): ReportProvenance {
  const require = createRequire(import.meta.url);
  let onnxruntime = 'unknown';
  try { onnxruntime = versionOf(require.resolve('onnxruntime-node/package.json')); } catch { /* a report is still worth writing */ }
  return { command: argv.map(shellQuote).join(' '), refit: versionOf(join(packageRoot(), 'package.json')), node: process.versions.node, onnxruntime };
}

export interface ReportInput {
  title: string;
  subtitle: string;
  scores: StreamScore[];
  /** Where each domain starts, in batches, for the stream chart's labels. */
  boundaries: { batch: number; domain: string }[];
  /** The command line and versions, shown under the title (runProvenance() gives this process's). */
  provenance?: ReportProvenance;
}

export function renderReport(r: ReportInput): string {
  const palette = ['#6b7280', '#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563'];
  const domains = r.scores[0]?.domains.map((d) => d.domain) ?? [];
  const n = r.scores[0]?.batchErrors.length ?? 0;
  const window = Math.max(1, Math.round(n / 60));
  const data = {
    labels: Array.from({ length: n }, (_, i) => i + 1),
    stream: r.scores.map((s, k) => ({ label: s.method, data: smooth(s.batchErrors, window).map((e) => +(100 * e).toFixed(2)), borderColor: palette[k % palette.length], pointRadius: 0, borderWidth: 1.5 })),
    bars: r.scores.map((s, k) => ({ label: s.method, data: s.domains.map((d) => +(100 * d.error).toFixed(2)), backgroundColor: palette[k % palette.length] })),
    domains,
    boundaries: r.boundaries,
    // The continual controller's level per batch, with its drift alarms as points.
    // `drifts` holds 0-based batch indices (runStream's batchErrors.length when the alarm came),
    // so the alarm of batch i is drawn on point i, at the level that batch ran at.
    levels: r.scores.filter((s) => s.levels).map((s) => ({ label: `${s.method} level`, data: s.levels!, alarms: s.levels!.map((lv, i) => ((s.drifts ?? []).includes(i) ? lv : null)) })),
  };
  const levelChart = data.levels.length ? `<h2>Controller level over the stream (0 output correction · 1 norm statistics · 2 fast updates · 3 consolidation; ● drift alarm)</h2>
<div class="chart" style="height:200px"><canvas id="levels"></canvas></div>` : '';
  const rows = r.scores.map((s) => `<tr><td>${escape(s.method)}</td>${s.domains.map((d) => `<td>${(100 * d.error).toFixed(1)}</td>`).join('')}<td><b>${(100 * s.meanError).toFixed(1)}</b></td></tr>`).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(r.title)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#111;max-width:1200px}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin-bottom:16px}
.prov{color:#555;font-size:12px;margin:-8px 0 16px;overflow-wrap:anywhere} .prov code{color:#111}
table{border-collapse:collapse;font-size:12px;margin:16px 0} td,th{border:1px solid #ddd;padding:3px 6px;text-align:right} td:first-child,th:first-child{text-align:left}
.chart{position:relative;height:320px;margin:12px 0 28px}
</style></head><body>
<h1>${escape(r.title)}</h1><div class="sub">${escape(r.subtitle)}</div>
${r.provenance ? `<div class="prov" id="provenance"><code>${escape(r.provenance.command)}</code><br>refit ${escape(r.provenance.refit)} · Node ${escape(r.provenance.node)} · onnxruntime-node ${escape(r.provenance.onnxruntime)}</div>` : ''}
<h2>Error over the stream (%, moving average over ${window} batches)</h2>
<div class="chart"><canvas id="stream"></canvas></div>
${levelChart}
<h2>Error per domain (%)</h2>
<div class="chart"><canvas id="bars"></canvas></div>
<table><tr><th>method</th>${domains.map((d) => `<th>${escape(d)}</th>`).join('')}<th>mean</th></tr>
${rows}</table>
<script>${chartJsSource()}</script>
<script>
const D = ${JSON.stringify(data)};
const startOf = new Map(D.boundaries.map(b => [b.batch + 1, b.domain]));
new Chart(document.getElementById('stream'), { type: 'line', data: { labels: D.labels, datasets: D.stream },
  options: { animation: false, maintainAspectRatio: false, interaction: { mode: 'index', intersect: false },
    scales: { y: { title: { display: true, text: 'error %' }, min: 0 },
      x: { title: { display: true, text: 'batch (domain starts labelled)' }, ticks: { autoSkip: false, maxRotation: 60, callback: (v, i) => startOf.get(i + 1) ?? '' } } } } });
if (D.levels.length) new Chart(document.getElementById('levels'), { type: 'line',
  data: { labels: D.labels, datasets: D.levels.flatMap((l, k) => [
    { label: l.label, data: l.data, stepped: true, borderColor: '#111827', pointRadius: 0, borderWidth: 1.5 },
    { label: 'drift alarm', data: l.alarms, showLine: false, pointRadius: 4, borderColor: '#dc2626', backgroundColor: '#dc2626' }]) },
  options: { animation: false, maintainAspectRatio: false, scales: { y: { min: 0, max: 4, ticks: { stepSize: 1 }, title: { display: true, text: 'level' } },
    x: { ticks: { autoSkip: false, maxRotation: 60, callback: (v, i) => startOf.get(i + 1) ?? '' } } } } });
new Chart(document.getElementById('bars'), { type: 'bar', data: { labels: D.domains, datasets: D.bars },
  options: { animation: false, maintainAspectRatio: false, scales: { y: { title: { display: true, text: 'error %' }, min: 0 } } } });
</script></body></html>
`;
}
