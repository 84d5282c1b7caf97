// The shape probe of a step's compile: shapes come from onnxruntime's shape inference, and the
// graph runs only for values asked for and shapes inference leaves open. Running a graph with
// every value as an output was the peak RSS of compiling a step (bench/results/step-memory.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { probe } from '../../src/onnx/shapes.ts';
import { loadModel, RefitModel } from '../../src/model.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import * as ortNode from 'onnxruntime-node';
import { nodeBackend, runtime, useRuntime, type OrtModule } from '../../src/onnx/runtime.ts';
import { decodeModel } from '../../src/onnx/proto.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Every node output's shape by running the model with all of them as outputs (the old probe). */
async function runAll(model: RefitModel, feeds: Parameters<RefitModel['run']>[0]) {
  const names = model.ir.graph.nodes.flatMap((n) => n.outputs.filter((o) => o));
  const out = await model.run(feeds, { outputs: names });
  await model.release();
  return new Map(Object.entries(out).map(([k, t]) => [k, { dtype: t.dtype, dims: t.dims }]));
}

for (const name of ['fmnist-cnn', 'fmnist-vit']) {
  test(`${name}: every shape inferred without running, and equal to the shapes of a run`, async () => {
    const model = await loadModel(join(root, 'models', `${name}.onnx`));
    const x = f32([8, 1, 28, 28], new Float32Array(8 * 784).map((_, i) => Math.sin(i)));
    const r = await probe(model.ir, { [model.inputs[0]!.name]: { dtype: 'float32', dims: [8, 1, 28, 28] } });
    assert.deepEqual(r.computed, [], 'a static model needs no probe run');
    const ran = await runAll(model, { [model.inputs[0]!.name]: x });
    assert.ok(ran.size > 20, `${ran.size} values`);
    for (const [k, s] of ran) assert.deepEqual(r.shapes.get(k), s, `shape of '${k}'`);
  });
}

test('data-dependent shapes and requested values are computed, in a graph cut down to what they need', async () => {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 4]);
  b.initializer('w', f32([4, 4], Array.from({ length: 16 }, (_, i) => (i % 5) - 2)));
  b.initializer('zero', f32([], [0]));
  b.initializer('idx', i64([1], [0]));
  b.node('MatMul', ['x', 'w'], ['h']);
  b.node('Greater', ['h', 'zero'], ['pos']);
  b.node('NonZero', ['pos'], ['nz']); // shape [2, count of positives]: known only by running
  b.node('Shape', ['x'], ['xs']);
  b.node('Gather', ['xs', 'idx'], ['n']);
  b.node('Relu', ['h'], ['y']);
  b.output('y', 'float32', ['N', 4]);
  const m = b.build();
  const x = f32([3, 4], [1, 2, 3, 4, -1, 0, 1, 0, 0, 0, 0, 0]);
  const r = await probe(m, { x: { dtype: 'float32', dims: [3, 4] } }, { feeds: { x }, values: ['n'] });
  assert.deepEqual(r.computed.sort(), ['n', 'nz']);
  assert.deepEqual(r.values.get('n')!.data, new BigInt64Array([3n]));
  const ran = await runAll(new RefitModel(m), { x });
  assert.deepEqual(r.shapes.get('nz'), ran.get('nz'));
  assert.ok(ran.get('nz')!.dims[1]! > 0);
  for (const k of ['h', 'pos', 'y', 'xs']) assert.deepEqual(r.shapes.get(k), ran.get(k), k);
  assert.ok(!r.values.has('h'), 'only the values asked for are returned');
});

test('a graph that fails only when run still names the input signature', async () => {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 4]);
  b.input('s', 'int64', [2]);
  b.node('Reshape', ['x', 's'], ['y']);
  b.output('y', 'float32', null);
  await assert.rejects(
    probe(b.build(), { x: { dtype: 'float32', dims: [2, 4] }, s: { dtype: 'int64', dims: [2] } }, { feeds: { x: f32([2, 4], new Float32Array(8)), s: i64([2], [3, 3]) } }),
    /shape probe failed for input signature x: float32\[2, 4\], s: int64\[2\]/,
  );
});

test('a Reshape to a shape computed from an activation: its shape inferred and the shape arithmetic computed without running the forward', async () => {
  // As exporters write `x.view(x.size(0), 3, 2)`: Shape → Gather → Unsqueeze → Concat → Reshape.
  // Before, onnxruntime's inference left the Reshape open and the cut for the shape values reached
  // back through the MatMul, so the probe ran the whole forward pass (9 s of a 135M-parameter
  // decoder's 13 s compile).
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 6]);
  b.initializer('w', f32([6, 6], Array.from({ length: 36 }, (_, i) => Math.sin(i))));
  b.initializer('zero', i64([], [0]));
  b.initializer('axis0', i64([1], [0]));
  b.initializer('tail', i64([2], [3, 2]));
  b.node('MatMul', ['x', 'w'], ['h']);
  b.node('Shape', ['h'], ['hs']);
  b.node('Shape', ['h'], ['h1'], { start: -1 });
  b.node('Gather', ['hs', 'zero'], ['n']);
  b.node('Unsqueeze', ['n', 'axis0'], ['n1']);
  b.node('Concat', ['n1', 'tail'], ['target'], { axis: 0 });
  b.node('Reshape', ['h', 'target'], ['r']);
  b.node('Relu', ['r'], ['y']);
  b.output('y', 'float32', null);
  const created: string[][] = [];
  const before = runtime();
  const IS = ortNode.InferenceSession;
  useRuntime(nodeBackend({ ...ortNode, InferenceSession: { create: async (bytes: Uint8Array, o: ortNode.InferenceSession.SessionOptions) => {
    if (o.graphOptimizationLevel === 'disabled') created.push(decodeModel(bytes).graph.nodes.map((n) => n.opType));
    return IS.create(bytes, o);
  } } } as unknown as OrtModule));
  try {
    const r = await probe(b.build(), { x: { dtype: 'float32', dims: [5, 6] } }, { values: ['hs', 'h1', 'n', 'n1', 'target'] });
    assert.deepEqual(r.shapes.get('r')?.dims, [5, 3, 2]);
    assert.deepEqual(r.shapes.get('y')?.dims, [5, 3, 2]);
    assert.deepEqual([...r.values.get('target')!.data], [5n, 3n, 2n]);
    assert.deepEqual([...r.values.get('hs')!.data], [5n, 6n]);
    assert.deepEqual([...r.values.get('h1')!.data], [6n], "Shape's start attribute");
    assert.ok(created.every((ops) => !ops.includes('MatMul')), `no probe run computes the MatMul: ${JSON.stringify(created)}`);
  } finally {
    useRuntime(before);
  }
});
