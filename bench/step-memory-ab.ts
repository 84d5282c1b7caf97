// Two source trees' training steps, alternating call by call in ONE process (issue 12, memory pass
// of session 6): same model, batch and step; reports the time ratio (median of per-round ratios) and
// how far apart the losses and gradients are. The "before" tree is a copy of an earlier commit's src/
// (e.g. `git archive <commit> src | tar -x -C /tmp/base`, with node_modules linked in), so both
// trees share one onnxruntime.
//
//   nice -n 5 npx tsx bench/step-memory-ab.ts --before /tmp/base/src --models resnet18_64,resnet18_224
//        [--now src] [--configs tent,lora] [--rounds 12] [--out bench/results/step-memory-ab]
//
// tent: BatchNorm affine trainable, softmax-entropy loss, BatchNorm in train mode (the Tent step);
// lora: LoRA rank 8 on every non-grouped Conv and Gemm/MatMul, cross-entropy (bench/foreign.ts's lora);
// full-sgd, full-adam: a Trainer's whole step (compiled step, checks, optimizer) over every parameter;
// tent-adapter: the Tent adapter's predict (createAdapter); bn-adapt: BN-adapt's predict ("gradients
// apart" is then how far apart the logits are). An adapter's call is not idempotent (Tent steps), but
// both trees take the same steps in the same order, so their logits stay comparable.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt; };
const MODELS: Record<string, { chw: [number, number, number]; batch: number }> = {
  cnn28: { chw: [1, 28, 28], batch: 64 },
  resnet18_64: { chw: [3, 64, 64], batch: 64 },
  resnet18_224: { chw: [3, 224, 224], batch: 16 },
  mobilenet_v2_224: { chw: [3, 224, 224], batch: 16 },
};

interface Tree { name: string; run: () => Promise<{ loss: number; grads: Map<string, Float32Array> }> }

