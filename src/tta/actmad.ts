// ActMAD (Mirza et al., CVPR 2023, "ActMAD: Activation Matching to Align Distributions for
// Test-Time-Training"). Before the stream: the mean and variance of every BatchNorm layer's output,
// per element (channel and position) over the batch axis, averaged over the batches of a clean
// source set. Each test batch: forward with BatchNorm on its running statistics, loss =
// ½ · Σ_layers (mean |μ_batch − μ_source| + mean |σ²_batch − σ²_source|) (L1, the element mean),
// one SGD step on every parameter (momentum 0.9, Nesterov, weight decay 5e-4, as the reference
// code's optimizer); the prediction is the forward's output, before the update. The objective
// never reads the output, so ActMAD adapts detectors, depth estimators and segmenters as well as
// classifiers (the paper's KITTI experiments adapt a YOLOv3).
//
// As the reference code (jmiemirza/ActMAD, methods/actmad_cifar.py): the variances are torch.var's
// (unbiased, over the batch axis only), the statistics are taken at BatchNorm outputs, and BatchNorm
// normalises with its running statistics while the model adapts. Deviations: the reference code
// adapts offline (one pass over the test set, then evaluates); here each batch is predicted as it
// arrives, as the other methods' online protocol. Dropout stays off (the code's net.train() turns
// it on). The default learning rate is the reference code's ImageNet one (2.5e-4; CIFAR-10 1e-2,
// CIFAR-100 1e-3, KITTI 1e-4).
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import { f32, type Tensor } from '../onnx/tensor.ts';
import type { LossSpec } from '../train/loss-spec.ts';
import type { TrainStep } from '../train/train-step.ts';
import { SGD, type Optimizer } from '../train/optim/index.ts';
import { commonOptions, parseOptions, ParamAdapter, tensorSchema, type AdaptOutcome } from './common.ts';

export const ACTMAD_DEFAULTS = { lr: 2.5e-4, momentum: 0.9, weightDecay: 5e-4, nesterov: true, sourceBatch: 64 } as const;

export const actmadSchema = z.object({
  ...commonOptions,
  /** Clean in-distribution inputs [n, ...] whose activation statistics the stream's are matched to. */
  sourceData: tensorSchema,
  /** Batch size for the source statistics (each batch's statistics, then their mean, as the reference code). */
  sourceBatch: z.number().int().min(2).default(ACTMAD_DEFAULTS.sourceBatch),
  lr: z.number().positive().default(ACTMAD_DEFAULTS.lr),
  momentum: z.number().min(0).max(1).default(ACTMAD_DEFAULTS.momentum),
  /** Tensors whose statistics are matched (default: every BatchNormalization node's output). */
  layers: z.array(z.string()).min(1).optional(),
  /** Parameters to adapt (default: every parameter, as the paper). */
  params: z.array(z.string()).min(1).optional(),
});
export type ActmadOptions = z.input<typeof actmadSchema>;

/** The loss input holding layer i's source mean or variance (actmadLoss reads it, ActMAD feeds it). */
const statInput = (kind: 'mean' | 'var', i: number) => `actmad_${kind}_${i}`;

/** ½ Σ_layers (mean |μ − μ_s| + mean |σ² − σ²_s|) over the batch axis: the reference code's loss. */
export function actmadLoss(layers: string[]): LossSpec {
  const perSample = (t: string) => (s: (x: string) => number[]) => s(t).slice(1);
  return {
    describe: `actmad(${layers.length} layers)`,
    reads: layers,
    inputs: layers.flatMap((t, i) => [
      { name: statInput('mean', i), dtype: 'float32' as const, shape: perSample(t) },
      { name: statInput('var', i), dtype: 'float32' as const, shape: perSample(t) },
    ]),
    build(ctx) {
      const em = ctx.em;
      const terms = layers.map((t, i) => {
        const dims = ctx.shape(t);
        const n = dims[0]!;
        if (n < 2) throw new Error(`actmad: the batch variance needs at least 2 samples; '${t}' has a batch of ${n}`);
        const all = dims.slice(1).map((_, k) => k);
        const mean = em.reduce('ReduceMean', t, [0], false);
        const d = em.sub(t, mean);
        const variance = em.div(em.reduce('ReduceSum', em.mul(d, d), [0], false), em.scalar(n - 1));
        const l1 = (a: string, b: string) => em.reduce('ReduceMean', em.op('Abs', [em.sub(a, b)]), all, false);
        return em.add(l1(mean, ctx.input(statInput('mean', i))), l1(variance, ctx.input(statInput('var', i))));
      });
      return em.mul(em.sum(terms), em.scalar(0.5));
    },
  };
}

