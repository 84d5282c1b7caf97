// What every test-time adaptation method shares: option validation, batch checks, finding the
// normalization layers, and a base class for methods that update parameters by gradient steps.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { formatShape, inputArrayDtype } from '../onnx/tensor.ts';
import { findNormLayers } from '../onnx/norm-layers.ts';
import { TOKEN_COMPANIONS, TOKEN_DTYPES } from '../onnx/token-companions.ts';
import { noNormLayerMessage, NORM_KINDS } from '../onnx/norm-folding.ts';
import { SGD, Adam, AdamW, type Optimizer, type OptimizerState } from '../train/optim/index.ts';
import type { StepResult } from '../train/train-step.ts';
import { type Adapter, type AdaptInfo, type AdaptResult, type AdapterState, defaultLogits } from './types.ts';

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/** Options every method accepts. */
export const commonOptions = {
  /** 'continual' carries state from batch to batch; 'episodic' resets to the source before every batch. */
  mode: z.enum(['continual', 'episodic']).default('continual'),
  /** Seed for everything random (augmentations, stochastic restore). */
  seed: z.number().int().default(0),
  /** Output holding class scores; default 'logits' if the model has it, else its first output. */
  logits: z.string().optional(),
  /** Threads for the sessions the adapter creates (default: the model's session options). */
  threads: z.number().int().positive().optional(),
  /**
   * The optimizer of a gradient method, replacing the method's own (see optimizerSpecSchema):
   * 'sgd' | 'adam' | 'adamw', or { name, lr, momentum, dampening, nesterov, betas, eps, weightDecay }.
   */
  optimizer: z.unknown().transform((v, ctx) => {
    try { return parseOptimizerSpec(v); } catch (e) { ctx.addIssue({ code: 'custom', message: (e as Error).message }); return z.NEVER; }
  }).optional(),
  /** SAR-style model recovery for any gradient method (see recoverySchema); off unless given. */
  recovery: z.lazy(() => recoverySchema).optional(),
};

// ---------------------------------------------------------------------------------------------
// The `optimizer` and `recovery` options (every gradient method)
// ---------------------------------------------------------------------------------------------

export const OPTIMIZER_NAMES = ['sgd', 'adam', 'adamw'] as const;
export type OptimizerName = (typeof OPTIMIZER_NAMES)[number];

/** An optimizer chosen by option. Unset fields come from the method (lr, momentum, betas) or torch's defaults. */
export interface OptimizerSpec {
  name: OptimizerName;
  lr?: number;
  /** SGD only. Default: the method's `momentum` option if it has one, else 0.9 (Tent, EATA, SAR). */
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  /** Adam/AdamW only. Default: the method's `betas` option if it has one, else [0.9, 0.999]. */
  betas?: [number, number];
  eps?: number;
  /** Default 0 (Adam, SGD) and 0.01 (AdamW), as torch. */
  weightDecay?: number;
}

const optimizerObject = z.object({
  name: z.string(),
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).optional(),
  dampening: z.number().min(0).max(1).optional(),
  nesterov: z.boolean().optional(),
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).optional(),
  eps: z.number().min(0).optional(),
  weightDecay: z.number().min(0).optional(),
}).strict();

/** Validates an `optimizer` option; the errors name the unknown optimizer or field. */
export function parseOptimizerSpec(v: unknown): OptimizerSpec {
  const known = OPTIMIZER_NAMES.join(', ');
  if (typeof v === 'string') v = { name: v };
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`expected an optimizer name (${known}) or { name, lr, ... }, got ${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v}`);
  const name = (v as { name?: unknown }).name;
  if (typeof name !== 'string') throw new Error(`the optimizer needs a 'name' (${known})`);
  if (!(OPTIMIZER_NAMES as readonly string[]).includes(name.toLowerCase())) throw new Error(`unknown optimizer '${name}'; known optimizers: ${known}`);
  const r = optimizerObject.safeParse(v);
  if (!r.success) {
    throw new Error(r.error.issues.map((i) => (i.code === 'unrecognized_keys' ? `unknown optimizer field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')} (known: ${Object.keys(optimizerObject.shape).join(', ')})` : `optimizer.${i.path.join('.')}: ${i.message}`)).join('; '));
  }
  const spec = { ...r.data, name: name.toLowerCase() as OptimizerName };
  const sgdOnly = ['momentum', 'dampening', 'nesterov'].filter((k) => k in spec);
  const adamOnly = ['betas', 'eps'].filter((k) => k in spec);
  if (spec.name === 'sgd' && adamOnly.length) throw new Error(`optimizer 'sgd' has no ${adamOnly.join(', ')} (Adam/AdamW fields)`);
  if (spec.name !== 'sgd' && sgdOnly.length) throw new Error(`optimizer '${spec.name}' has no ${sgdOnly.join(', ')} (SGD fields)`);
  return spec as OptimizerSpec;
}

