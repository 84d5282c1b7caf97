// How precise the blocked Tent-style step's BatchNorm moments are (src/onnx/nchwc-step.ts), on a
// model refit did not build. For each train-mode BN of the step's session graph, its batch mean
// and variance outputs against float64 moments of the very float32 tensor its conv wrote (d, and
// the shift K added back: reordered out of the blocked layout for the check), so the figure is the
// moments' own error, not the convs'. With --torch, also the step's first logits (train-mode BN
// forward) of the standard step and the blocked one against PyTorch in float64 (Debian's torch,
// torchvision weights from bench/foreign_torch.py's .pt files). --standard checks the standard
// step's moments (onnxruntime's training-mode BatchNormalization kernel) the same way; --no-shift
// takes the blocked moments about 0 (blockedStep.shiftMoments off).
//
//   npx tsx bench/blocked-moments-precision.ts [--model mobilenet_v2_224] [--layers 52] [--standard | --no-shift] [--mean 0] [--torch]
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../src/model.ts';
import { createAdapter } from '../src/tta/index.ts';
import { randomProjectionLoss } from '../src/autodiff/gradcheck.ts';
import { signatureOf } from '../src/onnx/shapes.ts';
import { cloneModel } from '../src/onnx/ir.ts';
import { f32, type Tensor } from '../src/onnx/tensor.ts';
import { blockStepActivations, blockedStep } from '../src/onnx/nchwc-step.ts';
import { phaseStridedDx } from '../src/train/strided-dx-phases.ts';
import { nchwcBlockSize, NCHWC_DOMAIN } from '../src/onnx/nchwc.ts';
import { createSession } from '../src/onnx/runtime.ts';
import '../src/autodiff/rules/index.ts';

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const name = arg('model', 'mobilenet_v2_224'), layers = Number(arg('layers', '1000')), offset = Number(arg('mean', '0'));
blockedStep.shiftMoments = !process.argv.includes('--no-shift');
const file = join('tmp', 'foreign-models', `${name}.onnx`);
if (!existsSync(file)) throw new Error(`${file} is missing: run npx tsx bench/foreign.ts --only ${name} (or bench/blocked-step.ts) once, which exports it`);
const block = await nchwcBlockSize();
if (block === null) throw new Error('onnxruntime-node has no blocked kernels on this CPU: there is no blocked step to check');

const m = await loadModel(file, { threads: 2 });
const inputName = m.ir.graph.inputs[0]!.name;
const [batch, ch, hw] = [16, 3, 224];
const xd = new Float32Array(batch * ch * hw * hw);
for (let i = 0; i < xd.length; i++) xd[i] = offset + Math.sin(i * 0.1) + 0.3 * Math.cos(i * 0.013);
const x = f32([batch, ch, hw, hw], xd);

