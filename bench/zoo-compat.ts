// Compatibility table (issue 10, item 8): for each zoo model, does refit's full step ('all'),
// norm-affine tuning, LoRA and one test-time adaptation method (Tent) work, and what does each
// cost against plain inference of the same batch?
//
//   npx tsx bench/zoo-compat.ts [--full] [--threads 1] [--reps 5] [--only resnet18,gpt]
//
// Default: the width-reduced fixtures of test/fixtures/zoo (made by make_zoo.py), which also carry
// PyTorch references, so the full step's column says whether loss and gradients match (≤ 1e-4).
// --full: the full-size exports in bench/models/zoo (make_zoo.py --full; no gradient references).
// Writes bench/results/zoo-compat.json (zoo-compat-full.json with --full) and docs/compat.md (the
// fixture table, then the full-size one when a --full run is recorded). --only reruns some models
// and merges their rows into the last run's.
//
// Every cell runs in this one process, one after another, on the same batch (a model's first case):
// the ratio is the median of `reps` timed runs of that step (after one untimed run, which
// compiles) over the median of `reps` timed plain inference runs (`model.run`, after one warm-up).
// A failing cell records the first line of its error.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { loadModel, type RefitModel } from '../src/model.ts';
import * as peft from '../src/peft/index.ts';
import { createAdapter } from '../src/tta/index.ts';
import { withTokenInputs, tokenIdsInput } from '../src/onnx/token-companions.ts';
import { withoutKvCache } from '../src/onnx/kv-cache.ts';
import type { TrainStep } from '../src/train/train-step.ts';
import type { Tensor } from '../src/onnx/tensor.ts';
import { listZoo, readZoo, batchOf, inputsOf, lossOf, torchGrad, ZOO_DIR, type ZooFixture } from '../test/fixtures/zoo/read.ts';
import { median } from './stats.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (n: string) => args.includes(`--${n}`);
const opt = (n: string, d: string) => { const i = args.indexOf(`--${n}`); return i >= 0 && args[i + 1] ? args[i + 1]! : d; };
const full = flag('full');
const threads = Number(opt('threads', '1'));
const reps = Number(opt('reps', full ? '3' : '5'));
const only = opt('only', '').split(',').filter(Boolean);
const dir = full ? join(root, 'bench/models/zoo') : ZOO_DIR;

type Column = 'full' | 'normAffine' | 'lora' | 'tent';
interface Cell { ok: boolean; error?: string; ms?: number; ratio?: number; trainable?: number; note?: string }
interface Row { model: string; description: string; opset: number; inferenceMs?: number; inferenceError?: string; cells: Record<Column, Cell> }

const firstLine = (e: unknown) => (e instanceof Error ? `${e.name === 'Error' ? '' : e.name + ': '}${e.message}` : String(e)).split('\n')[0]!.slice(0, 240);

async function timeIt(f: () => Promise<unknown>): Promise<number> {
  await f(); // compile / warm up
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); await f(); ts.push(performance.now() - t0); }
  return median(ts);
}

/** Worst relative gradient error against PyTorch over every parameter refit trained (fixtures only). */
function parity(f: ZooFixture, caseName: string, loss: number, grads: Map<string, Float32Array>): string | undefined {
  const refLoss = f.tensors.get(`${caseName}.loss`)?.data as Float32Array | undefined;
  if (!refLoss) return selection(f, grads);
  const lossErr = Math.abs(loss - refLoss[0]!) / Math.abs(refLoss[0]!);
  // worst: largest relative error among the gradients that are not (numerically) zero; fail: any
  // beyond 1e-4 relative and beyond the absolute floor, as the test decides
  let worst = 0, compared = 0, fail = false;
  const missing: string[] = [];
  for (const p of Object.keys(f.meta.params)) {
    const ref = f.tensors.get(`${caseName}.grad.${p}`)?.data as Float32Array | undefined;
    if (!ref) continue;
    const { grad, missing: m } = torchGrad(f, p, grads);
    missing.push(...m.filter((x) => !f.meta.quantized_weights.includes(x)));
    if (!grad) continue;
    let d = 0, e = 0;
    for (let i = 0; i < ref.length; i++) { d += (grad[i]! - ref[i]!) ** 2; e += ref[i]! ** 2; }
    const err = Math.sqrt(d), norm = Math.sqrt(e), floor = 1e-6 * Math.sqrt(ref.length);
    if (norm > floor) worst = Math.max(worst, err / norm);
    if (err > 1e-4 * norm && err > floor) fail = true;
    compared++;
  }
  const buffers = [...grads.keys()].filter((k) => f.meta.buffers.includes(k));
  const ok = lossErr <= 1e-4 && !fail && missing.length === 0 && buffers.length === 0;
  return `${ok ? 'matches PyTorch' : 'DIFFERS from PyTorch'}: loss ${lossErr.toExponential(1)}, worst relative gradient error ${worst.toExponential(1)} over ${compared} parameters` +
    `${missing.length ? `, no gradient for ${missing.join(', ')}` : ''}${buffers.length ? `, also trains the buffers ${buffers.join(', ')}` : ''}`;
}