/** SAR's model recovery (sar.py), for every gradient method. */
export const RECOVERY_DEFAULTS = { emaThreshold: 0.2, emaMomentum: 0.9, signal: 'entropy' } as const;

export const recoverySchema = z.object({
  /** Reset to the source when the EMA falls below this (SAR's reset_constant_em = 0.2). */
  emaThreshold: z.number().default(RECOVERY_DEFAULTS.emaThreshold),
  /** ema ← emaMomentum·ema + (1 − emaMomentum)·value (SAR: 0.9). */
  emaMomentum: z.number().min(0).max(1).default(RECOVERY_DEFAULTS.emaMomentum),
  /**
   * What the EMA follows: 'entropy' (default) the mean Shannon entropy of the batch's predictions,
   * comparable across methods (for Tent it is the loss itself); 'loss' the method's reported loss.
   */
  signal: z.enum(['entropy', 'loss']).default(RECOVERY_DEFAULTS.signal),
}).strict();
export type RecoveryOptions = z.output<typeof recoverySchema>;

/** Mean Shannon entropy of softmax(logits) over the rows. */
export function meanEntropy(logits: Float32Array, C: number): number {
  const p = softmaxRows(logits, C);
  const n = logits.length / C;
  let s = 0;
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) s -= p[i]! * Math.log(p[i]!);
  return s / n;
}

/**
 * Mean Shannon entropy of the class scores: [batch, classes] rows, every position of [batch,
 * classes, ...positions], or with `classesLast` every frame of [batch, frames, classes].
 */
export function meanEntropyOf(logits: Tensor, classesLast = false): number {
  const [n, C] = logits.dims as [number, number];
  const d = logits.data as Float32Array;
  if (classesLast) return meanEntropy(d, logits.dims[logits.dims.length - 1]!);
  if (logits.dims.length === 2) return meanEntropy(d, C);
  // Channels last, one row of C scores per position, then the mean over every row at once (one
  // copy, not an array per pixel). Class c of position q of sample i is at (i·C + c)·P + q.
  const P = d.length / (n * C);
  const rows = new Float32Array(d.length);
  for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) for (let q = 0; q < P; q++) rows[(i * P + q) * C + c] = d[(i * C + c) * P + q]!;
  return meanEntropy(rows, C);
}

/** An option holding a float32 tensor (in-distribution images and the like). */
export const tensorSchema = z.custom<Tensor>((v) => !!v && typeof v === 'object' && Array.isArray((v as Tensor).dims) && (v as Tensor).data instanceof Float32Array, 'expected a float32 tensor { dtype, dims, data }');
/** Model inputs: float32 values, or a token model's int64/int32 ids (the type read from the array: inputArrayDtype). */
export const inputTensorSchema = z.custom<Tensor>((v) => !!v && typeof v === 'object' && Array.isArray((v as Tensor).dims) && inputArrayDtype((v as Tensor).data) !== null, 'expected a tensor { dtype, dims, data } of float32 values or int64/int32 token ids');

export type CommonOptions = { mode: 'continual' | 'episodic'; seed: number; logits?: string; threads?: number; optimizer?: OptimizerSpec | undefined; recovery?: RecoveryOptions | undefined };

