// `refit train` on a float16 model as converters write it with keep_io_types (float32 in and out,
// float16 weights: transformers.js's model_fp16.onnx): full training runs on a float32 master copy
// and writes float16 back; LoRA trains on the float16 base as it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { runEval } from '../../src/cli/eval.ts';
import { loadModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { float16Copy, halfTensorToFloat } from '../../src/autodiff/lower/float16.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-fp16-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

/** A 2-layer classifier [N, 6] → [N, 3], its weights float16, its input and output float32 through Casts. */
function halfModel(): Uint8Array {
  const r = new Rng(3), rnd = (n: number, s: number) => Array.from({ length: n }, () => s * (r.next() - 0.5));
  const m = float16Copy(new ModelBuilder({ opset: 17 }).input('x', 'float32', ['N', 6])
    .initializer('fc1.weight', f32([6, 8], rnd(48, 0.8))).initializer('fc1.bias', f32([8], rnd(8, 0.1)))
    .initializer('fc2.weight', f32([8, 3], rnd(24, 0.8))).initializer('fc2.bias', f32([3], rnd(3, 0.1)))
    .node('MatMul', ['x_half', 'fc1.weight'], ['h0']).node('Add', ['h0', 'fc1.bias'], ['h1']).node('Relu', ['h1'], ['h'])
    .node('MatMul', ['h', 'fc2.weight'], ['z0']).node('Add', ['z0', 'fc2.bias'], ['logits_half'])
    .output('logits_half', 'float32', ['N', 3]).build());
  // keep_io_types: float32 at the edges
  const g = m.graph;
  g.inputs = [{ name: 'x', dtype: 'float32', shape: ['N', 6] }];
  g.nodes.unshift({ name: 'in_cast', opType: 'Cast', domain: '', inputs: ['x'], outputs: ['x_half'], attrs: { to: { kind: 'int', value: 10 } } });
  g.nodes.push({ name: 'out_cast', opType: 'Cast', domain: '', inputs: ['logits_half'], outputs: ['logits'], attrs: { to: { kind: 'int', value: 1 } } });
  g.outputs = [{ name: 'logits', dtype: 'float32', shape: ['N', 3] }];
  return encodeModel(m);
}

test('full training of a float16 model runs on a float32 copy and writes float16 weights back; LoRA trains on the float16 base', async () => {
  writeFileSync(p('half.onnx'), halfModel());
  const r = new Rng(5), n = 96;
  const x = Float32Array.from({ length: n * 6 }, () => r.next() * 2 - 1);
  const y = BigInt64Array.from({ length: n }, (_, i) => BigInt((x[i * 6]! > 0 ? 1 : 0) + (x[i * 6 + 1]! > 0 ? 1 : 0)));
  writeFileSync(p('x.npy'), npy('<f4', [n, 6], x));
  writeFileSync(p('y.npy'), npy('<i8', [n], y));
  const before = await runEval(p('half.onnx'), { data: p('x.npy'), labels: p('y.npy'), json: true });
  const t = await runTrain(p('half.onnx'), { data: p('x.npy'), labels: p('y.npy'), epochs: 20, lr: 0.02, batchSize: 16, valSplit: 0, out: p('tuned.onnx'), json: true });
  assert.equal(t.mode, 'full');
  const after = await runEval(p('tuned.onnx'), { data: p('x.npy'), labels: p('y.npy'), json: true });
  assert.ok(after.loss < before.loss * 0.8, `loss ${before.loss} → ${after.loss}`);
  const [src, out] = [await loadModel(p('half.onnx')), await loadModel(p('tuned.onnx'))];
  for (const w of ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']) {
    assert.equal(out.param(w).dtype, 'float16', `${w} written as float16`);
    const a = halfTensorToFloat(src.param(w)).data as Float32Array, b = halfTensorToFloat(out.param(w)).data as Float32Array;
    assert.ok(a.some((v, i) => v !== b[i]), `${w} trained`);
  }
  assert.deepEqual(out.inputs.map((i) => i.dtype), ['float32'], 'the graph as given: float32 in, float16 inside');
  const lora = await runTrain(p('half.onnx'), { data: p('x.npy'), labels: p('y.npy'), adapter: 'lora', rank: 2, epochs: 2, batchSize: 16, out: p('lora'), json: true });
  assert.equal(lora.mode, 'adapter');
  await Promise.all([src.release(), out.release()]);
});
