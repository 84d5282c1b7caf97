// EATA (Niu et al., ICML 2022, "Efficient Test-Time Model Adaptation without Forgetting").
// Each batch, on a model whose BatchNorm uses batch statistics (Tent's configuration):
//   1. entropy filter: keep samples with E < E0 = 0.4·ln C (the code's e_margin = 0.4·ln 1000);
//   2. redundancy filter: among those, keep samples with |cos(p, p̄)| < ε = 0.05, where p̄ is the
//      moving average of the kept samples' probabilities, p̄ ← 0.9·p̄ + 0.1·mean(p_kept) (the
//      code's update_model_probs); no filter before p̄ exists;
//   3. loss = mean over kept samples of E·1/exp(E − E0) (coefficient detached)
//      + β·Σ F·(θ − θ0)², β = 2000 (the code's fisher_alpha), F the diagonal Fisher;
//   4. one SGD step (momentum 0.9) on the normalization affine parameters, only if a sample was kept.
// Like the code (which calls backward only when a sample is kept), a batch that keeps nothing
// costs a forward pass only: after such a batch the next one is first run forward-only, and the
// training step runs only if that forward keeps a sample. (Once p̄ exists, ε = 0.05 keeps few
// samples on 10 classes, so most batches take this path.)
// The Fisher F is computed once, as the code does, from a small in-distribution set
// (`fisherData`, default the first 2000 samples in batches of 64) with the model's own
// argmax as pseudo-labels: F = mean over batches of (∇ CE)². Without `fisherData` the
// regularizer is off (the paper's "ETA" variant) and `info.extra.fisher` is 0.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32, tensor, inputArrayDtype } from '../onnx/tensor.ts';
import { anchorPenalty, combine } from '../train/losses.ts';
import type { StepResult, TrainStep } from '../train/train-step.ts';
import { commonOptions, parseOptions, PaperSgdAdapter, normAffineParams, softmaxRows, allFinite, stateTensor, type AdaptOutcome, inputTensorSchema } from './common.ts';
import { withSelectionHead, classCount, eataSurrogate, pseudoLabelCrossEntropy, ENTROPY, MASK, PBAR } from './heads.ts';
import { batchStatModel } from './bn-adapt.ts';
import { signatureKey, signatureOf } from '../onnx/shapes.ts';
import type { AdapterState } from './types.ts';

/** Defaults from the paper and its code (github.com/mr-eggplant/EATA, main.py and eata.py). */
export const EATA_DEFAULTS = {
  /** E0 = marginFactor · ln C. */
  marginFactor: 0.4,
  /** ε of the redundancy filter (d_margin). */
  dMargin: 0.05,
  /** p̄ ← probsMomentum·p̄ + (1 − probsMomentum)·mean(p_kept). */
  probsMomentum: 0.9,
  /** β (fisher_alpha). */
  fisherAlpha: 2000,
  /** Samples used for the Fisher (fisher_size). */
  fisherSize: 2000,
  fisherBatchSize: 64,
  momentum: 0.9,
} as const;

export const eataSchema = z.object({
  ...commonOptions,
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).default(EATA_DEFAULTS.momentum),
  params: z.array(z.string()).min(1).optional(),
  /** E0 as a multiple of ln C. */
  marginFactor: z.number().positive().default(EATA_DEFAULTS.marginFactor),
  dMargin: z.number().positive().default(EATA_DEFAULTS.dMargin),
  probsMomentum: z.number().min(0).max(1).default(EATA_DEFAULTS.probsMomentum),
  fisherAlpha: z.number().min(0).default(EATA_DEFAULTS.fisherAlpha),
  /** In-distribution inputs [M, ...] for the Fisher (images, or a token model's ids); without them the regularizer is off. */
  fisherData: inputTensorSchema.optional(),
  fisherSize: z.number().int().positive().default(EATA_DEFAULTS.fisherSize),
  fisherBatchSize: z.number().int().positive().default(EATA_DEFAULTS.fisherBatchSize),
});
export type EataOptions = z.input<typeof eataSchema>;

interface Prepared { step: TrainStep; head: RefitModel; classes: number; margin: number }

export class EATA extends PaperSgdAdapter<z.output<typeof eataSchema>> {
  readonly name = 'eata';
  private prepared: Promise<Prepared> | undefined;
  /** Moving average of the kept samples' probabilities (null until a sample was kept). */
  private pbar: Float32Array | null = null;
  /** Diagonal Fisher and anchors (null without fisherData). */
  fisher: Map<string, Float32Array> | null = null;
  private anchors: Map<string, Float32Array> | null = null;
  /** Whether the last batch kept no sample (then the next one is probed forward-only first). */
  private lastKeptNone = false;
  /** Forward-only copies of the selection head (batch statistics, trainables fed), per input signature. */
  private probes = new Map<string, Promise<RefitModel>>();

