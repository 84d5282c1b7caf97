// Dynamically quantized convolutions (onnxruntime's quantize_dynamic with Conv among its op types:
// DynamicQuantizeLinear → ConvInteger → Cast → Mul by x_scale·w_scale → Add of the bias reshaped
// to [1, O, 1, 1], the form of @imgly/background-removal's int8 models): refit trains through them
// with the straight-through activation quantization it uses for MatMulInteger
// (src/autodiff/lower/quant.ts), checked against the same layers written as a float Conv of the
// dequantized weight behind DynamicQuantizeLinear → DequantizeLinear, whose straight-through
// gradient test/peft/quantized.test.ts checks against PyTorch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { cloneModel, type Model, type Node } from '../../src/onnx/ir.ts';
import { tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { quantizeDynamic, findSites, withAdapter, lora } from '../../src/peft/index.ts';
import { dequantizeWeight } from '../../src/autodiff/lower/quant.ts';
import { crossEntropy } from '../../src/train/losses.ts';
import { smallCnn, images, maxDiff } from './helpers.ts';
import { relErr } from '../helpers/close.ts';

/**
 * Each ConvInteger layer of `q` as DequantizeLinear(x_q, x_scale, x_zp) → Conv(·, dequantized W);
 * the stem, which reads the image (no gradient passes it), stays ConvInteger as in the step.
 */
function floatTwin(q: Model): Model {
  const m = cloneModel(q);
  const g = m.graph;
  const out: Node[] = [];
  const skip = new Set<Node>();
  for (const n of g.nodes) {
    if (skip.has(n)) continue;
    const dql = g.nodes.find((d) => d.outputs[0] === n.inputs[0]);
    if (n.opType !== 'ConvInteger' || g.inputs.some((i) => i.name === dql!.inputs[0])) { out.push(n); continue; }
    const cast = g.nodes.find((c) => c.inputs[0] === n.outputs[0])!;
    const mul = g.nodes.find((c) => c.inputs.includes(cast.outputs[0]!))!;
    skip.add(cast); skip.add(mul);
    const wScale = g.nodes.find((s) => s.outputs[0] === mul.inputs[1])!.inputs[1]!;
    const w = dequantizeWeight(g.initializers.get(n.inputs[1]!)!, g.initializers.get(wScale)!, g.initializers.get(n.inputs[3]!), 0);
    g.initializers.set(`${n.name}.w`, w);
    out.push(
      { name: `${n.name}.dq`, opType: 'DequantizeLinear', domain: '', inputs: dql!.outputs.slice(0, 3), outputs: [`${n.name}.xd`], attrs: {} },
      { name: `${n.name}.conv`, opType: 'Conv', domain: '', inputs: [`${n.name}.xd`, `${n.name}.w`], outputs: [mul.outputs[0]!], attrs: n.attrs },
    );
  }
  g.nodes = out;
  return m;
}

/** The CNN with every convolution int8, one of them as the imgly files store theirs: uint8 with zero point 128. */
function quantizedCnn(): Model {
  const q = quantizeDynamic(smallCnn().ir, { convs: true });
  const ci = q.graph.nodes.filter((n) => n.opType === 'ConvInteger');
  const [w, zp] = [ci[1]!.inputs[1]!, ci[1]!.inputs[3]!];
  const s8 = q.graph.initializers.get(w)!.data as Int8Array;
  q.graph.initializers.set(w, { dtype: 'uint8', dims: q.graph.initializers.get(w)!.dims, data: Uint8Array.from(s8, (v) => v + 128) } as Tensor);
  q.graph.initializers.set(zp, { dtype: 'uint8', dims: [], data: new Uint8Array([128]) } as Tensor);
  return q;
}

test('quantizeDynamic({ convs: true }) writes ConvInteger layers that onnxruntime runs, close to the float CNN', async () => {
  const float = smallCnn();
  const q = new RefitModel(quantizeDynamic(float.ir, { convs: true }), { threads: 1 });
  const convs = float.ir.graph.nodes.filter((n) => n.opType === 'Conv').length;
  assert.equal(q.ir.graph.nodes.filter((n) => n.opType === 'ConvInteger').length, convs);
  assert.ok(!q.ir.graph.nodes.some((n) => n.opType === 'Conv'));
  const x = images(4);
  const a = (await q.run({ x })).logits!, b = (await float.run({ x })).logits!;
  assert.ok(relErr(a.data as Float32Array, b.data as Float32Array) < 0.05, `int8 vs float: ${relErr(a.data as Float32Array, b.data as Float32Array)}`);
  await Promise.all([q.release(), float.release()]);
});

test('a step trains through ConvInteger layers: forward = onnxruntime\'s int8 inference, gradients = the dequantized float twin\'s', async () => {
  const q = new RefitModel(quantizedCnn(), { threads: 1 });
  const twin = new RefitModel(floatTwin(q.ir), { threads: 1 });
  const x = images(4), y = tensor('int64', [4], [1, 7, 3, 0]);
  const trainable = q.parameterNames();
  assert.ok(trainable.length >= 6 && trainable.every((p) => twin.parameterNames().includes(p)), trainable.join());
  const loss = crossEntropy({ logits: 'logits' });
  const r = await q.compileTrainStep({ trainable, loss, outputs: ['logits'] }).run({ x, y });
  const t = await twin.compileTrainStep({ trainable, loss, outputs: ['logits'] }).run({ x, y });
  const inference = (await q.run({ x })).logits!;
  assert.ok(maxDiff(r.outputs.logits!, inference) <= 1e-4 * Math.max(...(inference.data as Float32Array).map(Math.abs)), `step forward vs int8 inference: ${maxDiff(r.outputs.logits!, inference)}`);
  assert.ok(Math.abs(r.loss - t.loss) <= 1e-5 * Math.abs(t.loss), `loss ${r.loss} vs twin ${t.loss}`);
  for (const p of trainable) {
    const g = r.grads.get(p)!, want = t.grads.get(p)!;
    assert.ok(want.some((v) => v !== 0), `${p}: the twin's gradient is not zero`);
    assert.ok(relErr(g, want) <= 1e-5, `${p}: ${relErr(g, want)}`);
  }
  await Promise.all([q.release(), twin.release()]);
});

test('a ConvInteger whose input zero point is not its DynamicQuantizeLinear\'s is refused, naming the node', async () => {
  const ir = quantizedCnn();
  const ci = ir.graph.nodes.filter((n) => n.opType === 'ConvInteger')[1]!; // past the stem: on the gradient path
  ir.graph.initializers.set('other_zp', { dtype: 'uint8', dims: [], data: new Uint8Array([3]) } as Tensor);
  ci.inputs[2] = 'other_zp';
  const m = new RefitModel(ir, { threads: 1 });
  const step = m.compileTrainStep({ trainable: m.parameterNames(), loss: crossEntropy({ logits: 'logits' }) });
  await assert.rejects(step.run({ x: images(2), y: tensor('int64', [2], [0, 1]) }), new RegExp(`ConvInteger node '${ci.name}': its input zero point`));
});

test('LoRA on ConvInteger layers: sites named as the float model\'s, a step forward = inference, training lowers the loss, the merge writes float Convs', async () => {
  const float = smallCnn();
  const q = new RefitModel(quantizedCnn(), { threads: 1 });
  const floatConvs = findSites(float.ir.graph).filter((s) => s.op === 'Conv').map((s) => [s.module, s.dIn, s.dOut, s.kernel!.join('x')]);
  const sites = findSites(q.ir.graph).filter((s) => s.op === 'Conv');
  assert.deepEqual(sites.map((s) => [s.module, s.dIn, s.dOut, s.kernel!.join('x')]), floatConvs, 'the same modules, sizes and kernels');
  assert.ok(sites.every((s) => s.quant === 'dynamic'));
  const targets = sites.filter((s) => s.kernel!.length === 2 && s.module.startsWith('layer')).map((s) => s.module);
  const p = withAdapter(q, 'ad', lora({ targets, rank: 2, alpha: 4 }));
  for (const [k, t] of p.adapterValues('ad')) if (k.includes('lora_B')) (t.data as Float32Array).fill(0.02);
  p.touch(p.trainableNames());
  const x = images(8), y = tensor('int64', [8], [1, 7, 3, 0, 2, 2, 9, 4]);
  const step = p.compileTrainStep({ trainable: p.trainableNames(), loss: crossEntropy({ logits: 'logits' }), outputs: ['logits'] });
  const first = await step.run({ x, y });
  assert.ok(maxDiff(first.outputs.logits!, (await p.run({ x })).logits!) <= 1e-4, 'step forward = inference');
  for (const k of p.trainableNames()) assert.ok(first.grads.get(k)!.some((v) => v !== 0) && first.grads.get(k)!.every(Number.isFinite), k);
  const losses: number[] = [first.loss];
  for (let i = 0; i < 5; i++) {
    const r = i === 0 ? first : await step.run({ x, y });
    for (const k of p.trainableNames()) {
      const d = p.param(k).data as Float32Array, g = r.grads.get(k)!;
      for (let j = 0; j < d.length; j++) d[j] = d[j]! - 0.05 * g[j]!;
    }
    p.touch(p.trainableNames());
    losses.push((await step.run({ x, y })).loss);
  }
  assert.ok(losses.at(-1)! < losses[0]!, `loss ${losses[0]} → ${losses.at(-1)}`);
  const merged = p.merge('ad');
  for (const t of targets) assert.ok(!merged.ir.graph.nodes.some((n) => n.opType === 'ConvInteger' && n.name === sites.find((s) => s.module === t)!.node), `${t} merged into a float Conv`);
  // The merge computes x_fq·(W + ΔW) where the adapter computed x_fq·W + x·ΔW (src/peft/quantized.ts),
  // and every later layer quantizes its input again, so a small change flips some roundings: the
  // merged model may move as far as quantizing the base did (at ΔW = 0 the two agree to 1e-6).
  const adapted = (await p.run({ x })).logits!;
  const d = maxDiff((await merged.run({ x })).logits!, adapted);
  const quantization = maxDiff((await q.run({ x })).logits!, (await float.run({ x })).logits!);
  assert.ok(d <= quantization, `merged vs adapter: ${d}; int8 base vs float base: ${quantization}`);
  await step.release();
  await Promise.all([q.release(), float.release()]);
});