/** Without references (--full): does 'all' train every PyTorch parameter and no buffer? */
function selection(f: ZooFixture, grads: Map<string, Float32Array>): string | undefined {
  const missing = Object.values(f.meta.params).flat().map(([o]) => o).filter((o) => !grads.has(o) && !f.meta.quantized_weights.includes(o));
  const buffers = [...grads.keys()].filter((k) => f.meta.buffers.includes(k));
  if (missing.length === 0 && buffers.length === 0) return undefined;
  return `DIFFERS from PyTorch's parameters:${missing.length ? ` no gradient for ${missing.join(', ')}` : ''}${buffers.length ? ` also trains the buffers ${buffers.join(', ')}` : ''}`;
}

async function stepCell(model: RefitModel, trainable: string[] | 'all', f: ZooFixture, batch: Record<string, Tensor>, inferMs: number | undefined, check: boolean): Promise<Cell> {
  let step: TrainStep | undefined;
  try {
    step = model.compileTrainStep({ trainable, loss: lossOf(f.meta), outputs: [f.meta.output] });
    const r = await step.run(batch);
    if (!Number.isFinite(r.loss)) return { ok: false, error: `non-finite loss ${r.loss}` };
    const c0 = f.meta.cases[0]!.name;
    const note = trainable === 'all' && f.meta.cases[0]!.batchNorm === 'eval' ? (check ? parity(f, c0, r.loss, r.grads) : selection(f, r.grads)) : undefined;
    const ms = await timeIt(() => step!.run(batch));
    return { ok: !note || note.startsWith('matches'), ms, ratio: inferMs ? ms / inferMs : undefined, trainable: r.grads.size, ...(note ? { note } : {}) };
  } catch (e) {
    return { ok: false, error: firstLine(e) };
  } finally {
    await step?.release().catch(() => undefined);
  }
}

async function row(name: string): Promise<Row> {
  const f = readZoo(name, dir);
  const c0 = f.meta.cases[0]!.name;
  const batch = batchOf(f, c0);
  const inputs = inputsOf(f, c0);
  const r: Row = { model: name, description: f.meta.description, opset: f.meta.opset, cells: {} as Row['cells'] };
  const loaded = await loadModel(f.modelPath, { threads });
  // A text decoder with a KV cache is timed and trained as refit trains it: without the cache.
  const base = f.meta.kv_cache ? withoutKvCache(loaded) : loaded;
  try {
    r.inferenceMs = await timeIt(() => base.run(inputs, { outputs: [f.meta.output] }));
  } catch (e) {
    r.inferenceError = firstLine(e);
  }
  r.cells.full = await stepCell(base, 'all', f, batch, r.inferenceMs, !full);
  for (const [col, method] of [
    ['normAffine', () => peft.normAffine()],
    ['lora', () => peft.lora({ targets: (s) => (s.group ?? 1) === 1 && Math.min(s.dIn, s.dOut) >= 2, rank: 2, alpha: 4 })],
  ] as const) {
    try {
      const m = peft.withAdapter(base, col, method());
      r.cells[col] = await stepCell(m, m.trainableNames(), f, batch, r.inferenceMs, false);
      await m.release();
    } catch (e) {
      r.cells[col] = { ok: false, error: firstLine(e) };
    }
  }
  // Tent on the first graph input (Tent takes one input tensor and [N, C] logits), dynamic evaluation
  // for a language model ([batch, sequence, vocabulary] logits); a token model's other inputs
  // (attention_mask, …) made inside the graph from its ids (withTokenInputs).
  try {
    const one = base.inputs.length > 1 && tokenIdsInput(base) ? withTokenInputs(base) : base;
    const lm = one.outputs.find((o) => o.name === f.meta.output)?.shape?.length === 3 && tokenIdsInput(one);
    const tent = createAdapter(one, lm ? 'dynamic-eval' : 'tent', lm ? { logits: f.meta.output } : {});
    try {
      const x = inputs[one.inputs[0]!.name]!;
      const res = await tent.predict(x);
      if (res.info.skipped) throw new Error(`${tent.name} skipped its step (non-finite loss ${res.info.loss})`);
      const ms = await timeIt(() => tent.predict(x));
      r.cells.tent = { ok: true, ms, ratio: r.inferenceMs ? ms / r.inferenceMs : undefined };
    } finally {
      await tent.release();
      if (one !== base) await one.release();
    }
  } catch (e) {
    r.cells.tent = { ok: false, error: firstLine(e) };
  }
  await Promise.all([base.release(), loaded.release()]);
  return r;
}

