// The tfjs ViT of bench/web-bench.ts's baseline (bench/web/tfjs-vit.ts) computes what the shipped
// ViT computes: its logits equal onnxruntime-node's, and its LoRA and full-fine-tuning gradients
// equal refit's step's, so the benchmark compares the same step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as refit from '../../src/index.ts';
import { prepareBench, vitWeights, type BenchSpec } from '../../bench/web/cases.ts';
import { tfjsVit } from '../../bench/web/tfjs-vit.ts';
import { loadTfjsNode, removeDir } from '../../bench/web/tfjs-node.ts';

const bytes = new Uint8Array(readFileSync(new URL('../../models/fmnist-vit.onnx', import.meta.url)));

test('tfjs ViT: logits and gradients equal refit on onnxruntime-node (LoRA q/v and full)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-tfjs-test-'));
  try {
    const { tf } = await loadTfjsNode(dir);
    for (const adapter of ['lora', 'full'] as const) {
      const s: BenchSpec = { model: 'vit', adapter, batch: 4, seed: 3 };
      const { model, step, batch } = await prepareBench(refit, bytes, s, { threads: 1 });
      const ref = await step.run(batch);
      const logits = (await model.run({ x: batch.x! }, { outputs: ['logits'] })).logits!.data as Float32Array;
      const w = vitWeights(model, adapter);
      const v = tfjsVit(tf, w.weights, { train: adapter === 'lora' ? 'lora' : 'all', lora: w.lora, loraScale: w.loraScale });
      const x = tf.tensor(batch.x!.data as Float32Array, [4, 1, 28, 28]);
      const y = tf.tensor1d(Int32Array.from(batch.y!.data as BigInt64Array, Number), 'int32');
      const got = v.forward(x).dataSync();
      let worst = 0;
      for (let i = 0; i < logits.length; i++) worst = Math.max(worst, Math.abs(got[i]! - logits[i]!));
      assert.ok(worst <= 1e-4, `${adapter}: logits differ by ${worst}`);
      const { value, grads } = tf.variableGrads(() => v.loss(x, y), v.vars);
      assert.ok(Math.abs(value.dataSync()[0]! - ref.loss) <= 1e-5 * Math.abs(ref.loss), `${adapter}: loss ${value.dataSync()[0]} vs ${ref.loss}`);
      assert.equal(Object.keys(grads).length, ref.grads.size, `${adapter}: gradient count`);
      for (const [name, g] of Object.entries(grads)) {
        // tfjs names LoRA factors '<layer>.lora_A'; refit 'web.lora_A.<layer>'.
        const m = /^(.+)\.lora_([AB])$/.exec(name);
        const rname = m ? `web.lora_${m[2]}.${m[1]}` : name;
        const r = ref.grads.get(rname);
        assert.ok(r, `${adapter}: no refit gradient for ${rname}`);
        const t = g.dataSync();
        let d = 0, n = 0;
        for (let i = 0; i < r.length; i++) { d = Math.max(d, Math.abs(t[i]! - r[i]!)); n = Math.max(n, Math.abs(r[i]!)); }
        // Zero-in-exact-arithmetic gradients (attention key biases) are rounding noise in both.
        if (/attn\.k\.bias$/.test(name)) assert.ok(d <= 1e-5, `${adapter} ${name}: ${d}`);
        else assert.ok(d <= 1e-4 * n, `${adapter} ${name}: max abs difference ${d} against max |g| ${n}`);
      }
      await step.release();
      v.dispose();
    }
  } finally {
    removeDir(dir);
  }
});
