// Cloud consolidation of one device's uploads into its adapter (CEMA, Chen et al. 2024:
// knowledge distillation from a larger cloud model to the edge model, with replay of earlier
// uploads so the adapter does not forget the device's older shifts).
//
// The student is the device's model with its adapter (norm-affine by default: the BatchNorm
// scales and shifts, 0.9k floats on the shipped CNN, cheap to push). It trains with BatchNorm on
// batch statistics, as the device runs it (BN-adapt), on soft cross-entropy against the
// teacher's probabilities of the uploads plus a seeded draw from the replay samples. Files in,
// files out (HF PEFT layout), so the worker only moves bytes.
import type { RefitModel } from '../model.ts';
import { PeftModel } from '../peft/peft-model.ts';
import { adapterFiles, withAdapterFiles, type AdapterFiles } from '../peft/files.ts';
import { normAffine } from '../peft/selection/index.ts';
import type { AdapterMethod } from '../peft/types.ts';
import { f32, formatShape, type Tensor } from '../onnx/tensor.ts';
import { crossEntropy } from '../train/losses.ts';
import { Trainer } from '../train/trainer.ts';
import { Adam } from '../train/optim/index.ts';
import { BatchStatRunner } from '../tta/mean-teacher.ts';
import { softmaxRows } from '../tta/common.ts';
import { defaultLogits } from '../tta/types.ts';
import { ReplayBuffer } from '../continual/replay.ts';
import { Rng } from '../util/rng.ts';
import { FleetError } from './types.ts';
import type { Teacher } from './teacher.ts';

/** Samples as devices upload them: float32 [n, ...sample dims]. */
export interface Samples {
  dims: number[];
  data: Float32Array;
}

export interface ConsolidateOptions {
  /** The adapter kind when the device has none yet. @default normAffine() */
  method?: AdapterMethod;
  /** Adapter name written into the files' metadata. @default 'device' */
  name?: string;
  /** Passes over the training set (uploads + replay draw). @default 4 */
  epochs?: number;
  /** Minibatch size (one compiled step; smaller sets train as one batch). @default 64 */
  batch?: number;
  /**
   * Adam learning rate. @default 1e-3: on validation streams of the fleet simulation's protocol
   * 0.01 made devices worse than BN-adapt alone (+2.5 points filtered, +10.3 uploading
   * everything, ViT teacher); 1e-3 keeps them within a point of it (docs/fleet.md).
   */
  lr?: number;
  /** Replay samples drawn per consolidation (reservoir over the given replay). @default 256 */
  replay?: number;
  /** Seed of the replay draw and the minibatch order. @default 0 */
  seed?: number;
  /** Teacher temperature: targets ∝ p^(1/T); below 1 sharpens them (toward pseudo-labels). @default 0.5 */
  temperature?: number;
  /**
   * What the student is trained toward (before sharpening):
   * - 'teacher': the teacher's probabilities (CEMA);
   * - 'mix': the mean of the teacher's and the student's own BN-adapted probabilities (the device
   *   model as it runs before this consolidation), so a teacher worse than the device on a shift
   *   cannot pull it far;
   * - 'agree': the teacher's where its argmax equals the student's, the student's own elsewhere.
   * @default 'teacher'
   */
  targets?: 'teacher' | 'mix' | 'agree';
}

export interface ConsolidateInput {
  /** The device's base model (the shipped CNN). Never written. */
  base: RefitModel;
  /** The device's current adapter files; null or absent: start from the base values. */
  adapter?: AdapterFiles | null;
  /** This round's uploads (one entry per upload; sample dims must agree). */
  uploads: Samples[];
  /** Earlier uploads of the device, replayed so the adapter keeps what it learned. */
  replay?: Samples[];
  teacher: Teacher;
  options?: ConsolidateOptions;
}

export interface ConsolidateMetrics {
  uploads: number;
  replay: number;
  steps: number;
  skippedSteps: number;
  /** Mean KL(teacher ‖ student) on the uploads (nats), with the device's BN-adapt inference, before and after. */
  klBefore: number;
  klAfter: number;
  /** Fraction of uploads where the student's argmax equals the teacher's, before and after. */
  agreeBefore: number;
  agreeAfter: number;
  teacher: string;
  ms: number;
}

export interface ConsolidateResult {
  files: AdapterFiles;
  metrics: ConsolidateMetrics;
}

const TARGET = 'teacher_probs';