function cellText(c: Cell): string {
  if (!c.ok) return `✗ ${(c.error ?? c.note ?? '').replace(/\|/g, '\\|')}`;
  return `✓ ${c.ratio !== undefined ? `${c.ratio.toFixed(2)}×` : `${c.ms?.toFixed(1)} ms`}`;
}

interface Meta { date: string; threads: number; reps: number; full: boolean; load: string; earlier?: string; only?: string; reruns?: { only: string; date: string }[] }

function markdown(rows: Row[], meta: Meta): string {
  const ok = (c: Column) => rows.filter((r) => r.cells[c].ok).length;
  const lines = [
    '# Compatibility: the model zoo',
    '',
    `Made by \`npx tsx bench/zoo-compat.ts${meta.full ? ' --full' : ''}\` on ${meta.earlier ? `${meta.earlier}; ${(meta.reruns ?? [{ only: meta.only!, date: meta.date }]).map((r) => `rerun with \`--only ${r.only}\` for those models on ${r.date}`).join('; ')}` : meta.date} (${meta.threads} onnxruntime thread${meta.threads > 1 ? 's' : ''}, median of ${meta.reps} runs; raw numbers in [\`bench/results/zoo-compat${meta.full ? '-full' : ''}.json\`](../bench/results/zoo-compat${meta.full ? '-full' : ''}.json)).`,
    `Models: ${meta.full ? 'the full-size exports of `make_zoo.py --full`' : 'the width-reduced fixtures of [`test/fixtures/zoo`](../test/fixtures/zoo/README.md) (the same ops, module structure and exporter quirks as the originals, fewer channels and layers)'}.`,
    '',
    'Columns: **full step** = `compileTrainStep({ trainable: \'all\' })` with the model\'s loss (cross-entropy, or MSE to a fixed target for GPT and the U-Net), BatchNorm in inference mode;',
    '**norm-affine** = `peft.normAffine()` (every normalization layer\'s scale and bias); **LoRA** = `peft.lora({ rank: 2 })` on every MatMul/Gemm/Conv with group 1;',
    '**TTA** = `tta.createAdapter(model, \'tent\')`, one `predict` (forward, entropy step) on the first graph input; for a language model (`[batch, sequence, vocabulary]` logits) `\'dynamic-eval\'` (forward, next-token step) (a token model with more inputs: through `withTokenInputs(model)`, which makes them from the ids). A text decoder exported with a KV cache (past_key_values inputs, optimum\'s If on use_cache_branch) is timed and trained in every column as `withoutKvCache(model)`.',
    '✓ n× is the time of one step (or one Tent predict) over plain inference of the same batch (`model.run`); ✗ gives the first line of the error.',
    meta.full
      ? 'The full-size exports carry no gradient references: the full step is ✗ only when it fails, trains a buffer, or leaves a PyTorch parameter without gradient.'
      : 'The full step also compares loss and every gradient with PyTorch (`test/zoo.test.ts` does the same, for every case): a mismatch beyond 1e-4 relative, a buffer trained, or a PyTorch parameter without gradient is a ✗.',
    '',
    '| model | opset | inference ms | full step | norm-affine | LoRA | TTA (Tent; dynamic-eval for LMs) |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.model} | ${r.opset} | ${r.inferenceMs?.toFixed(2) ?? `✗ ${r.inferenceError}`} | ${cellText(r.cells.full)} | ${cellText(r.cells.normAffine)} | ${cellText(r.cells.lora)} | ${cellText(r.cells.tent)} |`),
    '',
    `Working: full step ${ok('full')}/${rows.length}, norm-affine ${ok('normAffine')}/${rows.length}, LoRA ${ok('lora')}/${rows.length}, TTA ${ok('tent')}/${rows.length}.`,
    '',
    '## Details',
    '',
    ...rows.flatMap((r) => [`- **${r.model}**: ${r.description}.` + (r.cells.full.note ? ` Full step: ${r.cells.full.note}.` : '') +
      (['normAffine', 'lora'] as const).map((c) => r.cells[c].ok ? ` ${c === 'lora' ? 'LoRA' : 'norm-affine'}: ${r.cells[c].trainable} trainable tensors.` : '').join('')]),
    '',
    '## Notes',
    '',
    '- Tent takes `[batch, classes]` logits, or image-shaped `[batch, classes, H, W]` ones (the U-Net: per-pixel entropy), on one input (a token model\'s companions made by `withTokenInputs`). A language model\'s `[batch, sequence, vocabulary]` logits (GPT) are out of its scope, not a defect.',
    '- norm-affine and Tent train normalization layers: SqueezeNet 1.1 and the LSTM classifier have none, so both ✗ there by design. LoRA targets MatMul/Gemm/Conv only: on the LSTM it trains the classifier alone (the recurrent weights are not a LoRA target).',
    meta.full ? '- Full-size exports: the ratios are those of real models; no gradient references at this size.' : '- The widths are tiny, so plain inference takes well under a millisecond and each step\'s fixed costs (feeding every parameter, reading every gradient back) dominate the ratios; `--full` runs the full-size exports.',
    '- Timings come from one process on a shared 2-core machine with other jobs running (load average ' + meta.load + ' at the start), so ratios are rough.',
    '- `test/zoo.test.ts` checks the same models, every case, with the precise error.',
    '',
  ];
  return lines.filter((l, i, a) => !(l === '' && a[i - 1] === '')).join('\n');
}