  constructor(model: RefitModel, options: EataOptions = {}) {
    const o = parseOptions('eata', eataSchema, options);
    super(model, o, (m) => o.params ?? normAffineParams('eata', m));
    if (o.fisherData) {
      const d = o.fisherData.dims;
      if (d.length === 0 || d[0] === 0) throw new Error('eata: fisherData is empty; pass in-distribution inputs [M, ...] with M ≥ 1');
      const input = model.inputs[0]!, dtype = inputArrayDtype(o.fisherData.data)!;
      if (dtype !== input.dtype) throw new Error(`eata: fisherData is ${dtype}, and the model's input '${input.name}' takes ${input.dtype}`);
      const bad = dtype === 'float32' ? allFinite(o.fisherData.data as Float32Array) : -1;
      if (bad >= 0) throw new Error(`eata: fisherData has a non-finite value at element ${bad}`);
    }
  }

  private prepare(x: Tensor): Promise<Prepared> {
    this.prepared ??= (async () => {
      const classes = await classCount(this.model, this.logits, x);
      const margin = this.opts.marginFactor * Math.log(classes);
      if (!this.fisher && this.opts.fisherData && this.opts.fisherAlpha > 0) await this.computeFisher(this.opts.fisherData);
      const head = withSelectionHead(this.model, this.logits, classes, { margin, redundancy: this.opts.dMargin });
      const loss = this.fisher
        ? combine([{ loss: eataSurrogate(margin) }, { loss: anchorPenalty({ anchors: this.anchors!, importance: this.fisher, strength: this.opts.fisherAlpha }) }])
        : eataSurrogate(margin);
      const step = head.compileTrainStep({ trainable: this.trainable, loss, outputs: [this.logits, ENTROPY, MASK], batchNorm: 'train', session: this.sessionOptions });
      return { step, head, classes, margin };
    })();
    this.prepared.catch(() => { this.prepared = undefined; });
    return this.prepared;
  }

  /** EATA's Fisher: squared gradients of CE against pseudo-labels, summed over batches and divided by their count. */
  private async computeFisher(data: Tensor): Promise<void> {
    const step = this.model.compileTrainStep({ trainable: this.trainable, loss: pseudoLabelCrossEntropy(this.logits), batchNorm: 'train', session: this.sessionOptions });
    const per = data.data.length / data.dims[0]!;
    const m = Math.min(this.opts.fisherSize, data.dims[0]!);
    const bs = this.opts.fisherBatchSize;
    const fisher = new Map(this.trainable.map((p) => [p, new Float64Array(this.model.param(p).data.length)]));
    let batches = 0;
    for (let s = 0; s < m; s += bs) {
      const b = Math.min(bs, m - s);
      const x = tensor(inputArrayDtype(data.data)!, [b, ...data.dims.slice(1)], (data.data as Float32Array | BigInt64Array | Int32Array).subarray(s * per, (s + b) * per));
      const r = await step.run({ [this.model.inputs[0]!.name]: x });
      if (!r.finite) throw new Error(`eata: the Fisher loss is ${r.loss} on fisherData batch ${batches}`);
      for (const [p, g] of r.grads) { const f = fisher.get(p)!; for (let i = 0; i < g.length; i++) f[i] += Math.fround(g[i]! * g[i]!); }
      batches++;
    }
    await step.release();
    this.fisher = new Map([...fisher].map(([p, f]) => [p, Float32Array.from(f, (v) => v / batches)]));
    this.anchors = new Map(this.trainable.map((p) => [p, this.sourceValue(p).slice()]));
  }

