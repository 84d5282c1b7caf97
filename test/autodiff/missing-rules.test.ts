// A compile that meets ops without gradient rules names all of them at once: op, nodes, count,
// the trainable parameters upstream, and which selection would avoid them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { ruleFor, registerRules, NO_GRADIENT_OPS } from '../../src/autodiff/rule.ts';
import { findBlockers, missingRulesError } from '../../src/autodiff/missing-rules.ts';
import { diagnoseTraining } from '../../src/autodiff/diagnose.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import '../../src/autodiff/rules/index.ts';

// Det and MaxRoiPool: ops onnxruntime runs that have no gradient rule (asserted below, so
// this test notices if one gains a rule and must pick another op).
function twoUnsupported() {
  const rng = new Rng(4);
  const rnd = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1)), 0.5));
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [2, 3, 3]);
  b.initializer('a.weight', rnd([3, 3])).initializer('b.weight', rnd([3, 3])).initializer('head.weight', rnd([3, 3]));
  b.node('MatMul', ['x', 'a.weight'], ['h1']);
  b.node('Det', ['h1'], ['d1'], {}, 'det_1');
  b.node('Mul', ['h1', 'h1'], ['h1sq']);
  b.node('Det', ['h1sq'], ['d2'], {}, 'det_2');
  b.node('MatMul', ['x', 'b.weight'], ['h2']);
  b.initializer('as4d', i64([4], [1, 2, 3, 3])).initializer('as3d', i64([3], [2, 3, 3])).initializer('roi', f32([1, 5], [0, 0, 0, 2, 2]));
  b.node('Reshape', ['h2', 'as4d'], ['h4']);
  b.node('MaxRoiPool', ['h4', 'roi'], ['p4'], { pooled_shape: [3, 3] }, 'roi_pool');
  b.node('Reshape', ['p4', 'as3d'], ['r']);
  b.node('MatMul', ['r', 'head.weight'], ['out']);
  b.node('Add', ['d1', 'd2'], ['dets']);
  b.output('out').output('dets');
  return b.build();
}

test('the ops used here have no rule (otherwise pick others)', () => {
  for (const op of ['Det', 'MaxRoiPool']) assert.ok(!ruleFor(op) && !NO_GRADIENT_OPS.has(op), `${op} gained a rule`);
});

test('a compile names both unsupported ops, every node, the count and the parameters upstream, with what to freeze', async () => {
  const m = new RefitModel(twoUnsupported(), { threads: 1 });
  const step = m.compileTrainStep({ trainable: 'all', loss: randomProjectionLoss(['out', 'dets'], 1) });
  const x = f32([2, 3, 3], new Float32Array(18).fill(0.3));
  await assert.rejects(step.run({ x }), (e: Error) => {
    const msg = e.message;
    assert.match(msg, /no gradient rule for 2 op types \(Det, MaxRoiPool\) on the gradient path \(3 nodes\)/);
    assert.match(msg, /Det ×2: nodes 'det_1', 'det_2'; trainable parameters upstream: 'a\.weight'/);
    assert.match(msg, /MaxRoiPool ×1: node 'roi_pool'; trainable parameters upstream: 'b\.weight'/);
    assert.match(msg, /the 1 not upstream of any of them would train, e\.g\. trainable: \['head\.weight'\]/);
    assert.doesNotMatch(msg, /TypeError/);
    return true;
  });
});

test('freezing what the message names makes the same model compile', async () => {
  const m = new RefitModel(twoUnsupported(), { threads: 1 });
  const step = m.compileTrainStep({ trainable: ['head.weight'], loss: randomProjectionLoss(['out', 'dets'], 1) });
  const r = await step.run({ x: f32([2, 3, 3], new Float32Array(18).fill(0.3)) });
  assert.ok(r.grads.get('head.weight')!.some((v) => v !== 0));
  await step.release();
});

