// Drift detectors on seeded synthetic streams with one known change point (issue 11, part 1):
// detection rate, mean/median detection delay and false alarms per 10k pre-change samples,
// for every detector with River's defaults. Writes bench/results/drift.{json,md}.
//
//   npx tsx bench/drift.ts [--seeds 50]
import { writeFileSync, mkdirSync } from 'node:fs';
import { Adwin, PageHinkley, Kswin, Ddm, Eddm, HddmA, HddmW, type DriftDetector } from '../src/drift/index.ts';
import { scoreDetector, syntheticStream } from '../src/drift/evaluate.ts';

const args = process.argv.slice(2);
const seeds = Number(args[args.indexOf('--seeds') + 1] ?? 50) || 50;

export const SETTINGS = [
  { id: 'mean-abrupt', label: 'Gaussian mean 0 → 1 (σ 1), abrupt', kind: 'mean', from: 0, to: 1, ramp: 0 },
  { id: 'mean-gradual', label: 'Gaussian mean 0 → 1 (σ 1) over 1000 samples', kind: 'mean', from: 0, to: 1, ramp: 1000 },
  { id: 'error-abrupt', label: 'error rate 0.1 → 0.4, abrupt', kind: 'bernoulli', from: 0.1, to: 0.4, ramp: 0 },
  { id: 'error-gradual', label: 'error rate 0.1 → 0.4 over 1000 samples', kind: 'bernoulli', from: 0.1, to: 0.4, ramp: 1000 },
] as const;

const DETECTORS: { name: string; make: (seed: number) => DriftDetector; binary: boolean }[] = [
  { name: 'ADWIN', make: () => new Adwin(), binary: false },
  { name: 'ADWIN (every-bucket cuts)', make: () => new Adwin({ cuts: 'every-bucket' }), binary: false },
  { name: 'Page-Hinkley', make: () => new PageHinkley(), binary: false },
  { name: 'KSWIN', make: (seed) => new Kswin({ seed }), binary: false },
  { name: 'DDM', make: () => new Ddm(), binary: true },
  { name: 'EDDM', make: () => new Eddm(), binary: true },
  { name: 'HDDM-A', make: () => new HddmA(), binary: true },
  { name: 'HDDM-W', make: () => new HddmW(), binary: true },
];

const LENGTH = 10_000, CHANGE = 5_000;
const rows: Record<string, unknown>[] = [];
for (const s of SETTINGS) {
  for (const d of DETECTORS) {
    if (d.binary && s.kind !== 'bernoulli') continue;
    const delays: number[] = [];
    let falseAlarms = 0, missed = 0;
    for (let seed = 0; seed < seeds; seed++) {
      const stream = syntheticStream({ kind: s.kind, length: LENGTH, change: CHANGE, from: s.from, to: s.to, ramp: s.ramp, seed: 1000 + seed });
      const r = scoreDetector(d.make(seed), stream.values, stream.change);
      falseAlarms += r.falseAlarms;
      if (r.delay === null) missed++; else delays.push(r.delay);
    }
    delays.sort((a, b) => a - b);
    rows.push({
      setting: s.id, detector: d.name, detected: (seeds - missed) / seeds,
      meanDelay: delays.length ? delays.reduce((a, b) => a + b, 0) / delays.length : null,
      medianDelay: delays.length ? delays[Math.floor(delays.length / 2)] : null,
      falseAlarmsPer10k: (falseAlarms / (seeds * CHANGE)) * 10_000,
    });
  }
}

mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/drift.json', JSON.stringify({ seeds, length: LENGTH, change: CHANGE, rows }, null, 1));
const fmt = (v: unknown, d = 0) => (v === null ? '–' : (v as number).toFixed(d));
const md = [
  `# Drift detectors on synthetic streams`, '',
  `\`npx tsx bench/drift.ts --seeds ${seeds}\`: ${seeds} seeded streams per setting, ${LENGTH} samples, change at ${CHANGE}; River's default parameters.`,
  'Delay counts samples from the change to the first alarm at or after it; false alarms are alarms before the change, per 10k samples.', '',
  ...SETTINGS.flatMap((s) => [
    `## ${s.label}`, '', '| detector | detected | mean delay | median delay | false alarms / 10k |', '|---|---:|---:|---:|---:|',
    ...rows.filter((r) => r.setting === s.id).map((r) => `| ${r.detector} | ${fmt((r.detected as number) * 100)}% | ${fmt(r.meanDelay)} | ${fmt(r.medianDelay)} | ${fmt(r.falseAlarmsPer10k, 2)} |`), '',
  ]),
].join('\n');
writeFileSync('bench/results/drift.md', md);
console.log(md);
