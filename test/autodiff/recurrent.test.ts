// LSTM / GRU / RNN unrolled for the compiled sequence length (src/autodiff/lower/recurrent.ts):
// the unrolled forward equals onnxruntime's op, its gradients pass finite differences, and
// PyTorch's LSTM and GRU gradients are matched (fixtures by test/fixtures/recurrent/make_recurrent_fixture.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel, loadModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import * as losses from '../../src/train/losses.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { checkOp } from './helpers.ts';
import { gradCheck, randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { forwardGap, oneOp, lowered, runModel, maxAbsDiff } from './lower-helpers.ts';

const I = 3, H = 4, S = 5, B = 2;
const G = { LSTM: 4, GRU: 3, RNN: 1 } as const;
type Op = keyof typeof G;

function spec(op: Op, direction: string, opts: { states?: boolean; lbr?: number; peep?: boolean; attrs?: Record<string, never> } = {}) {
  const nd = direction === 'bidirectional' ? 2 : 1, g = G[op];
  const inputs: [string, number[] | Tensor][] = [['X', [S, B, I]], ['W', [nd, g * H, I]], ['R', [nd, g * H, H]], ['B', [nd, 2 * g * H]], ['', []]];
  if (opts.states) inputs.push(['h0', [nd, B, H]]);
  if (op === 'LSTM' && (opts.states || opts.peep)) {
    if (!opts.states) inputs.push(['', []]);
    inputs.push(opts.states ? ['c0', [nd, B, H]] : ['', []]);
    if (opts.peep) inputs.push(['P', [nd, 3 * H]]);
  }
  const outputs = op === 'LSTM' ? ['Y', 'Yh', 'Yc'] : ['Y', 'Yh'];
  const attrs = { hidden_size: H, direction, ...(op === 'GRU' ? { linear_before_reset: opts.lbr ?? 0 } : {}), ...(opts.attrs ?? {}) };
  return { op, inputs, outputs, attrs };
}

test('unrolled LSTM/GRU/RNN forward equals onnxruntime (≤1e-5): every direction, states given or absent, peepholes, linear_before_reset 0/1', async () => {
  let n = 0;
  for (const op of ['LSTM', 'GRU', 'RNN'] as const) {
    for (const direction of ['forward', 'reverse', 'bidirectional']) {
      for (const states of [false, true]) {
        for (const lbr of op === 'GRU' ? [0, 1] : [0]) {
          const { gap, count } = await forwardGap(spec(op, direction, { states, lbr, peep: op === 'LSTM' && states }));
          assert.equal(count, 1, `${op} ${direction}: not lowered`);
          assert.ok(gap <= 1e-5, `${op} ${direction} states=${states} lbr=${lbr}: max |diff| ${gap}`);
          n++;
        }
      }
    }
  }
  assert.equal(n, 24);
});

test('only some outputs used (Y_h alone, Y alone) still reproduce onnxruntime', async () => {
  for (const outputs of [['', 'Yh'], ['Y'], ['', '', 'Yc']]) {
    const s = spec('LSTM', 'bidirectional', { states: true });
    const { gap } = await forwardGap({ ...s, outputs });
    assert.ok(gap <= 1e-5, `outputs ${outputs}: ${gap}`);
  }
});

test('a constant, full-length sequence_lens is accepted and changes nothing', async () => {
  const s = spec('GRU', 'bidirectional', { states: true, lbr: 1 });
  const inputs = s.inputs.map(([n, v]): [string, number[] | Tensor] => (n === '' ? ['lens', { dtype: 'int32', dims: [B], data: new Int32Array([S, S]) }] : [n, v]));
  const { gap, count } = await forwardGap({ ...s, inputs });
  assert.equal(count, 1);
  assert.ok(gap <= 1e-5, `${gap}`);
});

test('layout 1 (batch-major): unrolled equals onnxruntime on the transposed layout-0 op', async () => {
  // onnxruntime's CPU kernels refuse layout=1, so the reference is the layout-0 op between Transposes.
  for (const op of ['LSTM', 'GRU'] as const) {
    const nd = 2, g = G[op];
    const rng = new Rng(5);
    const rnd = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1)), 0.5));
    const w = { W: rnd([nd, g * H, I]), R: rnd([nd, g * H, H]), B: rnd([nd, 2 * g * H]) };
    const x = rnd([B, S, I]), h0 = rnd([B, nd, H]), c0 = rnd([B, nd, H]);
    const outs = op === 'LSTM' ? ['Y', 'Yh', 'Yc'] : ['Y', 'Yh'];
    const build = (layout: number) => {
      const b = new ModelBuilder({ opset: 17 });
      b.input('x', 'float32', [B, S, I]);
      for (const [k, t] of Object.entries(w)) b.initializer(k, t);
      b.initializer('h0', h0);
      if (op === 'LSTM') b.initializer('c0', c0);
      const st = op === 'LSTM' ? ['h0', 'c0'] : ['h0'];
      if (layout === 1) {
        b.node(op, ['x', 'W', 'R', 'B', '', ...st], outs, { hidden_size: H, direction: 'bidirectional', layout: 1 }, 'rnn');
      } else {
        b.node('Transpose', ['x'], ['xt'], { perm: [1, 0, 2] });
        for (const s of st) b.node('Transpose', [s], [`${s}t`], { perm: [1, 0, 2] });
        b.node(op, ['xt', 'W', 'R', 'B', '', ...st.map((s) => `${s}t`)], outs.map((o) => `${o}0`), { hidden_size: H, direction: 'bidirectional' }, 'rnn');
        b.node('Transpose', ['Y0'], ['Y'], { perm: [2, 0, 1, 3] });
        for (const o of outs.slice(1)) b.node('Transpose', [`${o}0`], [o], { perm: [1, 0, 2] });
      }
      for (const o of outs) b.output(o);
      return b.build();
    };
    const ref = await runModel(build(0), { x });
    const { model } = await lowered(build(1), { x }, ['W'], false);
    const got = await runModel(model, { x });
    for (const o of outs) assert.ok(maxAbsDiff(got.get(o)!, ref.get(o)!) <= 1e-5, `${op} layout 1 ${o}`);
  }
});