  /** The selection head run forward only on the current parameters: logits, entropies and mask. */
  private async probe(head: RefitModel, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    const key = signatureKey(signatureOf(feeds));
    let m = this.probes.get(key);
    if (!m) {
      m = batchStatModel(head, feeds, 0, this.sessionOptions);
      this.probes.set(key, m);
      m.catch(() => this.probes.delete(key));
    }
    // The trainables are fed, so the probe needs no rebuild after a step.
    return (await m).run(feeds, { outputs: [this.logits, ENTROPY, MASK], feedParams: this.trainable });
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const { step, head, classes, margin } = await this.prepare(x);
    const n = x.dims[0]!;
    const feeds = { [this.model.inputs[0]!.name]: x, [PBAR]: f32([classes], this.pbar ?? new Float32Array(classes)) };
    let r: StepResult | null = null;
    let out: Record<string, Tensor> | undefined;
    if (this.lastKeptNone) {
      out = await this.probe(head, feeds);
      if ((out[MASK]!.data as Float32Array).some((v) => v > 0)) out = undefined; // a sample is kept: take the step
    }
    if (!out) {
      r = await step.run(feeds);
      out = r.outputs;
    }
    const logits = out[this.logits]!;
    const ent = out[ENTROPY]!.data as Float32Array;
    const mask = out[MASK]!.data as Float32Array;
    const used: number[] = [];
    let reliable = 0, lossSum = 0;
    for (let i = 0; i < n; i++) {
      if (ent[i]! < margin) reliable++;
      if (mask[i]! > 0) { used.push(i); lossSum += ent[i]! * Math.exp(-(ent[i]! - margin)); }
    }
    this.lastKeptNone = used.length === 0;
    // The true loss value (the graph differentiates a surrogate with the same gradient).
    let loss = used.length > 0 ? lossSum / used.length : NaN;
    let reg = 0;
    if (this.fisher) {
      for (const [p, f] of this.fisher) {
        const a = this.anchors!.get(p)!, v = this.views.get(p)!;
        for (let i = 0; i < f.length; i++) reg += f[i]! * (v[i]! - a[i]!) ** 2;
      }
      reg *= this.opts.fisherAlpha;
      loss += reg;
    }
    // p̄ from the kept samples' probabilities (before the update), as update_model_probs.
    if (used.length > 0) {
      const p = softmaxRows(logits.data as Float32Array, classes);
      const mean = new Float64Array(classes);
      for (const i of used) for (let c = 0; c < classes; c++) mean[c] += p[i * classes + c]! / used.length;
      const mom = this.opts.probsMomentum;
      this.pbar = this.pbar ? Float32Array.from(this.pbar, (v, c) => mom * v + (1 - mom) * mean[c]!) : Float32Array.from(mean);
    }
    let updated = false;
    if (used.length > 0 && r) updated = this.applyStep(r, n);
    return {
      logits,
      used: updated ? used.length : 0,
      usedIndices: Int32Array.from(updated ? used : []),
      loss,
      extra: { reliable, kept: used.length, regularizer: reg, fisher: this.fisher ? 1 : 0, forwardOnly: r ? 0 : 1 },
    };
  }

  /** The current moving-average probability vector p̄ (a copy), or null. */
  get movingProbs(): Float32Array | null {
    return this.pbar ? this.pbar.slice() : null;
  }

  protected override resetMethodState(): void {
    this.pbar = null;
    this.lastKeptNone = false;
  }

  protected override saveExtra(tensors: Record<string, Float32Array>): void {
    if (this.pbar) tensors.pbar = this.pbar.slice();
    if (this.fisher) for (const [p, f] of this.fisher) { tensors[`fisher.${p}`] = f.slice(); tensors[`anchor.${p}`] = this.anchors!.get(p)!.slice(); }
  }

  protected override loadExtra(state: AdapterState): () => void {
    const pb = state.tensors.pbar;
    if (pb !== undefined && (!(pb instanceof Float32Array) || allFinite(pb) >= 0)) throw new Error('eata.load: pbar must be a finite Float32Array');
    const hasFisher = Object.keys(state.tensors).some((k) => k.startsWith('fisher.'));
    let fisher: Map<string, Float32Array> | null = null, anchors: Map<string, Float32Array> | null = null;
    if (hasFisher) {
      fisher = new Map(); anchors = new Map();
      for (const p of this.trainable) {
        const len = this.model.param(p).data.length;
        fisher.set(p, stateTensor(state, `fisher.${p}`, len, 'eata').slice());
        anchors.set(p, stateTensor(state, `anchor.${p}`, len, 'eata').slice());
      }
    }
    return () => {
      this.pbar = pb ? pb.slice() : null;
      if (fisher) {
        // The Fisher is baked into the compiled step as constants: recompile with the loaded one.
        this.fisher = fisher;
        this.anchors = anchors;
        const old = this.prepared;
        this.prepared = undefined;
        old?.then((p) => p.step.release()).catch(() => undefined);
      }
    };
  }

  override async release(): Promise<void> {
    const p = this.prepared;
    this.prepared = undefined;
    if (p) await (await p.catch(() => null))?.step.release();
    for (const m of this.probes.values()) await (await m.catch(() => null))?.release();
    this.probes.clear();
    await super.release();
  }
}
