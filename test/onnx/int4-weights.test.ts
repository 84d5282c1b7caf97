// 4-bit weights stored as ONNX int4/uint4 tensors (opset 21's blocked DequantizeLinear, what
// onnxruntime's 4-bit quantizer writes in its QDQ format): refit holds them unpacked as int8/uint8,
// which DequantizeLinear takes with the same block_size, so the model computes what onnxruntime
// computes on the file; an adapter trains on the frozen layer and folds into it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSession, toOrt, fromOrt } from '../../src/onnx/runtime.ts';
import { loadModel } from '../../src/model.ts';
import * as peft from '../../src/peft/index.ts';
import { crossEntropy } from '../../src/train/losses.ts';
import { f32, tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const { onnx } = onnxProto;
const K = 32, N = 6, BLOCK = 16, B = 3;

/** Two 4-bit values a byte, the low nibble first (ONNX's packing). */
function pack(values: number[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(values.length / 2));
  values.forEach((v, i) => { out[i >> 1] |= (v & 15) << ((i & 1) * 4); });
  return out;
}

function int4Model(signed: boolean): { bytes: Uint8Array; codes: number[] } {
  const rng = new Rng(signed ? 7 : 8);
  const codes = Array.from({ length: K * N }, () => Math.floor(rng.next() * 16) - (signed ? 8 : 0));
  const zps = Array.from({ length: 2 * N }, () => Math.floor(rng.next() * 5) - (signed ? 2 : -6));
  const type = signed ? 22 : 21; // INT4, UINT4
  const m = onnx.ModelProto.create({
    irVersion: 10, opsetImport: [{ domain: '', version: 21 }],
    graph: {
      name: 'int4',
      input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'N' }, { dimValue: K }] } } } }],
      output: [{ name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'N' }, { dimValue: N }] } } } }],
      initializer: [
        { name: 'w', dataType: type, dims: [K, N], rawData: pack(codes) },
        { name: 'w_scale', dataType: 1, dims: [K / BLOCK, N], floatData: Array.from({ length: 2 * N }, (_, i) => 0.05 + 0.01 * i) },
        { name: 'w_zero_point', dataType: type, dims: [K / BLOCK, N], rawData: pack(zps) },
      ],
      node: [
        { name: 'dq', opType: 'DequantizeLinear', input: ['w', 'w_scale', 'w_zero_point'], output: ['w_f'], attribute: [{ name: 'axis', type: 2, i: 0 }, { name: 'block_size', type: 2, i: BLOCK }] },
        { name: 'fc', opType: 'MatMul', input: ['x', 'w_f'], output: ['y'] },
      ],
    },
  });
  return { bytes: onnx.ModelProto.encode(m).finish(), codes };
}

const x = f32([B, K], Array.from({ length: B * K }, (_, i) => Math.sin(i * 0.7)));

for (const signed of [true, false]) {
  test(`${signed ? 'int4' : 'uint4'} weights with blocked scales: refit's model computes what onnxruntime computes on the file; LoRA trains and folds`, async () => {
    const { bytes, codes } = int4Model(signed);
    const ort = await createSession(bytes, { threads: 1 });
    const want = fromOrt((await ort.run({ x: toOrt(x) }))['y']!);
    await ort.release();
    const m = await loadModel(bytes, { threads: 1 });
    const w = m.ir.graph.initializers.get('w')!;
    assert.equal(w.dtype, signed ? 'int8' : 'uint8');
    assert.deepEqual([...w.data], codes, 'unpacked value for value, sign included');
    assert.deepEqual([...(await m.run({ x }))['y']!.data], [...want.data]);
    // saved, the weights are 8-bit (the same values), and the file still computes the same
    const dir = mkdtempSync(join(tmpdir(), 'refit-int4-'));
    try {
      await m.save(join(dir, 'm.onnx'));
      const again = await loadModel(join(dir, 'm.onnx'), { threads: 1 });
      assert.deepEqual([...(await again.run({ x }))['y']!.data], [...want.data]);
      await again.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const p = peft.withAdapter(m, 'ad', peft.lora({ targets: () => true, rank: 2 }));
    const names = p.trainableNames('ad');
    assert.equal(names.length, 2, 'the 4-bit layer is a LoRA site');
    const step = p.compileTrainStep({ trainable: names, loss: crossEntropy({ logits: 'y', labels: 'label' }) });
    const r = await step.run({ x, label: tensor('int64', [B], [0, 1, 2]) });
    assert.ok(Number.isFinite(r.loss) && r.grads.get(names.find((n) => n.includes('lora_B'))!)!.some((g) => g !== 0));
    await step.release();
    const vals = p.adapterValues('ad');
    for (const n of names) (vals.get(n)!.data as Float32Array).forEach((_, i, a) => { a[i] = 0.1 * Math.cos(i + n.length); });
    p.touch(names);
    const adapted = (await p.run({ x }))['y']!;
    const merged = p.merge('ad');
    const folded = (await merged.run({ x }))['y']!;
    for (let i = 0; i < adapted.data.length; i++) assert.ok(Math.abs((folded.data[i] as number) - (adapted.data[i] as number)) <= 1e-5, `y[${i}]: ${folded.data[i]} vs ${adapted.data[i]}`);
  });
}