/** Validate `opts` against a zod object schema; unknown keys and bad values get a precise error. */
export function parseOptions<S extends z.ZodObject>(method: string, schema: S, opts: unknown): z.output<S> {
  if (opts !== undefined && (opts === null || typeof opts !== 'object' || Array.isArray(opts))) {
    throw new Error(`${method}: options must be an object, got ${opts === null ? 'null' : Array.isArray(opts) ? 'an array' : typeof opts}`);
  }
  const r = schema.strict().safeParse(opts ?? {});
  if (r.success) return r.data as z.output<S>;
  const known = Object.keys(schema.shape).sort().join(', ');
  const msgs = r.error.issues.map((i) => {
    if (i.code === 'unrecognized_keys' && i.path.length > 0) return `option '${i.path.join('.')}': unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')}`;
    if (i.code === 'unrecognized_keys') return `unknown option${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')} (known options: ${known})`;
    return `option '${i.path.join('.')}': ${i.message}`;
  });
  throw new Error(`${method}: ${msgs.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/**
 * Throws a precise error for a model with more than one input, an empty batch, a wrong
 * dtype/shape, or a non-finite input value. Token models (an int64/int32 input) take their ids.
 */
export function checkBatch(method: string, model: RefitModel, x: Tensor): void {
  const input = model.inputs[0]!;
  if (model.inputs.length !== 1) {
    throw new Error(`${method}: the model takes ${model.inputs.length} inputs (${model.inputs.map((i) => i.name).join(', ')}) and an adapter feeds one; for a Hugging Face token model, withTokenInputs(model, { padToken }) makes ${TOKEN_COMPANIONS.join(', ')} inside the graph`);
  }
  if (!x || !Array.isArray(x.dims) || !x.data) throw new Error(`${method}: predict(x) needs a tensor { dtype, dims, data }, got ${typeof x}`);
  const tokens = TOKEN_DTYPES.has(input.dtype);
  if (x.dtype !== (tokens ? input.dtype : 'float32')) throw new Error(`${method}: input '${input.name}' must be ${tokens ? `${input.dtype} token ids` : 'float32'}, got ${x.dtype}`);
  if (x.dims.length === 0 || x.dims[0] === 0) throw new Error(`${method}: batch of size 0 (input '${input.name}' has shape ${formatShape(x.dims)}); a batch needs at least one sample`);
  const shape = input.shape;
  if (shape) {
    const ok = shape.length === x.dims.length && shape.every((d, i) => typeof d !== 'number' || d === x.dims[i]);
    if (!ok) throw new Error(`${method}: input '${input.name}' has shape ${formatShape(x.dims)}, the model expects ${formatShape(shape)}`);
  }
  if (tokens) return;
  const d = x.data as Float32Array;
  const per = d.length / x.dims[0]!;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i]!)) {
      throw new Error(`${method}: input '${input.name}' has a non-finite value (${d[i]}) at element ${i} (sample ${Math.floor(i / per)}); refusing to predict or adapt on it`);
    }
  }
}

/** The methods that leave their input as it is, and so run on token ids. */
export const TOKEN_METHODS = ['tent', 'eata', 'sar', 'lame', 't3a', 'source'] as const;

/** Methods that transform their input (augmentations, alignment) take float images: a clear error for a token model. */
export function requireFloatInput(method: string, model: RefitModel, what: string): void {
  const input = model.inputs[0];
  if (input && input.dtype !== 'float32') throw new Error(`${method} ${what}, and this model's input '${input.name}' is ${input.dtype} (token ids); on token models use ${TOKEN_METHODS.join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// Normalization layers
// ---------------------------------------------------------------------------------------------

export const NORM_OPS = new Set(['BatchNormalization', 'LayerNormalization', 'GroupNormalization', 'InstanceNormalization']);

export interface NormLayer {
  /** The fused op type, or e.g. 'LayerNorm (decomposed)' for a pattern of primitive ops. */
  op: string;
  /** The layer's first node. */
  node: string;
  scale?: string;
  bias?: string;
}

const KIND_NAME = { batch: 'BatchNorm', layer: 'LayerNorm', group: 'GroupNorm', instance: 'InstanceNorm', rms: 'RMSNorm' } as const;

/** Every normalization layer, fused or decomposed (src/onnx/norm-layers.ts), with its affine parameters. */
export function normLayers(model: RefitModel): NormLayer[] {
  return findNormLayers(model.ir.graph).map((l) => {
    const out: NormLayer = { op: l.op === 'decomposed' ? `${KIND_NAME[l.kind]} (decomposed)` : l.op, node: l.nodes[0]! };
    if (l.scale) out.scale = l.scale;
    if (l.bias) out.bias = l.bias;
    return out;
  });
}

/** The affine parameters (scale, bias) of every normalization layer; a clear error if there are none. */
export function normAffineParams(method: string, model: RefitModel, exclude?: RegExp): string[] {
  const layers = normLayers(model);
  if (layers.length === 0) {
    throw new Error(noNormLayerMessage(`${method} adapts normalization layers (${NORM_KINDS}), and this model has none.`, model.ir,
      'pass \'params\' to choose other parameters, or use a method without parameter updates (source, lame, t3a)'));
  }
  const names = [...new Set(layers.flatMap((l) => [l.scale, l.bias]).filter((p): p is string => !!p))];
  const kept = exclude ? names.filter((n) => !exclude.test(n)) : names;
  if (kept.length === 0) throw new Error(`${method}: the model's normalization layers have no trainable affine parameters${exclude ? ` left after excluding ${exclude}` : ''}`);
  return kept;
}

export function hasBatchNormLayers(model: RefitModel): boolean {
  return model.ir.graph.nodes.some((n) => n.opType === 'BatchNormalization');
}

/** Paper learning rates are for batch 64; the SAR repository's main.py (which runs Tent, EATA and SAR) scales them by the batch size. */
export function paperLr(batch: number, layerNormModel: boolean): number {
  if (layerNormModel) return (0.001 / 64) * batch; // ViT-Base in SAR's main.py
  return batch < 32 ? (0.00025 / 64) * batch * 2 : 0.00025; // ResNet-50 (BN or GN) in SAR's and EATA's main.py
}

// ---------------------------------------------------------------------------------------------
// Small numerics (O(N·C), never a matrix product)
// ---------------------------------------------------------------------------------------------

export function softmaxRows(logits: Float32Array, C: number): Float64Array {
  const n = logits.length / C;
  const out = new Float64Array(logits.length);
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, logits[i * C + c]!);
    let s = 0;
    for (let c = 0; c < C; c++) s += out[i * C + c] = Math.exp(logits[i * C + c]! - m);
    for (let c = 0; c < C; c++) out[i * C + c]! /= s;
  }
  return out;
}

