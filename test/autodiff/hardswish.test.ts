// HardSwish differentiated from h = HardSigmoid(x) alone (src/autodiff/hardswish.ts), for x·HardSigmoid(x)
// as torch.onnx writes it below opset 14 and for the HardSwish op: finite differences in each of
// the three pieces, the same gradients as the Mul and HardSigmoid rules (also at the floats next to
// the kinks, the op's the same as the pattern's there), the backward reading h and not x, and the
// pattern only where h has no other reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { gradCheck, randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { hardSwishGradient, hardSwishMuls } from '../../src/autodiff/hardswish.ts';
import { f32, tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';

/** w (a parameter) → x = w·1 → y = x·HardSigmoid(x) (either order) or HardSwish(x); z = y + h when `alsoRead`. */
function net(values: Float32Array, form: 'mul' | 'swapped' | 'op' = 'mul', alsoRead = false) {
  const b = new ModelBuilder({ opset: 14 });
  b.initializer('w', f32([values.length], values)).initializer('one', f32([], new Float32Array([1])));
  b.input('dummy', 'float32', [1]);
  b.node('Mul', ['w', 'one'], ['x']);
  if (form === 'op') b.node('HardSwish', ['x'], ['y']);
  else {
    b.node('HardSigmoid', ['x'], ['h'], { alpha: { kind: 'float', value: 1 / 6 }, beta: { kind: 'float', value: 0.5 } });
    b.node('Mul', form === 'swapped' ? ['h', 'x'] : ['x', 'h'], ['y'], {}, 'hardswish');
  }
  if (alsoRead) b.node('Add', ['y', 'h'], ['z']);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output(alsoRead ? 'z' : 'y');
  return b.build();
}

const feeds: Record<string, Tensor> = { dummy: tensor('float32', [1], [0]) };
const values = (rng: Rng, n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());

/** dL/dw for L = Σ y (so dL/dw = y'(x)), whether the backward reads x, and whether it took the Shrink form. */
async function grad(model: ReturnType<typeof net>, on: boolean, loss = randomProjectionLoss([model.graph.outputs[0]!.name], 3)) {
  const saved = { ...hardSwishGradient };
  hardSwishGradient.current = on;
  try {
    const step = new RefitModel(model, { threads: 1 }).compileTrainStep({ trainable: ['w'], loss });
    const { graph } = await step.compile(signatureOf(feeds));
    const forward = new Set(model.graph.nodes.map((n) => n.name));
    const backward = graph.model.graph.nodes.filter((n) => !forward.has(n.name));
    return { g: (await step.run(feeds)).grads.get('w')! as Float32Array, readsX: backward.some((n) => n.inputs.includes('x')), shrink: backward.some((n) => n.opType === 'Shrink') };
  } finally {
    Object.assign(hardSwishGradient, saved);
  }
}

test('HardSwish from h: finite differences in each piece, as x·HardSigmoid(x) and as the op', async () => {
  const rng = new Rng(4);
  for (const form of ['mul', 'op'] as const) {
    for (const [lo, hi] of [[-2.9, 2.9], [3.1, 6], [-6, -3.1]] as const) {
      const [r] = await gradCheck(net(values(rng, 24, lo, hi), form), feeds, { params: ['w'], outputs: ['y'], eps: 1e-2 });
      if (lo < -3) assert.equal(r!.analyticNorm, 0, `${form}, x in [${lo}, ${hi}]: the derivative is 0`);
      else assert.ok(r!.relError <= 2e-3, `${form}, x in [${lo}, ${hi}]: relative error ${r!.relError.toExponential(2)}`);
    }
  }
});

test('x·HardSigmoid(x) from h: the rules\' gradient in either order, the backward reading h and not x', async () => {
  const w = values(new Rng(5), 64, -6, 6);
  for (const form of ['mul', 'swapped'] as const) {
    const [one, rules] = [await grad(net(w, form), true), await grad(net(w, form), false)];
    assert.ok(one.shrink && !one.readsX, `${form}: Shrink ${one.shrink}, the backward reads x ${one.readsX}`);
    assert.ok(!rules.shrink && rules.readsX);
    assert.ok(relErr(one.g, rules.g) <= 1e-6, `${form}: ${relErr(one.g, rules.g)}`);
  }
});

// Inside or outside is read off h = HardSigmoid(x) as onnxruntime rounds it, as the HardSigmoid
// rule did: at 3 − ulp, x/6 + ½ rounds to 1, so the derivative there is 1 (the computed y is x),
// where PyTorch's hardswish_backward, reading x, gives 1.5; just above −3, h is tiny and positive
// and the derivative x/3 + ½.
test('HardSwish from h at the floats next to its kinks: the rules\' derivative, and the op the same as x·HardSigmoid(x)', async () => {
  // The float next to v toward +∞ (dir 1) or −∞ (dir −1).
  const next = (v: number, dir: number) => { const f = new Float32Array([v]); const i = new Int32Array(f.buffer); i[0]! += Math.sign(v) * dir; return f[0]!; };
  const xs = Float32Array.from([next(-3, 1), -3, next(-3, -1), next(next(3, -1), -1), next(3, -1), 3, next(3, 1)]);
  const sum: LossSpec = { describe: 'sum(y)', reads: ['y'], inputs: [], build: (ctx) => ctx.em.reduce('ReduceSum', 'y', [0], false) };
  const [one, rules, op] = [await grad(net(xs), true, sum), await grad(net(xs), false, sum), await grad(net(xs, 'op'), true, sum)];
  for (let i = 0; i < xs.length; i++) {
    assert.ok(Math.abs(one.g[i]! - rules.g[i]!) <= 1e-7, `x = ${xs[i]}: ${one.g[i]} against the rules' ${rules.g[i]}`);
    assert.equal(op.g[i], one.g[i], `x = ${xs[i]}: the op's gradient ${op.g[i]} against x·HardSigmoid(x)'s ${one.g[i]}`);
  }
  assert.ok(Math.abs(one.g[0]! - Math.fround(xs[0]! / 3 + 0.5)) <= 1e-7 && one.g[1] === 0 && one.g[2] === 0 && one.g[5] === 1 && one.g[6] === 1, `${Array.from(one.g)}`);
});

test('the pattern only where h has no other reader; read elsewhere, the rules, still right', async () => {
  const plain = net(new Float32Array(4));
  assert.equal(hardSwishMuls(plain.graph.nodes, new Set(['y'])).size, 1);
  assert.equal(hardSwishMuls(plain.graph.nodes, new Set(['y', 'h'])).size, 0, 'h is a graph output');
  assert.equal(hardSwishMuls(net(new Float32Array(4), 'mul', true).graph.nodes, new Set(['z'])).size, 0, 'h is read by the Add too');
  const [r] = await gradCheck(net(values(new Rng(6), 24, -5, 5), 'mul', true), feeds, { params: ['w'], outputs: ['z'], eps: 1e-2 });
  assert.ok(r!.relError <= 2e-3, `relative error ${r!.relError.toExponential(2)}`);
});