// The step graph as the session gets it, with each BN's moments and its conv's output as outputs.
const bnParams = [...new Set(m.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => [n.inputs[1]!, n.inputs[2]!]))];
const step = m.compileTrainStep({ trainable: bnParams, loss: randomProjectionLoss([m.ir.graph.outputs[0]!.name], 7), batchNorm: 'train' });
const { graph } = await step.compile(signatureOf({ [inputName]: x }));
const standard = process.argv.includes('--standard');
const c = cloneModel(graph.model);
phaseStridedDx(c);
if (!standard) blockStepActivations(c, graph.shapes, block);
const producer = new Map(c.graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
const checks: { mean: string; variance: string; K?: string; d: string }[] = [];
for (const bn of graph.model.graph.nodes.filter((n) => n.opType === 'BatchNormalization' && n.outputs.length > 1).slice(0, layers)) {
  const [mean, variance] = [bn.outputs[1]!, bn.outputs[2]!];
  if (standard) { checks.push({ mean, variance, d: bn.inputs[0]! }); continue; }
  // The mean output is the first C of M [Cp] (Reshape ← Slice ← M). After a 1×1 conv whose moments
  // come from its input, the conv's bias is lowered by M itself (Sub(B, M) or Neg(M)): K = M and d
  // is that conv's output. Elsewhere M = Add(K, E[d]), E[d] = Mul(sums of a Reshape of d, 1/n).
  let p = producer.get(mean);
  while (p && p.opType !== 'Slice') p = producer.get(p.inputs[0]!);
  const M = p?.inputs[0];
  const lowered = c.graph.nodes.find((k) => (k.opType === 'Sub' && k.inputs[1] === M) || (k.opType === 'Neg' && k.inputs[0] === M));
  const pointwise = lowered && c.graph.nodes.find((k) => k.domain === NCHWC_DOMAIN && k.inputs[2] === lowered.outputs[0]);
  const sum = M ? producer.get(M) : undefined;
  if (!M || (!pointwise && sum?.opType !== 'Add')) { console.log(`${mean}: not a blocked BN (left to onnxruntime's kernel)`); continue; }
  let blockedD = pointwise?.outputs[0];
  if (!blockedD) {
    let q = producer.get(sum!.inputs[1]!);
    while (q && !(q.opType === 'Reshape' && producer.get(q.inputs[0]!)?.domain === NCHWC_DOMAIN)) q = producer.get(q.inputs[0]!);
    blockedD = q!.inputs[0]!;
  }
  const d = `${blockedD}_nchw_check`;
  c.graph.nodes.push({ name: `${d}_reorder`, opType: 'ReorderOutput', domain: NCHWC_DOMAIN, inputs: [blockedD], outputs: [d], attrs: { channels: { kind: 'int', value: graph.shapes.get(bn.inputs[0]!)!.dims[1] as number }, channels_last: { kind: 'int', value: 0 } } });
  checks.push({ mean, variance, K: pointwise ? M : sum!.inputs[0]!, d });
}
c.graph.outputs.push(...checks.flatMap((k) => [k.mean, k.variance, ...(k.K ? [k.K] : []), k.d]).map((t) => ({ name: t, dtype: 'float32' as const, shape: null })));
await step.release();
const session = await createSession(c, { threads: 2 });
const feeds: Record<string, ort.Tensor> = {};
for (const i of c.graph.inputs) {
  const t: Tensor | undefined = i.name === inputName ? x : m.ir.graph.initializers.get(i.name);
  if (!t) throw new Error(`no value for the step input '${i.name}'`);
  feeds[i.name] = new ort.Tensor('float32', t.data as Float32Array, t.dims as number[]);
}
const out = await session.run(feeds);
let worstMean = 0, worstVar = 0;
for (const [k, t] of checks.entries()) {
  const mu = out[t.mean]!.data as Float32Array, v = out[t.variance]!.data as Float32Array, K = t.K ? out[t.K]!.data as Float32Array : new Float32Array(mu.length);
  const d = out[t.d]!.data as Float32Array, [N, C, H, W] = out[t.d]!.dims as number[] as [number, number, number, number];
  let meanErr = 0, varErr = 0, conditioning = 0;
  for (let j = 0; j < C; j++) {
    let s1 = 0, s2 = 0;
    const at = (n: number, i: number) => d[(n * C + j) * H * W + i]! + K[j]!;
    for (let n = 0; n < N; n++) for (let i = 0; i < H * W; i++) s1 += at(n, i);
    const m64 = s1 / (N * H * W);
    for (let n = 0; n < N; n++) for (let i = 0; i < H * W; i++) s2 += (at(n, i) - m64) ** 2;
    const v64 = s2 / (N * H * W);
    meanErr = Math.max(meanErr, Math.abs(mu[j]! - m64) / Math.sqrt(v64));
    varErr = Math.max(varErr, Math.abs(v[j]! - v64) / v64);
    conditioning = Math.max(conditioning, Math.abs(m64 - K[j]!) / Math.sqrt(v64));
  }
  worstMean = Math.max(worstMean, meanErr); worstVar = Math.max(worstVar, varErr);
  console.log(`BN ${k} [${N}, ${C}, ${H}, ${W}]: mean off ${meanErr.toExponential(1)} std, variance ${varErr.toExponential(1)} relative; |mean − K| ≤ ${conditioning.toFixed(2)} std`);
}
console.log(`${name} (input mean ${offset}, ${standard ? 'standard step, onnxruntime\'s kernel' : blockedStep.shiftMoments ? 'shifted' : 'unshifted'}): ${checks.length} BNs, worst mean ${worstMean.toExponential(1)} std, worst variance ${worstVar.toExponential(1)} relative`);

if (process.argv.includes('--torch')) {
  const arch = name.replace(/_224$/, '');
  const dir = mkdtempSync(join(tmpdir(), 'refit-moments-'));
  writeFileSync(join(dir, 'x.bin'), xd);
  for (const [form, on] of [['standard', false], ['blocked', true]] as const) {
    blockedStep.current = on;
    const a = createAdapter(await loadModel(file, { threads: 2 }), 'tent', {});
    writeFileSync(join(dir, `${form}.bin`), ((await a.predict(x)) as { logits: { data: Float32Array } }).logits.data);
  }
  blockedStep.current = true;
  const py = `import numpy as np, torch, torchvision
m = torchvision.models.${arch}(num_classes=10)
m.load_state_dict(torch.load('tmp/foreign-models/${arch}.pt'))
m = m.double().eval()
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d): mod.train()
x = torch.from_numpy(np.fromfile('${dir}/x.bin', dtype=np.float32).astype(np.float64).reshape(${batch}, ${ch}, ${hw}, ${hw}))
with torch.no_grad(): ref = m(x).numpy().ravel()
for form in ('standard', 'blocked'):
    y = np.fromfile(f'${dir}/{form}.bin', dtype=np.float32).astype(np.float64)
    print(f'{form} step: first logits off float64 PyTorch by {np.abs(y - ref).max():.2e} (largest |logit| {np.abs(ref).max():.2f})')`;
  const r = spawnSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the float64 reference failed (Debian's python3-torch and python3-torchvision needed): ${r.stderr.slice(-500)}`);
  process.stdout.write(r.stdout);
}
