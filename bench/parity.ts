// One full training step of an exported model against PyTorch's loss and gradients (written by a
// bench's Python script as <name>.x.npy, <name>.y.npy, <name>.grads.safetensors): the core of
// bench/torchvision-extra.ts and bench/torchaudio-models.ts.
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { loadModel, type RefitModel } from '../src/model.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { f32, i64, tensor, type Tensor } from '../src/onnx/tensor.ts';
import { parseNpy } from '../src/cli/data-files.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { median } from './stats.ts';

/**
 * Run a bench's Python script (Debian's /usr/bin/python3) for the models of `names` whose
 * PyTorch references are not in `dir` yet; `debian` names the packages it needs, for the error.
 */
export function exportMissing(script: string, dir: string, names: string[], debian: string): void {
  const missing = names.filter((n) => !existsSync(join(dir, `${n}.grads.safetensors`)));
  if (!missing.length) return;
  const r = spawnSync('/usr/bin/python3', [script, '--out', dir, '--only', missing.join(',')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${script} failed (Debian: apt-get install ${debian})`);
}

/** A gradient that is zero in exact arithmetic (a key projection's bias under softmax) is float noise on both sides; its relative error says nothing. */
export const ZERO_NORM = 1e-6;

export interface ParityRow { model: string; params: number; input: string; loss: number; torchLoss: number; grads: string; worstGrad: number; firstMs: number; stepMs: number; error?: string }

const relErr = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, n = 0;
  for (let i = 0; i < b.length; i++) { d += (a[i]! - b[i]!) ** 2; n += b[i]! ** 2; }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-12);
};

/**
 * refit's gradients against PyTorch's, per tensor ‖refit − PyTorch‖ / ‖PyTorch‖: how many of
 * PyTorch's refit has (`compared`), how many of those PyTorch gives a norm below ZERO_NORM (`zero`:
 * left out of the worst, where the ratio is noise), and the worst ratio of the rest.
 */
export function compareGrads(refit: ReadonlyMap<string, ArrayLike<number>>, torch: ReadonlyMap<string, ArrayLike<number>>): { compared: number; zero: number; worst: number } {
  let compared = 0, zero = 0, worst = 0;
  for (const [p, want] of torch) {
    const got = refit.get(p);
    if (!got) continue;
    compared++;
    let n = 0;
    for (let i = 0; i < want.length; i++) n += want[i]! ** 2;
    if (Math.sqrt(n) < ZERO_NORM) { zero++; continue; }
    worst = Math.max(worst, relErr(got, want));
  }
  return { compared, zero, worst };
}

/** A tensor a bench's Python script saved as `<dir>/<file>`: float32 (from float32/64), bool (a padding mask) or int64. */
export function savedTensor(dir: string, file: string): Tensor {
  const a = parseNpy(new Uint8Array(readFileSync(join(dir, file))), file);
  if (a.dtype === 'bool') return tensor('bool', a.shape, Uint8Array.from(a.values as ArrayLike<number>));
  return a.dtype === 'float32' || a.dtype === 'float64'
    ? f32(a.shape, Float32Array.from(a.values as ArrayLike<number>))
    : i64(a.shape, Array.from(a.values as ArrayLike<number>, Number));
}

/** The batch a bench's Python script saved: x as float32, y as int64 (or float32 targets). */
export function savedBatch(dir: string, name: string): { x: Tensor; y: Tensor } {
  return { x: savedTensor(dir, `${name}.x.npy`), y: savedTensor(dir, `${name}.y.npy`) };
}

/**
 * Compile `loss` over every parameter of `<dir>/<name>.onnx`, run it on the saved batch (first call,
 * then the median of 7 after one more), and compare with PyTorch's loss and every gradient it saved. `feeds` names
 * the model's inputs and the loss's label input, made from the saved x and y or given whole (a
 * model with several inputs). Errors are caught into the row.
 */
export async function stepAgainstTorch(dir: string, name: string, opts: { loss: LossSpec; torchLoss: number; params: number; feeds: ((b: { x: Tensor; y: Tensor }) => Record<string, Tensor>) | Record<string, Tensor>; threads?: number; batchNorm?: 'train' | 'eval'; keepTies?: boolean; stopGradient?: string[]; transform?: (model: RefitModel) => RefitModel; after?: (model: RefitModel, feeds: Record<string, Tensor>) => Promise<void> }): Promise<ParityRow> {
  const torchGrads = parseSafetensors(readFileSync(join(dir, `${name}.grads.safetensors`))).tensors;
  const feeds = typeof opts.feeds === 'function' ? opts.feeds(savedBatch(dir, name)) : opts.feeds;
  const row: ParityRow = { model: name, params: opts.params, input: Object.values(feeds)[0]!.dims.join('×'), loss: NaN, torchLoss: opts.torchLoss, grads: '', worstGrad: NaN, firstMs: NaN, stepMs: NaN };
  const loaded = await loadModel(join(dir, `${name}.onnx`), { threads: opts.threads ?? 2, ...(opts.keepTies ? { keepTies: true } : {}) });
  const model = opts.transform ? opts.transform(loaded) : loaded;
  try {
    const step = model.compileTrainStep({ trainable: 'all', loss: opts.loss, ...(opts.batchNorm ? { batchNorm: opts.batchNorm } : {}), ...(opts.stopGradient?.length ? { stopGradient: opts.stopGradient } : {}) });
    let t = performance.now();
    const r = await step.run(feeds);
    row.firstMs = performance.now() - t;
    // as bench/popular_step_times.py times PyTorch: 2 calls of warm-up (the first one here), then
    // the median of 7 (a large model's first calls also pay for page faults and collections of
    // its fresh gradient buffers: SmolLM-135M's 2nd–4th steps took up to 2× its steady time)
    await step.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < 7; i++) { t = performance.now(); await step.run(feeds); times.push(performance.now() - t); }
    row.stepMs = median(times);
    row.loss = r.loss;
    const { compared, zero, worst } = compareGrads(r.grads, new Map([...torchGrads].map(([k, t]) => [k, t.data as Float32Array])));
    row.grads = `${compared}/${torchGrads.size} (refit: ${r.grads.size}${zero ? `; ${zero} of norm < ${ZERO_NORM} not in the worst` : ''})`;
    row.worstGrad = worst;
    await step.release();
  } catch (e) { row.error = (e as Error).message.split('\n')[0]!.slice(0, 200); }
  await opts.after?.(model, feeds);
  await model.release();
  if (model !== loaded) await loaded.release();
  return row;
}

/** The markdown table of rows, with `extra` columns appended per row. */
export function parityTable(rows: ParityRow[], extra: { head: string; cell: (r: ParityRow) => string }[] = []): string[] {
  const lines = [`| model | parameters | input | loss refit / PyTorch | gradients compared | worst gradient relative error | first call ms | step ms |${extra.map((e) => ` ${e.head} |`).join('')}`,
    `|---|---:|---|---|---|---:|---:|---:|${extra.map(() => '---|').join('')}`];
  for (const r of rows) lines.push(`| ${r.model} | ${r.params.toLocaleString('en-US')} | ${r.input} | ${r.error ? `✗ ${r.error}` : `${r.loss.toFixed(5)} / ${r.torchLoss.toFixed(5)}`} | ${r.grads} | ${r.worstGrad.toExponential(1)} | ${r.firstMs.toFixed(0)} | ${r.stepMs.toFixed(0)} |${extra.map((e) => ` ${e.cell(r)} |`).join('')}`);
  return lines;
}

export function describeRow(r: ParityRow): string {
  return `${r.model}: loss ${r.loss.toFixed(5)} / PyTorch ${r.torchLoss.toFixed(5)}, gradients ${r.grads}, worst relative error ${r.worstGrad.toExponential(1)}, first ${r.firstMs.toFixed(0)} ms, step ${r.stepMs.toFixed(0)} ms${r.error ? `, ERROR ${r.error}` : ''}`;
}