test('a single missing op keeps the familiar head line; the diagnosis agrees with the compile', () => {
  const model = twoUnsupported();
  const d = diagnoseTraining(model);
  assert.deepEqual(d.unsupportedOps.map((u) => [u.opType, u.nodes]), [['Det', ['det_1', 'det_2']], ['MaxRoiPool', ['roi_pool']]]);
  const one = findBlockers({ nodes: model.graph.nodes, wrt: ['b.weight'], targets: ['out'], isFloat: () => true });
  assert.deepEqual(one.map((b) => b.opType), ['MaxRoiPool']);
  assert.match(missingRulesError(one, ['b.weight']).message, /^no gradient rule for op MaxRoiPool on the gradient path \(1 node\):/);
  assert.match(missingRulesError(one, ['b.weight']).message, /Every selected parameter lies upstream of one of them/);
});

test('ops that carry no gradient stop the path: a parameter reaching the loss only through Hardmax or Floor is no blocker and gets no gradient', async () => {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [2, 4]);
  b.initializer('w', f32([4, 4], Array.from({ length: 16 }, (_, i) => (i % 5) * 0.1)));
  b.initializer('v', f32([4], [1, 2, 3, 4]));
  b.node('MatMul', ['x', 'w'], ['h']);
  b.node('Hardmax', ['h'], ['hm'], { axis: -1 });
  b.initializer('shape', i64([3], [2, 2, 2]));
  b.node('Reshape', ['hm', 'shape'], ['hm3']);
  b.node('Det', ['hm3'], ['unused_det']); // beyond the no-gradient op: never a blocker
  b.node('Floor', ['h'], ['fl']);
  b.node('Add', ['hm', 'fl'], ['s']);
  b.node('Mul', ['s', 'v'], ['y']);
  b.output('y').output('unused_det');
  const m = new RefitModel(b.build(), { threads: 1 });
  const step = m.compileTrainStep({ trainable: ['w', 'v'], loss: randomProjectionLoss(['y'], 1) });
  const r = await step.run({ x: f32([2, 4], [1, 2, 3, 4, 4, 3, 2, 1]) });
  assert.ok(r.grads.get('v')!.some((g) => g !== 0));
  assert.ok(r.grads.get('w')!.every((g) => g === 0));
  await step.release();
});

test('rules that refuse a node\'s form are reported together too, each with its node and reason', async () => {
  // Stand-ins for refused forms (e.g. a Pad mode without a rule): Sin and Cos rules that throw, restored after.
  const saved = { Sin: ruleFor('Sin')!, Cos: ruleFor('Cos')! };
  registerRules({
    Sin: (_c, n) => { throw new Error(`form of '${n.name}' refused for the test`); },
    Cos: (_c, n) => { throw new Error(`form of '${n.name}' refused for the test`); },
  });
  try {
    const b = new ModelBuilder({ opset: 17 });
    b.input('x', 'float32', [2, 3]);
    b.initializer('w', f32([2, 3], [1, 2, 3, 4, 5, 6]));
    b.node('Mul', ['x', 'w'], ['h']);
    b.node('Sin', ['h'], ['s'], {}, 'sin_node');
    b.node('Cos', ['h'], ['c'], {}, 'cos_node');
    b.node('Add', ['s', 'c'], ['y']);
    b.output('y');
    const m = new RefitModel(b.build(), { threads: 1 });
    const step = m.compileTrainStep({ trainable: ['w'], loss: randomProjectionLoss(['y'], 1) });
    await assert.rejects(step.run({ x: f32([2, 3], [1, 1, 1, 1, 1, 1]) }), (e: Error) => {
      assert.match(e.message, /^gradient of 2 nodes failed:/);
      assert.match(e.message, /Sin node 'sin_node' \(trainable 'w' upstream\): form of 'sin_node' refused/);
      assert.match(e.message, /Cos node 'cos_node' \(trainable 'w' upstream\): form of 'cos_node' refused/);
      return true;
    });
  } finally {
    registerRules(saved);
  }
});
