// Fleet aggregation (src/fleet/aggregate.ts): FedAvg by sample count, TIES through peft's merge code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregate } from '../../src/fleet/aggregate.ts';
import { FleetError } from '../../src/fleet/types.ts';
import { serializeSafetensors, parseSafetensors } from '../../src/io/safetensors.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { withAdapter, normAffine, lora, adapterFiles, combineAdapters, type AdapterFiles } from '../../src/peft/index.ts';
import { ties } from '../../src/peft/combine.ts';
import { mat } from '../../src/peft/linalg.ts';
import { smallCnn, smallVit, perturb } from '../peft/helpers.ts';

const CONFIG = `${JSON.stringify({ peft_type: 'NORM_AFFINE', target_parameters: ['bn.scale', 'bn.bias'], base_model_name_or_path: null })}\n`;
const files = (scale: number[], bias: number[], dims = [scale.length]): AdapterFiles => ({
  weights: serializeSafetensors({ 'base_model.model.bn.scale': f32(dims, scale), 'base_model.model.bn.bias': f32([bias.length], bias) }, { format: 'pt', 'refit.adapter': 'dev' }),
  config: CONFIG,
});
const tensor = (f: AdapterFiles, k: string) => Array.from(parseSafetensors(f.weights).tensors.get(`base_model.model.${k}`)!.data as Float32Array);

test('fedavg: per-tensor average weighted by sample count, exact on hand-made tensors', () => {
  const out = aggregate([
    { files: files([1, 2], [0, 4]), samples: 1 },
    { files: files([3, -2], [8, 0]), samples: 3 },
  ]);
  // (1·[1, 2] + 3·[3, −2]) / 4 = [2.5, −1]; (1·[0, 4] + 3·[8, 0]) / 4 = [6, 1]
  assert.deepEqual(tensor(out, 'bn.scale'), [2.5, -1]);
  assert.deepEqual(tensor(out, 'bn.bias'), [6, 1]);
  assert.equal(JSON.parse(out.config).peft_type, 'NORM_AFFINE');
  assert.equal(parseSafetensors(out.weights).metadata['refit.adapter'], 'dev');
  // one input: itself; equal counts: the plain mean
  assert.deepEqual(tensor(aggregate([{ files: files([1, 2], [3, 4]), samples: 7 }]), 'bn.scale'), [1, 2]);
  assert.deepEqual(tensor(aggregate([{ files: files([1, 2], [3, 4]), samples: 5 }, { files: files([3, 4], [5, 6]), samples: 5 }], { name: 'fleet' }), 'bn.bias'), [4, 5]);
});

test('zero or invalid sample counts, mismatched keys, shapes or kinds: FleetErrors naming the input', () => {
  const a = files([1, 2], [0, 4]);
  assert.throws(() => aggregate([]), (e) => e instanceof FleetError && /no adapters/.test(e.message));
  assert.throws(() => aggregate([{ files: a, samples: 0 }, { files: a, samples: 2 }]), (e) => e instanceof FleetError && /input 0 has sample count 0/.test(e.message));
  assert.throws(() => aggregate([{ files: a, samples: 2 }, { files: a, samples: 1.5 }]), /input 1 has sample count 1.5/);
  assert.throws(() => aggregate([{ files: a, samples: 1 }, { files: files([1, 2, 3], [0, 4], [3]), samples: 1 }]), /input 1's tensor 'base_model.model.bn.scale' has shape \[3\], input 0's \[2\]/);
  const other: AdapterFiles = { weights: serializeSafetensors({ 'base_model.model.bn.scale': f32([2], [1, 1]) }), config: CONFIG };
  assert.throws(() => aggregate([{ files: a, samples: 1 }, { files: other, samples: 1 }]), /input 1's tensors differ from input 0's; missing base_model.model.bn.bias/);
  const lora: AdapterFiles = { ...a, config: JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: ['x'] }) };
  assert.throws(() => aggregate([{ files: a, samples: 1 }, { files: lora, samples: 1 }]), /input 1 is a LORA adapter, input 0 a NORM_AFFINE adapter/);
  assert.throws(() => aggregate([{ files: { weights: new Uint8Array([1, 2, 3]), config: CONFIG }, samples: 1 }]), (e) => e instanceof FleetError && /input 0: adapter_model.safetensors/.test(e.message));
  const nan = files([NaN, 1], [0, 0]);
  assert.throws(() => aggregate([{ files: nan, samples: 1 }]), /input 0: tensor 'base_model.model.bn.scale' has a non-finite value/);
  assert.throws(() => aggregate([{ files: a, samples: 1 }], { method: 'ties' }), /pass options.base/);
  assert.throws(() => aggregate([{ files: a, samples: 1 }], { method: 'median' as 'ties' }), /unknown method 'median'/);
});

