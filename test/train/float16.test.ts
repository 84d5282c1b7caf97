// Float16 models: the step graph upcasts to float32 (src/autodiff/lower/float16.ts). Checked on the
// float16 copy of the quant fixtures' classifier (test/fixtures/quant/make_quant_fixtures.py)
// against its float32 twin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, RefitModel } from '../../src/model.ts';
import { f32, tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { withAdapter, lora, normAffine, type PeftModel } from '../../src/peft/index.ts';
import { crossEntropy } from '../../src/train/losses.ts';
import { upcastFloat16, downcastFloat16, floatTensorToHalf, halfTensorToFloat, floatToHalf, halfToFloat } from '../../src/autodiff/lower/float16.ts';

const FIX = 'test/fixtures/quant/';
const ref = JSON.parse(readFileSync(`${FIX}reference.json`, 'utf8'));
const x32 = f32(ref.x.dims, ref.x.data);
const x16 = floatTensorToHalf(x32);
const xr = halfTensorToFloat(x16); // the float16 input's exact values, as float32
const y = tensor('int64', [ref.labels.length], ref.labels);
const loss = crossEntropy({ logits: 'logits' });

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

function withLora(base: RefitModel): PeftModel {
  const p = withAdapter(base, 'ad', lora({ targets: 'fc1', rank: 2, alpha: 4 }));
  const v = p.adapterValues('ad');
  (v.get('ad.lora_A.fc1')!.data as Float32Array).set(ref.lora.A);
  (v.get('ad.lora_B.fc1')!.data as Float32Array).set(ref.lora.B);
  p.touch(['ad.lora_A.fc1', 'ad.lora_B.fc1']);
  return p;
}

test('half conversion: round to nearest even, subnormals, overflow, back exactly', () => {
  for (const v of [0, 1, -2.5, 65504, 1e-7, 6.1e-5, 3.14159, -0.1]) assert.equal(halfToFloat(floatToHalf(halfToFloat(floatToHalf(v)))), halfToFloat(floatToHalf(v)));
  assert.equal(floatToHalf(1 + 2 ** -11), floatToHalf(1)); // a tie rounds to even
  assert.equal(halfToFloat(floatToHalf(1e6)), Infinity);
  assert.equal(halfToFloat(floatToHalf(2 ** -24)), 2 ** -24);
});

test('LoRA on a frozen float16 base: the step equals its float32 twin (same values upcast) and is close to the float model', async () => {
  const m16 = await loadModel(`${FIX}float16.onnx`, { threads: 1 });
  assert.equal(m16.ir.graph.initializers.get('fc1.weight')!.dtype, 'float16');
  const twin = new RefitModel(upcastFloat16(m16.ir), { threads: 1 });
  const orig = await loadModel(`${FIX}float.onnx`, { threads: 1 });
  const p16 = withLora(m16), p32 = withLora(twin), pf = withLora(orig);
  const names = p16.trainableNames();
  const r16 = await p16.compileTrainStep({ trainable: names, loss, outputs: ['logits'] }).run({ x: x16, y });
  const r32 = await p32.compileTrainStep({ trainable: names, loss }).run({ x: xr, y });
  const rf = await pf.compileTrainStep({ trainable: names, loss }).run({ x: x32, y });
  assert.equal(r16.outputs.logits!.dtype, 'float32');
  assert.ok(Math.abs(r16.loss - r32.loss) <= 1e-6, `${r16.loss} vs twin ${r32.loss}`);
  for (const n of names) {
    assert.ok(relErr(r16.grads.get(n)!, r32.grads.get(n)!) <= 1e-5, `${n} vs twin`);
    // Against the float32 original the float16 rounding of weights and input shows: measured 5.8e-4 (A), 5.4e-4 (B).
    const e = relErr(r16.grads.get(n)!, rf.grads.get(n)!);
    assert.ok(e <= 5e-3 && e > 0, `${n} vs float model: ${e}`);
  }
  assert.ok(Math.abs(r16.loss - ref.float.loss) <= 2e-3, `${r16.loss} vs torch float ${ref.float.loss}`);
  // Inference with the active adapter runs upcast too (outputs float32), and equals the step's forward.
  const inf = (await p16.run({ x: x16 })).logits!;
  assert.equal(inf.dtype, 'float32');
  assert.ok(relErr(inf.data as Float32Array, r16.outputs.logits!.data as Float32Array) <= 1e-6);
  // The merge writes float16 weights: a float16 model again.
  const merged = p16.merge('ad');
  assert.equal(merged.ir.graph.initializers.get('fc1.weight')!.dtype, 'float16');
  const out = (await merged.run({ x: x16 })).logits!;
  assert.equal(out.dtype, 'float16');
  const d = relErr(halfTensorToFloat(out).data as Float32Array, inf.data as Float32Array);
  assert.ok(d <= 5e-3, `merged float16 vs adapter: ${d}`); // float16 weights and activations: measured 4.4e-4
});

test('norm-affine on a float16 base trains float32 copies; a float16 trainable is refused with what to do', async () => {
  const m16 = await loadModel(`${FIX}float16.onnx`, { threads: 1 });
  const p = withAdapter(m16, 'na', normAffine({ filter: /^norm1\./ }));
  assert.equal(p.adapterValues('na').get('norm1.weight')!.dtype, 'float32');
  const step = p.compileTrainStep({ trainable: p.trainableNames(), loss });
  const losses: number[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await step.run({ x: x16, y });
    losses.push(r.loss);
    for (const [k, g] of r.grads) { const d = p.param(k).data as Float32Array; for (let j = 0; j < d.length; j++) d[j] = d[j]! - 0.5 * g[j]!; }
    p.touch(r.grads.keys());
  }
  assert.ok(losses[5]! < losses[0]! - 0.01, `loss ${losses[0]} → ${losses[5]}`);
  const merged = p.merge('na');
  assert.equal(merged.ir.graph.initializers.get('norm1.weight')!.dtype, 'float16');
  // Full fine-tuning of the float16 tensors themselves is refused, naming the fix.
  const full = m16.compileTrainStep({ trainable: ['norm1.weight'], loss });
  await assert.rejects(full.run({ x: x16, y }), /'norm1\.weight' is float16.*upcastFloat16/s);
  // …before anything runs: a model onnxruntime cannot even probe (here an op it has no kernel for;
  // a float16 GPT-2's probe tripped its cast insertion) still gets this refusal, not that error
  const broken = m16.rewritten((ir) => {
    ir.graph.nodes.push({ name: 'nope', opType: 'NoSuchOp', domain: '', inputs: [ir.graph.outputs[0]!.name], outputs: ['extra'], attrs: {} });
    ir.graph.outputs.push({ name: 'extra', dtype: 'float16', shape: null });
  });
  await assert.rejects(broken.compileTrainStep({ trainable: ['norm1.weight'], loss }).run({ x: x16, y }), /'norm1\.weight' is float16/);
  // …and the float32 master copy trains, and writes back as float16.
  const master = new RefitModel(upcastFloat16(m16.ir), { threads: 1 });
  const r = await master.compileTrainStep({ trainable: ['norm1.weight'], loss }).run({ x: xr, y });
  assert.ok(r.finite && r.grads.get('norm1.weight')!.some((v) => v !== 0));
  const back = downcastFloat16(m16.ir, master.ir);
  assert.equal(back.graph.initializers.get('norm1.weight')!.dtype, 'float16');
  assert.deepEqual([...(back.graph.initializers.get('norm1.weight')!.data as Uint16Array)], [...(m16.ir.graph.initializers.get('norm1.weight')!.data as Uint16Array)]);
});

export type { Tensor };
