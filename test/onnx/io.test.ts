// Model I/O: bytes and file round trips, external data, attribute kinds, probed shapes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, existsSync, statSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { decodeModel, encodeModel } from '../../src/onnx/proto.ts';
import { readModelFile, writeModelFile, AtomicFileWriter } from '../../src/onnx/io.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { probeShapes } from '../../src/onnx/shapes.ts';
import { loadModel } from '../../src/model.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { floatAttr } from '../../src/onnx/ir.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-io-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function small() {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 4]);
  b.initializer('w', f32([4, 3], Array.from({ length: 12 }, (_, i) => i / 10)));
  b.initializer('shape', i64([2], [-1, 3]));
  b.node('MatMul', ['x', 'w'], ['h']);
  b.node('LeakyRelu', ['h'], ['a'], { alpha: floatAttr(0.2) });
  b.node('Reshape', ['a', 'shape'], ['y']);
  b.output('y', 'float32', ['N', 3]);
  return b.build();
}

test('bytes round trip keeps nodes, attributes, initializers and symbolic dims', () => {
  const m = small();
  const back = decodeModel(encodeModel(m));
  assert.deepEqual(back.graph.nodes.map((n) => n.opType), ['MatMul', 'LeakyRelu', 'Reshape']);
  assert.deepEqual(back.graph.nodes[1]!.attrs.alpha, { kind: 'float', value: Math.fround(0.2) });
  assert.deepEqual(back.graph.inputs[0]!.shape, ['N', 4]);
  assert.deepEqual(Array.from(back.graph.initializers.get('w')!.data as Float32Array), Array.from(m.graph.initializers.get('w')!.data as Float32Array));
  assert.deepEqual(back.graph.initializers.get('shape')!.data, new BigInt64Array([-1n, 3n]));
  assert.deepEqual(back.opsets, [{ domain: '', version: 17 }]);
});

test('file round trip, and a model saved by refit runs in onnxruntime', async () => {
  const path = join(dir, 'small.onnx');
  writeModelFile(path, small());
  const model = await loadModel(path);
  const y = (await model.run({ x: f32([2, 4], [1, 0, 0, 0, 0, 1, 0, 0]) })).y!;
  assert.deepEqual(y.dims, [2, 3]);
  assert.ok(Math.abs((y.data as Float32Array)[4]! - 0.4) < 1e-6);
  assert.deepEqual(readModelFile(path).graph.nodes.length, 3);
});

test('external data is read from the file next to the model', async () => {
  const { onnx } = onnxProto;
  const p = onnx.ModelProto.decode(encodeModel(small()));
  const w = p.graph!.initializer!.find((t) => t.name === 'w')!;
  const raw = w.rawData!;
  writeFileSync(join(dir, 'weights.bin'), new Uint8Array([9, 9, 9, 9, ...raw]));
  w.rawData = new Uint8Array();
  w.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  w.externalData = [{ key: 'location', value: 'weights.bin' }, { key: 'offset', value: '4' }, { key: 'length', value: String(raw.length) }];
  const path = join(dir, 'external.onnx');
  writeFileSync(path, onnx.ModelProto.encode(p).finish());
  const m = readModelFile(path);
  assert.deepEqual(Array.from(m.graph.initializers.get('w')!.data as Float32Array), Array.from(small().graph.initializers.get('w')!.data as Float32Array));
  // Bytes alone cannot resolve the data file: the error says so.
  assert.throws(() => decodeModel(onnx.ModelProto.encode(p).finish()), /external data \('weights\.bin'\).*file path/);
  // A truncated data file is named.
  writeFileSync(join(dir, 'weights.bin'), new Uint8Array(10));
  assert.throws(() => readModelFile(path), /truncated/);
});

