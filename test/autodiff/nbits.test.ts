// com.microsoft's MatMulNBits (transformers.js's q4 models) lowered for gradients
// (src/onnx/nbits.ts, src/autodiff/lower/contrib.ts). The zoo's Llama has every weight MatMul
// replaced by a 4-bit MatMulNBits packed here by hand from the op's spec; its float twin has the
// same weights dequantized. onnxruntime's kernel must compute the twin's logits (the packing is
// the spec's), and refit's step on the 4-bit model must give the twin's loss and gradients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, RefitModel } from '../../src/model.ts';
import { withoutKvCache } from '../../src/onnx/kv-cache.ts';
import { cloneModel, type Model } from '../../src/onnx/ir.ts';
import { f32, tensor } from '../../src/onnx/tensor.ts';
import * as peft from '../../src/peft/index.ts';
import { readZoo, batchOf, lossOf } from '../fixtures/zoo/read.ts';

const BLOCK = 16;

/**
 * Replace every MatMul by a stored [K, N] weight with MatMulNBits (4 bits, blocks of 16 along K):
 * per block an asymmetric scale and zero point, q = round(w / scale) + zp in 0…15. Odd layers
 * store zero points as packed bytes, even ones leave them out (the op's default 8, a symmetric
 * scale). Returns the 4-bit model and its float twin (the dequantized weights in the MatMuls).
 */
function quantize(ir: Model): { q4: Model; twin: Model; layers: number } {
  const q4 = cloneModel(ir), twin = cloneModel(ir);
  let layers = 0;
  q4.graph.nodes = q4.graph.nodes.map((n) => {
    const w = q4.graph.initializers.get(n.inputs[1] ?? '');
    if (n.opType !== 'MatMul' || !w || w.dims.length !== 2 || w.dtype !== 'float32') return n;
    const [K, N] = w.dims as [number, number];
    const blocks = Math.ceil(K / BLOCK), blob = BLOCK / 2, zpBytes = Math.ceil(blocks / 2);
    const withZp = layers % 2 === 1;
    const B = new Uint8Array(N * blocks * blob), scales = new Float32Array(N * blocks), zps = new Uint8Array(N * zpBytes);
    const deq = new Float32Array(K * N);
    const wd = w.data as Float32Array;
    for (let c = 0; c < N; c++) {
      for (let j = 0; j < blocks; j++) {
        const ks = Array.from({ length: Math.min(BLOCK, K - j * BLOCK) }, (_, i) => j * BLOCK + i);
        const vals = ks.map((k) => wd[k * N + c]!);
        const lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
        const scale = withZp ? (hi - lo) / 15 || 1 : Math.max(-lo, hi) / 7 || 1;
        const zp = withZp ? Math.round(-lo / scale) : 8;
        scales[c * blocks + j] = scale;
        if (withZp) zps[c * zpBytes + (j >> 1)]! |= zp << (4 * (j & 1));
        ks.forEach((k, i) => {
          const q = Math.min(15, Math.max(0, Math.round(vals[i]! / scale) + zp));
          B[(c * blocks + j) * blob + (i >> 1)]! |= q << (4 * (i & 1));
          deq[k * N + c] = (q - zp) * Math.fround(scale);
        });
      }
    }
    // onnxruntime's quantizer's names: <weight>_Q4, _scales, _zero_points
    const name = n.inputs[1]!;
    q4.graph.initializers.set(`${name}_Q4`, tensor('uint8', [N, blocks, blob], B));
    q4.graph.initializers.set(`${name}_scales`, f32([N * blocks], scales));
    if (withZp) q4.graph.initializers.set(`${name}_zero_points`, tensor('uint8', [N * zpBytes], zps));
    twin.graph.initializers.set(n.inputs[1]!, f32([K, N], deq));
    layers++;
    return {
      name: `${n.name}_nbits`, opType: 'MatMulNBits', domain: 'com.microsoft',
      inputs: [n.inputs[0]!, `${name}_Q4`, `${name}_scales`, ...(withZp ? [`${name}_zero_points`] : [])], outputs: n.outputs,
      attrs: { K: { kind: 'int', value: K }, N: { kind: 'int', value: N }, bits: { kind: 'int', value: 4 }, block_size: { kind: 'int', value: BLOCK } },
    };
  });
  for (const n of ir.graph.nodes) if (n.opType === 'MatMul' && q4.graph.initializers.has(`${n.inputs[1]}_Q4`)) q4.graph.initializers.delete(n.inputs[1]!);
  if (!q4.opsets.some((o) => o.domain === 'com.microsoft')) q4.opsets.push({ domain: 'com.microsoft', version: 1 });
  return { q4, twin, layers };
}

