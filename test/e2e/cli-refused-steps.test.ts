// `refit train` when every step is refused: the error says why the last one was, and names the
// parameter whose gradient is not finite (Silero VAD's legacy file stores the 2.0 of x² as a float
// initializer; its gradient in the exponent is NaN wherever the base is negative, as PyTorch's is).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { npy } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-refused-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

test('every step refused for a NaN gradient: the error names the parameter and how to leave it out; nothing written', async () => {
  writeFileSync(p('pow.onnx'), encodeModel(new ModelBuilder({ opset: 17 }).input('x', 'float32', ['N', 4])
    .initializer('power', f32([1], [2])).initializer('head.weight', f32([4, 2], [0.5, -0.25, 0.1, 0.3, -0.2, 0.4, 0.6, -0.1]))
    .node('Pow', ['x', 'power'], ['sq']).node('MatMul', ['sq', 'head.weight'], ['logits'])
    .output('logits', 'float32', ['N', 2]).build()));
  writeFileSync(p('x.npy'), npy('<f4', [8, 4], Float32Array.from({ length: 32 }, (_, i) => Math.sin(i + 1))));
  writeFileSync(p('y.npy'), npy('<i8', [8], BigInt64Array.from({ length: 8 }, (_, i) => BigInt(i % 2))));
  await assert.rejects(
    runTrain(p('pow.onnx'), { data: p('x.npy'), labels: p('y.npy'), epochs: 1, batchSize: 4, valSplit: 0, out: p('tuned.onnx'), json: true }),
    /every training step was refused \(non-finite loss or gradient; the last: gradient of 'power' has a non-finite value at 0\); nothing written\. Leave 'power' out \(--trainable \/regex\/ without it\)/,
  );
  assert.ok(!existsSync(p('tuned.onnx')));
  const r = await runTrain(p('pow.onnx'), { data: p('x.npy'), labels: p('y.npy'), trainable: '/head/', epochs: 1, batchSize: 4, valSplit: 0, out: p('tuned.onnx'), json: true });
  assert.equal(r.steps, 2);
});
