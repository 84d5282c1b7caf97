// A training step on onnxruntime-web's WebGPU provider (headless Chromium's software adapter,
// SwiftShader) gives onnxruntime-node's loss and gradients, because the gradient rules avoid what
// WebGPU gets wrong or cannot run there (RuntimeBackend.faults, src/onnx/webgpu-faults.ts).
// The negative control runs the same step on WebGPU with only the grouped-Conv fault taken off the
// backend (without the others the step fails to run or WebGPU refuses a kernel): the rules then emit
// the one-hot im2col (a Conv of C groups with 9 outputs each), and the weight gradients of the convs
// with 8 and 16 input channels come out wrong, so the per-backend choice is what makes the step right.
//
// The net is small so the step stays short on SwiftShader: 3×3 convs on an 8×8 input with BatchNorm
// in train mode (3, 8 and 16 input channels, stride 1 and 2) and an overlapping MaxPool, so every
// WebGPU fault is met: grouped one-hot im2col, 9-input Concat (per-tap forms), train-mode
// BatchNormalization, MaxPool Indices, ConvTranspose with unequal pads (stride-2 dX and col2im).
// Inputs: see the ReLU note in equality.test.ts; this test checks that no ReLU input changes sign
// between the runtimes before it compares gradients (the margin here is 2.1e-4).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as refit from '../../src/index.ts';
import { openTestPage, fromB64, chromiumMissing, runInPage, SOFTWARE_WEBGPU_ARGS, type TestPage } from './browser.ts';
import { relErr } from '../helpers/close.ts';
import { WEBGPU_FAULTS } from '../../src/onnx/webgpu-faults.ts';

const N = 4, SEED = 1;

function smallNet(): Uint8Array {
  const net = new refit.nn.NetBuilder({ name: 'webgpu_grads', seed: 3 });
  const block = (x: refit.nn.Value, name: string, out: number, stride = 1) =>
    net.relu(net.batchNorm(net.conv2d(x, { name: `${name}.conv`, out, kernel: 3, stride, pad: 1, bias: false }), { name: `${name}.bn` }));
  let h = block(net.input('x', ['N', 3, 8, 8]), 'c1', 8);
  h = block(h, 'c2', 16);
  h = net.maxPool(h, { kernel: 3, stride: 2, pad: 1 });
  h = block(h, 'c3', 16);
  h = block(h, 'c4', 16, 2);
  net.output(net.linear(net.flatten(net.globalAvgPool(h)), { name: 'head', out: 10 }), 'logits');
  return refit.encodeModel(net.build());
}

function batch() {
  const r = new refit.Rng(SEED);
  const x = new Float32Array(N * 3 * 8 * 8);
  for (let i = 0; i < x.length; i++) x[i] = r.uniform() * 2 - 1;
  return { x, y: Array.from({ length: N }, () => r.int(10)) };
}

interface Run { loss: number; grads: Record<string, string>; relus: string; badConvs: number; ms: number; backend: string }