const maxRel = (a: Float32Array, b: Float32Array) => {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - b[i]!)); n = Math.max(n, Math.abs(b[i]!)); }
  return d / Math.max(n, 1e-12);
};

test('MatMulNBits (4 bits, blocks of 16, packed and default zero points): onnxruntime computes the dequantized twin, and refit\'s step on it gives the twin\'s loss and gradients', async () => {
  const f = readZoo('llama');
  const base = withoutKvCache(await loadModel(f.modelPath, { threads: 1 }));
  const { q4, twin, layers } = quantize(base.ir);
  assert.equal(layers, 15, 'q, k, v, o, gate, up, down per layer, and the head');
  const m4 = new RefitModel(q4, { threads: 1 }), mt = new RefitModel(twin, { threads: 1 });
  const c = f.meta.cases[0]!.name;
  const batch = batchOf(f, c);
  const feeds = Object.fromEntries(Object.entries(batch).filter(([k]) => m4.inputs.some((i) => i.name === k)));
  const z4 = (await m4.run(feeds))['logits']!.data as Float32Array, zt = (await mt.run(feeds))['logits']!.data as Float32Array;
  assert.ok(maxRel(z4, zt) < 1e-5, `onnxruntime's MatMulNBits against the twin: ${maxRel(z4, zt)}`);
  // 'all' on the 4-bit model: the float parameters (embedding, RMSNorm weights, the rotary buffer); scales are not parameters.
  const names = m4.parameterNames();
  assert.ok(!names.some((p) => p.endsWith('_scales')), names.join(', '));
  const s4 = m4.compileTrainStep({ trainable: names, loss: lossOf(f.meta), outputs: ['logits'] });
  const st = mt.compileTrainStep({ trainable: names, loss: lossOf(f.meta), outputs: ['logits'] });
  const r4 = await s4.run(batch), rt = await st.run(batch);
  assert.ok(Math.abs(r4.loss - rt.loss) <= 1e-5 * Math.abs(rt.loss), `loss ${r4.loss} against the twin's ${rt.loss}`);
  for (const p of names) assert.ok(maxRel(r4.grads.get(p)!, rt.grads.get(p)!) < 1e-4, `${p}: ${maxRel(r4.grads.get(p)!, rt.grads.get(p)!)}`);
  await Promise.all([s4.release(), st.release()]);
  // norm-affine finds the RMSNorms of the 4-bit model and steps
  const na = peft.withAdapter(m4, 'n', peft.normAffine());
  assert.equal(na.trainableNames('n').length, 5);
  const sn = na.compileTrainStep({ trainable: na.trainableNames('n'), loss: lossOf(f.meta), outputs: ['logits'] });
  assert.ok(Number.isFinite((await sn.run(batch)).loss));
  await Promise.all([sn.release(), na.release(), m4.release(), mt.release(), base.release()]);
});

test('MatMulNBits refusal names the node: act-order g_idx', async () => {
  const f = readZoo('llama');
  const base = withoutKvCache(await loadModel(f.modelPath, { threads: 1 }));
  const { q4 } = quantize(base.ir);
  const batch = batchOf(f, f.meta.cases[0]!.name);
  const node = q4.graph.nodes.find((n) => n.opType === 'MatMulNBits')!;
  const gidx = cloneModel(q4);
  const g = gidx.graph.nodes.find((n) => n.name === node.name)!;
  gidx.graph.initializers.set('g_idx', tensor('int32', [16], Array.from({ length: 16 }, (_, i) => Math.floor(i / 16))));
  g.inputs = [...g.inputs.slice(0, 3), g.inputs[3] ?? '', 'g_idx'];
  const m = new RefitModel(gidx, { threads: 1 });
  const step = m.compileTrainStep({ trainable: m.parameterNames(), loss: lossOf(f.meta), outputs: ['logits'] });
  await assert.rejects(step.run(batch), new RegExp(`MatMulNBits node '${node.name}': input g_idx \\(act-order\\) is not supported`));
  await Promise.all([step.release(), m.release(), base.release()]);
});

