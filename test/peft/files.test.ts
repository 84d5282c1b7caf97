// HF PEFT file interop with a committed PyTorch fixture (test/fixtures/peft/make_peft_fixture.py),
// in both directions, plus save/load round trips and the errors a bad file gets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync, writeFileSync, cpSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model.ts';
import { parseSafetensors, serializeSafetensors } from '../../src/io/safetensors.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { withAdapter, lora, dora, withAdapterFiles, adapterFiles, PeftError, PeftModel } from '../../src/peft/index.ts';
import { saveAdapter, loadAdapter, readAdapterFolder } from '../../src/peft/files-node.ts';
import { smallVit, images, maxDiff, perturb } from './helpers.ts';

const fx = new URL('../fixtures/peft/', import.meta.url).pathname;
const transformer = () => loadModel(new URL('../fixtures/torch/transformer/model.onnx', import.meta.url).pathname, { threads: 1 });
const expected = parseSafetensors(readFileSync(join(fx, 'expected.safetensors'))).tensors;
const tokens = expected.get('tokens')!;

test('a LoRA made in PyTorch (HF PEFT layout: q, v, fc1 as Transpose→MatMul, head as Gemm transB=1) gives PyTorch\'s outputs in refit', async () => {
  const base = await transformer();
  const p = await loadAdapter(base, join(fx, 'torch_adapter'), 'torch');
  assert.deepEqual(p.adapterNames(), ['torch']);
  const y = (await p.run({ tokens })).logits;
  const ref = expected.get('torch_logits')!;
  assert.ok(maxDiff(y, ref) <= 1e-4, `max diff ${maxDiff(y, ref)}`);
  assert.ok(maxDiff((await base.run({ tokens })).logits, ref) > 1e-2, 'the adapter must matter for this check to mean anything');
  // merged into the [out, in] PyTorch weights: same outputs
  assert.ok(maxDiff((await p.merge('torch').run({ tokens })).logits, ref) <= 1e-4);
});

test('a LoRA saved by refit loads in PyTorch with the same outputs (checked by the fixture script) and still matches', async () => {
  const meta = JSON.parse(readFileSync(join(fx, 'meta.json'), 'utf8'));
  assert.equal(meta.refit_to_torch.ok, true);
  assert.ok(meta.refit_to_torch.max_abs_diff_vs_refit <= 1e-4);
  const p = await loadAdapter(await transformer(), join(fx, 'refit_adapter'));
  assert.deepEqual(p.adapterNames(), ['refit']);
  assert.ok(maxDiff((await p.run({ tokens })).logits, expected.get('refit_adapter_torch_logits')!) <= 1e-4);
});

