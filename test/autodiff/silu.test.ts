// SiLU as exports write it, x·Sigmoid(x), differentiated as one (src/autodiff/silu.ts), in both
// its forms (from x and s; from y where the backward reads y anyway): finite differences on both
// sides of the derivative's zero (x ≈ −1.28) and far out, the same gradients as the Mul and
// Sigmoid rules, the pattern recognised only where the Sigmoid's output has no other reader, and
// s recomputed in the backward (so the forward's s dies at its Mul) with the same gradient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { gradCheck, randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { siluGradient, siluMuls } from '../../src/autodiff/silu.ts';
import { f32, tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';

/**
 * w (a parameter) → x = w·2 → y = x·Sigmoid(x) (either operand order); then z = y + s when
 * `alsoRead`, or z = y·v with v trained when `scaled` (v's gradient reads y: the four-pass form).
 */
function net(values: Float32Array, swap = false, alsoRead = false, scaled = false) {
  const b = new ModelBuilder({ opset: 13 });
  b.initializer('w', f32([values.length], values)).initializer('two', f32([], new Float32Array([2])));
  b.initializer('v', f32([values.length], values.map((_, i) => 0.5 + 0.1 * (i % 7))));
  b.input('dummy', 'float32', [1]);
  b.node('Mul', ['w', 'two'], ['x']);
  b.node('Sigmoid', ['x'], ['s']);
  b.node('Mul', swap ? ['s', 'x'] : ['x', 's'], ['y'], {}, 'silu');
  if (alsoRead) b.node('Add', ['y', 's'], ['z']);
  if (scaled) b.node('Mul', ['y', 'v'], ['z']);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output(alsoRead || scaled ? 'z' : 'y');
  return b.build();
}

const feeds: Record<string, Tensor> = { dummy: tensor('float32', [1], [0]) };
const values = (rng: Rng, n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());

/**
 * w's gradient; whether the step graph took the four-pass form (a Sub of y from x); which nodes
 * read s (the forward's Sigmoid output); whether the backward computes Sigmoid(−x) itself.
 */
async function grad(model: ReturnType<typeof net>, on: boolean, trainable = ['w'], recompute = siluGradient.recompute): Promise<{ g: Float32Array; fromY: boolean; sReaders: number; recomputed: boolean }> {
  const saved = { ...siluGradient };
  Object.assign(siluGradient, { current: on, recompute });
  try {
    const m = new RefitModel(model, { threads: 1 });
    const step = m.compileTrainStep({ trainable, loss: randomProjectionLoss([model.graph.outputs[0]!.name], 3) });
    const { graph } = await step.compile(signatureOf(feeds));
    const nodes = graph.model.graph.nodes;
    const fromY = nodes.some((n) => n.opType === 'Sub' && n.inputs[0] === 'x' && n.inputs[1] === 'y');
    const negs = new Set(nodes.filter((n) => n.opType === 'Neg' && n.inputs[0] === 'x').map((n) => n.outputs[0]));
    const recomputed = nodes.some((n) => n.opType === 'Sigmoid' && negs.has(n.inputs[0]!));
    const sReaders = nodes.filter((n) => n.inputs.includes('s')).length;
    return { g: (await step.run(feeds)).grads.get('w')! as Float32Array, fromY, sReaders, recomputed };
  } finally {
    Object.assign(siluGradient, saved);
  }
}

test('x·Sigmoid(x) differentiated as one: finite differences below, around and above the derivative\'s zero, in both forms', async () => {
  const rng = new Rng(4);
  // x = 2w: w in [−4, −1] (x far below, derivative ~0 and negative), [−0.9, −0.4] (around x ≈ −1.28), [0.5, 4] (x up to 8)
  for (const [lo, hi] of [[-4, -1], [-0.9, -0.4], [0.5, 4]] as const) {
    for (const scaled of [false, true]) {
      const reports = await gradCheck(net(values(rng, 24, lo, hi), false, false, scaled), feeds, { params: scaled ? ['w', 'v'] : ['w'], outputs: [scaled ? 'z' : 'y'], eps: 1e-2 });
      for (const r of reports) assert.ok(r.relError <= 2e-3, `w in [${lo}, ${hi}], scaled ${scaled}, d/d${r.param}: relative error ${r.relError.toExponential(2)}`);
    }
  }
});

test('x·Sigmoid(x) with s kept: the same gradient as the Mul and Sigmoid rules, in either operand order, from x and s or from y where the backward keeps it', async () => {
  const w = values(new Rng(5), 64, -5, 5);
  for (const [swap, scaled] of [[false, false], [true, false], [false, true]] as const) {
    const trainable = scaled ? ['w', 'v'] : ['w'];
    const [one, rules] = [await grad(net(w, swap, false, scaled), true, trainable, false), await grad(net(w, swap, false, scaled), false, trainable)];
    assert.equal(one.fromY, scaled, scaled ? 'v\'s gradient reads y: the form from y' : 'nothing else reads y: the form from x and s');
    assert.ok(relErr(one.g, rules.g) <= 1e-6, `swap ${swap}, scaled ${scaled}: ${relErr(one.g, rules.g)}`);
  }
});

test('x·Sigmoid(x) with s recomputed in the backward as 1 − Sigmoid(−x): s read by its Mul alone, the same gradient as keeping it, and finite differences', async () => {
  const w = values(new Rng(6), 64, -5, 5);
  const [again, kept, rules] = [await grad(net(w), true, ['w'], true), await grad(net(w), true, ['w'], false), await grad(net(w), false)];
  assert.ok(again.recomputed && again.sReaders === 1, `recomputed ${again.recomputed}, readers of s ${again.sReaders}`);
  assert.ok(!kept.recomputed && kept.sReaders > 1, 'the kept form reads s in the backward');
  assert.ok(relErr(again.g, kept.g) <= 1e-6 && relErr(again.g, rules.g) <= 1e-6, `${relErr(again.g, kept.g)}, ${relErr(again.g, rules.g)}`);
  // Where y is kept anyway (v's gradient reads it), s is recomputed too (EfficientNet-B0's full
  // step: 1.1 GB less peak RSS than the four-pass form from y, which keeps s): the same gradient.
  const [scaled, fromY] = [await grad(net(w, false, false, true), true, ['w', 'v'], true), await grad(net(w, false, false, true), true, ['w', 'v'], false)];
  assert.ok(scaled.recomputed && scaled.sReaders === 1 && !scaled.fromY, `recomputed ${scaled.recomputed}, readers of s ${scaled.sReaders}`);
  assert.ok(fromY.fromY && !fromY.recomputed);
  assert.ok(relErr(scaled.g, fromY.g) <= 1e-6, `${relErr(scaled.g, fromY.g)}`);
});

test('the pattern only where the Sigmoid\'s output has no other reader', () => {
  const plain = net(new Float32Array(4));
  assert.equal(siluMuls(plain.graph.nodes, new Set(['y'])).size, 1);
  assert.equal(siluMuls(plain.graph.nodes, new Set(['y', 's'])).size, 0, 's is a graph output');
  assert.equal(siluMuls(net(new Float32Array(4), false, true).graph.nodes, new Set(['z'])).size, 0, 's is read by the Add too');
});

test('x·Sigmoid(x) with the Sigmoid\'s output read elsewhere: the rules, still right', async () => {
  const [r] = await gradCheck(net(values(new Rng(6), 24, -3, 3), false, true), feeds, { params: ['w'], outputs: ['z'], eps: 1e-2 });
  assert.ok(r!.relError <= 2e-3, `relative error ${r!.relError.toExponential(2)}`);
});