test('probing finds every intermediate shape for a dynamic batch', async () => {
  const shapes = await probeShapes(small(), { x: { dtype: 'float32', dims: [5, 4] } });
  assert.deepEqual(shapes.get('h')!.dims, [5, 3]);
  assert.deepEqual(shapes.get('y')!.dims, [5, 3]);
  assert.equal(shapes.get('w')!.dtype, 'float32');
  await assert.rejects(probeShapes(small(), { x: { dtype: 'float32', dims: [5, 7] } }), /input 'x' has shape \[5, 7\], the model expects \[N, 4\]/);
});

test('sessions with and without spin-waiting give the same outputs', async () => {
  const x = f32([2, 4], [1, -2, 3, 0.5, 0, 1, -1, 2]);
  const [a, b] = await Promise.all([loadModel(encodeModel(small()), { threads: 2 }), loadModel(encodeModel(small()), { threads: 2, spinning: true })]);
  assert.deepEqual((await a.run({ x })).y!.data, (await b.run({ x })).y!.data);
  await a.release();
  await b.release();
});

test('INT64_MAX/MIN attributes (Slice "to the end") survive a round trip with their sign', async () => {
  const b = new ModelBuilder({ opset: 9 });
  b.input('x', 'float32', [2, 3]);
  b.node('Slice', ['x'], ['y'], { starts: [1], ends: [9223372036854775807], axes: [1] });
  b.output('y');
  const twice = decodeModel(encodeModel(decodeModel(encodeModel(b.build()))));
  const ends = twice.graph.nodes[0]!.attrs.ends!.value as number[];
  assert.ok(ends[0]! > 0, `ends became ${ends[0]}`);
  const { createSession, toOrt } = await import('../../src/onnx/runtime.ts');
  const s = await createSession(encodeModel(twice));
  const out = await s.run({ x: toOrt(f32([2, 3], [1, 2, 3, 4, 5, 6])) });
  assert.deepEqual([...(out.y!.data as Float32Array)], [2, 3, 5, 6]);
  await s.release();
});

test('a model saved with external data: the weights go to <file>_data, and it loads and runs as the single file does', async () => {
  const big = new ModelBuilder({ opset: 17 });
  big.input('x', 'float32', ['N', 64]);
  big.initializer('w', f32([64, 32], Array.from({ length: 64 * 32 }, (_, i) => Math.sin(i))));
  big.initializer('b', f32([32], Array.from({ length: 32 }, (_, i) => i / 32)));
  big.node('MatMul', ['x', 'w'], ['h']);
  big.node('Add', ['h', 'b'], ['y']);
  big.output('y', 'float32', ['N', 32]);
  const m = big.build();
  const single = join(dir, 'single.onnx'), split = join(dir, 'split.onnx');
  writeModelFile(single, m);
  writeModelFile(split, m, { externalData: true });
  assert.ok(!existsSync(`${single}_data`));
  assert.ok(existsSync(`${split}_data`));
  assert.ok(statSync(split).size < 1024, `the model file holds no large weight (${statSync(split).size} bytes)`);
  assert.equal(statSync(`${split}_data`).size, 64 * 32 * 4, 'w in the data file; b (128 bytes) stays inline');
  const x = f32([2, 64], Array.from({ length: 128 }, (_, i) => Math.cos(i)));
  const [a, c] = await Promise.all([loadModel(single), loadModel(split)]);
  assert.deepEqual((await c.run({ x }))['y']!.data, (await a.run({ x }))['y']!.data);
  // 'auto' (the default) splits above the threshold, and saving again replaces both files
  await c.save(split, { above: 10 });
  assert.equal(statSync(`${split}_data`).size, 64 * 32 * 4);
  assert.deepEqual(readModelFile(split).graph.initializers.get('w')!.data, m.graph.initializers.get('w')!.data);
  writeModelFile(join(dir, 'under.onnx'), m, { above: 1e9 });
  assert.ok(!existsSync(join(dir, 'under.onnx_data')));
  await Promise.all([a.release(), c.release()]);
});