test('save → load round trip through a folder; HF key names and [out, in] shapes for refit\'s [in, out] MatMul weights', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-peft-'));
  try {
    const p = withAdapter(smallVit(), 'digits', lora({ targets: /attn\.(q|v)$|fc1/, rank: 4, alpha: 16 }));
    perturb(p, 'digits');
    await saveAdapter(p, 'digits', dir);
    assert.deepEqual(readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.r, 4); assert.equal(cfg.lora_alpha, 16); assert.equal(cfg.use_rslora, false); assert.equal(cfg.use_dora, false);
    assert.deepEqual(cfg.target_modules, ['blocks.0.attn.q', 'blocks.0.attn.v', 'blocks.0.mlp.fc1']);
    const st = parseSafetensors(readFileSync(join(dir, 'adapter_model.safetensors'))).tensors;
    assert.deepEqual(st.get('base_model.model.blocks.0.mlp.fc1.lora_A.weight')!.dims, [4, 32]);
    assert.deepEqual(st.get('base_model.model.blocks.0.mlp.fc1.lora_B.weight')!.dims, [64, 4]);
    const q = await loadAdapter(smallVit(), dir);
    const x = images(2);
    assert.ok(maxDiff((await q.run({ x })).logits, (await p.run({ x })).logits) <= 1e-6);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad files: the error names the tensor and expected vs actual shape, and nothing is applied', async () => {
  const base = smallVit();
  const p = withAdapter(base, 'a', lora({ targets: 'q', rank: 2 }));
  const good = adapterFiles(p, 'a');
  const tensors = parseSafetensors(good.weights).tensors;
  const variant = (edit: (m: Map<string, ReturnType<typeof f32>>) => void) => {
    const m = new Map(tensors);
    edit(m);
    return { weights: serializeSafetensors(m), config: good.config };
  };
  const A = 'base_model.model.blocks.0.attn.q.lora_A.weight', B = 'base_model.model.blocks.0.attn.q.lora_B.weight';
  const before = base.ir.graph.initializers.size;
  assert.throws(() => withAdapterFiles(base, 'b', variant((m) => m.set(A, f32([2, 16])))), /tensor 'base_model\.model\.blocks\.0\.attn\.q\.lora_A\.weight' has shape \[2, 16\], expected \[2, 32\]/);
  assert.throws(() => withAdapterFiles(base, 'b', variant((m) => m.delete(B))), /missing tensor 'base_model\.model\.blocks\.0\.attn\.q\.lora_B\.weight' \(expected float32 \[32, 2\]\)/);
  assert.throws(() => withAdapterFiles(base, 'b', variant((m) => m.set('base_model.model.blocks.0.attn.q.lora_C.weight', f32([1])))), /unexpected tensor 'base_model\.model\.blocks\.0\.attn\.q\.lora_C\.weight'/);
  assert.throws(() => withAdapterFiles(base, 'b', variant((m) => m.set('base_model.model.blocks.7.attn.q.lora_A.weight', f32([2, 32])))), /module 'blocks\.7\.attn\.q', which the model does not have\. Closest modules: blocks\.0\.attn\.q/);
  assert.throws(() => withAdapterFiles(base, 'b', variant((m) => m.set(A, f32([2, 32], new Float32Array(64).fill(NaN))))), /non-finite/);
  assert.throws(() => withAdapterFiles(base, 'b', { weights: good.weights.subarray(0, good.weights.length - 9), config: good.config }), /truncated/);
  assert.throws(() => withAdapterFiles(base, 'b', { weights: good.weights, config: '{"peft_type": "LORA", "r": 2' }), (e: Error) => e instanceof PeftError && /not valid JSON/.test(e.message));
  assert.throws(() => withAdapterFiles(base, 'b', { weights: good.weights, config: JSON.stringify({ ...JSON.parse(good.config), r: 3 }) }), /has shape \[2, 32\], expected \[3, 32\]/);
  // the model is untouched: no half-applied adapter
  assert.equal(base.ir.graph.initializers.size, before);
  assert.ok(!(base instanceof PeftModel));
  assert.deepEqual(p.adapterNames(), ['a']);
});

