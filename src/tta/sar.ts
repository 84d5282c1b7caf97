// SAR (Niu et al., ICLR 2023, "Towards Stable Test-Time Adaptation in Dynamic Wild World"),
// following the paper's code (github.com/mr-eggplant/SAR, sar.py and sam.py):
//   1. forward (BatchNorm on batch statistics); reliable filter: keep samples with E < E0 = 0.4·ln C;
//      loss = their mean entropy; gradient g;
//   2. SAM: perturb θ ← θ + ρ·g/(‖g‖ + 1e-12), ρ = 0.05 (‖g‖ the global L2 norm);
//   3. forward again at the perturbed point; among the samples kept in step 1, keep those whose
//      new entropy is still < E0; loss2 = their mean entropy; gradient g2;
//   4. restore θ and take an SGD step (momentum 0.9) with g2;
//   5. model recovery: ema ← 0.9·ema + 0.1·loss2 (when loss2 exists); if ema < 0.2, reset the
//      parameters and the optimizer to the source state.
// The prediction is step 1's output. Parameters: the affine parameters of every BatchNorm,
// LayerNorm and GroupNorm, except those the code skips (modules whose name contains 'layer4',
// 'blocks.9'–'blocks.11' or 'norm.', and the module 'norm'); on refit's small models only the
// ViT's final `norm` matches that rule.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32 } from '../onnx/tensor.ts';
import type { TrainStep } from '../train/train-step.ts';
import { commonOptions, parseOptions, PaperSgdAdapter, normAffineParams, metaNumber, type AdaptOutcome } from './common.ts';
import { withSelectionHead, classCount, maskedMeanEntropy, ENTROPY, MASK, MASK_IN } from './heads.ts';
import type { AdapterState } from './types.ts';

/** Defaults of the paper's code. */
export const SAR_DEFAULTS = {
  /** E0 = marginFactor · ln C (margin_e0 = 0.4·ln 1000). */
  marginFactor: 0.4,
  /** SAM neighbourhood size ρ. */
  rho: 0.05,
  /** Recover when the loss EMA falls below this (reset_constant_em). */
  resetConstant: 0.2,
  /** ema ← emaMomentum·ema + (1 − emaMomentum)·loss2. */
  emaMomentum: 0.9,
  momentum: 0.9,
  /** The parameters sar.collect_params skips. */
  exclude: /layer4|blocks\.(9|10|11)|norm\..+\.[^.]+$|^norm\.[^.]+$/,
} as const;

export const sarSchema = z.object({
  ...commonOptions,
  /** Default: 0.00025 for BN/GN models at batch ≥ 32 ((0.00025/64)·2·batch below), 0.001/64·batch for LayerNorm models (SAR's main.py). */
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).default(SAR_DEFAULTS.momentum),
  params: z.array(z.string()).min(1).optional(),
  marginFactor: z.number().positive().default(SAR_DEFAULTS.marginFactor),
  rho: z.number().min(0).default(SAR_DEFAULTS.rho),
  resetConstant: z.number().default(SAR_DEFAULTS.resetConstant),
  emaMomentum: z.number().min(0).max(1).default(SAR_DEFAULTS.emaMomentum),
  /** Normalization parameters to leave out (default: SAR's rule above). */
  exclude: z.instanceof(RegExp).default(SAR_DEFAULTS.exclude),
});
export type SarOptions = z.input<typeof sarSchema>;

interface Prepared { step: TrainStep; margin: number }

export class SAR extends PaperSgdAdapter<z.output<typeof sarSchema>> {
  readonly name = 'sar';
  private prepared: Promise<Prepared> | undefined;
  /** Moving average of the second-pass loss (null until one exists). */
  ema: number | null = null;
  /** Model recoveries (ema < resetConstant) so far. */
  recoveries = 0;

  constructor(model: RefitModel, options: SarOptions = {}) {
    const o = parseOptions('sar', sarSchema, options);
    super(model, o, (m) => o.params ?? normAffineParams('sar', m, o.exclude));
  }