/** Runs in the page (as source text): one step of the net, optionally with the grouped-Conv fault taken off the backend. */
async function pageStep(a: { model: string; x: number[]; y: number[]; keepFaults: boolean }): Promise<Run> {
  const T = (globalThis as unknown as { refitTest: { refit: typeof refit; runtime(): refit.RuntimeBackend } }).refitTest;
  const r = T.refit, before = T.runtime();
  if (!a.keepFaults) r.useRuntime({ ...before, faults: { ...before.faults, groupedConv: undefined } });
  try {
    const model = await r.loadModel(Uint8Array.from(atob(a.model), (c) => c.charCodeAt(0)));
    const relus = model.ir.graph.nodes.filter((n) => n.opType === 'Relu').map((n) => n.inputs[0]!);
    const step = model.compileTrainStep({ trainable: model.parameterNames(), loss: r.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', outputs: relus });
    const dims = [a.y.length, 3, 8, 8];
    const t = performance.now();
    const out = await step.run({ x: r.f32(dims, Float32Array.from(a.x)), y: r.i64([a.y.length], BigInt64Array.from(a.y.map(BigInt))) });
    const ms = performance.now() - t;
    // Grouped Convs in the step graph that the WebGPU faults name (with the faults kept: none).
    const { graph } = await step.compile({ x: { dtype: 'float32', dims } });
    const faults = before.faults!;
    const badConvs = graph.model.graph.nodes.filter((n) => {
      if (n.opType !== 'Conv') return false;
      const g = n.attrs.group?.kind === 'int' ? n.attrs.group.value : 1, w = n.inputs[1]!;
      const outs = graph.model.graph.initializers.get(w)?.dims[0] ?? graph.shapes.get(w)?.dims[0];
      return g > 1 && (outs === undefined || faults.groupedConv!(g, outs / g)); // a grouped Conv of unknown width counts as one
    }).length;
    await step.release();
    const b64 = (f: Float32Array) => btoa(Array.from(new Uint8Array(f.buffer, f.byteOffset, f.byteLength), (c) => String.fromCharCode(c)).join(''));
    const all = relus.flatMap((n) => Array.from(out.outputs[n]!.data as Float32Array));
    return { loss: out.loss, grads: Object.fromEntries([...out.grads].map(([k, v]) => [k, b64(v)])), relus: b64(Float32Array.from(all)), badConvs, ms, backend: T.runtime().name };
  } finally {
    r.useRuntime(before);
  }
}

let tp: TestPage | undefined;
let noWebGpu: string | false = chromiumMissing;
before(async () => {
  if (noWebGpu) return;
  tp = await openTestPage(undefined, { webgpu: true }, SOFTWARE_WEBGPU_ARGS);
  const info = await tp.page.evaluate((o) => (globalThis as unknown as { refitTest: { setup(o: unknown): Promise<{ device: string; adapter?: string; warnings: string[] }> } }).refitTest.setup(o), { device: 'webgpu', allowSoftwareAdapter: true });
  if (info.device !== 'webgpu') noWebGpu = `this Chromium offers no WebGPU adapter, not even SwiftShader's software one (${info.warnings.join('; ')})`;
  else console.log(`# WebGPU adapter: ${info.adapter}`);
});
after(async () => { await tp?.close(); });

const inPage = (a: Parameters<typeof pageStep>[0]) => runInPage(tp!.page, pageStep, a);

test('the WebGPU faults name the grouped Convs SwiftShader got wrong, and none it got right', () => {
  const bad = [5, 6, 7, 9, 10, 11, 13, 18, 25].map((o) => WEBGPU_FAULTS.groupedConv!(2, o));
  const good = [1, 2, 3, 4, 8, 12, 16, 20].map((o) => WEBGPU_FAULTS.groupedConv!(8, o));
  assert.deepEqual([bad.every(Boolean), good.some(Boolean), WEBGPU_FAULTS.groupedConv!(1, 9)], [true, false, false]);
});

test('a conv net step on WebGPU (SwiftShader) equals Node\'s; with the one-hot im2col it does not', { skip: chromiumMissing }, async (t) => {
  if (noWebGpu) return t.skip(noWebGpu);
  const bytes = smallNet();
  const { x, y } = batch();
  const model = await refit.loadModel(bytes);
  const relus = model.ir.graph.nodes.filter((n) => n.opType === 'Relu').map((n) => n.inputs[0]!);
  const node = await model.compileTrainStep({ trainable: model.parameterNames(), loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', outputs: relus })
    .run({ x: refit.f32([N, 3, 8, 8], x), y: refit.i64([N], BigInt64Array.from(y.map(BigInt))) });
  const nodeRelus = relus.flatMap((n) => Array.from(node.outputs[n]!.data as Float32Array));
  const arg = { model: Buffer.from(bytes).toString('base64'), x: Array.from(x), y };

  const web = await inPage({ ...arg, keepFaults: true });
  // A kernel WebGPU refuses (an invalid pipeline) shows only as a console error, and spoils the kernels submitted with it.
  const invalid = tp!.errors.filter((e) => /WebGPU validation error/.test(e));
  assert.deepEqual(invalid, [], 'WebGPU refused a kernel of the step');
  const old = await inPage({ ...arg, keepFaults: false });
  assert.match(web.backend, /webgpu/);
  assert.equal(web.badConvs, 0, 'the step graph on WebGPU still holds a grouped Conv its faults name');
  assert.ok(old.badConvs >= 3, `with the faults taken off, the one-hot im2col should be there (found ${old.badConvs} such Convs)`);

  const webRelus = fromB64(web.relus);
  let flips = 0, margin = Infinity;
  for (let i = 0; i < nodeRelus.length; i++) {
    if ((nodeRelus[i]! > 0) !== (webRelus[i]! > 0)) flips++;
    margin = Math.min(margin, Math.abs(nodeRelus[i]!));
  }
  assert.equal(flips, 0, `${flips} ReLU inputs changed sign between Node and WebGPU (margin ${margin.toExponential(1)}): pick another SEED`);

  const errs = (r: Run) => Object.fromEntries([...node.grads].map(([k, v]) => [k, relErr(fromB64(r.grads[k]!), v)]));
  const good = errs(web), bad = errs(old);
  const fmt = (e: Record<string, number>) => Object.entries(e).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ');
  console.log(`# WebGPU step ${web.ms.toFixed(0)} ms (one-hot form ${old.ms.toFixed(0)} ms); loss ${node.loss} Node, ${web.loss} WebGPU; ReLU margin ${margin.toExponential(1)}`);
  console.log(`# per-backend forms: ${fmt(good)}`);
  console.log(`# one-hot im2col:    ${fmt(bad)}`);
  assert.ok(Math.abs(web.loss - node.loss) <= 1e-4 * Math.abs(node.loss), `loss ${web.loss} vs Node ${node.loss}`);
  for (const [k, e] of Object.entries(good)) assert.ok(e <= 1e-4, `${k}: ${e.toExponential(2)} relative to Node's gradient`);
  // With the one-hot im2col the weight gradients of the convs with 8 and 16 input channels (8 and 16
  // groups of 9 outputs) go wrong; c1's (3 groups: an odd count, right in the probe too) does not.
  for (const k of ['c2.conv.weight', 'c3.conv.weight', 'c4.conv.weight']) assert.ok(bad[k]! > 1e-2, `${k} with the one-hot im2col on WebGPU: ${bad[k]!.toExponential(2)} (expected wrong)`);
});
