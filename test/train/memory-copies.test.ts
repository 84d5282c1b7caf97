// The memory pass of session 6 (docs/speed.md): copies of the weights that no longer exist, with the
// same numbers as before. (1) Sessions get a Model's large initializers as in-memory external data
// (views of the tensors, not copied into the bytes); (2) readModelFile hands the file's bytes back
// after decoding, except where a kept-verbatim attribute still views them; (3) MaxPool's scatter
// gradient builds its zeros at run time rather than from a ConstantOfShape onnxruntime would fold
// into a kept initializer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel, encodeModelExternal, decodeModel } from '../../src/onnx/proto.ts';
import { createSession, toOrt } from '../../src/onnx/runtime.ts';
import { readModelFile } from '../../src/onnx/io.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { poolGeom, maxPoolDx } from '../../src/autodiff/rules/pool.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { RefitModel } from '../../src/model.ts';
import * as losses from '../../src/train/losses.ts';

const rand = (rng: Rng, d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1))));

test('a Model goes to onnxruntime with its large initializers as views, and computes what its bytes compute', async () => {
  const rng = new Rng(3);
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [4, 256]);
  const w = rand(rng, [256, 128]); // 128 kB: external
  b.initializer('w', w);
  b.initializer('b', rand(rng, [128])); // 512 B: stays in the bytes
  b.node('MatMul', ['x', 'w'], ['h']);
  b.node('Add', ['h', 'b'], ['y']);
  b.output('y');
  const m = b.build();
  const { bytes, files } = encodeModelExternal(m);
  assert.equal(files.length, 1);
  assert.equal(files[0]!.data.buffer, w.data.buffer, 'the external "file" is the tensor\'s own memory, not a copy');
  assert.equal(files[0]!.data.byteLength, w.data.byteLength);
  assert.ok(bytes.byteLength < 4096 && encodeModel(m).byteLength > 131072, `bytes ${bytes.byteLength}`);
  const x = toOrt(rand(rng, [4, 256]));
  const viaModel = await createSession(m, { threads: 1 });
  const viaBytes = await createSession(encodeModel(m), { threads: 1 });
  const a = (await viaModel.run({ x })).y!.data as Float32Array;
  const c = (await viaBytes.run({ x })).y!.data as Float32Array;
  assert.deepEqual(a, c);
  await viaModel.release();
  await viaBytes.release();
});

