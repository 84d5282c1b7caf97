// A step of an opset-13 model with an overlapping MaxPool is built at opset 16 (src/train/step-opset.ts),
// where MaxPool's gradient is a ScatterElements-add at the forward node's Indices. Pinned against
// the opset-13 step (one-hot im2col + ArgMax form): loss, every gradient and the running
// statistics within 1e-5 relative, on a Conv → BN → Relu → MaxPool 3×3/2 → Conv → BN → Relu net
// whose Relu zeros make tied windows (both forms route a tie to its first maximum). And the cases
// where lifting would change meaning are left at their opset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { stepOpsetLift, stepSource, STEP_OPSET, EMBEDDING_ROWS } from '../../src/train/step-opset.ts';
import { opsetVersion, type Model } from '../../src/onnx/ir.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { randomInitializers } from '../helpers/random-init.ts';

const N = 4, CIN = 3, H = 11, C = 8;

function net(opset: number, pool: { k: number; s: number; p: number } = { k: 3, s: 2, p: 1 }): Model {
  const b = new ModelBuilder({ opset });
  const rng = new Rng(7);
  const init = randomInitializers(b, rng);
  init('w1', [C, CIN, 3, 3], 0.3); init('w2', [C, C, 3, 3], 0.2);
  for (const k of [1, 2]) { init(`g${k}`, [C], 0.2, 1); init(`be${k}`, [C], 0.2); init(`rm${k}`, [C], 0.1); init(`rv${k}`, [C], 0.1, 1); }
  b.input('x', 'float32', [N, CIN, H, H]);
  b.node('Conv', ['x', 'w1'], ['c1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] });
  b.node('BatchNormalization', ['c1', 'g1', 'be1', 'rm1', 'rv1'], ['n1'], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Relu', ['n1'], ['r1']);
  b.node('MaxPool', ['r1'], ['p1'], { kernel_shape: [pool.k, pool.k], strides: [pool.s, pool.s], pads: [pool.p, pool.p, pool.p, pool.p] });
  b.node('Conv', ['p1', 'w2'], ['c2'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] });
  b.node('BatchNormalization', ['c2', 'g2', 'be2', 'rm2', 'rv2'], ['n2'], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Relu', ['n2'], ['y']);
  b.output('y');
  return b.build();
}

const batch = (): Record<string, Tensor> => ({ x: f32([N, CIN, H, H], new Rng(11).fill(new Float32Array(N * CIN * H * H), 1)) });

async function step(ir: Model, lift: boolean) {
  const model = new RefitModel(ir, { threads: 1 });
  const saved = stepOpsetLift.current;
  stepOpsetLift.current = lift;
  const s = model.compileTrainStep({ trainable: ['w1', 'g1', 'be1', 'w2', 'g2', 'be2'], loss: randomProjectionLoss(['y'], 3), batchNorm: 'train' });
  try {
    const b = batch();
    const { graph } = await s.compile(signatureOf(b)); // compiled now, with the switch as set
    const r = await s.run(b);
    return { r, graph };
  } finally {
    stepOpsetLift.current = saved;
    await s.release();
  }
}

test('opset-13 step with a 3×3/2 MaxPool: built at opset 16 (ScatterElements add), same loss, gradients and running statistics as at opset 13 (≤ 1e-5), ties included', async () => {
  const ir = net(13);
  const old = await step(ir, false);
  const lifted = await step(ir, true);
  assert.equal(opsetVersion(old.graph.model), 13);
  assert.equal(opsetVersion(lifted.graph.model), STEP_OPSET);
  assert.equal(opsetVersion(ir), 13, 'the model itself keeps its opset');
  const ops = (g: typeof old.graph) => new Set(g.model.graph.nodes.map((n) => n.opType));
  assert.ok(ops(old.graph).has('ArgMax') && !ops(old.graph).has('ScatterElements'), 'opset 13: the one-hot ArgMax form');
  assert.ok(ops(lifted.graph).has('ScatterElements') && !ops(lifted.graph).has('ArgMax'), 'opset 16: the scatter-add form');
  // The Relu zeros before the pool make windows whose maximum 0 is tied.
  const r1 = (await new RefitModel(ir, { threads: 1 }).run(batch(), { outputs: ['r1'] })).r1!.data as Float32Array;
  assert.ok(r1.filter((v) => v === 0).length > r1.length / 4, 'ties present');
  assert.ok(Math.abs(lifted.r.loss - old.r.loss) <= 1e-5 * Math.abs(old.r.loss), `loss ${lifted.r.loss} vs ${old.r.loss}`);
  for (const [k, g] of old.r.grads) {
    const e = relErr(lifted.r.grads.get(k)!, g);
    assert.ok(e <= 1e-5, `d/d${k} differs by ${e.toExponential(2)}`);
    assert.ok(g.some((v) => v !== 0), `d/d${k} is not all zero`);
  }
  assert.equal(lifted.r.runningStats.size, 4);
  for (const [k, v] of old.r.runningStats) assert.ok(relErr(lifted.r.runningStats.get(k)!, v) <= 1e-5, `running ${k}`);
});

test('the lift leaves what it cannot vouch for, or does not need, at its opset', () => {
  assert.equal(stepSource(net(13)).lifted, true);
  assert.equal(stepSource(net(13, { k: 2, s: 2, p: 0 })).lifted, false, 'disjoint windows: the opset-13 scatter is already used');
  assert.equal(stepSource(net(17)).lifted, false, 'opset 17 stays');
  const withNode = (op: string, outs: string[], attrs = {}) => {
    const m = net(13);
    m.graph.nodes.push({ name: `extra_${op}`, opType: op, domain: '', inputs: ['y'], outputs: outs, attrs: attrs as never });
    return stepSource(m);
  };
  const bn = net(13);
  bn.graph.nodes[1]!.outputs.push('rm_out', 'rv_out', 'sm', 'sv'); // opset-13 training-mode BatchNormalization
  const r = stepSource(bn);
  assert.equal(r.lifted, false);
  assert.match(r.why, /BatchNormalization .* training-mode outputs/);
  assert.match(withNode('RoiAlign', ['roi']).why, /RoiAlign/);
  assert.match(withNode('Loop', ['lo']).why, /subgraph/);
  const saved = stepOpsetLift.current;
  stepOpsetLift.current = false;
  try { assert.equal(stepSource(net(13)).lifted, false); } finally { stepOpsetLift.current = saved; }
});

/** idx → Gather(emb [rows, 6]) → MatMul(head [6, 3]) → logits [2, 5, 3], at opset 14. */
function embedding(rows: number): Model {
  const b = new ModelBuilder({ opset: 14 });
  const rng = new Rng(3);
  b.input('idx', 'int64', [2, 5]);
  b.initializer('emb', f32([rows, 6], rng.fill(new Float32Array(rows * 6), 0.5)));
  b.initializer('head', f32([6, 3], rng.fill(new Float32Array(18), 0.5)));
  b.node('Gather', ['emb', 'idx'], ['h']);
  b.node('MatMul', ['h', 'head'], ['logits']);
  b.output('logits');
  return b.build();
}

test('an opset-14 model with a large embedding is stepped at opset 16 (a ScatterElements add, no one-hot of the vocabulary), same loss and gradients', async () => {
  assert.equal(stepSource(embedding(EMBEDDING_ROWS - 1)).lifted, false, 'a small table stays');
  const ir = embedding(EMBEDDING_ROWS);
  const src = stepSource(ir);
  assert.equal(src.lifted, true);
  assert.match(src.why, /embedding of 256 rows at opset 14/);
  const { i64 } = await import('../../src/onnx/tensor.ts');
  const { tokenCrossEntropy } = await import('../../src/train/losses.ts');
  // Repeated indices: their gradients must add up.
  const feeds = { idx: i64([2, 5], [3, 255, 3, 0, 17, 3, 255, 9, 9, 100]), labels: i64([2, 5], [0, 1, 2, -100, 1, 2, 0, 1, 2, 0]) };
  const run = async (lift: boolean) => {
    const saved = stepOpsetLift.current;
    stepOpsetLift.current = lift;
    const s = new RefitModel(ir, { threads: 1 }).compileTrainStep({ trainable: ['emb', 'head'], loss: tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) });
    try {
      const { graph } = await s.compile(signatureOf({ idx: feeds.idx }));
      return { r: await s.run(feeds), ops: new Set(graph.model.graph.nodes.map((n) => n.opType)) };
    } finally {
      stepOpsetLift.current = saved;
      await s.release();
    }
  };
  const old = await run(false), lifted = await run(true);
  assert.ok(old.ops.has('OneHot') && !old.ops.has('ScatterElements'), 'opset 14: the one-hot forms');
  assert.ok(lifted.ops.has('ScatterElements') && !lifted.ops.has('OneHot'), 'opset 16: scatter-add, no one-hot');
  assert.ok(Math.abs(lifted.r.loss - old.r.loss) <= 1e-6 * Math.abs(old.r.loss));
  for (const [k, g] of old.r.grads) assert.ok(relErr(lifted.r.grads.get(k)!, g) <= 1e-5, `d/d${k}`);
  const g = lifted.r.grads.get('emb')!;
  assert.ok(g.slice(3 * 6, 4 * 6).some((v) => v !== 0) && g.slice(4 * 6, 5 * 6).every((v) => v === 0), 'rows read get gradients, others none');
});
