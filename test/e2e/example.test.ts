// The README's runnable example keeps running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('examples/quickstart.ts fine-tunes the shipped CNN and saves a model', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'refit-example-')), 'tuned.onnx');
  const log = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples/quickstart.ts'), out], { encoding: 'utf8', cwd: root });
  const losses = [...log.matchAll(/loss (\d+\.\d+)/g)].map((m) => Number(m[1]));
  assert.equal(losses.length, 10, log);
  assert.ok(existsSync(out));
});

test('examples/peft-lora.ts trains a LoRA on MNIST digits, saves it, reloads it and merges it', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'refit-peft-example-')), 'digits');
  const log = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples/peft-lora.ts'), out, '40'], { encoding: 'utf8', cwd: root });
  const pct = (label: string) => Number(new RegExp(`${label}: (\\d+\\.\\d+)%`).exec(log)?.[1]);
  const trained = pct('test accuracy with the adapter'), reloaded = pct('reloaded adapters'), merged = pct('merged model');
  assert.ok(trained > 50, `40 steps should take the new head well past chance (10%); got ${trained}%\n${log}`);
  // One test digit is 0.05 point: reloading and merging may flip at most a near-tie.
  assert.ok(Math.abs(reloaded - trained) <= 0.05 && Math.abs(merged - trained) <= 0.05, log);
  for (const f of ['head/adapter_model.safetensors', 'head/adapter_config.json', 'digits/adapter_model.safetensors', 'digits/adapter_config.json', 'vit-digits.onnx']) {
    assert.ok(existsSync(join(out, f)), `missing ${f}`);
  }
});

test('examples/tta-stream.ts: Tent beats the unadapted CNN on a corrupted stream', () => {
  const log = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples/tta-stream.ts'), '5'], { encoding: 'utf8', cwd: root });
  const err = (m: string) => Number(new RegExp(`^${m}: error (\\d+\\.\\d+)%`, 'm').exec(log)?.[1]);
  // Measured: source 49.3%, Tent 24.4% (BatchNorm statistics of the shifted batches do most of it).
  assert.ok(err('tent') < err('source') - 10, log);
});