test('a PyTorch adapter folder copied with a wrong target_modules is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-peft-'));
  try {
    cpSync(join(fx, 'torch_adapter'), dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, target_modules: ['q', 'v'] }));
    await assert.rejects(loadAdapter(await transformer(), dir), /module 'blocks\.0\.mlp\.fc1', which adapter_config\.json's target_modules \["q","v"\] does not cover/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// PeftConfig's and LoraConfig's fields in HF PEFT (src/peft/config.py, src/peft/tuners/lora/config.py);
// every key refit writes has existed since PEFT 0.9.0, which added use_dora.
const PEFT_CONFIG_KEYS = ['peft_type', 'auto_mapping', 'base_model_name_or_path', 'revision', 'task_type', 'inference_mode'];
const LORA_CONFIG_KEYS = ['r', 'target_modules', 'lora_alpha', 'lora_dropout', 'fan_in_fan_out', 'bias', 'use_rslora', 'modules_to_save', 'init_lora_weights',
  'layers_to_transform', 'layers_pattern', 'rank_pattern', 'alpha_pattern', 'megatron_config', 'megatron_core', 'loftq_config', 'use_dora'];

test('a refit-written LoRA or DoRA config has only keys PEFT\'s LoraConfig defines; refit\'s name and method live in the weights\' metadata', async () => {
  const allowed = new Set([...PEFT_CONFIG_KEYS, ...LORA_CONFIG_KEYS]);
  for (const method of [lora({ targets: /attn\.(q|v)$/, rank: 2 }), dora({ targets: /attn\.(q|v)$/, rank: 2 })]) {
    const f = adapterFiles(withAdapter(smallVit(), 'mine', method), 'mine');
    const extra = Object.keys(JSON.parse(f.config)).filter((k) => !allowed.has(k));
    assert.deepEqual(extra, [], `keys PEFT would refuse: ${extra}`);
    const meta = parseSafetensors(f.weights).metadata;
    assert.equal(meta['refit.adapter'], 'mine');
    assert.equal(meta.format, 'pt');
  }
  const dir = mkdtempSync(join(tmpdir(), 'refit-peft-'));
  try {
    await saveAdapter(withAdapter(smallVit(), 'mine', lora({ targets: 'q', rank: 2 })), 'mine', dir);
    assert.deepEqual((await loadAdapter(smallVit(), dir)).adapterNames(), ['mine']);
    // A folder written before the name moved (config key "refit") still loads under its name.
    const cfgPath = join(dir, 'adapter_config.json');
    writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), refit: { adapter: 'old', method: 'lora' } }));
    const w = parseSafetensors(readFileSync(join(dir, 'adapter_model.safetensors')));
    writeFileSync(join(dir, 'adapter_model.safetensors'), serializeSafetensors(w.tensors, { format: 'pt' }));
    assert.deepEqual((await loadAdapter(smallVit(), dir)).adapterNames(), ['old']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a folder whose config sets modules_to_save (or another setting refit cannot apply) is refused naming the folder and the key; defaults pass', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-peft-'));
  try {
    cpSync(join(fx, 'torch_adapter'), dir, { recursive: true });
    const cfgPath = join(dir, 'adapter_config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    const model = await transformer();
    // What PEFT writes for modules_to_save=['head']: the key, plus a full copy of the module's weights.
    const w = parseSafetensors(readFileSync(join(dir, 'adapter_model.safetensors'))).tensors;
    w.set('base_model.model.head.modules_to_save.default.weight', f32([4, 8]));
    const weights = serializeSafetensors(w, { format: 'pt' });
    writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ modules_to_save: ['head'] }, /'modules_to_save' is set \(\["head"\]\), which refit does not support/],
      [{ bias: 'lora_only' }, /'bias' is set \("lora_only"\), which refit does not support/],
      [{ lora_bias: true }, /'lora_bias' is set \(true\), which refit does not support/],
      [{ layer_replication: [[0, 1]] }, /'layer_replication' is set/],
      [{ target_parameters: ['blocks.0.mlp.fc1.weight'] }, /'target_parameters' is set/],
      [{ trainable_token_indices: [1, 2] }, /'trainable_token_indices' is set/],
    ];
    for (const [extra, pattern] of cases) {
      writeFileSync(cfgPath, JSON.stringify({ ...cfg, ...extra }));
      const named = (e: Error) => e instanceof PeftError && e.message.startsWith(`adapter folder ${dir}: adapter_config.json: `) && pattern.test(e.message) && !/unexpected tensor/.test(e.message);
      await assert.rejects(loadAdapter(model, dir), named, JSON.stringify(extra));
      assert.throws(() => readAdapterFolder(dir), named, `readAdapterFolder, ${JSON.stringify(extra)}`);
      // From bytes (the service's PUT): the same message, without a folder to name.
      assert.throws(() => withAdapterFiles(model, 'x', { weights, config: JSON.stringify({ ...cfg, ...extra }) }), (e: Error) => e instanceof PeftError && pattern.test(e.message));
    }
    // Defaults of those keys (as PEFT writes them) pass the config check; the extra tensor then
    // gets the tensor error, with the folder named.
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, modules_to_save: [], bias: 'none', lora_bias: false, layer_replication: null, target_parameters: [], trainable_token_indices: null, some_future_key: 1 }));
    assert.doesNotThrow(() => readAdapterFolder(dir));
    await assert.rejects(loadAdapter(model, dir), (e: Error) => e.message.startsWith(`adapter folder ${dir}: adapter_model.safetensors: unexpected tensor 'base_model.model.head.modules_to_save.default.weight'`));
    // A missing file and bad JSON name the folder too.
    writeFileSync(cfgPath, '{"peft_type": "LORA",');
    assert.throws(() => readAdapterFolder(dir), (e: Error) => e.message.startsWith(`adapter folder ${dir}: adapter_config.json: not valid JSON`));
    rmSync(cfgPath);
    assert.throws(() => readAdapterFolder(dir), new RegExp(`adapter folder ${dir} has no adapter_config\\.json`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