test('the forward check catches a wrong unrolling: GRU unrolled with linear_before_reset 0 misses onnxruntime\'s linear_before_reset 1', async () => {
  const right = spec('GRU', 'forward', { states: true, lbr: 1 });
  const { model, feeds } = oneOp(right);
  const ref = await runModel(model, feeds);
  const wrong = oneOp(spec('GRU', 'forward', { states: true, lbr: 0 }));
  const { model: low } = await lowered(wrong.model, wrong.feeds, wrong.params);
  const got = await runModel(low, feeds);
  assert.ok(maxAbsDiff(got.get('Y')!, ref.get('Y')!) > 1e-3, 'a wrong formula must fail the ≤1e-5 check');
});

test('finite differences through the unrolled LSTM (peepholes, states) and GRU (both reset forms) w.r.t. every input', async () => {
  const asOp = (s: ReturnType<typeof spec>) => s.inputs.map(([name, v]) => ({ name, shape: v as number[] }));
  await checkOp('LSTM', asOp(spec('LSTM', 'bidirectional', { states: true, peep: true })), spec('LSTM', 'bidirectional').attrs, { nOutputs: 3 });
  for (const lbr of [0, 1]) await checkOp('GRU', asOp(spec('GRU', 'reverse', { states: true, lbr })), spec('GRU', 'reverse', { lbr }).attrs, { nOutputs: 2 });
  await checkOp('RNN', asOp(spec('RNN', 'forward', { states: true })), spec('RNN', 'forward').attrs, { nOutputs: 2 });
});