export function allFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Base class for gradient-based methods
// ---------------------------------------------------------------------------------------------

export interface AdaptOutcome {
  logits: Tensor;
  used: number;
  usedIndices?: Int32Array;
  loss?: number;
  extra?: Record<string, number>;
}

/**
 * A method that updates parameters of a private copy of the model. The source model is
 * cloned once and never written; `reset()` copies the source values back into the copy.
 * The copy owns the parameters the method may change (trainable and mutableParams) and shares
 * the rest with the source read-only (RefitModel.clone's copy-on-write): a subclass that writes
 * any other parameter must take it with `this.model.own` first.
 */
export abstract class ParamAdapter<O extends CommonOptions & { lr?: number }> implements Adapter {
  abstract readonly name: string;
  /** The private working copy: the method writes its parameters, never the source's. */
  readonly model: RefitModel;
  readonly logits: string;
  /** Parameters the method updates (live arrays of `model`). */
  readonly trainable: string[];
  protected readonly views: Map<string, Float32Array>;
  /** Learning rate: the option, or the paper's rule for the first batch's size. */
  protected lr: number | undefined;
  private opt: Optimizer | undefined;
  /** Source values of every parameter the method may change. */
  private readonly initial: Map<string, Float32Array>;
  protected skipped = 0;
  protected resets = 0;
  protected steps = 0;
  private batches = 0;
  /** The `recovery` option's moving average (null until a value arrived) and its resets. */
  recoveryEma: number | null = null;
  recoveryCount = 0;