test('LoRA on MatMulNBits layers (QLoRA on a 4-bit model): the same loss and adapter gradients as on the float twin; mergeAll folds into plain float MatMuls that compute the adapter model', async () => {
  const f = readZoo('llama');
  const base = withoutKvCache(await loadModel(f.modelPath, { threads: 1 }));
  const { q4, twin } = quantize(base.ir);
  const m4 = new RefitModel(q4, { threads: 1 }), mt = new RefitModel(twin, { threads: 1 });
  const lora = () => peft.lora({ targets: (s) => Math.min(s.dIn, s.dOut) >= 2, rank: 2, alpha: 4 });
  const p4 = peft.withAdapter(m4, 'q', lora()), pt = peft.withAdapter(mt, 'q', lora());
  assert.deepEqual(p4.trainableNames('q'), pt.trainableNames('q'), 'the same modules (onnxruntime\'s _Q4 names map to the weight\'s module)');
  assert.equal(p4.trainableNames('q').length, 30, 'A and B on all 15 four-bit layers');
  // B starts at 0: give it values so that every gradient is informative
  const values = Object.fromEntries(p4.trainableNames('q').filter((n) => n.includes('lora_B')).map((n, i) => [n, Float32Array.from(p4.param(n).data as Float32Array, (_, k) => 0.05 * Math.sin(i + k))]));
  p4.setParams(values); pt.setParams(values);
  const batch = batchOf(f, f.meta.cases[0]!.name);
  const s4 = p4.compileTrainStep({ trainable: p4.trainableNames('q'), loss: lossOf(f.meta), outputs: ['logits'] });
  const st = pt.compileTrainStep({ trainable: pt.trainableNames('q'), loss: lossOf(f.meta), outputs: ['logits'] });
  const r4 = await s4.run(batch), rt = await st.run(batch);
  assert.ok(Math.abs(r4.loss - rt.loss) <= 1e-5 * Math.abs(rt.loss), `loss ${r4.loss} against ${rt.loss}`);
  for (const n of p4.trainableNames('q')) assert.ok(maxRel(r4.grads.get(n)!, rt.grads.get(n)!) < 1e-4, `${n}: ${maxRel(r4.grads.get(n)!, rt.grads.get(n)!)}`);
  await Promise.all([s4.release(), st.release()]);
  const feeds = Object.fromEntries(Object.entries(batch).filter(([k]) => m4.inputs.some((i) => i.name === k)));
  const merged = p4.mergeAll();
  assert.ok(!merged.ir.graph.nodes.some((n) => n.opType === 'MatMulNBits'), 'merged layers are float MatMuls');
  const want = (await p4.run(feeds))['logits']!.data as Float32Array, got = (await merged.run(feeds))['logits']!.data as Float32Array;
  assert.ok(maxRel(got, want) < 1e-5, `merged against the adapter model: ${maxRel(got, want)}`);
  await Promise.all([merged.release(), p4.release(), pt.release(), m4.release(), mt.release(), base.release()]);
});