test('activations other than the defaults (PyTorch\'s nn.RNN(nonlinearity=\'relu\'), and every one the ONNX spec lists, with activation_alpha/beta consumed in order) equal onnxruntime', async () => {
  type A = Record<string, never>;
  const cases: [Op, string, A][] = [
    ['RNN', 'bidirectional', { activations: ['Relu', 'Relu'] } as unknown as A], // DeepSpeech's bidirectional ReLU RNN
    ['RNN', 'forward', { activations: ['Softsign'] } as unknown as A],
    ['RNN', 'reverse', { activations: ['LeakyRelu'], activation_alpha: [0.3] } as unknown as A],
    ['GRU', 'bidirectional', { activations: ['HardSigmoid', 'Softplus', 'Sigmoid', 'Elu'], activation_alpha: [0.3, 0.8], activation_beta: [0.4] } as unknown as A],
    ['LSTM', 'forward', { activations: ['HardSigmoid', 'ScaledTanh', 'Affine'], activation_alpha: [0.25, 1.5, 0.7], activation_beta: [0.5, 0.8, 0.1] } as unknown as A],
    ['LSTM', 'bidirectional', { activations: ['Sigmoid', 'Relu', 'Tanh', 'Sigmoid', 'Tanh', 'ThresholdedRelu'], activation_alpha: [0.1] } as unknown as A],
  ];
  for (const [op, direction, attrs] of cases) {
    const { gap, count } = await forwardGap(spec(op, direction, { states: true, attrs }));
    assert.equal(count, 1, `${op} ${JSON.stringify(attrs)}: not lowered`);
    assert.ok(gap <= 1e-5, `${op} ${direction} ${JSON.stringify(attrs)}: max |diff| ${gap}`);
  }
  const asOp = (s: ReturnType<typeof spec>) => s.inputs.map(([name, v]) => ({ name, shape: v as number[] }));
  const reluRnn = spec('RNN', 'bidirectional', { states: true, attrs: cases[0]![2] });
  await checkOp('RNN', asOp(reluRnn), reluRnn.attrs, { nOutputs: 2 });
  // a parameter the list needs but the node does not give (onnxruntime runs it with a default of its own)
  const { model, feeds, params } = oneOp(spec('RNN', 'forward', { attrs: { activations: ['LeakyRelu'] } as unknown as A }));
  await assert.rejects(lowered(model, feeds, params), /activation LeakyRelu needs 1 activation_alpha and 0 activation_beta values/);
});

async function torchParity(name: string) {
  const dir = new URL(`../fixtures/recurrent/${name}/`, import.meta.url);
  const model = await loadModel(new URL('model.onnx', dir).pathname, { threads: 1 });
  const { tensors } = parseSafetensors(readFileSync(new URL('tensors.safetensors', dir)));
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const r = await step.run({ x: tensors.get('input.x')!, y: tensors.get('label.y')! });
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `${name} loss ${r.loss} vs ${refLoss}`);
  let n = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith('grad.')) continue;
    const g = r.grads.get(k.slice(5));
    assert.ok(g, `${name}: no gradient for ${k.slice(5)}`);
    const e = t.data as Float32Array;
    let d2 = 0, e2 = 0;
    for (let i = 0; i < e.length; i++) { d2 += (g[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
    assert.ok(Math.sqrt(d2) <= 1e-4 * Math.sqrt(e2), `${name} ${k}: relative error ${(Math.sqrt(d2 / e2)).toExponential(2)}`);
    n++;
  }
  await step.release();
  return n;
}

test('PyTorch nn.LSTM (2 layers, bidirectional, batch_first): loss and every gradient match ≤1e-4', async () => {
  assert.equal(await torchParity('lstm'), 18);
});

test('PyTorch nn.GRU (2 layers, bidirectional, batch_first, learned initial state): loss and every gradient match ≤1e-4', async () => {
  assert.equal(await torchParity('gru'), 19);
});

test('only recurrent nodes on the gradient path are unrolled: a frozen LSTM stays one fused node', async () => {
  const model = await loadModel(new URL('../fixtures/recurrent/lstm/model.onnx', import.meta.url).pathname, { threads: 1 });
  const x = f32([3, 5, 4], new Float32Array(60));
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  const sig = signatureOf({ x });
  const frozen = await buildStepGraph(model.ir, sig, { trainable: ['head.weight', 'head.bias'], loss });
  assert.equal(frozen.model.graph.nodes.filter((n) => n.opType === 'LSTM').length, 2);
  const upper = await buildStepGraph(model.ir, sig, { trainable: ['rnn.weight_ih_l1', 'head.weight'], loss });
  assert.equal(upper.model.graph.nodes.filter((n) => n.opType === 'LSTM').length, 1, 'layer 0 is upstream of every trainable: it stays fused');
});

test('refused forms name the node and the reason, all at once', async () => {
  const b = new ModelBuilder({ opset: 17 });
  const rng = new Rng(2);
  const rnd = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1)), 0.5));
  b.input('x', 'float32', [S, B, I]);
  b.initializer('W', rnd([1, 4 * H, I])).initializer('R', rnd([1, 4 * H, H]));
  b.initializer('W2', rnd([1, 4 * H, H])).initializer('R2', rnd([1, 4 * H, H]));
  b.initializer('lens', { dtype: 'int32', dims: [B], data: new Int32Array([S, S - 2]) });
  b.node('LSTM', ['x', 'W', 'R'], ['y1'], { hidden_size: H, clip: 2.5 }, 'clipped_lstm');
  b.node('Squeeze', ['y1', 'ax'], ['y1s']);
  b.initializer('ax', i64([1], [1]));
  b.node('LSTM', ['y1s', 'W2', 'R2', '', 'lens'], ['y2'], { hidden_size: H, input_forget: 1 }, 'coupled_lstm');
  b.output('y2');
  const m = new RefitModel(b.build(), { threads: 1 });
  const step = m.compileTrainStep({ trainable: ['W', 'W2'], loss: randomProjectionLoss(['y2'], 1) });
  await assert.rejects(step.run({ x: rnd([S, B, I]) }), (e: Error) => {
    assert.match(e.message, /LSTM node 'clipped_lstm': attribute clip/);
    assert.match(e.message, /LSTM node 'coupled_lstm': attribute input_forget=1/);
    return true;
  });
});

