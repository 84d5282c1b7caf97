// Transformers that PyTorch built, refit against PyTorch on the same weights, inputs and thread
// count, in one run (issue 12, item 1: "the BERT/GPT-style models"): a nanoGPT-style decoder
// (next-token cross-entropy, `losses.tokenCrossEntropy`), a BERT-style sequence classifier and an
// HF Llama-structured decoder exported with a KV cache (past_key_values inputs, as onnx-community
// ships it; refit trains it through withoutKvCache, PyTorch calls it without a cache), the classes
// of test/fixtures/zoo/make_zoo.py at bench size, exported by bench/transformers_torch.py (opset
// 14, dynamic batch and sequence axes). `smollm` (not in the default list: 652 MB, about 2 min a
// run) is that Llama at SmolLM-135M's shape; `minilm` (not in the default list) a BERT encoder at
// all-MiniLM-L6-v2's shape exported for feature-extraction and trained on pairs with in-batch
// negatives (`losses.inBatchNegatives`, sentence-transformers' MultipleNegativesRankingLoss).
//
//   npx tsx bench/transformers.ts [--models gpt,bert,smollm] [--configs infer,full,lora] [--reps 5] [--warmup 2] [--out bench/results/transformers]
//
// Configurations (refit / PyTorch): infer = model.run / forward under no_grad; full = every
// parameter, the model's loss, SGD lr 1e-3 (Trainer / torch.optim.SGD; GPT's tied lm_head is two
// ONNX tensors after the exporter's constant folding, so refit updates both copies); lora = rank 8,
// alpha 8 on every Linear whose sides are both ≥ 8 (peft.lora on those MatMul/Gemm weights /
// LoRALinear by hand), base frozen. PyTorch runs with OMP_WAIT_POLICY=PASSIVE (--torch-env to
// change): Debian's torch does its matrix products in OpenBLAS's own threads, and with OpenMP's
// threads spinning beside them the GPT forward took 153 ms instead of 65 (docs/speed.md). Each (model, configuration, engine) runs in its own child process, so peak RSS is
// its own; times are the median of --reps calls after --warmup calls; the first call (which
// compiles) is reported apart; the first step's loss (before any update) is compared.
// --keep-ties loads refit's side with keepTies, so a tied lm_head that the exporter stored as a
// transposed copy trains as one tensor, as PyTorch's tie does.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TRANSFORMERS, transformerBatch } from './transformer-batches.ts';
import { median } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const modelDir = join(root, 'tmp', 'transformer-models');
const THREADS = 2;
const MODELS = TRANSFORMERS; // As bench/transformers_torch.py's MODELS (bench/transformer-batches.ts)
type Name = keyof typeof MODELS;
const CONFIGS = ['infer', 'full', 'lora'] as const;
type Cfg = (typeof CONFIGS)[number];
interface Side { ms: number; times: number[]; first_ms: number; peak_rss_mb: number; loss: number | null; trainable: number; error?: string }

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : d; };

async function child(name: Name, config: Cfg, reps: number, warmup: number): Promise<Side> {
  const { loadModel } = await import('../src/model.ts');
  const optim = await import('../src/train/optim/index.ts');
  const { Trainer } = await import('../src/train/trainer.ts');
  const peft = await import('../src/peft/index.ts');
  const { feeds, loss } = await transformerBatch(name);
  const { withoutKvCache } = await import('../src/onnx/kv-cache.ts');
  const model = withoutKvCache(await loadModel(join(modelDir, `${name}.onnx`), { threads: THREADS, keepTies: process.env.REFIT_KEEP_TIES === '1' }));
  let call: () => Promise<unknown>;
  let trainable = 0;
  let loss0: number | null = null;
  if (config === 'infer') {
    const { labels: _, ...inputs } = feeds;
    call = () => model.run(inputs, { outputs: [name === 'minilm' ? 'last_hidden_state' : 'logits'] });
  } else {
    const adapted = config === 'lora' ? peft.withAdapter(model, 'lora', peft.lora({ targets: (s) => (s.group ?? 1) === 1 && Math.min(s.dIn, s.dOut) >= 8, rank: 8, alpha: 8 })) : undefined;
    const m = adapted ?? model;
    const names: string[] = adapted ? adapted.trainableNames('lora') : model.parameterNames();
    trainable = names.reduce((a: number, n: string) => a + m.param(n).data.length, 0);
    const trainer = new Trainer(m.compileTrainStep({ trainable: names, loss }), optim.sgd({ lr: 1e-3 }));
    call = async () => { const r = await trainer.step(feeds); loss0 ??= r.loss; };
  }
  let t = performance.now();
  await call();
  const first = performance.now() - t;
  for (let i = 0; i < warmup; i++) await call();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) { t = performance.now(); await call(); times.push(performance.now() - t); }
  return { ms: median(times), times, first_ms: first, peak_rss_mb: process.resourceUsage().maxRSS / 1024, loss: loss0, trainable };
}

