// Constant-weight 1×1 convolutions as MatMuls in the step (src/train/pointwise-matmul.ts), pinned
// against the Conv form on a MobileNet-style block (1×1 expansion with a bias → BN → Clip(0, 6) →
// depthwise 3×3 → BN → Clip → 1×1 projection without a bias → BN → residual Add, and a
// squeeze-excitation gate whose 1×1 conv sees one position): loss, gradients
// to every BN affine parameter and running statistics within 1e-5; the rewritten step holds no 1×1
// Conv; a trained 1×1 weight, a strided and a padded 1×1 conv keep their Conv.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { pointwiseMatMul, pointwiseConvsAsMatMul } from '../../src/train/pointwise-matmul.ts';
import { nchwcBlockSize } from '../../src/onnx/nchwc.ts';
import { blockedStep } from '../../src/onnx/nchwc-step.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import type { Model } from '../../src/onnx/ir.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { randomInitializers } from '../helpers/random-init.ts';

const N = 4, C = 8, E = 24, S = 6;

function block(): Model {
  const b = new ModelBuilder({ opset: 13 });
  const rng = new Rng(3);
  const init = randomInitializers(b, rng);
  init('we', [E, C, 1, 1], 0.5); init('be', [E], 0.2);
  init('wd', [E, 1, 3, 3], 0.4);
  init('wp', [C, E, 1, 1], 0.3);
  init('ws', [C, C, 1, 1], 0.3);
  for (const [k, c] of [[0, E], [1, E], [2, C], [3, C]] as const) { init(`g${k}`, [c], 0.2, 1); init(`b${k}`, [c], 0.2); init(`m${k}`, [c], 0.1); init(`v${k}`, [c], 0.1, 1); }
  b.initializer('lo', f32([], new Float32Array([0]))).initializer('hi', f32([], new Float32Array([6])));
  b.input('x', 'float32', [N, C, S, S]);
  const bn = (i: number, x: string, y: string) => b.node('BatchNormalization', [x, `g${i}`, `b${i}`, `m${i}`, `v${i}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Conv', ['x', 'we', 'be'], ['e'], { kernel_shape: [1, 1] }, 'expand');
  bn(0, 'e', 'en'); b.node('Clip', ['en', 'lo', 'hi'], ['er']);
  b.node('Conv', ['er', 'wd'], ['d'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: E }, 'depthwise');
  bn(1, 'd', 'dn'); b.node('Clip', ['dn', 'lo', 'hi'], ['dr']);
  b.node('Conv', ['dr', 'wp'], ['p'], { kernel_shape: [1, 1] }, 'project');
  bn(2, 'p', 'pn'); b.node('Add', ['pn', 'x'], ['r']);
  // Left as Convs: a strided and a padded 1×1 conv.
  b.node('Conv', ['r', 'ws'], ['s'], { kernel_shape: [1, 1], strides: [2, 2] }, 'strided');
  b.node('Conv', ['s', 'ws'], ['q'], { kernel_shape: [1, 1], pads: [1, 1, 1, 1] }, 'padded');
  bn(3, 'q', 'o');
  // A squeeze-excitation gate: a 1×1 conv on the pooled [N, C, 1, 1] (the one-position form).
  init('wse', [C, C, 1, 1], 0.4); init('bse', [C], 0.1);
  b.node('GlobalAveragePool', ['o'], ['pool']);
  b.node('Conv', ['pool', 'wse', 'bse'], ['sc'], { kernel_shape: [1, 1] }, 'se');
  b.node('Sigmoid', ['sc'], ['gate']);
  b.node('Mul', ['o', 'gate'], ['y']);
  b.output('y');
  return b.build();
}

const batch = (): Record<string, Tensor> => ({ x: f32([N, C, S, S], new Rng(4).fill(new Float32Array(N * C * S * S), 1)) });
const NORM = [0, 1, 2, 3].flatMap((k) => [`g${k}`, `b${k}`]);

async function step(on: boolean, trainable: string[]) {
  const saved = pointwiseMatMul.current;
  pointwiseMatMul.current = on;
  // The 1×1 MatMuls are the form where the blocked step (src/onnx/nchwc-step.ts) is off.
  const savedBlocked = blockedStep.current;
  blockedStep.current = false;
  const s = new RefitModel(block(), { threads: 1 }).compileTrainStep({ trainable, loss: randomProjectionLoss(['y'], 5), batchNorm: 'train' });
  try {
    const b = batch();
    const { graph } = await s.compile(signatureOf(b));
    const forward = new Set(['expand', 'depthwise', 'project', 'strided', 'padded', 'se']);
    return { r: await s.run(b), convs: graph.model.graph.nodes.filter((n) => n.opType === 'Conv' && forward.has(n.name)).map((n) => n.name), matmuls: graph.model.graph.nodes.filter((n) => n.opType === 'MatMul').length };
  } finally {
    pointwiseMatMul.current = saved;
    blockedStep.current = savedBlocked;
    await s.release();
  }
}

test('the rewrite itself: constant stride-1 unpadded 1×1 convs only, weights that are trained stay Convs', () => {
  const ir = block();
  const sig = signatureOf(batch());
  const all = pointwiseConvsAsMatMul(ir, sig, () => true);
  assert.deepEqual(all.rewritten.sort(), ['expand', 'project', 'se']);
  assert.deepEqual([...all.assumed.keys()].sort(), ['dr', 'pool', 'x']);
  assert.ok(ir.graph.nodes.some((n) => n.name === 'expand'), 'the model itself is not changed');
  const trained = pointwiseConvsAsMatMul(ir, sig, (w) => w !== 'we');
  assert.deepEqual(trained.rewritten.sort(), ['project', 'se']);
  const saved = pointwiseMatMul.current;
  pointwiseMatMul.current = false;
  try { assert.deepEqual(pointwiseConvsAsMatMul(ir, sig, () => true).rewritten, []); } finally { pointwiseMatMul.current = saved; }
});

test('a MobileNet-style block\'s BN-affine step with its 1×1 convs as MatMuls: same loss, gradients and running statistics (≤ 1e-5)', async (t) => {
  if (!(await nchwcBlockSize())) { t.skip('onnxruntime does not block convs on this CPU: the rewrite is off'); return; }
  const old = await step(false, NORM);
  const now = await step(true, NORM);
  assert.deepEqual(old.convs.filter((n) => n === 'expand' || n === 'project' || n === 'se').sort(), ['expand', 'project', 'se']);
  assert.deepEqual(now.convs.sort(), ['depthwise', 'padded', 'strided'], 'the forward\'s 1×1 stride-1 convs are MatMuls');
  assert.equal(now.matmuls - old.matmuls >= 2, true);
  assert.ok(Math.abs(now.r.loss - old.r.loss) <= 1e-5 * Math.abs(old.r.loss), `loss ${now.r.loss} vs ${old.r.loss}`);
  for (const [k, g] of old.r.grads) {
    assert.ok(g.some((v) => v !== 0), `d/d${k} not all zero`);
    const e = relErr(now.r.grads.get(k)!, g);
    assert.ok(e <= 1e-5, `d/d${k} differs by ${e.toExponential(2)}`);
  }
  for (const [k, v] of old.r.runningStats) assert.ok(relErr(now.r.runningStats.get(k)!, v) <= 1e-5, `running ${k}`);
});

test('a trained 1×1 weight keeps its Conv (its weight gradient has its own forms)', async (t) => {
  if (!(await nchwcBlockSize())) { t.skip('onnxruntime does not block convs on this CPU: the rewrite is off'); return; }
  const now = await step(true, [...NORM, 'we']);
  assert.ok(now.convs.includes('expand') && !now.convs.includes('project'));
  assert.ok(now.r.grads.get('we')!.some((v) => v !== 0));
});
