// Hyperparameters for the continual benchmark, chosen on a VALIDATION stream, never the test split:
// Fashion-MNIST *training* images 10000..19999 (the source/calibration set is 0..1999), corrupted
// the same way (seed 1, so neither the order nor the noise repeats the test streams), in the
// validation settings below. Chooses the controller's options (label-free: lr, objective; then
// LAME 'auto' and its threshold; with labels: how many new labels trigger a labelled step) and,
// for fairness, Tent's lr from the same grid. Writes bench/results/continual-tuned-<model>.json:
// { chosen: { controller: {...}, tent: { lr } }, trials: [...] }; bench/continual.ts reads it.
//
//   nice -n 15 npx tsx bench/continual/tune.ts --model cnn [--samples 32] [--settings continual,correlated,mixed]
// or in parallel phases (same choices, one process each; then `--phase choose` merges them):
//   … --phase tent --tag -t0;  … --phase base --configs entropy:0.00025,teacher:0.001 --tag -t1;
//   … --phase labels --config '{"lr":0.001,…}' --min-new 2 --tag -t5;  … --phase choose --files -t0,-t1,-t5
// LAME 'auto' thresholds are scored on each label-free run (LAME changes the output only, not the adaptation).
import { writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { streamFor, validationData, runController, runMethod, mean, SETTINGS, type Setting, type Sizes } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import type { ControllerOptions } from '../../src/continual/index.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const which = opt('model', 'cnn');
const samples = Number(opt('samples', '32'));
const settings = opt('settings', 'continual,correlated,mixed').split(',') as Setting[];
for (const s of settings) if (!(SETTINGS as readonly string[]).includes(s)) throw new Error(`unknown setting '${s}'`);
const sizes: Sizes = { samples, correlatedSamples: samples * 4, roundSamples: Math.max(16, samples / 8), levelSamples: Math.max(16, samples / 4), cleanSamples: 128 };
const modelPath = `models/fmnist-${which}.onnx`;
const val = validationData();
const source = loadSourceSet();
const streams = Object.fromEntries(settings.map((s) => [s, streamFor(s, val, sizes, 1)]));

interface Trial { who: string; options: Record<string, unknown>; labels: number; errors: Record<string, number>; mean: number }
const trials: Trial[] = [];
const LAME_THRESHOLDS = [0.5, 0.7];
async function trial(who: string, options: Record<string, unknown>, labels = 0): Promise<Trial> {
  const errors: Record<string, number> = {};
  const lameErrors: Record<number, Record<string, number>> = {};
  for (const s of settings) {
    const r = who === 'controller'
      ? await runController(modelPath, streams[s]!, val, sizes, options as ControllerOptions, source, labels, 5, labels ? [] : LAME_THRESHOLDS)
      : await runMethod(modelPath, who, streams[s]!, val, sizes, options, source);
    errors[s] = r.mean;
    for (const [th, e] of Object.entries(r.posthocLame ?? {})) (lameErrors[Number(th)] ??= {})[s] = e;
  }
  const t = { who, options, labels, errors, mean: mean(Object.values(errors)) };
  trials.push(t);
  log(t);
  for (const [th, errs] of Object.entries(lameErrors)) {
    const l = { who, options: { ...options, lame: 'auto', lameThreshold: Number(th) }, labels, errors: errs, mean: mean(Object.values(errs)) };
    trials.push(l);
    log(l);
  }
  return t;
}
function log(t: Trial): void {
  console.log(`${which} ${t.who}${t.labels ? ' +labels' : ''} ${JSON.stringify(t.options)}: ${Object.entries(t.errors).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}`).join(', ')} → ${(100 * t.mean).toFixed(2)}`);
}
const best = (ts: Trial[]) => ts.reduce((a, b) => (b.mean < a.mean ? b : a));
const LRS = [0.00025, 0.001];
const phase = opt('phase', 'all');
const tag = opt('tag', '');
const write = (path: string, o: unknown) => { mkdirSync('bench/results', { recursive: true }); writeFileSync(path, JSON.stringify(o, null, 1)); };

function choose(all: Trial[]): Record<string, Record<string, unknown>> {
  const free = all.filter((t) => t.who === 'controller' && !t.labels), lab = all.filter((t) => t.who === 'controller' && t.labels), tent = all.filter((t) => t.who === 'tent');
  const chosen: Record<string, Record<string, unknown>> = {};
  if (free.length) chosen.controller = best(free).options;
  if (lab.length) chosen['controller+labels'] = best(lab).options;
  if (tent.length) chosen.tent = best(tent).options;
  return chosen;
}
const meta = { model: which, validation: 'Fashion-MNIST training images 10000..19999, stream seed 1', settings, sizes };

if (phase === 'all' || phase === 'tent') for (const lr of LRS) await trial('tent', { lr });
if (phase === 'all' || phase === 'base') {
  const configs = opt('configs', 'entropy:0.00025,entropy:0.001,teacher:0.00025,teacher:0.001').split(',').map((c) => c.split(':'));
  for (const [objective, lr] of configs) await trial('controller', { lr: Number(lr), objective });
}
if (phase === 'all') {
  // With 1% of labels 5 batches late: how many new labels start a labelled step.
  for (const minNew of [8, 2]) await trial('controller', { ...choose(trials).controller, feedback: { minNew } }, 0.01);
}
if (phase === 'labels') await trial('controller', { ...JSON.parse(opt('config', '{}')), feedback: { minNew: Number(opt('min-new', '8')) } }, 0.01);
if (phase === 'choose') {
  for (const t of opt('files', '').split(',')) trials.push(...(JSON.parse(readFileSync(`bench/results/continual-tune-${which}${t}.json`, 'utf8')).trials as Trial[]));
}
if (phase === 'all' || phase === 'choose') {
  const out = { ...meta, chosen: choose(trials), trials };
  write(`bench/results/continual-tuned-${which}.json`, out);
  console.log(JSON.stringify(out.chosen));
} else write(`bench/results/continual-tune-${which}${tag}.json`, { ...meta, trials });