  constructor(readonly source: RefitModel, readonly opts: O, trainable: (copy: RefitModel) => string[]) {
    // The copy shares the source's tensors; the ones the method writes become its own below
    // (copy-on-write: Tent's BatchNorm affine, not the 43 MB of ResNet-18's frozen convs).
    this.model = source.clone({ copy: [] });
    this.logits = opts.logits ?? defaultLogits(source.outputs);
    if (!source.outputs.some((o) => o.name === this.logits)) {
      throw new Error(`the model has no output '${this.logits}' (outputs: ${source.outputs.map((o) => o.name).join(', ')})`);
    }
    const rank = source.outputs.find((o) => o.name === this.logits)!.shape?.length;
    const m = this.constructor.name.toLowerCase();
    if (rank === 3 && !this.takesSequenceLogits()) throw new Error(`${m}: output '${this.logits}' has 3 dims ([batch, sequence, vocabulary] or [batch, classes, length]); test-time adaptation takes [batch, classes] logits${this.takesDenseLogits() ? ' or image-shaped [batch, classes, H, W]' : ''}`);
    if (rank !== undefined && rank > 3 && !this.takesDenseLogits()) {
      throw new Error(`${m}: output '${this.logits}' has ${rank} dims, class scores per position (segmentation); ${m} adapts classifiers ([batch, classes] logits). tent adapts dense outputs (entropy averaged over positions, as in its paper's segmentation experiments)`);
    }
    this.trainable = trainable(this.model);
    for (const p of this.trainable) this.model.param(p); // a clear error for an unknown name
    this.model.own([...this.trainable, ...this.mutableParams()]);
    this.views = new Map(this.trainable.map((p) => [p, this.model.param(p).data as Float32Array]));
    this.initial = new Map();
    for (const p of this.mutableParams()) this.initial.set(p, (this.model.param(p).data as Float32Array).slice());
    // optimizer.lr overrides lr (methods such as CoTTA always have an lr default). The parsed
    // options belong to this adapter, so `lr` is rewritten too: code that reads opts.lr (RMT's
    // warm-up ramp, CoTTA's defaultLr) then sees the same value.
    if (opts.optimizer?.lr !== undefined) (opts as { lr?: number }).lr = opts.optimizer.lr;
    this.lr = opts.lr;
  }

  get sessionOptions() {
    return this.opts.threads ? { ...this.source.sessionOptions, threads: this.opts.threads } : this.source.sessionOptions;
  }

  /** Parameters whose values the method can change (reset restores them). Default: the trainables. */
  protected mutableParams(): string[] {
    return this.trainable;
  }

  /** Whether the method adapts on dense logits [batch, classes, H, W, …] (Tent); the others take [batch, classes]. */
  protected takesDenseLogits(): boolean {
    return false;
  }

  /** Whether the method adapts a language model's [batch, sequence, vocabulary] logits (dynamic evaluation). */
  protected takesSequenceLogits(): boolean {
    return false;
  }

  /** θ ← θ + λ (θ_source − θ) for every trainable: a decay back toward the source values. */
  protected decayTowardSource(lambda: number): void {
    for (const [p, v] of this.views) {
      const s = this.sourceValue(p);
      for (let i = 0; i < v.length; i++) v[i]! += lambda * (s[i]! - v[i]!);
    }
    this.model.touch(this.trainable);
  }

  protected abstract makeOptimizer(lr: number): Optimizer;
  /** The paper's learning rate for this batch size (used when the `lr` option is not given). */
  protected abstract defaultLr(batch: number): number;
  /** Predict, then adapt on the batch (already validated). */
  protected abstract adapt(x: Tensor): Promise<AdaptOutcome>;
  /** Reset method state beyond parameters and optimizer (moving averages, teachers…). */
  protected resetMethodState(): void {}
  protected saveExtra(_tensors: Record<string, Float32Array>, _meta: AdapterState['meta']): void {}
  /** Validate first, then return a function that applies (so a bad state changes nothing). */
  protected loadExtra(_state: AdapterState): () => void {
    return () => {};
  }

  protected optimizer(batch: number): Optimizer {
    if (this.lr === undefined) {
      // Adam/AdamW chosen by option without a learning rate: torch's default 1e-3, which is also
      // Tent's CIFAR setting (the method's own default is for its own optimizer, usually SGD).
      const n = this.opts.optimizer?.name;
      this.lr = n === 'adam' || n === 'adamw' ? 1e-3 : this.defaultLr(batch);
    }
    if (!this.opt) this.opt = this.buildOptimizer(this.lr);
    return this.opt;
  }

  /** The `optimizer` option's optimizer if given, else the method's own (makeOptimizer). */
  protected buildOptimizer(lr: number): Optimizer {
    const s = this.opts.optimizer;
    if (!s) return this.makeOptimizer(lr);
    const o = this.opts as unknown as { momentum?: unknown; betas?: unknown };
    if (s.name === 'sgd') {
      return new SGD({
        lr,
        momentum: s.momentum ?? (typeof o.momentum === 'number' ? o.momentum : 0.9),
        dampening: s.dampening ?? 0,
        nesterov: s.nesterov ?? false,
        weightDecay: s.weightDecay ?? 0,
      });
    }
    const betas = s.betas ?? (Array.isArray(o.betas) ? (o.betas as [number, number]) : [0.9, 0.999] as const);
    const hyper = { lr, betas, eps: s.eps ?? 1e-8 };
    return s.name === 'adam' ? new Adam({ ...hyper, weightDecay: s.weightDecay ?? 0 }) : new AdamW({ ...hyper, weightDecay: s.weightDecay ?? 0.01 });
  }