test('ties on norm-affine adapters equals peft\'s ties on the weighted task vectors; sign conflicts resolved by mass', async () => {
  const base = smallCnn();
  const adapters = [1, 2, 3].map((seed) => {
    const p = withAdapter(base, 'dev', normAffine());
    perturb(p, 'dev', 0.2, seed);
    return adapterFiles(p, 'dev');
  });
  const samples = [10, 30, 20];
  const out = aggregate(adapters.map((files, i) => ({ files, samples: samples[i]! })), { method: 'ties', base, density: 0.6 });
  const outT = parseSafetensors(out.weights).tensors;
  const srcT = adapters.map((f) => parseSafetensors(f.weights).tensors);
  let checked = 0;
  for (const [k, t] of outT) {
    const b = base.param(k.replace(/^base_model\.model\./, '')).data as Float32Array;
    const deltas = srcT.map((s, i) => mat(1, b.length, Array.from(s.get(k)!.data as Float32Array, (v, j) => (3 * samples[i]! / 60) * (v - b[j]!))));
    const want = ties(deltas, 0.6);
    const got = t.data as Float32Array;
    for (let j = 0; j < b.length; j++) assert.ok(Math.abs(got[j]! - Math.fround(b[j]! + want.data[j]!)) <= 1e-6, `${k}[${j}]`);
    checked++;
  }
  assert.ok(checked >= 4);
  // Hand-made: three task vectors on a 4-entry tensor; density 1 keeps everything.
  // entry 0: +1, +2, −4 (weights 1) → mass −1 → sign −, mean of agreeing = −4
  // entry 1: +1, +1, −1 → mass +1 → (1 + 1) / 2 = 1; entry 2: all 0 → 0; entry 3: −2, −2, +0.5 → −2
  const h = ties([[1, 1, 0, -2], [2, 1, 0, -2], [-4, -1, 0, 0.5]].map((r) => mat(1, 4, r)), 1);
  assert.deepEqual(Array.from(h.data), [-4, 1, 0, -2]);
});

test('ties on LoRA adapters is peft\'s combineAdapters (ΔW space) with weights K·nᵢ/N', async () => {
  const base = smallVit();
  const mk = (seed: number) => {
    const p = withAdapter(base, 'dev', lora({ targets: /attn\.(q|v)$/, rank: 2, seed }));
    perturb(p, 'dev', 0.1, seed);
    return { p, files: adapterFiles(p, 'dev') };
  };
  const a = mk(1), b = mk(2);
  const out = aggregate([{ files: a.files, samples: 10 }, { files: b.files, samples: 30 }], { method: 'ties', base, density: 0.5, name: 'fleet' });
  let ref = withAdapter(base, 's0', lora({ targets: /attn\.(q|v)$/, rank: 2 }));
  ref = ref.withAdapter('s1', lora({ targets: /attn\.(q|v)$/, rank: 2 }));
  for (const [src, name] of [[a.p, 's0'], [b.p, 's1']] as const) {
    for (const [k, t] of src.adapterValues('dev')) (ref.adapterValues(name).get(k.replace(/^dev\./, `${name}.`))!.data as Float32Array).set(t.data as Float32Array);
  }
  ref.touch([...ref.adapterValues('s0').keys(), ...ref.adapterValues('s1').keys()]);
  const want = adapterFiles(combineAdapters(ref, 'fleet', { method: 'ties', density: 0.5, adapters: { s0: 0.5, s1: 1.5 } }), 'fleet');
  const got = parseSafetensors(out.weights).tensors, exp = parseSafetensors(want.weights).tensors;
  assert.deepEqual([...got.keys()].sort(), [...exp.keys()].sort());
  for (const [k, t] of exp) assert.deepEqual(Array.from(got.get(k)!.data as Float32Array), Array.from(t.data as Float32Array), k);
  // fedavg of LoRA factors runs too (A and B averaged separately)
  const avg = parseSafetensors(aggregate([{ files: a.files, samples: 1 }, { files: b.files, samples: 1 }]).weights).tensors;
  const ka = [...avg.keys()][0]!;
  const va = parseSafetensors(a.files.weights).tensors.get(ka)!.data as Float32Array, vb = parseSafetensors(b.files.weights).tensors.get(ka)!.data as Float32Array;
  assert.ok(Math.abs((avg.get(ka)!.data as Float32Array)[0]! - Math.fround((va[0]! + vb[0]!) / 2)) <= 1e-7);
});
