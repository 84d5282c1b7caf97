// The examples the README's TypeScript blocks are excerpts of (test/e2e/readme-blocks.test.ts
// checks the excerpts) run as the README says, `npx tsx examples/<name>.ts` from the repository
// root: here each in a fresh folder holding links to models/ and data/, so what an example writes
// lands there. After examples/peft-lora.ts, the README's `refit adapter` block runs as written on
// the adapter folders it wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, loadAdapter, f32, Rng } from '../../src/index.ts';
import { readmeBlock } from '../helpers/readme.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
// `--import tsx` resolves from the working directory, which here is a temp folder: pass the loader's own path.
const tsx = import.meta.resolve('tsx');

function folder(): string {
  const cwd = mkdtempSync(join(tmpdir(), 'refit-example-'));
  for (const d of ['models', 'data']) symlinkSync(join(root, d), join(cwd, d));
  return cwd;
}
const example = (cwd: string, name: string, ...args: string[]) =>
  execFileSync(process.execPath, ['--import', tsx, join(root, 'examples', name), ...args], { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'] });

// A user copies an example into a project and writes 'refit' for '../src/index.ts': that only works
// while the examples import nothing but the package's entry points (package.json's `exports`).
test('the examples import only refit\'s public entry points and Node\'s own modules', () => {
  const entries = ['../src/index.ts', '../src/web.ts', '../src/fleet/cloud-side.ts'];
  for (const f of readdirSync(join(root, 'examples')).filter((n) => n.endsWith('.ts'))) {
    for (const m of readFileSync(join(root, 'examples', f), 'utf8').matchAll(/^import .* from '([^']+)';/gm)) {
      assert.ok(entries.includes(m[1]!) || m[1]!.startsWith('node:'), `examples/${f} imports ${m[1]}, which an installed refit does not export`);
    }
  }
});

test('examples/quickstart.ts fine-tunes the shipped CNN and saves a model that loads', async () => {
  const cwd = folder();
  const log = example(cwd, 'quickstart.ts');
  const losses = [...log.matchAll(/loss (\d+\.\d+)/g)].map((m) => Number(m[1]));
  assert.equal(losses.length, 10, log);
  assert.doesNotMatch(log, /skipped/);
  assert.match(log, /features 64,\d+/);
  const tuned = await loadModel(join(cwd, 'cnn-tuned.onnx'));
  assert.deepEqual(tuned.outputs.map((o) => o.name).sort(), ['features', 'logits']);
  await tuned.release();
  rmSync(cwd, { recursive: true, force: true });
});

test('examples/tta-stream.ts: Tent beats the unadapted CNN on a corrupted stream', () => {
  const cwd = folder();
  // Two batches of 64 per corruption: Tent predicts each domain's second batch after a step on its first.
  const log = example(cwd, 'tta-stream.ts', '2');
  const err = (m: string) => Number(new RegExp(`^${m}: error (\\d+\\.\\d+)%`, 'm').exec(log)?.[1]);
  // Measured: source 51.3%, Tent 24.2% (49.3% and 24.4% at 5 batches per corruption; BatchNorm statistics of the shifted batches do most of it).
  assert.ok(err('tent') < err('source') - 10, log);
  rmSync(cwd, { recursive: true, force: true });
});

test('examples/kv-cache-decoder.ts: LoRA on optimum\'s merged GPT-2 without its cache, folded and written back; the saved file generates the same with and without its cache', () => {
  const cwd = folder();
  const log = example(cwd, 'kv-cache-decoder.ts', '80', join(root, 'test/fixtures/zoo/gpt2_merged/model.onnx'));
  const m = /next-token loss (\d+\.\d+) -> (\d+\.\d+)/.exec(log);
  // Measured: 3.9912 -> 1.9542 at 80 steps.
  assert.ok(m && Number(m[2]) < Number(m[1]) - 1, log);
  assert.match(log, /wrote 4 weights back/, 'c_attn and c_fc of both layers');
  const g = /with the cache: ([\d ]+); rerunning the whole sequence: ([\d ]+)/.exec(log);
  assert.ok(g && g[1] === g[2], log);
  assert.ok(existsSync(join(cwd, 'gpt2-counting/decoder_model_merged.onnx')));
  rmSync(cwd, { recursive: true, force: true });
});

test('examples/lora-language-model.ts: LoRA on an exported nanoGPT lowers the next-token loss; the saved adapter reloads to the same loss', () => {
  const cwd = folder();
  const log = example(cwd, 'lora-language-model.ts', '60', join(root, 'test/fixtures/token-ce/model.onnx'));
  const m = /next-token loss (\d+\.\d+) -> (\d+\.\d+)/.exec(log);
  // Measured: 3.8884 -> 2.0690 at 60 steps.
  assert.ok(m && Number(m[2]) < Number(m[1]) - 1, log);
  const h = /held-out loss (\d+\.\d+), after reloading the adapter (\d+\.\d+)/.exec(log);
  assert.ok(h && h[1] === h[2], log);
  assert.ok(existsSync(join(cwd, 'adapters/counting/adapter_model.safetensors')));
  rmSync(cwd, { recursive: true, force: true });
});

test('examples/continual.ts: the controller leaves level 0 when the corruption turns to noise', () => {
  const cwd = folder();
  const log = example(cwd, 'continual.ts', '4');
  const batches = [...log.matchAll(/^batch (\d+) (\S+)\s+level (\d)/gm)].map((m) => ({ domain: m[2]!, level: Number(m[3]) }));
  assert.equal(batches.length, 12, log);
  // Measured: level 0 on JPEG (mild for this model), 1 (BatchNorm statistics) from the first noisy batch, 2 late in fog; 24.1% error.
  assert.ok(batches.filter((b) => b.domain === 'jpeg_compression').every((b) => b.level === 0), log);
  assert.ok(batches.filter((b) => b.domain === 'gaussian_noise').every((b) => b.level >= 1), log);
  const error = Number(/^continual: error (\d+\.\d+)% over 768 images$/m.exec(log)?.[1]);
  assert.ok(error > 5 && error < 35, log);
  rmSync(cwd, { recursive: true, force: true });
});

test("examples/peft-lora.ts trains a LoRA on MNIST digits, saves, reloads and merges it; then the README's `refit adapter` block runs on its folders", async () => {
  const cwd = folder();
  const log = example(cwd, 'peft-lora.ts', '40');
  const pct = (label: string) => Number(new RegExp(`${label}: (\\d+\\.\\d+)%`).exec(log)?.[1]);
  const trained = pct('test accuracy with the adapter'), reloaded = pct('reloaded adapters'), merged = pct('merged model');
  assert.ok(trained > 50, `40 steps should take the new head well past chance (10%); got ${trained}%\n${log}`);
  // One test digit is 0.05 point: reloading and merging may flip at most a near-tie.
  assert.ok(Math.abs(reloaded - trained) <= 0.05 && Math.abs(merged - trained) <= 0.05, log);
  for (const f of ['head/adapter_model.safetensors', 'head/adapter_config.json', 'digits/adapter_model.safetensors', 'digits/adapter_config.json']) {
    assert.ok(existsSync(join(cwd, 'adapters', f)), `missing adapters/${f}`);
  }
  copyFileSync(join(cwd, 'vit-digits.onnx'), join(cwd, 'library-merged.onnx')); // the block's merge writes the same path

  const lines = readmeBlock('## Parameter-efficient fine-tuning');
  const seen: string[] = [];
  for (const line of lines) {
    assert.match(line, /^npx refit adapter (info|merge) /, `a line in the README's adapter block that this test does not run: ${line}`);
    const args = line.slice('npx refit '.length).split(/\s+/);
    const out = execFileSync(process.execPath, [join(root, 'bin/refit.js'), ...args], { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    if (args[1] === 'info') {
      // PiSSA r=8 is saved as a plain LoRA of rank 16 (alpha 32: the same scale) on q, k, v, out, fc1, fc2 of blocks 0 and 1.
      assert.match(out, /^adapters\/digits: LORA r=16 alpha=32$/m, out);
      const targets = ['0', '1'].flatMap((b) => ['attn.q', 'attn.k', 'attn.v', 'attn.out', 'mlp.fc1', 'mlp.fc2'].map((m) => `blocks.${b}.${m}`));
      assert.match(out, new RegExp(`target modules \\(12\\): ${targets.join(', ').replace(/\./g, '\\.')}\\n`), out);
      // 2·16·(96 + 96) for each of 8 attention matrices, 2·16·(96 + 192) for each of 4 MLP ones.
      assert.match(out, /24 tensors, 43,008 values/, out);
      const share = Number(/against the model: (\d+\.\d+)% of its parameters/.exec(out)?.[1]);
      const base = await loadModel(join(root, 'models/fmnist-vit.onnx'));
      const baseParams = base.parameterNames().reduce((s, n) => s + base.param(n).data.length, 0);
      await base.release();
      assert.ok(Math.abs(share - 100 * 43008 / baseParams) < 0.006, `${share}% vs ${100 * 43008 / baseParams}%`);
      seen.push('info');
    } else {
      assert.match(out, /merged head, digits into models\/fmnist-vit\.onnx: wrote vit-digits\.onnx/, out);
      const outPath = join(cwd, args[args.indexOf('-o') + 1]!);
      let adapted = await loadModel(join(root, 'models/fmnist-vit.onnx'));
      adapted = await loadAdapter(adapted, join(cwd, 'adapters/head'));
      adapted = await loadAdapter(adapted, join(cwd, 'adapters/digits'));
      const x = f32([8, 1, 28, 28], new Rng(4).fill(new Float32Array(8 * 784), 1, 'uniform'));
      const logits = async (m: Awaited<ReturnType<typeof loadModel>>) => (await m.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array;
      const want = await logits(adapted);
      const maxDiff = (p: Float32Array) => Math.max(...Array.from(p, (v, k) => Math.abs(v - want[k]!)));
      const scale = Math.max(...Array.from(want, Math.abs));
      for (const f of [outPath, join(cwd, 'library-merged.onnx')]) {
        const m = await loadModel(f);
        const d = maxDiff(await logits(m));
        assert.ok(d <= 1e-4 * scale, `${f}: merged logits differ from the adapter model's by ${d} (scale ${scale})`);
        await m.release();
      }
      await adapted.release();
      seen.push('merge');
    }
  }
  assert.deepEqual(seen, ['info', 'merge']);
  rmSync(cwd, { recursive: true, force: true });
});