/** Per-element mean and unbiased variance over axis 0 of [n, ...] values, in float64. */
function batchMoments(t: Tensor): { mean: Float64Array; variance: Float64Array } {
  const n = t.dims[0]!, per = (t.data as Float32Array).length / n, x = t.data as Float32Array;
  const mean = new Float64Array(per), variance = new Float64Array(per);
  for (let i = 0; i < n; i++) for (let k = 0; k < per; k++) mean[k]! += x[i * per + k]! / n;
  for (let i = 0; i < n; i++) for (let k = 0; k < per; k++) { const d = x[i * per + k]! - mean[k]!; variance[k]! += (d * d) / (n - 1); }
  return { mean, variance };
}

export class ActMAD extends ParamAdapter<z.output<typeof actmadSchema>> {
  readonly name = 'actmad';
  readonly layers: string[];
  private step: TrainStep | undefined;
  private sourceStats: Record<string, Tensor> | undefined;

  constructor(model: RefitModel, options: ActmadOptions) {
    const o = parseOptions('actmad', actmadSchema, options);
    super(model, o, (m) => o.params ?? m.parameterNames('all'));
    this.layers = o.layers ?? model.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization' && n.outputs[0]).map((n) => n.outputs[0]!);
    if (this.layers.length === 0) throw new Error("actmad matches the statistics of BatchNormalization outputs, and this model has none; name the tensors to match with 'layers'");
    const produced = new Set(model.ir.graph.nodes.flatMap((n) => n.outputs));
    const unknown = this.layers.filter((t) => !produced.has(t));
    if (unknown.length) throw new Error(`actmad: 'layers' names tensors no node computes: ${unknown.join(', ')}`);
    const src = o.sourceData;
    if (src.dims[0]! < o.sourceBatch) throw new Error(`actmad: sourceData has ${src.dims[0]} samples, fewer than one source batch (sourceBatch ${o.sourceBatch})`);
  }

  /** Any output: the objective reads the matched layers, never the prediction. */
  protected override takesDenseLogits(): boolean {
    return true;
  }

  protected override takesSequenceLogits(): boolean {
    return true;
  }

  protected defaultLr(): number {
    return this.opts.lr;
  }

  protected makeOptimizer(lr: number): Optimizer {
    return new SGD({ lr, momentum: this.opts.momentum, nesterov: ACTMAD_DEFAULTS.nesterov, weightDecay: ACTMAD_DEFAULTS.weightDecay });
  }

  /** The source statistics, from the source model: each full source batch's moments (BatchNorm on running statistics), averaged over the batches. */
  async sourceStatistics(): Promise<Record<string, Tensor>> {
    if (this.sourceStats) return this.sourceStats;
    const src = this.opts.sourceData, bs = this.opts.sourceBatch;
    const per = src.data.length / src.dims[0]!;
    const batches = Math.floor(src.dims[0]! / bs);
    const sums = this.layers.map(() => ({ mean: undefined as Float64Array | undefined, variance: undefined as Float64Array | undefined, dims: [] as number[] }));
    const input = this.model.inputs[0]!.name;
    for (let b = 0; b < batches; b++) {
      const x = f32([bs, ...src.dims.slice(1)], (src.data as Float32Array).subarray(b * bs * per, (b + 1) * bs * per));
      const out = await this.source.run({ [input]: x }, { outputs: this.layers });
      this.layers.forEach((t, i) => {
        const m = batchMoments(out[t]!);
        const s = sums[i]!;
        s.dims = out[t]!.dims.slice(1);
        s.mean ??= new Float64Array(m.mean.length);
        s.variance ??= new Float64Array(m.variance.length);
        for (let k = 0; k < m.mean.length; k++) { s.mean[k]! += m.mean[k]! / batches; s.variance[k]! += m.variance[k]! / batches; }
      });
    }
    const stats: Record<string, Tensor> = {};
    sums.forEach((s, i) => {
      stats[statInput('mean', i)] = f32(s.dims, Float32Array.from(s.mean!));
      stats[statInput('var', i)] = f32(s.dims, Float32Array.from(s.variance!));
    });
    this.sourceStats = stats;
    return stats;
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const stats = await this.sourceStatistics();
    this.step ??= this.model.compileTrainStep({ trainable: this.trainable, loss: actmadLoss(this.layers), outputs: [this.logits], batchNorm: 'eval', session: this.sessionOptions });
    // The statistics are per element: a stream of another input size than the source set has none to match.
    const src = this.opts.sourceData.dims.slice(1), got = x.dims.slice(1);
    if (src.join() !== got.join()) throw new Error(`actmad: the batch's samples are [${got.join(', ')}] and sourceData's [${src.join(', ')}]; the statistics it matches are per channel and position, so give source data of the stream's size`);
    const r = await this.step.run({ [this.model.inputs[0]!.name]: x, ...stats });
    const n = x.dims[0]!;
    const ok = this.applyStep(r, n);
    return { logits: r.outputs[this.logits]!, used: ok ? n : 0, loss: r.loss };
  }

  override async release(): Promise<void> {
    await this.step?.release();
    await super.release();
  }
}
