// A QDQ model saved by onnxruntime's optimizer (level 'extended'): it fuses QuantizeLinear →
// DequantizeLinear → MatMul into com.microsoft MatMulIntegerToFloat fed by the QuantizeLinear's
// integer output, moved across a Reshape (src/autodiff/lower/quant.ts). The saved model trains like
// its source: the same loss and the same straight-through gradients upstream of the quantized layer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import type { Model } from '../../src/onnx/ir.ts';
import { RefitModel } from '../../src/model.ts';
import { mse } from '../../src/train/losses.ts';
import { Rng } from '../../src/util/rng.ts';
import { savedByOrt } from '../helpers/ort-saved.ts';

/** x [2, 3, 8] → float Linear → QDQ activation → int8 MatMul → per-feature scale (a bias Add would make onnxruntime write a Gemm). */
function qdqMlp(): Model {
  const rng = new Rng(11);
  const r = (dims: number[], s: number) => f32(dims, rng.fill(new Float32Array(dims.reduce((a, c) => a * c, 1)), s, 'normal'));
  const wq = { dtype: 'int8', dims: [6, 4], data: Int8Array.from({ length: 24 }, (_, i) => ((i * 53 + 7) % 201) - 100) } as Tensor;
  return new ModelBuilder({ opset: 17 })
    .input('x', 'float32', [2, 3, 8])
    .initializer('w0', r([8, 6], 0.5)).initializer('b0', r([6], 0.1))
    .initializer('hs', f32([], [0.02])).initializer('hz', { dtype: 'uint8', dims: [], data: new Uint8Array([128]) } as Tensor)
    .initializer('w1_q', wq).initializer('w1_s', f32([4], [0.01, 0.02, 0.015, 0.012])).initializer('w1_z', { dtype: 'int8', dims: [4], data: new Int8Array(4) } as Tensor)
    .initializer('b1', r([4], 0.1))
    .node('MatMul', ['x', 'w0'], ['h0']).node('Add', ['h0', 'b0'], ['h'])
    .node('QuantizeLinear', ['h', 'hs', 'hz'], ['hq']).node('DequantizeLinear', ['hq', 'hs', 'hz'], ['hd'])
    .node('DequantizeLinear', ['w1_q', 'w1_s', 'w1_z'], ['w1'], { axis: 1 })
    .node('MatMul', ['hd', 'w1'], ['y0']).node('Mul', ['y0', 'b1'], ['y'])
    .output('y', 'float32', [2, 3, 4])
    .build();
}


test('a QDQ MatMul saved by onnxruntime as MatMulIntegerToFloat (static QuantizeLinear input) trains like its source', async () => {
  const src = qdqMlp();
  const saved = await savedByOrt(src, 'extended');
  const fused = saved.graph.nodes.find((n) => n.opType === 'MatMulIntegerToFloat');
  assert.ok(fused, `onnxruntime wrote no MatMulIntegerToFloat (ops: ${[...new Set(saved.graph.nodes.map((n) => n.opType))]})`);
  // onnxruntime moves the QuantizeLinear ahead of a Reshape: the int8 activation crosses it
  const chain: string[] = [];
  for (let t = fused.inputs[0]!, p = saved.graph.nodes.find((n) => n.outputs.includes(t)); p; t = p.inputs[0]!, p = saved.graph.nodes.find((n) => n.outputs.includes(t))) {
    chain.unshift(p.opType);
    if (p.opType === 'QuantizeLinear') break;
  }
  assert.deepEqual(chain, ['QuantizeLinear', 'Reshape'], 'the form this test means to cover');
  const rng = new Rng(4);
  const x = f32([2, 3, 8], rng.fill(new Float32Array(48), 1, 'normal'));
  const target = f32([2, 3, 4], rng.fill(new Float32Array(24), 1, 'normal'));
  const run = async (m: Model) => {
    const model = new RefitModel(m, { threads: 1 });
    const step = model.compileTrainStep({ trainable: ['w0', 'b0', 'b1'], loss: mse({ output: 'y', target: 'target' }) });
    const r = await step.run({ x, target });
    await step.release();
    return r;
  };
  const a = await run(src), b = await run(saved);
  assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(a.loss), `loss ${b.loss} vs source ${a.loss}`);
  for (const p of ['w0', 'b0', 'b1']) {
    const ga = a.grads.get(p)!, gb = b.grads.get(p)!;
    let d = 0, n = 0;
    for (let i = 0; i < ga.length; i++) { d += (ga[i]! - gb[i]!) ** 2; n += ga[i]! ** 2; }
    assert.ok(n > 0 && Math.sqrt(d) <= 1e-5 * Math.sqrt(n), `${p}: ‖diff‖ ${Math.sqrt(d)} vs ‖grad‖ ${Math.sqrt(n)}`);
  }
});

