// One full training step of an exported model against PyTorch's loss and gradients (written by a
// bench's Python script as <name>.x.npy, <name>.y.npy, <name>.grads.safetensors): the core of
// bench/torchvision-extra.ts and bench/torchaudio-models.ts.
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { loadModel, type RefitModel } from '../src/model.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { parseNpy } from '../src/cli/data-files.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';

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
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** The batch a bench's Python script saved: x as float32, y as int64 (or float32 targets). */
export function savedBatch(dir: string, name: string): { x: Tensor; y: Tensor } {
  const npy = (f: string) => parseNpy(new Uint8Array(readFileSync(join(dir, f))), f);
  const xa = npy(`${name}.x.npy`), ya = npy(`${name}.y.npy`);
  const x = f32(xa.shape, Float32Array.from(xa.values as ArrayLike<number>));
  const y = ya.dtype === 'float32' || ya.dtype === 'float64'
    ? f32(ya.shape, Float32Array.from(ya.values as ArrayLike<number>))
    : i64(ya.shape, Array.from(ya.values as ArrayLike<number>, Number));
  return { x, y };
}

/**
 * Compile `loss` over every parameter of `<dir>/<name>.onnx`, run it on the saved batch (first call,
 * then the median of 3), and compare with PyTorch's loss and every gradient it saved. `feeds` names
 * the model input and the loss's label input. Errors are caught into the row.
 */
export async function stepAgainstTorch(dir: string, name: string, opts: { loss: LossSpec; torchLoss: number; params: number; feeds: (b: { x: Tensor; y: Tensor }) => Record<string, Tensor>; threads?: number; after?: (model: RefitModel, b: { x: Tensor; y: Tensor }) => Promise<void> }): Promise<ParityRow> {
  const torchGrads = parseSafetensors(readFileSync(join(dir, `${name}.grads.safetensors`))).tensors;
  const b = savedBatch(dir, name);
  const row: ParityRow = { model: name, params: opts.params, input: b.x.dims.join('×'), loss: NaN, torchLoss: opts.torchLoss, grads: '', worstGrad: NaN, firstMs: NaN, stepMs: NaN };
  const model = await loadModel(join(dir, `${name}.onnx`), { threads: opts.threads ?? 2 });
  try {
    const step = model.compileTrainStep({ trainable: 'all', loss: opts.loss });
    const feeds = opts.feeds(b);
    let t = performance.now();
    const r = await step.run(feeds);
    row.firstMs = performance.now() - t;
    const times: number[] = [];
    for (let i = 0; i < 3; i++) { t = performance.now(); await step.run(feeds); times.push(performance.now() - t); }
    row.stepMs = median(times);
    row.loss = r.loss;
    let compared = 0, worst = 0, zero = 0;
    for (const [p, want] of torchGrads) {
      const got = r.grads.get(p);
      if (!got) continue;
      compared++;
      const w = want.data as Float32Array;
      if (Math.sqrt(w.reduce((a, v) => a + v * v, 0)) < ZERO_NORM) { zero++; continue; }
      worst = Math.max(worst, relErr(got, w));
    }
    row.grads = `${compared}/${torchGrads.size} (refit: ${r.grads.size}${zero ? `; ${zero} of norm < ${ZERO_NORM} not in the worst` : ''})`;
    row.worstGrad = worst;
    await step.release();
  } catch (e) { row.error = (e as Error).message.split('\n')[0]!.slice(0, 200); }
  await opts.after?.(model, b);
  await model.release();
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
