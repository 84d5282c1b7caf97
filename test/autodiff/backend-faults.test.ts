// The gradient forms a backend's faults select (RuntimeBackend.faults; WebGPU's in
// src/onnx/webgpu-faults.ts) give the same loss and gradients as the default forms, both run on
// onnxruntime-node: the browser test (test/web/webgpu-gradients.test.ts) needs Chromium, this one
// does not. It also checks that the faulted step graph holds none of the ops the faults name, and
// that the default graph holds each of them, so the comparison is not between two equal graphs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as refit from '../../src/index.ts';
import { runtime, useRuntime, type BackendFaults } from '../../src/onnx/runtime.ts';
import { WEBGPU_FAULTS } from '../../src/onnx/webgpu-faults.ts';
import type { Model, Node } from '../../src/onnx/ir.ts';
import { relErr } from '../helpers/close.ts';

const N = 16; // c3 (4×4 maps) has N·16 = 256 output positions: enough for the taps dW form (a 9-input Concat) by default

/** 3×3 convs with 3, 8 and 16 input channels at stride 1 and 2, a depthwise conv, BatchNorm in train mode, overlapping Max and Average pools. */
function net(): Uint8Array {
  const b = new refit.nn.NetBuilder({ name: 'faults', seed: 5 });
  const block = (x: refit.nn.Value, name: string, out: number, stride = 1, groups = 1) =>
    b.relu(b.batchNorm(b.conv2d(x, { name: `${name}.conv`, out, kernel: 3, stride, pad: 1, groups, bias: false }), { name: `${name}.bn` }));
  let h = block(b.input('x', ['N', 3, 8, 8]), 'c1', 8);
  h = block(h, 'c2', 16);
  h = b.maxPool(h, { kernel: 3, stride: 2, pad: 1 });
  h = block(h, 'c3', 16);
  h = block(h, 'dw', 16, 1, 16);
  h = block(h, 'c4', 16, 2);
  h = b.avgPool(h, { kernel: 3, stride: 2, pad: 1 });
  b.output(b.linear(b.flatten(b.globalAvgPool(h)), { name: 'head', out: 10 }), 'logits');
  return refit.encodeModel(b.build());
}

async function step(bytes: Uint8Array, faults: BackendFaults | undefined) {
  const base = runtime();
  useRuntime({ ...base, faults });
  try {
    const model = await refit.loadModel(bytes);
    const s = model.compileTrainStep({ trainable: model.parameterNames(), loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train' });
    const r = new refit.Rng(2);
    const x = refit.f32([N, 3, 8, 8], Float32Array.from({ length: N * 192 }, () => r.uniform() * 2 - 1));
    const y = refit.i64([N], BigInt64Array.from({ length: N }, () => BigInt(r.int(10))));
    const out = await s.run({ x, y });
    const { graph } = await s.compile({ x: { dtype: 'float32', dims: [N, 3, 8, 8] } });
    await s.release();
    return { out, model: graph.model, shapes: graph.shapes };
  } finally {
    useRuntime(base);
  }
}

const int = (n: Node, a: string, d: number) => (n.attrs[a]?.kind === 'int' ? (n.attrs[a] as { value: number }).value : d);
const ints = (n: Node, a: string) => (n.attrs[a]?.kind === 'ints' ? (n.attrs[a] as { value: number[] }).value : []);

/** The first dim of a tensor made by a Reshape to a constant shape (the computed kernels of the dX and depthwise dW forms). */
function reshapedTo(m: Model, t: string): number | undefined {
  const p = m.graph.nodes.find((n) => n.outputs.includes(t));
  const shape = p?.opType === 'Reshape' ? m.graph.initializers.get(p.inputs[1]!) : undefined;
  return shape ? Number(shape.data[0]) : undefined;
}

/** The nodes of a step graph that WebGPU's faults name (a grouped Conv of unknown width counts). */
function faulted(m: Model, shapes: Map<string, { dims: number[] }>): Record<string, number> {
  const count = (f: (n: Node) => boolean) => m.graph.nodes.filter(f).length;
  return {
    groupedConv: count((n) => {
      if (n.opType !== 'Conv' || int(n, 'group', 1) === 1) return false;
      const w = n.inputs[1]!, outs = m.graph.initializers.get(w)?.dims[0] ?? shapes.get(w)?.dims[0] ?? reshapedTo(m, w);
      return outs === undefined || WEBGPU_FAULTS.groupedConv!(int(n, 'group', 1), outs / int(n, 'group', 1));
    }),
    bnTrainingMode: count((n) => n.opType === 'BatchNormalization' && int(n, 'training_mode', 0) === 1),
    maxPoolIndices: count((n) => n.opType === 'MaxPool' && Boolean(n.outputs[1])),
    bigConcat: count((n) => n.opType === 'Concat' && n.inputs.length > WEBGPU_FAULTS.maxConcatInputs!),
    convTransposeUnequalPads: count((n) => {
      const p = ints(n, 'pads');
      return n.opType === 'ConvTranspose' && p.some((v, i) => i < p.length / 2 && v !== p[i + p.length / 2]);
    }),
  };
}

test('WebGPU\'s gradient forms give the default forms\' loss and gradients (onnxruntime-node), and avoid every op its faults name', async () => {
  const bytes = net();
  const plain = await step(bytes, undefined);
  const gpu = await step(bytes, WEBGPU_FAULTS);
  const before = faulted(plain.model, plain.shapes), after = faulted(gpu.model, gpu.shapes);
  for (const [k, v] of Object.entries(before)) assert.ok(v > 0, `the default step graph should hold ${k} (found none): the test net no longer meets that fault`);
  assert.deepEqual(after, Object.fromEntries(Object.keys(after).map((k) => [k, 0])));
  assert.ok(Math.abs(gpu.out.loss - plain.out.loss) <= 1e-6 * Math.abs(plain.out.loss), `loss ${gpu.out.loss} vs ${plain.out.loss}`);
  // Each gradient's difference over its norm, or over 1e-2 of the largest gradient norm where its own
  // is smaller: c3.bn.weight's is 2e-6 against 0.04–1.1 for the others. It is zero in exact arithmetic
  // (with the BN bias at its initial 0, ReLU(γ·x̂) is γ·ReLU(x̂), and the depthwise conv and the train-mode
  // BN after it cancel any per-channel scale), so both forms give rounding noise; its difference, 5e-8,
  // is of the size of the others'.
  const norm = (a: Float32Array) => Math.sqrt(a.reduce((t, v) => t + v * v, 0));
  const top = Math.max(...[...plain.out.grads.values()].map(norm));
  const errs = [...plain.out.grads].map(([k, g]) => [k, relErr(gpu.out.grads.get(k)!, g) * norm(g) / Math.max(norm(g), 1e-2 * top)] as const);
  console.log(`# ${errs.map(([k, e]) => `${k} ${e.toExponential(1)}`).join(', ')}`);
  for (const [k, e] of errs) assert.ok(e <= 1e-5, `${k}: ${e.toExponential(2)} relative`);
});