async function tree(name: string, src: string, model: string, config: string): Promise<Tree> {
  const imp = (p: string) => import(pathToFileURL(join(src, p)).href);
  const { loadModel } = await imp('model.ts');
  const losses = await imp('train/losses.ts');
  const { f32, i64 } = await imp('onnx/tensor.ts');
  const { withAdapter, lora } = await imp('peft/index.ts');
  const info = MODELS[model]!;
  const m0 = await loadModel(join(root, 'tmp', 'foreign-models', `${model}.onnx`), { threads: 2 });
  const [c, h, w] = info.chw;
  let s = 1;
  const rnd = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 - 0.5; };
  const x = f32([info.batch, c, h, w], Float32Array.from({ length: info.batch * c * h * w }, rnd));
  const y = i64([info.batch], Array.from({ length: info.batch }, (_, i) => i % 10));
  // bn-adapt: the adapter's predict (no gradients; its logits stand in as the one "gradient");
  // tent-adapter: tta.createAdapter(model, 'tent').predict (the adapter's copy and its step).
  if (config === 'bn-adapt' || config === 'tent-adapter') {
    const { createAdapter } = await imp('tta/index.ts');
    const a = createAdapter(m0, config === 'bn-adapt' ? 'bn-adapt' : 'tent');
    return { name, run: async () => { const r = await a.predict(x); return { loss: r.info.loss ?? 0, grads: new Map([['logits', r.logits.data as Float32Array]]) }; } };
  }
  // full-sgd / full-adam: a Trainer's step over every parameter, BatchNorm in train mode ("gradients
  // apart" is then how far apart the parameters are after the same steps).
  if (config === 'full-sgd' || config === 'full-adam') {
    const { Trainer } = await imp('train/trainer.ts');
    const optim = await imp('train/optim/index.ts');
    const step = m0.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' });
    const t = new Trainer(step, config === 'full-sgd' ? optim.sgd({ lr: 1e-3 }) : optim.adam({ lr: 1e-4 }));
    const names: string[] = step.trainable;
    return { name, run: async () => { const r = await t.step({ x, y }); return { loss: r.loss, grads: new Map(names.map((n) => [n, m0.param(n).data as Float32Array])) }; } };
  }
  let step;
  if (config === 'tent') {
    const bn = new Set<string>();
    for (const n of m0.ir.graph.nodes) if (n.opType === 'BatchNormalization') { bn.add(n.inputs[1]!); bn.add(n.inputs[2]!); }
    step = m0.compileTrainStep({ trainable: (n: string) => bn.has(n), loss: losses.softmaxEntropy({ logits: 'logits' }), batchNorm: 'train' });
  } else {
    const p = withAdapter(m0, 'lora', lora({ targets: (t: { op: string; group?: number }) => t.op !== 'Conv' || t.group === 1, rank: 8, alpha: 8 }));
    step = p.compileTrainStep({ trainable: p.trainableNames(), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' });
  }
  return { name, run: () => step.run({ x, y }) };
}

function apart(a: { loss: number; grads: Map<string, Float32Array> }, b: { loss: number; grads: Map<string, Float32Array> }): { loss: number; grad: number } {
  let grad = 0;
  for (const [k, ga] of a.grads) {
    const gb = b.grads.get(k)!;
    let d = 0, n = 0;
    for (let i = 0; i < ga.length; i++) { d = Math.max(d, Math.abs(ga[i]! - gb[i]!)); n = Math.max(n, Math.abs(ga[i]!)); }
    grad = Math.max(grad, d / (n || 1));
  }
  return { loss: Math.abs(a.loss - b.loss) / Math.abs(a.loss || 1), grad };
}

const before = resolve(arg('before', '/tmp/base/src'));
// --now: the "now" tree (default this checkout's src/; a `git archive HEAD src` copy leaves out
// other people's uncommitted edits).
const now = resolve(arg('now', join(root, 'src')));
const rounds = Number(arg('rounds', '12'));
const rows: unknown[] = [];
const L: string[] = [];
for (const model of arg('models', 'resnet18_64').split(',')) for (const config of arg('configs', 'tent').split(',')) {
  const A = await tree('before', before, model, config);
  const B = await tree('now', now, model, config);
  const ra = await A.run(), rb = await B.run(); // compile + first call
  const diff = apart(ra, rb);
  const ta: number[] = [], tb: number[] = [], ratio: number[] = [];
  for (let r = 0; r < rounds; r++) {
    // Alternate which goes first, so neither always follows the other's cache state.
    const order = r % 2 ? [B, A] : [A, B];
    const t: Record<string, number> = {};
    for (const T of order) { const t0 = performance.now(); await T.run(); t[T.name] = performance.now() - t0; }
    ta.push(t.before!); tb.push(t.now!); ratio.push(t.now! / t.before!);
  }
  const row = { model, config, rounds, before_ms: median(ta), now_ms: median(tb), ratio: median(ratio), lossApart: diff.loss, gradApart: diff.grad, loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') };
  rows.push(row);
  L.push(`| ${model} | ${config} | ${row.before_ms.toFixed(1)} | ${row.now_ms.toFixed(1)} | **${row.ratio.toFixed(3)}** | ${row.lossApart.toExponential(1)} | ${row.gradApart.toExponential(1)} | ${row.loadavg} |`);
  process.stderr.write(L.at(-1)! + '\n');
}
const out = resolve(arg('out', join(here, 'results', 'step-memory-ab')));
const head = [`# Step time, before / now, alternating in one process`, '', `\`npx tsx bench/step-memory-ab.ts ${process.argv.slice(2).join(' ')}\` at ${new Date().toISOString()}; median of ${rounds} rounds; ratio = median of per-round now / before.`, '', '| model | config | before ms | now ms | now / before | loss apart (rel) | gradients apart (max rel to the tensor\'s max) | load average after |', '|---|---|---:|---:|---:|---:|---:|---|'];
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), before, rows }, null, 1));
writeFileSync(`${out}.md`, [...head, ...L].join('\n') + '\n');
process.stdout.write([...head, ...L].join('\n') + '\n');