export async function consolidate(input: ConsolidateInput): Promise<ConsolidateResult> {
  const t0 = performance.now();
  const o = input.options ?? {};
  const name = o.name ?? 'device';
  // Defaults chosen on validation streams (docs/fleet.md): lr 0.01 overfits the teacher's errors.
  const epochs = o.epochs ?? 4, batch = o.batch ?? 64, lr = o.lr ?? 1e-3, replayMax = o.replay ?? 256, temperature = o.temperature ?? 0.5;
  for (const [k, v] of [['epochs', epochs], ['batch', batch], ['replay', replayMax]] as const) {
    if (!Number.isInteger(v) || v < 0 || (k !== 'replay' && v === 0)) throw new FleetError(`consolidate: option '${k}' must be a ${k === 'replay' ? 'non-negative' : 'positive'} integer, got ${v}`);
  }
  if (!(lr > 0)) throw new FleetError(`consolidate: option 'lr' must be positive, got ${lr}`);
  if (!(temperature > 0)) throw new FleetError(`consolidate: option 'temperature' must be positive, got ${temperature}`);
  const base = input.base;
  if (!base || !Array.isArray(base.inputs)) throw new FleetError('consolidate: needs the base model (a RefitModel)');
  if (!input.teacher || typeof input.teacher.probs !== 'function') throw new FleetError('consolidate: needs a teacher ({ name, probs(x), release() }: see src/fleet/teacher.ts)');
  const sampleDims = (base.inputs[0]!.shape ?? []).slice(1);
  const uploads = stack('uploads', input.uploads ?? [], sampleDims);
  if (uploads.n === 0) throw new FleetError('consolidate: no uploaded samples');
  const replayAll = stack('replay', input.replay ?? [], uploads.dims);
  const per = uploads.data.length / uploads.n;

  // Replay: a seeded reservoir over the earlier uploads (src/continual/replay.ts).
  const rng = new Rng(o.seed ?? 0);
  const reservoir = new ReplayBuffer<Float32Array>(Math.max(1, replayMax), o.seed ?? 0);
  if (replayMax > 0) for (let i = 0; i < replayAll.n; i++) reservoir.add({ input: replayAll.data.subarray(i * per, (i + 1) * per), label: -1 });
  const replayed = replayMax > 0 ? reservoir.draw(replayMax) : [];
  const n = uploads.n + replayed.length;
  const x = new Float32Array(n * per);
  x.set(uploads.data);
  replayed.forEach((r, i) => x.set(r.input, (uploads.n + i) * per));
  const xt = f32([n, ...uploads.dims], x);

  const targets = await input.teacher.probs(xt);
  const C = targets.length / n;
  if (!Number.isInteger(C) || C < 1) throw new FleetError(`consolidate: teacher '${input.teacher.name}' gave ${targets.length} probabilities for ${n} samples`);
  const mode = o.targets ?? 'teacher';
  if (mode !== 'teacher' && mode !== 'mix' && mode !== 'agree') throw new FleetError(`consolidate: option 'targets' must be 'teacher', 'mix' or 'agree', got '${String(mode)}'`);

  let student: PeftModel;
  try {
    student = input.adapter ? withAdapterFiles(base, name, input.adapter) : PeftModel.from(base).withAdapter(name, o.method ?? normAffine());
  } catch (e) {
    throw new FleetError(`consolidate: the device's adapter does not fit the base model: ${(e as Error).message}`);
  }
  const logits = defaultLogits(student.outputs);
  const trainable = student.adapter(name).trainable;
  if (mode !== 'teacher') {
    // The student's own predictions, as the device runs it (BN-adapt in batches of `batch`).
    const own = (await score(student, trainable, xt, targets, C, batch)).probs;
    for (let r = 0; r < n; r++) {
      let bt = 0, bs = 0;
      for (let c = 1; c < C; c++) { if (targets[r * C + c]! > targets[r * C + bt]!) bt = c; if (own[r * C + c]! > own[r * C + bs]!) bs = c; }
      for (let c = 0; c < C; c++) {
        const k = r * C + c;
        targets[k] = mode === 'mix' ? (targets[k]! + own[k]!) / 2 : bt === bs ? targets[k]! : own[k]!;
      }
    }
  }
  if (temperature !== 1) sharpen(targets, C, temperature);
  const upX = f32([uploads.n, ...uploads.dims], uploads.data);
  const upT = targets.subarray(0, uploads.n * C);
  const before = await score(student, trainable, upX, upT, C, batch);

  const step = student.compileTrainStep({ trainable, loss: crossEntropy({ logits, labels: TARGET, soft: true }), batchNorm: 'train' });
  const trainer = new Trainer(step, new Adam({ lr }), { clipNorm: 5, keepRunningStats: false });
  const b = Math.min(batch, n);
  const order = [...Array(n).keys()];
  try {
    for (let e = 0; e < epochs; e++) {
      for (let i = n - 1; i > 0; i--) { const j = rng.int(i + 1); [order[i], order[j]] = [order[j]!, order[i]!]; }
      // Full batches only (one compiled signature); the reshuffle covers the remainder next epoch.
      for (let s = 0; s + b <= n; s += b) {
        const bx = new Float32Array(b * per), bt = new Float32Array(b * C);
        for (let k = 0; k < b; k++) {
          const idx = order[s + k]!;
          bx.set(x.subarray(idx * per, (idx + 1) * per), k * per);
          bt.set(targets.subarray(idx * C, (idx + 1) * C), k * C);
        }
        await trainer.step({ [student.inputs[0]!.name]: f32([b, ...uploads.dims], bx), [TARGET]: f32([b, C], bt) });
      }
    }
  } finally {
    await step.release();
  }
  const after = await score(student, trainable, upX, upT, C, batch);
  const files = adapterFiles(student, name);
  await student.release();
  return {
    files,
    metrics: {
      uploads: uploads.n, replay: replayed.length, steps: trainer.steps, skippedSteps: trainer.skippedSteps,
      klBefore: before.kl, klAfter: after.kl, agreeBefore: before.agree, agreeAfter: after.agree,
      teacher: input.teacher.name, ms: performance.now() - t0,
    },
  };
}

