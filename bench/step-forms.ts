// A Tent step (BatchNorm affine trained, batch statistics, entropy loss; conv weights baked) on
// the foreign CNNs, built two ways and run ALTERNATING in one process (the order flips each
// round), so load from other jobs hits both alike. The two ways differ by one switch:
//
//   --form lift   the step graph at opset 16 (src/train/step-opset.ts: MaxPool's gradient as a
//                 ScatterElements-add) vs the model's opset 13 (one-hot im2col + ArgMax form)
//   --form dense  frozen convs on tiny images as dense MatMuls (src/train/tiny-conv-dense.ts) vs Conv
//   --form both   lift and dense together vs neither; --form dense-wide: the dense form's wider limits
//   --form phases a dense strided conv's dX as one stride-1 Conv per output phase vs ConvTranspose
//   --form dwtaps the conv weight gradient as one Gemm per kernel tap (stride 1, ≥ 16 channels) vs the
//                 one-hot im2col form (src/autodiff/rules/conv.ts dwTaps; use with --config full)
//
//   npx tsx bench/step-forms.ts --form lift [--models resnet18_64,resnet18_224] [--rounds 15] [--out FILE]
//        [--config full]   every parameter trained instead of Tent's BN affine (same entropy loss)
//
// Prints per model: median ms of each (and CPU ms), new / old, and the max relative difference of
// the gradients (new vs old).
import { writeFileSync, readFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { stepOpsetLift } from '../src/train/step-opset.ts';
import { tinyConvDense } from '../src/train/tiny-conv-dense.ts';
import { dwSwapped, dwTaps } from '../src/autodiff/rules/conv.ts';
import { stridedDxPhases } from '../src/train/strided-dx-phases.ts';
import { softmaxEntropy } from '../src/train/losses.ts';
import { normAffineParams } from '../src/tta/common.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { TrainStep } from '../src/train/train-step.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const MODELS: Record<string, { chw: number[]; batch: number }> = {
  cnn28: { chw: [1, 28, 28], batch: 64 }, resnet18_64: { chw: [3, 64, 64], batch: 64 },
  resnet18_224: { chw: [3, 224, 224], batch: 16 }, mobilenet_v2_224: { chw: [3, 224, 224], batch: 16 },
};
const FORMS: Record<string, { what: string; set: (on: boolean) => void }> = {
  lift: { what: 'step at opset 16 (MaxPool gradient by ScatterElements add) / at the model opset 13', set: (on) => { stepOpsetLift.current = on; } },
  dense: { what: 'frozen convs on tiny images as dense MatMuls (src/train/tiny-conv-dense.ts) / as Conv', set: (on) => { tinyConvDense.current = on; } },
  both: { what: 'opset-16 step and dense tiny convs / neither (the step before this pass)', set: (on) => { stepOpsetLift.current = on; tinyConvDense.current = on; } },
  phases: { what: 'a dense strided conv\'s dX as one stride-1 Conv per output phase (src/train/strided-dx-phases.ts) / ConvTranspose', set: (on) => { stridedDxPhases.current = on; } },
  swapped: { what: 'dense conv dW as the one-hot columns times dYᵀ / the picked forms', set: (on) => { dwSwapped.current = on; } },
  'swapped-64mb': { what: 'dense conv dW one-hot columns up to 64 MB / up to 16 MB (session 25\'s cap; the default is 128 MB since session 26)', set: (on) => { dwSwapped.maxColumnBytes = (on ? 64 : 16) * 2 ** 20; } },
  dwtaps: { what: 'conv dW as one Gemm per kernel tap over N·L / as the one-hot im2col and a MatMul batched over N', set: (on) => { dwTaps.current = on; } },
  'dense-wide': { what: 'dense MatMuls up to 2 matrix entries per conv multiply-add and 32 MB / up to 1 and 16 MB (the default)', set: (on) => { tinyConvDense.maxRatio = on ? 2 : 1; tinyConvDense.maxBytes = (on ? 32 : 16) * 2 ** 20; } },
};
const formName = argOf('--form') ?? 'lift';
const form = FORMS[formName];
if (!form) throw new Error(`--form ${formName}: expected one of ${Object.keys(FORMS).join(', ')}`);
const models = (argOf('--models') ?? 'resnet18_64').split(',');
const ROUNDS = Number(argOf('--rounds') ?? 15);
const out = argOf('--out');
/** 'tent': BN affine only (conv weights baked); 'full': every parameter but the running statistics (same entropy loss). */
const config = argOf('--config') ?? 'tent';
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

const lines = [`\`npx tsx bench/step-forms.ts ${args.join(' ')}\` (${new Date().toISOString().slice(0, 16)} UTC): ${form.what}; ${config === 'full' ? 'full step (every parameter, entropy loss)' : 'Tent step'}, 2 threads, ${ROUNDS} alternating rounds after 2 warm-up calls each`, '',
  '| model (batch) | old ms | new ms | new / old | CPU new / old | max grad rel diff | loss old / new | load start → end |', '|---|---:|---:|---:|---:|---:|---|---|'];
for (const name of models) {
  const m = MODELS[name];
  if (!m) throw new Error(`unknown model ${name}`);
  const l0 = load();
  const model = await loadModel(`tmp/foreign-models/${name}.onnx`, { threads: 2 });
  const rng = new Rng(1);
  const x = f32([m.batch, ...m.chw], rng.fill(new Float32Array(m.batch * m.chw.reduce((a, b) => a * b, 1)), 1));
  const logits = model.outputs[0]!.name;
  const running = new Set(model.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => n.inputs.slice(3, 5)));
  const trainable = config === 'full'
    ? [...model.ir.graph.initializers].filter(([k, t]) => t.dtype === 'float32' && !running.has(k)).map(([k]) => k)
    : normAffineParams('tent', model);
  const steps: Record<'old' | 'new', TrainStep> = {} as never;
  const first: Record<string, Awaited<ReturnType<TrainStep['run']>>> = {};
  for (const k of ['old', 'new'] as const) {
    form.set(k === 'new');
    steps[k] = model.compileTrainStep({ trainable, loss: softmaxEntropy({ logits }), outputs: [logits], batchNorm: 'train' });
    first[k] = await steps[k].run({ [model.inputs[0]!.name]: x }); // compiles with the switch as set
    await steps[k].run({ [model.inputs[0]!.name]: x });
  }
  form.set(true);
  if (formName === 'dense-wide') form.set(false); // back to the default
  let diff = 0;
  for (const p of trainable) diff = Math.max(diff, relDiff(first.new!.grads.get(p)!, first.old!.grads.get(p)!));
  const ms: Record<string, number[]> = { old: [], new: [] }, cpu: Record<string, number[]> = { old: [], new: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of (r % 2 ? ['new', 'old'] : ['old', 'new']) as ('old' | 'new')[]) {
      const c0 = process.cpuUsage(), t0 = performance.now();
      await steps[k].run({ [model.inputs[0]!.name]: x });
      ms[k]!.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[k]!.push((c.user + c.system) / 1000);
    }
  }
  const med = (a: number[]) => quantile(a, 0.5);
  const row = `| ${name} (${m.batch}) | ${med(ms.old!).toFixed(1)} | ${med(ms.new!).toFixed(1)} | **${(med(ms.new!) / med(ms.old!)).toFixed(2)}** | ${(med(cpu.new!) / med(cpu.old!)).toFixed(2)} | ${diff.toExponential(1)} | ${first.old!.loss.toFixed(5)} / ${first.new!.loss.toFixed(5)} | ${l0} → ${load()} |`;
  console.log(row);
  lines.push(row);
  for (const s of Object.values(steps)) await s.release();
}
if (out) writeFileSync(out, lines.join('\n') + '\n');
console.log(lines.join('\n'));