test('a training step whose frozen conv weight is external data gives the gradients of the step graph run from its bytes', async () => {
  const rng = new Rng(5);
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [2, 32, 6, 6]);
  b.initializer('w', rand(rng, [64, 32, 3, 3])); // 72 kB, frozen: baked, external
  b.initializer('s', f32([64], new Float32Array(64).fill(1.5)));
  b.initializer('t', rand(rng, [64]));
  b.initializer('mean', f32([64], new Float32Array(64)));
  b.initializer('var', f32([64], new Float32Array(64).fill(1)));
  b.initializer('fc', rand(rng, [64, 10]));
  b.node('Conv', ['x', 'w'], ['c'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  b.node('BatchNormalization', ['c', 's', 't', 'mean', 'var'], ['n']);
  b.node('Relu', ['n'], ['r']);
  b.node('GlobalAveragePool', ['r'], ['p']);
  b.node('Flatten', ['p'], ['f']);
  b.node('MatMul', ['f', 'fc'], ['logits']);
  b.output('logits');
  const model = new RefitModel(b.build(), { threads: 1 });
  const step = model.compileTrainStep({ trainable: ['s', 't'], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' });
  const x = rand(rng, [2, 32, 6, 6]);
  const y = i64([2], [3, 7]);
  const r = await step.run({ x, y });
  // The same step graph, every initializer inside the bytes.
  const { graph } = await step.compile({ x: { dtype: 'float32', dims: [2, 32, 6, 6] } });
  const session = await createSession(encodeModel(graph.model), { threads: 1 });
  const feeds: Record<string, ReturnType<typeof toOrt>> = { x: toOrt(x), [graph.lossInputs.get('y')!]: toOrt(y) };
  for (const p of graph.paramInputs) feeds[p] = toOrt(model.param(p));
  const out = await session.run(feeds);
  const loss = (out[graph.lossOutput]!.data as Float32Array)[0]!;
  assert.ok(Math.abs(loss - r.loss) <= 1e-5 * Math.abs(loss), `loss ${r.loss} vs ${loss}`);
  for (const [p, name] of graph.gradOutputs) {
    const ref = out[name!]!.data as Float32Array, got = r.grads.get(p)!;
    const scale = Math.max(...Array.from(ref, Math.abs));
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(got[i]! - ref[i]!) <= 1e-5 * scale, `${p}[${i}]: ${got[i]} vs ${ref[i]}`);
  }
  await session.release();
  await step.release();
});

test('readModelFile gives the initializers decodeModel gives, and keeps a subgraph that views the file intact', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-read-'));
  try {
    const rng = new Rng(7);
    const b = new ModelBuilder({ opset: 17 });
    b.input('x', 'float32', [3, 300]);
    b.initializer('w', rand(rng, [300, 200]));
    b.node('MatMul', ['x', 'w'], ['y']);
    b.output('y');
    const plain = join(dir, 'plain.onnx');
    writeFileSync(plain, encodeModel(b.build()));
    const read = readModelFile(plain);
    const ref = decodeModel(readFileSync(plain));
    assert.deepEqual(read.graph.initializers.get('w')!.data, ref.graph.initializers.get('w')!.data);

    // An If whose branches hold Constant tensors: refit keeps the subgraphs verbatim (views of the
    // file's bytes), so the file must not be handed back.
    const { onnx } = onnxProto;
    const T = onnx.AttributeProto.AttributeType;
    const branch = (name: string, v: number[]) => ({
      name, output: [{ name: `${name}_out`, type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: v.length }] } } } }],
      node: [{ opType: 'Constant', output: [`${name}_out`], attribute: [{ name: 'value', type: T.TENSOR, t: { dataType: 1, dims: [v.length], rawData: new Uint8Array(new Float32Array(v).buffer) } }] }],
    });
    const thenV = Array.from({ length: 64 }, (_, i) => i + 0.5), elseV = Array.from({ length: 64 }, (_, i) => -i);
    const proto = onnx.ModelProto.encode(onnx.ModelProto.create({
      irVersion: 8, opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'g', input: [{ name: 'c', type: { tensorType: { elemType: 9, shape: { dim: [] } } } }],
        output: [{ name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 64 }] } } } }],
        node: [{ opType: 'If', input: ['c'], output: ['y'], attribute: [{ name: 'then_branch', type: T.GRAPH, g: branch('then', thenV) }, { name: 'else_branch', type: T.GRAPH, g: branch('else', elseV) }] }],
      },
    })).finish();
    const withIf = join(dir, 'if.onnx');
    writeFileSync(withIf, proto);
    const m = readModelFile(withIf);
    // Re-encoded and run: the branch constants must still be there.
    const s = await createSession(encodeModel(m), { threads: 1 });
    const { Tensor } = (await import('../../src/onnx/runtime.ts')).ort;
    const yes = (await s.run({ c: new Tensor('bool', [true], []) })).y!.data as Float32Array;
    const no = (await s.run({ c: new Tensor('bool', [false], []) })).y!.data as Float32Array;
    assert.deepEqual(Array.from(yes), thenV);
    assert.deepEqual(Array.from(no), elseV);
    await s.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("MaxPool's scatter gradient builds its zeros at run time (no ConstantOfShape to fold), same values as the one-hot form", async () => {
  const rng = new Rng(11);
  const xDims = [2, 3, 9, 9];
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', xDims);
  b.input('dy', 'float32', [2, 3, 4, 4]);
  b.node('MaxPool', ['x'], ['y', 'idx'], { kernel_shape: [3, 3], strides: [2, 2] });
  b.output('y');
  const m = b.build();
  const g = poolGeom(m.graph.nodes[0]!, xDims, [2, 3, 4, 4]);
  const em = new Emitter(m.graph, 17);
  const before = m.graph.nodes.length;
  const scatter = maxPoolDx(em, g, 'x', 'dy', 'idx', 'scatter-add');
  const added = m.graph.nodes.slice(before).map((n) => n.opType);
  assert.ok(!added.includes('ConstantOfShape') && added.includes('ScatterElements'), added.join(', '));
  const onehot = maxPoolDx(em, g, 'x', 'dy', 'idx', 'onehot-argmax');
  b.output(scatter);
  b.output(onehot);
  const s = await createSession(encodeModel(m), { threads: 1 });
  const r = await s.run({ x: toOrt(rand(rng, xDims)), dy: toOrt(rand(rng, [2, 3, 4, 4])) });
  const a = r[scatter]!.data as Float32Array, c = r[onehot]!.data as Float32Array;
  assert.equal(a.length, 2 * 3 * 9 * 9);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - c[i]!) <= 1e-6, `${i}: ${a[i]} vs ${c[i]}`);
  assert.ok(a.some((v) => v !== 0));
  await s.release();
});