/** The student as the device runs it (BatchNorm on batch statistics, batches of `batch`) against the teacher. */
async function score(student: RefitModel, fed: string[], x: Tensor, targets: Float32Array, C: number, batch: number): Promise<{ kl: number; agree: number; probs: Float32Array }> {
  const runner = new BatchStatRunner(student, fed);
  const logits = defaultLogits(student.outputs);
  const n = x.dims[0]!, per = x.data.length / n;
  let kl = 0, agree = 0;
  const probs = new Float32Array(n * C);
  try {
    for (let s = 0; s < n; s += batch) {
      const m = Math.min(batch, n - s);
      const out = await runner.run(f32([m, ...x.dims.slice(1)], (x.data as Float32Array).slice(s * per, (s + m) * per)), [logits]);
      const p = softmaxRows(out[logits]!.data as Float32Array, C);
      probs.set(p, s * C);
      for (let i = 0; i < m; i++) {
        let best = 0, bestT = 0;
        for (let c = 0; c < C; c++) {
          const t = targets[(s + i) * C + c]!, q = p[i * C + c]!;
          if (t > 0) kl += t * (Math.log(t) - Math.log(Math.max(q, 1e-12)));
          if (q > p[i * C + best]!) best = c;
          if (t > targets[(s + i) * C + bestT]!) bestT = c;
        }
        if (best === bestT) agree++;
      }
    }
  } finally {
    await runner.release();
  }
  return { kl: kl / n, agree: agree / n, probs };
}

/** p ← p^(1/T) / Σ p^(1/T) per row, in place (in log space, so small T does not underflow). */
function sharpen(p: Float32Array, C: number, T: number): void {
  for (let r = 0; r < p.length / C; r++) {
    let m = -Infinity;
    const l = new Float64Array(C);
    for (let c = 0; c < C; c++) { l[c] = Math.log(Math.max(p[r * C + c]!, 1e-30)) / T; m = Math.max(m, l[c]!); }
    let s = 0;
    for (let c = 0; c < C; c++) s += l[c] = Math.exp(l[c]! - m);
    for (let c = 0; c < C; c++) p[r * C + c] = l[c]! / s;
  }
}

/** Concatenate sample sets, checking each one's dims, length and values; errors name the entry. */
function stack(what: string, sets: Samples[], sampleDims: (number | string | null)[]): { n: number; dims: number[]; data: Float32Array } {
  if (!Array.isArray(sets)) throw new FleetError(`consolidate: '${what}' must be a list of { dims, data }`);
  let dims: number[] | undefined;
  let n = 0;
  sets.forEach((s, i) => {
    if (!s || !(s.data instanceof Float32Array) || !Array.isArray(s.dims) || s.dims.some((d) => !Number.isInteger(d) || d < 0)) throw new FleetError(`consolidate: ${what}[${i}] must be { dims: integer[], data: Float32Array }`);
    const [m, ...rest] = s.dims;
    const want = dims ?? rest;
    const fits = rest.length === sampleDims.length && rest.every((d, k) => typeof sampleDims[k] !== 'number' || sampleDims[k] === d);
    if (!fits || rest.join() !== want.join()) throw new FleetError(`consolidate: ${what}[${i}] has shape ${formatShape(s.dims)}, expected [n, ${(dims ?? sampleDims).join(', ')}]`);
    const len = s.dims.reduce((a, d) => a * d, 1);
    if (s.data.length !== len) throw new FleetError(`consolidate: ${what}[${i}] has ${s.data.length} values, its shape ${formatShape(s.dims)} needs ${len}`);
    for (let k = 0; k < s.data.length; k++) if (!Number.isFinite(s.data[k]!)) throw new FleetError(`consolidate: ${what}[${i}] has a non-finite value (${s.data[k]}) at ${k}`);
    dims = rest;
    n += m!;
  });
  const data = new Float32Array(n * (dims ?? []).reduce((a, d) => a * d, 1));
  let off = 0;
  for (const s of sets) { data.set(s.data, off); off += s.data.length; }
  return { n, dims: dims ?? sampleDims.map((d) => (typeof d === 'number' ? d : 0)), data };
}