  private prepare(x: Tensor): Promise<Prepared> {
    this.prepared ??= (async () => {
      const classes = await classCount(this.model, this.logits, x);
      const margin = this.opts.marginFactor * Math.log(classes);
      const head = withSelectionHead(this.model, this.logits, classes, { margin, maskInput: true });
      const step = head.compileTrainStep({ trainable: this.trainable, loss: maskedMeanEntropy(), outputs: [this.logits, ENTROPY, MASK], batchNorm: 'train', session: this.sessionOptions });
      return { step, margin };
    })();
    this.prepared.catch(() => { this.prepared = undefined; });
    return this.prepared;
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const { step } = await this.prepare(x);
    const n = x.dims[0]!;
    const input = this.model.inputs[0]!.name;
    // Pass 1 at θ: every sample may pass the filter.
    const r1 = await step.run({ [input]: x, [MASK_IN]: f32([n], new Float32Array(n).fill(1)) });
    const logits = r1.outputs[this.logits]!;
    const m1 = (r1.outputs[MASK]!.data as Float32Array).slice();
    const kept1 = count(m1);
    const extra: Record<string, number> = { reliable1: kept1, reliable2: 0, ema: this.ema ?? NaN, recovered: 0 };
    if (kept1 === 0) return { logits, used: 0, usedIndices: new Int32Array(0), loss: NaN, extra };
    if (!this.finiteStep(r1)) return { logits, used: 0, usedIndices: new Int32Array(0), loss: r1.loss, extra };
    // SAM ascent step: θ + ρ·g/(‖g‖ + 1e-12), remembering θ.
    let sq = 0;
    for (const g of r1.grads.values()) for (let i = 0; i < g.length; i++) sq += g[i]! * g[i]!;
    const scale = Math.fround(this.opts.rho / (Math.fround(Math.sqrt(sq)) + 1e-12));
    const saved = new Map<string, Float32Array>();
    for (const [p, v] of this.views) {
      saved.set(p, v.slice());
      const g = r1.grads.get(p)!;
      for (let i = 0; i < v.length; i++) v[i] = v[i]! + g[i]! * scale;
    }
    this.model.touch(this.trainable);
    // Pass 2 at the perturbed point, on the samples pass 1 kept.
    let r2;
    try {
      r2 = await step.run({ [input]: x, [MASK_IN]: f32([n], m1) });
    } finally {
      for (const [p, v] of saved) this.views.get(p)!.set(v);
      this.model.touch(this.trainable);
    }
    const m2 = r2.outputs[MASK]!.data as Float32Array;
    const used: number[] = [];
    for (let i = 0; i < n; i++) if (m2[i]! > 0) used.push(i);
    extra.reliable2 = used.length;
    extra.loss2 = used.length > 0 ? r2.loss : NaN;
    let updated = false;
    if (used.length > 0) {
      // The paper's code skips the EMA update when loss2 is NaN (no sample left); so does refit, and it also skips the step.
      if (Number.isFinite(r2.loss)) this.ema = this.ema === null ? r2.loss : this.opts.emaMomentum * this.ema + (1 - this.opts.emaMomentum) * r2.loss;
      updated = this.applyStep(r2, n);
    }
    extra.ema = this.ema ?? NaN;
    if (this.ema !== null && this.ema < this.opts.resetConstant) {
      // Model recovery. As in the code, the EMA survives the reset (SAR.forward sets self.ema = ema after reset()).
      const ema = this.ema;
      this.restoreSource();
      this.ema = ema;
      this.recoveries++;
      extra.recovered = 1;
    }
    return { logits, used: updated ? used.length : 0, usedIndices: Int32Array.from(updated ? used : []), loss: r1.loss, extra };
  }

  protected override resetMethodState(): void {
    this.ema = null;
  }

  protected override saveExtra(_t: Record<string, Float32Array>, meta: AdapterState['meta']): void {
    meta.ema = this.ema;
    meta.recoveries = this.recoveries;
  }

  protected override loadExtra(state: AdapterState): () => void {
    const ema = metaNumber(state, 'ema', 'sar');
    const rec = metaNumber(state, 'recoveries', 'sar') ?? 0;
    return () => { this.ema = ema; this.recoveries = rec; };
  }

  override async release(): Promise<void> {
    const p = this.prepared;
    this.prepared = undefined;
    if (p) await (await p.catch(() => null))?.step.release();
    await super.release();
  }
}

function count(m: Float32Array): number {
  let c = 0;
  for (let i = 0; i < m.length; i++) if (m[i]! > 0) c++;
  return c;
}