test('sequences shorter than the batch\'s (sequence_lens, as pack_padded_sequence exports them): forward equals onnxruntime for every op and direction, constant or fed lengths', async () => {
  const lens = { dtype: 'int32' as const, dims: [B], data: new Int32Array([S - 2, S]) };
  for (const op of ['LSTM', 'GRU', 'RNN'] as const) {
    for (const direction of ['forward', 'reverse', 'bidirectional']) {
      const s = spec(op, direction, { states: true, lbr: 1 });
      const inputs = s.inputs.map(([n, v]): [string, number[] | Tensor] => (n === '' ? ['lens', lens] : [n, v]));
      const { gap, count } = await forwardGap({ ...s, inputs });
      assert.equal(count, 1);
      assert.ok(gap <= 1e-5, `${op} ${direction}: max |diff| ${gap}`);
    }
  }
  // lengths fed at run time, one of them 1: the same outputs as onnxruntime's LSTM, and finite differences
  const rng = new Rng(4);
  const rnd = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1)), 0.5));
  const b = new ModelBuilder({ opset: 17 }).input('x', 'float32', [S, 3, I]).input('lens', 'int32', [3]);
  b.initializer('W', rnd([2, 4 * H, I])).initializer('R', rnd([2, 4 * H, H])).initializer('B', rnd([2, 8 * H]));
  b.node('LSTM', ['x', 'W', 'R', 'B', 'lens'], ['Y', 'Yh', 'Yc'], { hidden_size: H, direction: 'bidirectional' as never });
  const model = b.output('Y').output('Yh').output('Yc').build();
  const feeds = { x: rnd([S, 3, I]), lens: { dtype: 'int32' as const, dims: [3], data: new Int32Array([S, 1, 3]) } };
  const want = await runModel(model, feeds);
  const { model: low } = await lowered(model, feeds, ['W', 'R', 'B']);
  const got = await runModel(low, feeds);
  for (const o of ['Y', 'Yh', 'Yc']) assert.ok(maxAbsDiff(got.get(o)!, want.get(o)!) <= 1e-5, `${o}: ${maxAbsDiff(got.get(o)!, want.get(o)!)}`);
  assert.ok(Array.from(got.get('Y')!.data as Float32Array).slice(2 * 3 * H).some((v) => v !== 0), 'the check sees more than zeros');
  for (const r of await gradCheck(model, feeds, { params: ['W', 'R', 'B'], outputs: ['Y', 'Yh', 'Yc'], maxElements: 32 })) {
    assert.ok(r.relError <= 1e-2 && r.analyticNorm > 0, `${r.param}: relative error ${r.relError.toExponential(2)}`);
  }
});