  /** A copy of the optimizer's state (undefined before the first step). */
  protected optimizerState(): OptimizerState | undefined {
    return this.opt?.state();
  }

  /** Replace the optimizer by a fresh one, loaded with `state` when given. */
  protected restoreOptimizer(state: OptimizerState | undefined, batch: number): void {
    this.opt = undefined;
    if (state) this.optimizer(batch).loadState(state, this.views);
  }

  async predict(x: Tensor): Promise<AdaptResult> {
    checkBatch(this.name, this.source, x);
    const t0 = performance.now();
    if (this.opts.mode === 'episodic' && this.batches > 0) this.restoreSource();
    this.batches++;
    const r = await this.adapt(x);
    if (this.opts.recovery) this.recover(r);
    const info: AdaptInfo = { used: r.used, skipped: this.skipped, resets: this.resets, ms: performance.now() - t0 };
    if (r.usedIndices) info.usedIndices = r.usedIndices;
    if (r.loss !== undefined) info.loss = r.loss;
    if (r.extra) info.extra = r.extra;
    return { logits: r.logits, info };
  }

  /**
   * The `recovery` option (SAR's model recovery, sar.py): ema ← m·ema + (1 − m)·value for the
   * batch's mean prediction entropy (or its loss); when ema < threshold, back to the source.
   * As SAR's code, the EMA survives the recovery, and non-finite values leave it unchanged.
   */
  private recover(r: AdaptOutcome): void {
    const o = this.opts.recovery!;
    const v = o.signal === 'loss' ? r.loss : meanEntropyOf(r.logits, this.takesSequenceLogits());
    if (v !== undefined && Number.isFinite(v)) this.recoveryEma = this.recoveryEma === null ? v : o.emaMomentum * this.recoveryEma + (1 - o.emaMomentum) * v;
    let recovered = 0;
    if (this.recoveryEma !== null && this.recoveryEma < o.emaThreshold) {
      const ema = this.recoveryEma;
      this.restoreSource();
      this.recoveryEma = ema;
      this.recoveryCount++;
      recovered = 1;
    }
    r.extra = { ...r.extra, recoveryEma: this.recoveryEma ?? NaN, recovered };
  }

  /** Back to the source parameters, a fresh optimizer, and fresh method state. */
  reset(): void {
    this.restoreSource();
    this.recoveryEma = null;
  }

  protected restoreSource(): void {
    for (const [p, v] of this.initial) (this.model.param(p).data as Float32Array).set(v);
    this.model.touch(this.initial.keys());
    this.opt = undefined;
    this.resetMethodState();
    this.resets++;
  }

  /** Source value of a parameter the method may change. */
  protected sourceValue(p: string): Float32Array {
    const v = this.initial.get(p);
    if (!v) throw new Error(`${this.name}: '${p}' is not a parameter this method changes`);
    return v;
  }

  /** True if the loss and every gradient are finite; otherwise counts a skipped step. */
  protected finiteStep(r: Pick<StepResult, 'loss' | 'nonFiniteGrad'>): boolean {
    if (!Number.isFinite(r.loss) || r.nonFiniteGrad) { this.skipped++; return false; }
    return true;
  }

  /**
   * Apply an optimizer step with `grads` unless the loss or a gradient is not finite; a refused
   * step is counted in `skipped` and changes nothing.
   */
  protected applyStep(r: Pick<StepResult, 'loss' | 'grads' | 'nonFiniteGrad'>, batch: number): boolean {
    if (!this.finiteStep(r)) return false;
    this.optimizer(batch).step(this.views, r.grads, { gradsFinite: true });
    this.model.touch(this.trainable);
    this.steps++;
    return true;
  }

  async save(): Promise<AdapterState> {
    return this.snapshot();
  }

  async load(state: AdapterState): Promise<void> {
    this.restore(state);
  }

