// Hyperparameters for the continual benchmark, chosen on a VALIDATION stream, never the test split:
// Fashion-MNIST *training* images 10000..19999 (the source/calibration set is 0..1999), corrupted
// the same way (seed 1, so neither the order nor the noise repeats the test streams), in the
// validation settings below. Chooses the controller's options (label-free: lr, objective; then
// LAME 'auto' and its threshold; with labels: how many new labels trigger a labelled step) and,
// for fairness, Tent's lr from the same grid. Writes bench/results/continual-tuned-<model>.json:
// { chosen: { controller: {...}, tent: { lr } }, trials: [...] }; bench/continual.ts reads it.
//
//   nice -n 15 npx tsx bench/continual/tune.ts --model cnn [--samples 32] [--settings continual,correlated,mixed]
import { writeFileSync, mkdirSync } from 'node:fs';
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
async function trial(who: string, options: Record<string, unknown>, labels = 0): Promise<Trial> {
  const errors: Record<string, number> = {};
  for (const s of settings) {
    const r = who === 'controller'
      ? await runController(modelPath, streams[s]!, val, sizes, options as ControllerOptions, source, labels, 5)
      : await runMethod(modelPath, who, streams[s]!, val, sizes, options, source);
    errors[s] = r.mean;
  }
  const t = { who, options, labels, errors, mean: mean(Object.values(errors)) };
  trials.push(t);
  console.log(`${which} ${who}${labels ? ' +labels' : ''} ${JSON.stringify(options)}: ${Object.entries(errors).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}`).join(', ')} → ${(100 * t.mean).toFixed(2)}`);
  return t;
}
const best = (ts: Trial[]) => ts.reduce((a, b) => (b.mean < a.mean ? b : a));

const LRS = [0.00025, 0.001];
// Tent's lr on the same grid (fairness: the controller's fast learner uses the same objective family).
const tent = best([await trial('tent', { lr: LRS[0] }), await trial('tent', { lr: LRS[1] })]);
// Controller, label-free: lr × objective, then LAME 'auto' thresholds on the winner.
const base: Trial[] = [];
for (const objective of ['entropy', 'teacher']) for (const lr of LRS) base.push(await trial('controller', { lr, objective }));
let ctl = best(base);
const lame: Trial[] = [ctl];
for (const lameThreshold of [0.5, 0.7]) lame.push(await trial('controller', { ...ctl.options, lame: 'auto', lameThreshold }));
ctl = best(lame);
// With 1% of labels 5 batches late: how many new labels start a labelled step.
const fb: Trial[] = [];
for (const minNew of [8, 2]) fb.push(await trial('controller', { ...ctl.options, feedback: { minNew } }, 0.01));
const ctlLabels = best(fb);

const out = {
  model: which, validation: 'Fashion-MNIST training images 10000..19999, stream seed 1', settings, sizes,
  chosen: { controller: ctl.options, 'controller+labels': ctlLabels.options, tent: tent.options },
  trials,
};
mkdirSync('bench/results', { recursive: true });
writeFileSync(`bench/results/continual-tuned-${which}.json`, JSON.stringify(out, null, 1));
console.log(JSON.stringify(out.chosen));
