// `refit adapter info` and `refit adapter merge` on an adapter folder written by saveAdapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, readFileSync, cpSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, peft, saveAdapter, f32 } from '../../src/index.ts';
import { Rng } from '../../src/util/rng.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const vitPath = join(root, 'models/fmnist-vit.onnx');
const refit = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/refit.js'), ...args], { encoding: 'utf8', cwd: root });

test('refit adapter info / merge: the merged model gives the adapter model\'s outputs; a corrupt folder writes nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-cli-adapter-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const base = await loadModel(vitPath);
  const model = peft.withAdapter(base, 'digits', peft.lora({ targets: /attn\.(q|v)$/, rank: 4, alpha: 8 }));
  // Non-zero B, so that merging changes the weights.
  const rng = new Rng(3);
  model.setParams(new Map(model.trainableNames().filter((n) => n.includes('lora_B')).map((n) => [n, rng.fill(new Float32Array(model.param(n).data.length), 0.05)])));
  await saveAdapter(model, 'digits', join(dir, 'digits'));

  const info = refit('adapter', 'info', join(dir, 'digits'), '--model', vitPath, '--json');
  assert.equal(info.status, 0, info.stderr);
  const [i] = JSON.parse(info.stdout);
  const want = peft.accounting(model, 'digits');
  assert.equal(i.peftType, 'LORA');
  assert.equal(i.rank, 4);
  assert.equal(i.targetModules.length, 12);
  assert.equal(i.parameters, want.trainableParams);
  assert.ok(Math.abs(i.trainablePercent - want.trainablePercent) < 1e-9);

  const out = join(dir, 'merged.onnx');
  const merge = refit('adapter', 'merge', vitPath, join(dir, 'digits'), '-o', out);
  assert.equal(merge.status, 0, merge.stderr);
  const merged = await loadModel(out);
  const x = f32([8, 1, 28, 28], new Rng(4).fill(new Float32Array(8 * 784), 1, 'uniform'));
  const a = (await model.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array;
  const m = (await merged.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array;
  const b = (await base.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array;
  const maxDiff = (p: Float32Array, q: Float32Array) => Math.max(...Array.from(p, (v, k) => Math.abs(v - q[k]!)));
  assert.ok(maxDiff(a, m) <= 1e-4, `merged vs adapter: ${maxDiff(a, m)}`);
  assert.ok(maxDiff(a, b) > 1e-3, 'the adapter should change the outputs');

  // A truncated weights file: a clear error naming the file, exit status 1, no output written.
  const bad = join(dir, 'bad');
  cpSync(join(dir, 'digits'), bad, { recursive: true });
  const w = readFileSync(join(bad, 'adapter_model.safetensors'));
  writeFileSync(join(bad, 'adapter_model.safetensors'), w.subarray(0, w.length - 100));
  const out2 = join(dir, 'never.onnx');
  const r = refit('adapter', 'merge', vitPath, bad, '-o', out2);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /adapter folder .*bad: .*adapter_model\.safetensors/);
  assert.ok(!existsSync(out2));
  await Promise.all([merged.release(), model.release(), base.release()]);
});
