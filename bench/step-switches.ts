// Full steps over every parameter, with one of session 31's two changes off (before) and on (after),
// both compiled in one process and run alternating, on the exports of bench/popular_architectures.py
// (written where missing), random images of each file's size:
// --switch weight-copies (default): conv gradient forms as before (weightCopies.minPositions = 0:
//   every fed dense weight flipped per step for its dX, the taps dW form wherever it applied) and
//   now (256: convs with fewer output positions take ConvTranspose and the one-hot columns);
// --switch gradient-views: every gradient output after its final Reshape, or before it
//   (gradientOutputs.beforeReshape, src/train/step-graph.ts);
// --switch fed-dense (session 32): trained convolutions on tiny images as Convs, or as the dense
//   MatMul whose matrix the step builds from the weight (tinyConvDense.fed, src/train/tiny-conv-dense.ts);
// --switch dy-columns (session 32): weight gradients of narrowing stride-1 convs (O < C) from the
//   one-hot columns of X or of dY (dwDyColumns, src/autodiff/rules/conv.ts);
// --switch grouped-phases (session 32): grouped strided convs' input gradients as ConvTranspose, or
//   by phase in the session's copy (stridedDxPhases.grouped, src/train/strided-dx-phases.ts);
// --switch padded-outputs (session 32): fed convs whose output channels do not fill whole blocks on
//   the plain kernels, or padded onto the blocked ones (padFedOutputs, src/onnx/nchwc.ts).
//   npx tsx bench/step-switches.ts --batch 2 --only timm_resnet26d,timm_dla34 [--switch gradient-views] [--rounds 9] [--out FILE]
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { dwDyColumns, weightCopies } from '../src/autodiff/rules/conv.ts';
import { gradientOutputs } from '../src/train/step-graph.ts';
import { tinyConvDense } from '../src/train/tiny-conv-dense.ts';
import { stridedDxPhases } from '../src/train/strided-dx-phases.ts';
import { padFedOutputs } from '../src/onnx/nchwc.ts';
import { exportMissing } from './parity.ts';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(resolve(here, '..'), 'tmp', 'popular-architectures');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const B = Number(arg('batch', '2')), R = Number(arg('rounds', '9'));
const which = arg('switch', 'weight-copies');
const SWITCHES = ['weight-copies', 'gradient-views', 'fed-dense', 'dy-columns', 'grouped-phases', 'padded-outputs'];
if (!SWITCHES.includes(which)) throw new Error(`--switch: one of ${SWITCHES.join(', ')}, not '${which}'`);
const set = (on: boolean) => {
  if (which === 'weight-copies') weightCopies.minPositions = on ? 256 : 0;
  else if (which === 'gradient-views') gradientOutputs.beforeReshape = on;
  else if (which === 'fed-dense') tinyConvDense.fed = on;
  else if (which === 'dy-columns') dwDyColumns.current = on;
  else if (which === 'grouped-phases') stridedDxPhases.grouped = on;
  else padFedOutputs.current = on;
};
const names = arg('only', 'timm_resnet26d,timm_resnetblur18,timm_dla34').split(',');
exportMissing(join(here, 'popular_architectures.py'), dir, names, 'python3-torch python3-onnx');
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

const lines: string[] = [];
for (const name of names) {
  const ref = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as { inputs: Record<string, number[]> };
  const [input, dims] = Object.entries(ref.inputs)[0]!;
  const per = dims.slice(1).reduce((a, b) => a * b, 1);
  const feeds = { [input]: f32([B, ...dims.slice(1)], Float32Array.from({ length: B * per }, () => Math.random() * 2 - 1)), y: i64([B], Array.from({ length: B }, (_, i) => i % 10)) };
  const steps = [], grads: Map<string, Float32Array>[] = [];
  for (const on of [false, true]) {
    set(on);
    const model = await loadModel(join(dir, `${name}.onnx`), { threads: 2 });
    const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'output0', labels: 'y' }) });
    grads.push((await step.run(feeds)).grads);
    await step.run(feeds);
    steps.push(step);
  }
  set(true);
  // The two forms' gradients, tensor by tensor (tensors whose gradient is zero in exact arithmetic, norm ≤ 1e-9, are float noise).
  let worst = 0;
  for (const [k, a] of grads[0]!) {
    const b = grads[1]!.get(k)!;
    let d = 0, n = 0;
    for (let i = 0; i < a.length; i++) { d += (a[i]! - b[i]!) ** 2; n += a[i]! ** 2; }
    if (Math.sqrt(n) > 1e-9) worst = Math.max(worst, Math.sqrt(d / n));
  }
  const t: number[][] = [[], []];
  for (let r = 0; r < R; r++) for (let i = 0; i < 2; i++) { const t0 = performance.now(); await steps[i]!.run(feeds); t[i]!.push(performance.now() - t0); }
  const [before, after] = t.map(median) as [number, number];
  const line = `${name} batch ${B}: before ${before.toFixed(1)} ms, after ${after.toFixed(1)} ms, ratio ${(after / before).toFixed(2)}; gradients differ by ${worst.toExponential(1)} relative at most`;
  console.log(line);
  lines.push(line);
  for (const s of steps) await s.release();
}
const out = arg('out', '');
if (out) writeFileSync(out, `npx tsx bench/step-switches.ts --switch ${which} --batch ${B} --rounds ${R} --only ${names.join(',')}\n\n${lines.map((l) => `- ${l}`).join('\n')}\n`);