  /** `save()` without the promise, for callers whose own state is synchronous (the continual controller). */
  snapshot(): AdapterState {
    const tensors: Record<string, Float32Array> = {};
    for (const p of this.initial.keys()) tensors[`param.${p}`] = (this.model.param(p).data as Float32Array).slice();
    const meta: AdapterState['meta'] = { skipped: this.skipped, resets: this.resets, steps: this.steps, batches: this.batches, lr: this.lr ?? null, recoveryEma: this.recoveryEma, recoveryCount: this.recoveryCount };
    this.saveExtra(tensors, meta);
    const st: AdapterState = { method: this.name, version: 1, tensors, meta };
    if (this.opt) st.optimizer = this.opt.state();
    return st;
  }

  /** `load()` without the promise; validates everything before anything changes. */
  restore(state: AdapterState): void {
    if (!state || typeof state !== 'object') throw new Error(`${this.name}.load: state must be an object from save(), got ${typeof state}`);
    if (state.method !== this.name) throw new Error(`${this.name}.load: state was saved by '${String(state.method)}', not '${this.name}'`);
    if (state.version !== 1) throw new Error(`${this.name}.load: unsupported state version ${String(state.version)} (expected 1)`);
    const values = new Map<string, Float32Array>();
    for (const p of this.initial.keys()) {
      const v = stateTensor(state, `param.${p}`, this.model.param(p).data.length, this.name);
      const bad = allFinite(v);
      if (bad >= 0) throw new Error(`${this.name}.load: parameter '${p}' has a non-finite value at ${bad}`);
      values.set(p, v);
    }
    const lr = this.opts.optimizer?.lr ?? this.opts.lr ?? metaNumber(state, 'lr', this.name) ?? undefined;
    const recoveryEma = metaNumber(state, 'recoveryEma', this.name);
    const recoveryCount = metaNumber(state, 'recoveryCount', this.name) ?? 0;
    const applyExtra = this.loadExtra(state);
    let opt: Optimizer | undefined;
    if (state.optimizer) {
      if (lr === undefined) throw new Error(`${this.name}.load: state has optimizer buffers but no learning rate`);
      opt = this.buildOptimizer(lr);
      opt.loadState(state.optimizer as OptimizerState, this.views);
    }
    // Everything validated: apply.
    for (const [p, v] of values) (this.model.param(p).data as Float32Array).set(v);
    this.model.touch(values.keys());
    this.lr = lr;
    this.opt = opt;
    applyExtra();
    this.skipped = metaNumber(state, 'skipped', this.name) ?? 0;
    this.resets = metaNumber(state, 'resets', this.name) ?? 0;
    this.steps = metaNumber(state, 'steps', this.name) ?? 0;
    this.batches = metaNumber(state, 'batches', this.name) ?? 0;
    this.recoveryEma = recoveryEma;
    this.recoveryCount = recoveryCount;
  }

  async release(): Promise<void> {
    await this.model.release();
  }
}

export function metaNumber(state: AdapterState, key: string, who: string): number | null {
  const v = state.meta?.[key];
  if (v === null || v === undefined) return null;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${who}.load: meta '${key}' must be a finite number, got ${String(v)}`);
  return v;
}

export function stateTensor(state: AdapterState, key: string, length: number, who: string): Float32Array {
  const v = state.tensors?.[key];
  if (!(v instanceof Float32Array)) throw new Error(`${who}.load: state has no Float32Array '${key}'`);
  if (v.length !== length) throw new Error(`${who}.load: '${key}' has ${v.length} elements, expected ${length}`);
  return v;
}

/**
 * The entropy-minimisation family (Tent, EATA, SAR): SGD with momentum at the learning rate of
 * the SAR repository's main.py for the batch size and normalization type (see paperLr).
 */
export abstract class PaperSgdAdapter<O extends CommonOptions & { lr?: number; momentum: number }> extends ParamAdapter<O> {
  protected defaultLr(batch: number): number {
    return paperLr(batch, !hasBatchNormLayers(this.model));
  }

  protected makeOptimizer(lr: number): Optimizer {
    return new SGD({ lr, momentum: this.opts.momentum });
  }
}

/**
 * The teacher-student family (CoTTA, RMT, RoTTA, ROID): Adam at the method's own learning rate
 * and betas (each paper's configuration; eps 1e-8, no weight decay).
 */
export abstract class PaperAdamAdapter<O extends CommonOptions & { lr: number; betas: [number, number] }> extends ParamAdapter<O> {
  protected defaultLr(): number {
    return this.opts.lr;
  }

  protected makeOptimizer(lr: number): Optimizer {
    return new Adam({ lr, betas: this.opts.betas, eps: 1e-8, weightDecay: 0 });
  }
}