if (process.argv[2] === '--child') {
  const [name, config, reps, warmup] = process.argv.slice(3);
  const r = await child(name as Name, config as Cfg, Number(reps), Number(warmup)).catch((e) => ({ error: String((e as Error).stack ?? e) }));
  console.log(JSON.stringify(r));
  process.exit(0);
}

const models = arg('models', 'gpt,bert,llama').split(',') as Name[];
const configs = arg('configs', CONFIGS.join(',')).split(',') as Cfg[];
const reps = Number(arg('reps', '5')), warmup = Number(arg('warmup', '2'));
const out = arg('out', join(root, 'bench/results/transformers'));
const torchEnv = Object.fromEntries(arg('torch-env', 'OMP_WAIT_POLICY=PASSIVE').split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
if (!models.every((m) => existsSync(join(modelDir, `${m}.onnx`)))) {
  const missing = models.filter((m) => !existsSync(join(modelDir, `${m}.onnx`)));
  const r = spawnSync('/usr/bin/python3', [join(here, 'transformers_torch.py'), '--export', modelDir, '--only', missing.join(',')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('bench/transformers_torch.py --export failed (Debian: apt-get install python3-torch python3-onnx)');
}
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const lastJson = (s: string): Side => { const line = s.trim().split('\n').at(-1) ?? ''; try { return JSON.parse(line); } catch { return { error: s.slice(-500) } as Side; } };
const rows: { model: Name; config: Cfg; refit: Side; torch: Side; load: string }[] = [];
for (const name of models) for (const config of configs) {
  const l0 = load();
  const refit = lastJson(spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', name, config, String(reps), String(warmup)], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, REFIT_KEEP_TIES: process.argv.includes('--keep-ties') ? '1' : '0' } }).stdout);
  const torch = lastJson(spawnSync('/usr/bin/python3', [join(here, 'transformers_torch.py'), '--run', name, config, '--models', modelDir, '--reps', String(reps), '--warmup', String(warmup)], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, ...torchEnv } }).stdout);
  const row = { model: name, config, refit, torch, load: `${l0} → ${load()}` };
  rows.push(row);
  const f = (s: Side) => (s.error ? `error: ${s.error.split('\n')[0]}` : `${s.ms.toFixed(1)} ms (first ${s.first_ms.toFixed(0)}), ${s.peak_rss_mb.toFixed(0)} MB, loss ${s.loss?.toFixed(5) ?? '–'}, ${s.trainable} trainable`);
  console.log(`${name} ${config}: refit ${f(refit)} | PyTorch ${f(torch)}${refit.error || torch.error ? '' : ` | time ${(refit.ms / torch.ms).toFixed(2)}, RSS ${(refit.peak_rss_mb / torch.peak_rss_mb).toFixed(2)}`} | load ${row.load}`);
}
const f1 = (v?: number) => (v === undefined ? '–' : v.toFixed(1));
const lines = [`# Transformers: refit against PyTorch (${new Date().toISOString()})`, '',
  `\`npx tsx bench/transformers.ts ${process.argv.slice(2).join(' ')}\`; ${THREADS} threads on both sides; PyTorch ${JSON.stringify(torchEnv)}; ms = median of ${reps} calls after ${warmup} warm-up calls; peak RSS of each side's own process. Models: ${models.map((m) => `**${m}**: ${MODELS[m].label}`).join('; ')}.`, '',
  '| model | config | refit ms | PyTorch ms | refit / PyTorch | refit first call ms | peak RSS refit / PyTorch MB | RSS ratio | first loss refit / PyTorch | trainable refit / PyTorch | load |',
  '|---|---|---:|---:|---:|---:|---|---:|---|---|---|'];
for (const r of rows) {
  const ok = !r.refit.error && !r.torch.error;
  lines.push(`| ${r.model} | ${r.config} | ${f1(r.refit.ms)} | ${f1(r.torch.ms)} | ${ok ? (r.refit.ms / r.torch.ms).toFixed(2) : '–'} | ${f1(r.refit.first_ms)} | ${f1(r.refit.peak_rss_mb)} / ${f1(r.torch.peak_rss_mb)} | ${ok ? (r.refit.peak_rss_mb / r.torch.peak_rss_mb).toFixed(2) : '–'} | ${r.refit.loss?.toFixed(5) ?? '–'} / ${r.torch.loss?.toFixed(5) ?? '–'} | ${r.refit.trainable} / ${r.torch.trainable} | ${r.load} |`);
}
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), threads: THREADS, torchEnv, reps, warmup, models: MODELS, rows }, null, 1));
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
console.log(`wrote ${out}.json and .md`);