test('a tensor type refit does not hold (bfloat16, float8) is refused at load by its name, with what to do', () => {
  for (const [code, name, hint] of [[16, 'bfloat16', /float32 or float16/], [17, 'float8e4m3fn', /8-bit floats are not supported/]] as const) {
    const m = onnxProto.onnx.ModelProto.create({
      irVersion: 10, opsetImport: [{ domain: '', version: 21 }],
      graph: { name: 'g', initializer: [{ name: 'w', dataType: code, dims: [2], rawData: new Uint8Array([0x21]) }], node: [], input: [], output: [] },
    });
    assert.throws(() => decodeModel(onnxProto.onnx.ModelProto.encode(m).finish()), new RegExp(`unsupported ONNX tensor data type ${code} \\(${name}\\): .*${hint.source}`));
  }
});

test('AtomicFileWriter: pieces land in a temporary that replaces the file on commit; abort leaves the old file and no temporary', () => {
  const own = mkdtempSync(join(tmpdir(), 'refit-atomic-'));
  try {
    const f = join(own, 'out.bin');
    writeFileSync(f, 'old');
    const a = new AtomicFileWriter(f);
    a.write(new TextEncoder().encode('ne'), new TextEncoder().encode('w'));
    assert.equal(readFileSync(f, 'utf8'), 'old', 'not replaced before commit');
    a.abort();
    assert.equal(readFileSync(f, 'utf8'), 'old');
    assert.deepEqual(readdirSync(own), ['out.bin']);
    assert.throws(() => a.write(new Uint8Array(1)), /written after commit or abort/);
    const b = new AtomicFileWriter(f);
    b.write(new TextEncoder().encode('new'));
    b.commit();
    assert.equal(readFileSync(f, 'utf8'), 'new');
    assert.deepEqual(readdirSync(own), ['out.bin']);
  } finally {
    rmSync(own, { recursive: true, force: true });
  }
});

test('probe: the scalars of torch.onnx\'s size arithmetic (Gather of a Shape at a constant index, then arithmetic) are known without a run', async () => {
  const { probe } = await import('../../src/onnx/shapes.ts');
  const b = new ModelBuilder({ opset: 13 }).input('x', 'float32', ['N', 6]);
  b.node('Shape', ['x'], ['s']).node('Constant', [], ['i'], { value: i64([], [1]) }).node('Gather', ['s', 'i'], ['n'], { axis: 0 })
    .node('Constant', [], ['two'], { value: i64([], [2]) }).node('Div', ['n', 'two'], ['half']).node('Cast', ['half'], ['h'], { to: 1 })
    .node('Mul', ['x', 'h'], ['y']).output('y');
  const r = await probe(b.build(), { x: { dtype: 'float32', dims: [3, 6] } });
  assert.deepEqual(r.computed, [], 'no run');
  for (const t of ['n', 'half', 'h']) assert.deepEqual(r.shapes.get(t)?.dims, [], t);
  assert.deepEqual(r.shapes.get('y')?.dims, [3, 6]);
});

test('probe: a training-mode BatchNormalization below opset 14 (statistics outputs ONNX does not infer) and arithmetic on them need no run', async () => {
  const { probe } = await import('../../src/onnx/shapes.ts');
  const C = 3;
  const b = new ModelBuilder({ opset: 13 }).input('x', 'float32', ['N', C, 4, 4])
    .initializer('s', f32([C], [1, 1, 1])).initializer('b', f32([C], [0, 0, 0])).initializer('m', f32([C], [0, 0, 0])).initializer('v', f32([C], [1, 1, 1]))
    .initializer('k', f32([], [0.9]));
  b.node('BatchNormalization', ['x', 's', 'b', 'm', 'v'], ['y', 'mean', 'var', 'saved_mean', 'saved_var'], { momentum: 0.5 })
    .node('Mul', ['mean', 'k'], ['scaled']).node('Add', ['scaled', 'var'], ['sum']).output('y').output('sum');
  const r = await probe(b.build(), { x: { dtype: 'float32', dims: [2, C, 4, 4] } });
  assert.deepEqual(r.computed, [], 'no run');
  for (const t of ['mean', 'var', 'saved_mean', 'saved_var', 'scaled', 'sum']) assert.deepEqual(r.shapes.get(t)?.dims, [C], t);
});
