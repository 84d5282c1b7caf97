// `refit adapt` and `refit inspect` on a model whose output is neither one class per sample nor
// one per pixel: a detector's [N, 4 + classes, anchors] (YOLO's export: image in, height and width
// dynamic). refit adapt used to read such an output as class scores and write nonsense predictions;
// it now runs the methods that need no loss and writes the adapted outputs themselves as .npy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAdapt } from '../../src/cli/adapt.ts';
import { inspectModel } from '../../src/cli/inspect.ts';
import { parseNpy } from '../../src/cli/data-files.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-detector-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

/** BatchNorm (source statistics 0 and 1) → Sigmoid → [N, 3, H·W]: a detector head's shape, with an output BN-adapt changes in a way the test can compute. */
function detectorLike(): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  b.input('images', 'float32', ['batch', 3, 'height', 'width'])
    .initializer('scale', f32([3], [1, 1, 1])).initializer('bias', f32([3], [0, 0, 0]))
    .initializer('mean', f32([3], [0, 0, 0])).initializer('var', f32([3], [1, 1, 1])).initializer('shape', { dtype: 'int64', dims: [3], data: BigInt64Array.from([0n, 3n, -1n]) })
    .node('BatchNormalization', ['images', 'scale', 'bias', 'mean', 'var'], ['bn'], { epsilon: 1e-5 })
    .node('Sigmoid', ['bn'], ['s']).node('Reshape', ['s', 'shape'], ['output0']).output('output0', 'float32', ['batch', 3, 'anchors']);
  return encodeModel(b.build());
}

test('refit adapt on a detector writes its BN-adapted outputs as .npy [samples, 3, anchors]; class-score methods, labels and CSV are refused; inspect suggests no train task', async () => {
  writeFileSync(p('det.onnx'), detectorLike());
  const n = 8, per = 3 * 4 * 5;
  const r = new Rng(3), x = new Float32Array(n * per);
  for (let i = 0; i < x.length; i++) x[i] = 2 + 0.5 * r.normal(); // a brighter camera: every channel's mean moved to 2
  writeFileSync(p('stream.npy'), npy('<f4', [n, 3, 4, 5], x));
  const res = await runAdapt(p('det.onnx'), { method: 'bn-adapt', stream: p('stream.npy'), batchSize: 4, out: p('adapted.npy'), json: true });
  assert.deepEqual(res.outputShape, [n, 3, 20]);
  const a = parseNpy(readFileSync(p('adapted.npy')), 'adapted.npy');
  assert.deepEqual(a.shape, [n, 3, 20]);
  // BN-adapt: each batch of 4 normalised by its own per-channel mean and (biased) variance.
  for (let b0 = 0; b0 < n; b0 += 4) for (let c = 0; c < 3; c++) {
    let s = 0, s2 = 0;
    for (let i = b0; i < b0 + 4; i++) for (let k = 0; k < 20; k++) { const v = x[i * per + c * 20 + k]!; s += v; s2 += v * v; }
    const mean = s / 80, variance = s2 / 80 - mean * mean;
    for (let i = b0; i < b0 + 4; i++) for (let k = 0; k < 20; k++) {
      const want = 1 / (1 + Math.exp(-(x[i * per + c * 20 + k]! - mean) / Math.sqrt(variance + 1e-5)));
      assert.ok(Math.abs(a.values[i * per + c * 20 + k]! - want) < 1e-5, `sample ${i} channel ${c}: ${a.values[i * per + c * 20 + k]} vs ${want}`);
    }
  }
  // 'source' writes the unadapted outputs: the source statistics (0, 1) saturate the sigmoid here.
  await runAdapt(p('det.onnx'), { method: 'source', stream: p('stream.npy'), batchSize: 4, out: p('source.npy'), json: true });
  const s = parseNpy(readFileSync(p('source.npy')), 'source.npy');
  assert.ok(Math.abs(s.values[0]! - 1 / (1 + Math.exp(-x[0]! / Math.sqrt(1 + 1e-5)))) < 1e-6);

  // ActMAD (the objective reads BatchNorm outputs, never the prediction) with clean data from --source
  const clean = new Rng(5), cx = Float32Array.from({ length: 8 * per }, () => clean.normal());
  writeFileSync(p('clean.npy'), npy('<f4', [8, 3, 4, 5], cx));
  const act = await runAdapt(p('det.onnx'), { method: 'actmad', source: p('clean.npy'), stream: p('stream.npy'), batchSize: 4, methodOptions: '{"sourceBatch": 4, "lr": 0.05}', out: p('actmad.npy'), json: true });
  assert.deepEqual(act.outputShape, [n, 3, 20]);
  await assert.rejects(runAdapt(p('det.onnx'), { method: 'actmad', stream: p('stream.npy'), out: p('t.npy'), json: true }), /--method actmad matches the stream's activation statistics to clean in-distribution data: give it with --source/);
  writeFileSync(p('clean-wide.npy'), npy('<f4', [8, 3, 4, 6], Float32Array.from({ length: 8 * 72 }, () => clean.normal())));
  await assert.rejects(runAdapt(p('det.onnx'), { method: 'actmad', source: p('clean-wide.npy'), stream: p('stream.npy'), batchSize: 4, methodOptions: '{"sourceBatch": 4}', out: p('t.npy'), json: true }), /the batch's samples are \[3, 4, 5\] and sourceData's \[3, 4, 6\]/);
  await assert.rejects(runAdapt(p('det.onnx'), { method: 'tent', stream: p('stream.npy'), out: p('t.npy'), json: true }), /--method tent needs class scores, and the output 'output0' is \[batch, 3, anchors\].*runs source, bn-adapt, actmad/);
  await assert.rejects(runAdapt(p('det.onnx'), { method: 'bn-adapt', stream: p('stream.npy'), out: p('t.csv'), json: true }), /writes the adapted outputs themselves, as float32 \.npy/);
  await assert.rejects(runAdapt(p('det.onnx'), { method: 'bn-adapt', stream: p('stream.npy'), labels: p('stream.npy'), out: p('t.npy'), json: true }), /--labels: not for this model, whose output 'output0' has 3 axes/);
  assert.ok(!existsSync(p('t.npy')) && !existsSync(p('t.csv')), 'a refused run writes nothing');
  // A run that fails leaves the earlier output as it was, and no temporary beside it.
  const before = readFileSync(p('adapted.npy'));
  const bad = x.slice(); bad[5 * per + 3] = NaN;
  writeFileSync(p('bad.npy'), npy('<f4', [n, 3, 4, 5], bad));
  await assert.rejects(runAdapt(p('det.onnx'), { method: 'bn-adapt', stream: p('bad.npy'), batchSize: 4, out: p('adapted.npy'), json: true }), /NaN/);
  assert.deepEqual(readFileSync(p('adapted.npy')), before);
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  const info = await inspectModel(p('det.onnx'));
  assert.equal(info.task?.task, 'none');
  assert.match(info.task!.how, /refit adapt --method bn-adapt --out adapted\.npy/);
});