/** docs/compat.md: the fixture table, then the full-size one when a --full run has been recorded. */
function writeDocs() {
  const read = (f: string) => (existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) as Meta & { rows: Row[] } : undefined);
  const small = read(join(root, 'bench/results/zoo-compat.json'));
  const big = read(join(root, 'bench/results/zoo-compat-full.json'));
  const parts: string[] = [];
  if (small) parts.push(markdown(small.rows, small));
  if (big) parts.push(markdown(big.rows, big).replace(/^# Compatibility: the model zoo/, '# Full-size models (`--full`)'));
  writeFileSync(join(root, 'docs/compat.md'), parts.join('\n'));
}

const loadAtStart = loadavg().map((x) => x.toFixed(1)).join(', ');

async function main() {
  if (!existsSync(dir)) throw new Error(`${dir} does not exist: run /usr/bin/python3 test/fixtures/zoo/make_zoo.py${full ? ' --full' : ''} first`);
  const names = listZoo(dir).filter((n) => only.length === 0 || only.includes(n));
  const rows: Row[] = [];
  for (const n of names) {
    const t0 = performance.now();
    const r = await row(n);
    rows.push(r);
    const s = (c: Column) => (r.cells[c].ok ? 'ok' : 'FAIL');
    console.log(`${n.padEnd(22)} infer ${r.inferenceMs?.toFixed(2) ?? 'FAIL'} ms | full ${s('full')} | normAffine ${s('normAffine')} | lora ${s('lora')} | tent ${s('tent')}  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    for (const c of ['full', 'normAffine', 'lora', 'tent'] as Column[]) if (!r.cells[c].ok) console.log(`    ${c}: ${r.cells[c].error ?? r.cells[c].note}`);
  }
  const meta: Meta = { date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', threads, reps, full, load: loadAtStart };
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  const out = join(root, `bench/results/zoo-compat${full ? '-full' : ''}`);
  // --only: the new rows replace their models' rows of the last run; the others are kept (with
  // their own date in the meta's `earlier`, and each --only run in `reruns`).
  let all = rows;
  if (only.length && existsSync(`${out}.json`)) {
    const last = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as { rows: Row[]; date: string; earlier?: string; only?: string; reruns?: Meta['reruns'] };
    all = [...last.rows.filter((r) => !names.includes(r.model)), ...rows].sort((a, b) => (a.model < b.model ? -1 : 1));
    // every earlier --only run stays named, with its date
    const before = last.reruns ?? (last.only ? [{ only: last.only, date: last.date }] : []);
    Object.assign(meta, { earlier: last.earlier ?? last.date, only: names.join(','), reruns: [...before, { only: names.join(','), date: meta.date }] });
  }
  writeFileSync(`${out}.json`, JSON.stringify({ ...meta, rows: all }, null, 1) + '\n');
  writeFileSync(`${out}.md`, markdown(all, meta));
  writeDocs(); // --only merged its rows into the last run's
  console.log(`wrote ${out}.json, ${out}.md, docs/compat.md`);
}

await main();
