// The gradient of a lookup whose indices repeat (an embedding reading a token twice) is a scatter
// that adds. onnxruntime's ScatterND with reduction 'add' splits its updates over threads and
// loses sums where indices repeat: with 2 threads, thousands of rows of a few hundred values came
// out up to 37 % wrong, and differently each run (onnxruntime issue 18048). Gather's and GatherND's
// gradients at opset 16 add with ScatterElements instead; checked here, at 2 threads, against the
// sum written out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const V = 500, C = 256, K = 8192; // a small vocabulary read 8192 times: every row repeats
const rng = new Rng(11);
const ids = Array.from({ length: K }, () => rng.int(V));

async function gradOf(op: 'Gather' | 'GatherND', rowDims: number[] = [C]): Promise<{ got: Float32Array; want: Float64Array }> {
  const b = new ModelBuilder({ opset: 16 });
  // ids fed, so that nothing folds the scatter at session creation
  b.input('ids', 'int64', op === 'Gather' ? [K] : [K, 1]);
  b.initializer('table', f32([V, ...rowDims], rng.fill(new Float32Array(V * C), 1, 'normal')));
  b.node(op, ['table', 'ids'], ['rows']);
  b.output('rows');
  const model = new RefitModel(b.build(), { threads: 2 });
  const step = model.compileTrainStep({ trainable: ['table'], loss: randomProjectionLoss(['rows'], 3) });
  const r = await step.run({ ids: op === 'Gather' ? i64([K], ids) : i64([K, 1], ids) });
  // The loss is Σ R·rows, so d/dtable[v] = Σ_{k: ids[k] = v} R[k].
  const want = new Float64Array(V * C);
  const R = projection(3);
  for (let k = 0; k < K; k++) for (let c = 0; c < C; c++) want[ids[k]! * C + c] += R[k * C + c]!;
  await step.release();
  return { got: r.grads.get('table')!, want };
}

/** The random projection randomProjectionLoss(['rows'], seed) multiplies rows [K, C] by. */
function projection(seed: number): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(K * C);
  for (let i = 0; i < out.length; i++) out[i] = r.normal();
  return out;
}

for (const [op, rows] of [['Gather', [C]], ['GatherND', [C]], ['Gather', [16, 16]]] as const) {
  test(`${op}'s gradient at opset 16 with repeated indices into rows of [${rows}] is the exact sum at 2 threads`, async () => {
    for (let run = 0; run < 3; run++) {
      const { got, want } = await gradOf(op, [...rows]);
      let err = 0, scale = 0;
      for (let i = 0; i < want.length; i++) { err = Math.max(err, Math.abs(got[i]! - want[i]!)); scale = Math.max(scale, Math.abs(want[i]!)); }
      assert.ok(err / scale < 1e-5, `run ${run}: max error ${(err / scale).toExponential(2)} of the largest sum`);
    }
  });
}
