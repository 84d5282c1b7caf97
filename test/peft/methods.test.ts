// One table of cases drives every PEFT method through the same checks: a new adapter is the
// identity, only its tensors train, gradients match finite differences, merge gives the same
// outputs (≤ 1e-4) and unmerge restores the base exactly, and files round-trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import type { RefitModel } from '../../src/model.ts';
import {
  withAdapter, lora, dora, vera, ia3, bitfit, normAffine, head, bottleneck, adapterFiles, withAdapterFiles, accounting,
  type AdapterMethod,
} from '../../src/peft/index.ts';
import { smallVit, smallCnn, images, maxDiff, perturb } from './helpers.ts';

interface Case {
  name: string;
  model: () => RefitModel;
  method: () => AdapterMethod;
  /** false: the adapter changes outputs from the start (a new head). */
  identity?: boolean;
  foldable?: boolean;
  /** Finite-difference step and tolerance: float32 differences across ReLU kinks in the CNN are noisy (lora.test.ts checks conv LoRA exactly on a smooth model). */
  eps?: number;
  tol?: number;
}

const attn = /attn\.(q|v)$/;
const CASES: Case[] = [
  { name: 'lora (MatMul)', model: smallVit, method: () => lora({ targets: attn, rank: 4, alpha: 8 }) },
  { name: 'lora rsLoRA (q and head)', model: smallVit, method: () => lora({ targets: ['q', 'head'], rank: 2, alpha: 4, rsLora: true }) },
  { name: 'lora (Conv)', model: smallCnn, method: () => lora({ targets: /layer2\.0\.conv|downsample/, rank: 2 }), eps: 2e-3, tol: 5e-2 },
  { name: 'lora PiSSA', model: smallVit, method: () => lora({ targets: attn, rank: 4, init: 'pissa' }) },
  { name: 'dora', model: smallVit, method: () => dora({ targets: /attn\.(q|v)$|fc1/, rank: 4, alpha: 8 }) },
  { name: 'vera', model: smallVit, method: () => vera({ targets: /attn\.(q|v)$|mlp/, rank: 16 }) },
  { name: 'ia3 (k, v, ffn input)', model: smallVit, method: () => ia3({ targets: /attn\.(k|v)$|fc2/, feedforward: ['fc2'] }) },
  { name: 'ia3 (k, v only: no feed-forward modules)', model: smallVit, method: () => ia3({ targets: /attn\.(k|v)$/ }) },
  { name: 'ia3 (Conv)', model: smallCnn, method: () => ia3({ targets: /conv2$/, feedforward: /layer3/ }), eps: 2e-3, tol: 5e-2 },
  { name: 'bitfit', model: smallVit, method: () => bitfit() },
  { name: 'norm-affine (BatchNorm)', model: smallCnn, method: () => normAffine(), eps: 2e-3, tol: 5e-2 },
  { name: 'norm-affine (LayerNorm)', model: smallVit, method: () => normAffine() },
  { name: 'bottleneck houlsby', model: smallVit, method: () => bottleneck({ form: 'houlsby', targets: /attn\.out|fc2/, reductionFactor: 8 }), foldable: false },
  { name: 'bottleneck pfeiffer', model: smallVit, method: () => bottleneck({ form: 'pfeiffer', targets: 'fc2', reductionFactor: 8 }), foldable: false },
  { name: 'bottleneck parallel', model: smallVit, method: () => bottleneck({ form: 'parallel', targets: 'fc1' }), foldable: false },
  { name: 'new head', model: smallVit, method: () => head({ classes: 3 }), identity: false, foldable: false },
];

for (const c of CASES) {
  test(`${c.name}: identity at start, gradients, merge/unmerge, files`, async () => {
    const base = c.model();
    const x = images(2);
    const y0 = (await base.run({ x })).logits;
    const p = withAdapter(base, 'ad', c.method());
    const ya = (await p.run({ x })).logits;
    if (c.identity !== false) assert.ok(maxDiff(ya, y0) <= 1e-5, `not identity at start: ${maxDiff(ya, y0)}`);
    else assert.deepEqual(ya.dims, [2, 3]);

    // only adapter-owned tensors train; the source model is untouched by training them
    const trainable = p.trainableNames();
    assert.ok(trainable.length > 0);
    const owned = new Set(p.adapter('ad').tensors);
    for (const t of trainable) assert.ok(owned.has(t), `${t} is not owned by the adapter`);
    perturb(p, 'ad');
    const y1 = (await p.run({ x })).logits;
    if (c.identity !== false) assert.ok(maxDiff(y1, y0) > 1e-3, 'perturbed adapter changed nothing');
    assert.ok(maxDiff((await base.run({ x })).logits, y0) === 0, 'the source model changed');

    // gradients of the adapter tensors against finite differences
    const reports = await gradCheck(p.ir, { x: images(2, 5) }, { params: trainable, outputs: ['logits'], maxElements: 8, eps: c.eps ?? 1e-2, floor: 1e-2 });
    for (const r of reports) assert.ok(r.relError < (c.tol ?? 2e-2), `${r.param}: rel error ${r.relError}`);

    // merge: same outputs; foldable methods leave the base graph's nodes
    const m = p.merge('ad');
    // No unread gate initializer (onnxruntime warns about each on every session).
    for (const model of [p, m]) {
      const read = new Set(model.ir.graph.nodes.flatMap((n) => n.inputs));
      assert.ok(!model.ir.graph.initializers.has('ad.gate') || read.has('ad.gate'), 'an unread ad.gate initializer');
    }
    assert.ok(maxDiff((await m.run({ x })).logits, y1) <= 1e-4, `merged differs: ${maxDiff((await m.run({ x })).logits, y1)}`);
    if (c.foldable !== false) assert.equal(m.ir.graph.nodes.length, base.ir.graph.nodes.length);
    const u = m.unmerge('ad');
    assert.ok(maxDiff((await u.run({ x })).logits, y1) <= 1e-5);
    assert.ok(maxDiff((await u.removeAdapter('ad').run({ x })).logits, y0) === 0, 'removing the adapter does not restore the base');

    // files round-trip into a fresh copy of the base
    const files = adapterFiles(p, 'ad');
    const q = withAdapterFiles(c.model(), 'ad', files);
    assert.ok(maxDiff((await q.run({ x })).logits, y1) <= 1e-5, `reloaded differs: ${maxDiff((await q.run({ x })).logits, y1)}`);
    const acc = accounting(p, 'ad');
    assert.equal(acc.trainableParams, trainable.reduce((a, n) => a + p.param(n).data.length, 0));
    assert.ok(acc.trainablePercent > 0 && acc.adapterFileBytes > files.weights.byteLength);
    await Promise.all([base.release(), p.release(), m.release(), u.release(), q.release()]);
  });
}