test('refit train --adapter lora on a 4-bit decoder with a KV cache; refit adapter merge refuses to turn its 4-bit layers into float ones in place', async () => {
  const { mkdtempSync, rmSync, writeFileSync, existsSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { encodeModel } = await import('../../src/onnx/proto.ts');
  const { runTrain } = await import('../../src/cli/train.ts');
  const { mergeAdapters } = await import('../../src/cli/adapter.ts');
  const { npy } = await import('../helpers/cli.ts');
  const dir = mkdtempSync(join(tmpdir(), 'refit-nbits-'));
  try {
    const file = await loadModel(readZoo('llama').modelPath, { threads: 1 });
    const { q4 } = quantize(file.ir); // the file as given: past_key_values inputs and all
    await file.release();
    const path = join(dir, 'model_q4.onnx');
    writeFileSync(path, encodeModel(q4));
    const ids = BigInt64Array.from({ length: 32 * 8 }, (_, i) => BigInt((3 + i * 7) % 29));
    writeFileSync(join(dir, 'ids.npy'), npy('<i8', [32, 8], ids));
    const r = await runTrain(path, { task: 'next-token', data: join(dir, 'ids.npy'), adapter: 'lora', rank: 2, epochs: 1, out: join(dir, 'lora'), json: true });
    assert.ok(r.kvCache && r.steps > 0 && Number.isFinite(r.epochs[0]!.trainLoss), JSON.stringify(r));
    await assert.rejects(mergeAdapters(path, [join(dir, 'lora')], join(dir, 'merged.onnx')), /must fold into its weights as they are stored; .* a merge into a quantized weight, which becomes a float layer\); nothing written/);
    assert.ok(!existsSync(join(dir, 'merged.onnx')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('peft.quantizeNBits writes what onnxruntime\'s kernel reads (blocks of 32, longer than some layers\' K): its outputs equal the float model with the weights it stands for', async () => {
  const { quantizeNBits } = await import('../../src/peft/index.ts');
  const { dequantizeNBits, nbitsLayout } = await import('../../src/onnx/nbits.ts');
  const f = readZoo('llama');
  const base = withoutKvCache(await loadModel(f.modelPath, { threads: 1 }));
  const q = quantizeNBits(base.ir, { blockSize: 32 });
  const nodes = q.graph.nodes.filter((n) => n.opType === 'MatMulNBits');
  assert.equal(nodes.length, 15);
  const twin = cloneModel(base.ir);
  for (const n of nodes) {
    const l = nbitsLayout(n) as Exclude<ReturnType<typeof nbitsLayout>, string>;
    const w = n.inputs[1]!.replace(/_Q4$/, '');
    twin.graph.initializers.set(w, f32([l.K, l.N], dequantizeNBits(l, q.graph.initializers.get(n.inputs[1]!)!, q.graph.initializers.get(n.inputs[2]!)!, q.graph.initializers.get(n.inputs[3]!))));
  }
  const mq = new RefitModel(q, { threads: 1 }), mt = new RefitModel(twin, { threads: 1 });
  const batch = batchOf(f, f.meta.cases[0]!.name);
  const feeds = Object.fromEntries(Object.entries(batch).filter(([k]) => mq.inputs.some((i) => i.name === k)));
  const zq = (await mq.run(feeds))['logits']!.data as Float32Array, zt = (await mt.run(feeds))['logits']!.data as Float32Array;
  assert.ok(maxRel(zq, zt) < 1e-5, `${maxRel(zq, zt)}`);
  const zf = (await base.run(feeds))['logits']!.data as Float32Array;
  assert.ok(maxRel(zq, zf) > 1e-4 && maxRel(zq, zf) < 1, `4-bit weights change the logits, within their scale: ${maxRel(zq, zf)}`);
  assert.throws(() => quantizeNBits(base.ir, { blockSize: 24 }), /blockSize must be a power of 2 of at least 16/);
  await Promise.all([mq.release(), mt.release(), base.release()]);
});

test('a 4-bit embedding table (GatherBlockQuantized, onnxruntime-genai\'s tied embeddings) stays frozen: \'all\' trains the rest, and its scales are refused by name', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { tokenCrossEntropy } = await import('../../src/train/losses.ts');
  const V = 6, C = 32, bs = 16;
  const b = new ModelBuilder({ opset: 17 });
  b.model.opsets.push({ domain: 'com.microsoft', version: 1 });
  b.input('ids', 'int64', [2, 3]);
  b.initializer('data', tensor('uint8', [V, C / 2], Array.from({ length: V * C / 2 }, (_, i) => (i * 37) & 255)));
  b.initializer('scales', f32([V, C / bs], Array.from({ length: V * C / bs }, (_, i) => 0.01 * (i + 1))));
  b.initializer('w', f32([C, 4], Array.from({ length: C * 4 }, (_, i) => Math.sin(i))));
  b.node('GatherBlockQuantized', ['data', 'ids', 'scales'], ['emb'], { bits: 4, block_size: bs, gather_axis: 0, quantize_axis: 1 });
  b.model.graph.nodes.at(-1)!.domain = 'com.microsoft';
  b.node('MatMul', ['emb', 'w'], ['logits']);
  b.output('logits', 'float32', [2, 3, 4]);
  const m = new RefitModel(b.build(), { threads: 1 });
  assert.deepEqual(m.parameterNames(), ['w'], 'the table\'s scales are quantization controls, not parameters');
  const ids = tensor('int64', [2, 3], [0, 1, 2, 3, 4, 5]);
  const y = tensor('int64', [2, 3], [0, 1, 2, 3, 0, 1]);
  const loss = tokenCrossEntropy({ logits: 'logits', labels: 'y' });
  const r = await m.compileTrainStep({ trainable: 'all', loss }).run({ ids, y });
  assert.ok(Number.isFinite(r.loss));
  assert.ok(r.grads.get('w')!.some((g) => g !== 0));
  assert.throws(() => m.compileTrainStep({ trainable: ['scales'], loss }), /'scales' is a quantization scale or zero point \(input 2 of GatherBlockQuantized/);
  await m.release();
});

test('q4f16 (transformers.js\'s model_q4f16.onnx: 4-bit layers with float16 scales in a float16 model): LoRA trains, and its gradients match finite differences', async () => {
  const { float16Copy } = await import('../../src/autodiff/lower/float16.ts');
  const { tokenCrossEntropy } = await import('../../src/train/losses.ts');
  const { gradCheck } = await import('../../src/autodiff/gradcheck.ts');
  const { quantizeNBits } = await import('../../src/peft/quantize-nbits.ts');
  const f = withoutKvCache(await loadModel(readZoo('llama').modelPath, { threads: 1 }));
  const q16 = new RefitModel(float16Copy(quantizeNBits(f.ir, { blockSize: 16 })), { threads: 1 });
  const nbits = q16.ir.graph.nodes.filter((n) => n.opType === 'MatMulNBits');
  assert.ok(nbits.length > 0 && nbits.every((n) => q16.ir.graph.initializers.get(n.inputs[2]!)!.dtype === 'float16'), 'float16 scales');
  const ids = tensor('int64', [2, 6], Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % 40));
  const feeds = { input_ids: ids, attention_mask: tensor('int64', [2, 6], new Array(12).fill(1)), position_ids: tensor('int64', [2, 6], Array.from({ length: 12 }, (_, i) => i % 6)) };
  const p = peft.withAdapter(q16, 'ad', peft.lora({ targets: () => true, rank: 2 }));
  const names = p.trainableNames('ad');
  const r = await p.compileTrainStep({ trainable: names, loss: tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) }).run({ ...feeds, labels: tensor('int64', [2, 6], Array.from({ length: 12 }, (_, i) => (i * 5) % 40)) });
  assert.ok(Number.isFinite(r.loss));
  const vals = p.adapterValues('ad');
  for (const n of names.filter((k) => k.includes('lora_B'))) (vals.get(n)!.data as Float32Array).forEach((_, i, a) => { a[i] = 0.05 * Math.sin(i + n.length); });
  p.touch(names);
  // float16 logits make the differences noisier than float32's: 1e-2 is the finite-difference bound used throughout
  const reps = await gradCheck(p.ir, feeds, { params: [names[0]!, names[1]!, names.at(-1)!], outputs: ['logits'], maxElements: 12 });
  for (const rep of reps) {
    assert.ok(rep.relError <= 1e-2, `${rep.param}: relative error ${rep.relError.toExponential(2)}`);
    assert.ok(rep.analyticNorm > 0, `${rep.param}: zero gradient`);
  }
});