test('trainable \'all\' offers no quantization scale, before or after onnxruntime fuses the layer, and the step still matches', async () => {
  const src = qdqMlp();
  const rng = new Rng(5);
  const x = f32([2, 3, 8], rng.fill(new Float32Array(48), 1, 'normal'));
  const target = f32([2, 3, 4], rng.fill(new Float32Array(24), 1, 'normal'));
  const run = async (m: Model) => {
    const model = new RefitModel(m, { threads: 1 });
    const step = model.compileTrainStep({ trainable: 'all', loss: mse({ output: 'y', target: 'target' }) });
    const r = await step.run({ x, target });
    await step.release();
    return { names: model.parameterNames('all'), r };
  };
  const a = await run(src);
  // hs: the activation scale (QuantizeLinear, then MatMulIntegerToFloat's a_scale); w1_s: the weight
  // scale, which no node reads once the fused layer is lowered (onnxruntime warned about it)
  assert.deepEqual(a.names, ['w0', 'b0', 'b1']);
  for (const level of ['extended', 'all'] as const) {
    const saved = await savedByOrt(src, level);
    const fused = saved.graph.nodes.find((n) => n.opType === 'MatMulIntegerToFloat');
    assert.ok(fused && fused.inputs[3] === 'w1_s', `${level}: the form this test means to cover`);
    const b = await run(saved);
    assert.deepEqual(b.names, a.names, `${level}: 'all' differs from the source's`);
    assert.deepEqual([...b.r.grads.keys()], a.names);
    assert.ok(Math.abs(a.r.loss - b.r.loss) <= 1e-5 * Math.abs(a.r.loss), `${level}: loss ${b.r.loss} vs source ${a.r.loss}`);
    for (const p of a.names) {
      const ga = a.r.grads.get(p)!, gb = b.r.grads.get(p)!;
      let d = 0, n = 0;
      for (let i = 0; i < ga.length; i++) { d += (ga[i]! - gb[i]!) ** 2; n += ga[i]! ** 2; }
      assert.ok(n > 0 && Math.sqrt(d) <= 1e-5 * Math.sqrt(n), `${level} ${p}: ‖diff‖ ${Math.sqrt(d)} vs ‖grad‖ ${Math.sqrt(n)}`);
    }
    // named explicitly, a scale is refused with the reason
    assert.throws(() => new RefitModel(saved).compileTrainStep({ trainable: ['w0', 'w1_s'], loss: mse({ output: 'y', target: 'target' }) }),
      /'w1_s' is a quantization scale or zero point \(input 3 of MatMulIntegerToFloat node .*a trainable scale, as in LSQ, is not supported/);
  }
  assert.throws(() => new RefitModel(src).parameterNames(['hs']), /'hs' is a quantization scale or zero point \(input 1 of QuantizeLinear/);
});

test('the weight scale of onnxruntime\'s unfused dynamic quantization (Mul(x_scale, w_scale)) is not offered by \'all\' either', () => {
  const m = new ModelBuilder({ opset: 17 })
    .input('x', 'float32', [2, 4])
    .initializer('w_q', { dtype: 'int8', dims: [4, 3], data: Int8Array.from({ length: 12 }, (_, i) => i * 9 - 50) } as Tensor)
    .initializer('w_s', f32([], [0.02])).initializer('b', f32([3], [0.1, -0.2, 0.3]))
    .node('DynamicQuantizeLinear', ['x'], ['xq', 'xs', 'xz'])
    .node('MatMulInteger', ['xq', 'w_q', 'xz'], ['yi'])
    .node('Mul', ['xs', 'w_s'], ['s'])
    .node('Cast', ['yi'], ['yf'], { to: { kind: 'int', value: 1 } })
    .node('Mul', ['yf', 's'], ['y0']).node('Add', ['y0', 'b'], ['y'])
    .output('y', 'float32', [2, 3])
    .build();
  const model = new RefitModel(m);
  assert.deepEqual(model.parameterNames('all'), ['b']);
  assert.throws(() => model.parameterNames(['w_s']), /'w_s' is a quantization scale or zero point \(input 1 of Mul node/);
});

test('torch\'s quantized exports put a Cast to the same integer type between QuantizeLinear and DequantizeLinear: it trains as the pair without it; a Cast to another integer type is refused', async () => {
  const withCast = (to: number | null): Model => {
    const m = qdqMlp();
    if (to === null) return m;
    const dq = m.graph.nodes.find((n) => n.opType === 'DequantizeLinear' && n.inputs[0] === 'hq')!;
    dq.inputs[0] = 'hq_cast';
    if (to === 3) { // to int8: the DequantizeLinear then needs an int8 zero point (a valid graph, other values)
      m.graph.initializers.set('hz8', { dtype: 'int8', dims: [], data: new Int8Array([0]) } as Tensor);
      dq.inputs[2] = 'hz8';
    }
    m.graph.nodes.splice(m.graph.nodes.indexOf(dq), 0, { name: 'hq_cast_node', opType: 'Cast', domain: '', inputs: ['hq'], outputs: ['hq_cast'], attrs: { to: { kind: 'int', value: to } } });
    return m;
  };
  const x = f32([2, 3, 8], new Rng(12).fill(new Float32Array(48), 1, 'normal'));
  const run = async (m: Model) => {
    const step = new RefitModel(m).compileTrainStep({ trainable: ['w0', 'b0', 'b1'], loss: mse({ output: 'y' }) });
    const r = await step.run({ x, target: f32([2, 3, 4], new Float32Array(24).fill(0.3)) });
    await step.release();
    return r;
  };
  const plain = await run(withCast(null)), cast = await run(withCast(2)); // uint8, the zero point's type
  assert.equal(cast.loss, plain.loss);
  for (const p of ['w0', 'b0', 'b1']) assert.deepEqual(Array.from(cast.grads.get(p)!), Array.from(plain.grads.get(p)!), p);
  assert.ok(plain.grads.get('w0')!.some((v) => v !== 0), 'the straight-through gradient reaches w0');
  await assert.rejects(run(withCast(3)), /QuantizeLinear node .* quantizes 'h', which depends on a trainable parameter, and its integer output feeds (Cast|DequantizeLinear) node/);
});
