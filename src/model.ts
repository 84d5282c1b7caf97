// A loaded ONNX model with live parameters: inspect, run, compile training steps, save.
import type { Model } from './onnx/ir.ts';
import { cloneModel, opsetVersion } from './onnx/ir.ts';
import { decodeModel, encodeModel } from './onnx/proto.ts';
import { readModelFile, writeModelFile, type WriteOptions } from './onnx/io.ts';
import { createSession, toOrt, fromOrt, type SessionOptions, ort } from './onnx/runtime.ts';
import { signatureOf, checkSignature } from './onnx/shapes.ts';
import { type Tensor, formatShape, cloneTensor } from './onnx/tensor.ts';
import { TrainStep } from './train/train-step.ts';
import type { StopGradient } from './autodiff/backward.ts';
import type { LossSpec } from './train/loss-spec.ts';
import { selectParams, parameterCandidates, type ParamSelector } from './train/params.ts';
import { upgradeOpset, type UpgradeOptions, type UpgradeReport } from './onnx/opset-upgrade.ts';
import { applyExporterQuirks, type QuirkOptions, type QuirkReport } from './onnx/exporter-quirks.ts';
import type { BudgetCompileOptions, BudgetedTrainStep } from './train/memory-budget.ts';
import { addFeaturesOutput, findPenultimate, FeaturesError } from './onnx/penultimate.ts';
import { defaultLogits } from './onnx/default-logits.ts';

export const MIN_OPSET = 13;

/**
 * Parameter tensors that a model shares with a sharing clone (clone({ copy })), in either
 * direction. Whoever writes a parameter in place takes it with own() first, which replaces a
 * shared tensor by a private copy (copy-on-write); setParams does so itself.
 */
const sharedTensors = new WeakSet<Tensor>();

export interface CompileOptions {
  trainable: ParamSelector;
  loss: LossSpec;
  outputs?: string[];
  batchNorm?: 'eval' | 'train';
  /** Activation checkpointing (src/train/checkpoint.ts): recompute most saved activations in the backward. */
  checkpoint?: boolean | number;
  /**
   * Where no gradient flows back: PyTorch's `.detach()`, which an ONNX export loses (it keeps the
   * values, not the cut). A tensor name cuts every use of it; `{ tensor, into }` only its use by
   * node `into` (src/autodiff/backward.ts).
   */
  stopGradient?: StopGradient[];
  /**
   * An embedding table's one all-zero row is PyTorch's `padding_idx`, which the export loses: its
   * lookups pass no gradient, as in PyTorch (src/onnx/padding-rows.ts). Default true; false trains
   * that row like any other.
   */
  paddingRows?: boolean;
  session?: SessionOptions;
  /** Choose what trains to fit a memory budget: see compileTrainStep and src/train/memory-budget.ts. */
  memoryBudget?: undefined;
}

export class RefitModel {
  /** Change stamps per parameter: sessions that bake a parameter in are rebuilt after it changes. */
  private stamps = new Map<string, number>();
  private clock = 0;
  private inference = new Map<string, { stamp: number; session: Promise<ort.InferenceSession> }>();
  /** What loading repaired in the exporter's storage (Constant weights, ties kept or undone, copied statistics). */
  readonly quirks: QuirkReport;

  constructor(readonly ir: Model, readonly sessionOptions: SessionOptions = {}) {
    const v = opsetVersion(ir);
    if (v < MIN_OPSET) {
      throw new Error(`model uses ONNX opset ${v}; RefitModel needs opsets ${MIN_OPSET}–21. Load it with loadModel(path), which upgrades opsets 1–12 to ${MIN_OPSET} and verifies the result, or convert the IR first with \`(await upgradeOpset(ir)).model\` (in Python: onnx.version_converter.convert_version(model, 17))`);
    }
    // Exporter quirks (Constant weights, torch.onnx's Identity aliases, running statistics that
    // share a weight's tensor) are repaired on a clone: the caller's IR and tensors stay untouched.
    // `keepTies` rides in the options object loadModel passes (see exporter-quirks.ts).
    const keepTies = (sessionOptions as QuirkOptions).keepTies;
    const repaired = applyExporterQuirks(ir, keepTies === undefined ? {} : { keepTies });
    this.ir = repaired.model;
    this.quirks = repaired.report;
  }

  get inputs() { return this.ir.graph.inputs; }
  get outputs() { return this.ir.graph.outputs; }

  /** Names of float initializers that can be trained. */
  parameterNames(sel: ParamSelector = 'all'): string[] {
    return sel === 'all' ? parameterCandidates(this.ir.graph) : selectParams(this.ir.graph, sel);
  }

  /**
   * A parameter's live tensor. Read it freely; to write its array in place, take it with own()
   * (or use setParams): a sharing clone may hold the same array.
   */
  param(name: string): Tensor {
    const t = this.ir.graph.initializers.get(name);
    if (!t) throw new Error(`model has no parameter '${name}'`);
    return t;
  }

  /** Names handed out by own(): writers hold views of them, so sharing clones copy them. */
  private owned = new Set<string>();

  /**
   * Make these parameters this model's own to write in place: a tensor shared with a sharing
   * clone is replaced by a private copy (the clone keeps the old one). Later sharing clones copy
   * them instead of sharing, since the caller may keep writing through views it takes now.
   */
  own(names: Iterable<string>): void {
    for (const n of names) {
      const t = this.param(n);
      if (sharedTensors.has(t)) this.ir.graph.initializers.set(n, cloneTensor(t));
      this.owned.add(n);
    }
  }

  /**
   * Replace parameter values (copied in). Shapes must match; nothing changes if any does not.
   */
  setParams(values: Map<string, Float32Array> | Record<string, Float32Array>): void {
    const entries = values instanceof Map ? [...values] : Object.entries(values);
    for (const [k, v] of entries) {
      const t = this.param(k);
      if (t.data.length !== v.length) throw new Error(`parameter '${k}' has ${t.data.length} elements (shape ${formatShape(t.dims)}), got ${v.length}`);
      for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i]!)) throw new Error(`refusing to set parameter '${k}': value ${i} is ${v[i]}`);
    }
    this.own(entries.map(([k]) => k));
    for (const [k, v] of entries) (this.param(k).data as Float32Array).set(v);
    this.touch(entries.map(([k]) => k));
  }

  /**
   * Record that parameters changed (call after writing parameter arrays in place), so
   * sessions that bake them in as constants are rebuilt. Sessions that feed them are kept.
   */
  touch(names: Iterable<string>): void {
    const t = ++this.clock;
    for (const n of names) this.stamps.set(n, t);
  }

  /** Latest change stamp among parameters not in `fed`: compiled graphs older than it are stale. */
  bakedStamp(fed: ReadonlySet<string>): number {
    let m = 0;
    for (const [k, t] of this.stamps) if (t > m && !fed.has(k)) m = t;
    return m;
  }

  /**
   * A copy that can train without touching this model. By default every parameter is copied.
   * With `copy`, only those (and any this model handed out with own()) are; the others are
   * shared read-only with this model, copy-on-write through own() and setParams on either side
   * (a TTA adapter that trains BatchNorm's affine shares the rest: 43 MB on ResNet-18).
   */
  clone(opts: { copy?: Iterable<string> } = {}): RefitModel {
    return this.cloneEdited(opts.copy ? new Set([...opts.copy, ...this.owned]) : null, () => undefined);
  }

  /**
   * A sharing clone (as clone({ copy: [] })) whose IR `edit` rewrites before the model is made,
   * so the exporter-quirk repairs of the constructor also see what the edit brought in (the nodes
   * of an inlined If branch, say).
   */
  rewritten(edit: (ir: Model) => void): RefitModel {
    return this.cloneEdited(new Set(this.owned), edit);
  }

  /** A clone copying the parameters in `copy` (all when null), sharing the rest, with `edit` applied to its IR. */
  private cloneEdited(copy: ReadonlySet<string> | null, edit: (ir: Model) => void): RefitModel {
    const ir = cloneModel(this.ir);
    for (const [k, t] of ir.graph.initializers) {
      if (!copy || copy.has(k)) ir.graph.initializers.set(k, cloneTensor(t));
      else sharedTensors.add(t);
    }
    edit(ir);
    return new RefitModel(ir, this.sessionOptions);
  }

  /**
   * This model with its penultimate features as an output named `name` ('features'): the input
   * of the linear layer (Gemm, or MatMul with a weight) that computes `logits` (the output named
   * 'logits', else the first), [batch, D]. RMT, T3A, LAME and the continual controller's error
   * memory read them; models exported from PyTorch have only their logits. A sharing clone: this
   * model is unchanged. Returns this model when it already has an output `name`.
   */
  withFeatures(opts: { logits?: string; name?: string } = {}): RefitModel {
    const name = opts.name ?? 'features';
    if (this.outputs.some((o) => o.name === name)) return this;
    const logits = opts.logits ?? defaultLogits(this.outputs);
    const p = findPenultimate(this.ir.graph, logits);
    if ('reason' in p) throw new FeaturesError(`${p.reason}, so refit cannot tell which tensor holds the penultimate features; export the model with them as an output named '${name}'`);
    const m = this.clone({ copy: [] });
    addFeaturesOutput(m.ir.graph, p, logits, name);
    return m;
  }

  /**
   * Inference. `feedParams` names parameters passed as inputs instead of baked constants,
   * so they can change between calls without rebuilding the session.
   */
  async run(feeds: Record<string, Tensor>, opts: { outputs?: string[]; feedParams?: string[] } = {}): Promise<Record<string, Tensor>> {
    checkSignature(this.ir.graph.inputs, signatureOf(feeds));
    const outputs = opts.outputs ?? this.ir.graph.outputs.map((o) => o.name);
    const fed = opts.feedParams ?? [];
    const key = `${fed.join(',')}|${outputs.join(',')}`;
    const stamp = this.bakedStamp(new Set(fed));
    let entry = this.inference.get(key);
    if (entry && entry.stamp !== stamp) {
      entry.session.then((x) => x.release()).catch(() => undefined);
      entry = undefined;
    }
    if (!entry) {
      const m = cloneModel(this.ir);
      for (const p of fed) {
        const t = this.param(p);
        m.graph.initializers.delete(p);
        m.graph.inputs.push({ name: p, dtype: t.dtype, shape: [...t.dims] });
      }
      const declared = new Map(this.ir.graph.outputs.map((o) => [o.name, o]));
      m.graph.outputs = outputs.map((o) => declared.get(o) ?? { name: o, dtype: 'float32', shape: null, untyped: true });
      const session = createSession(m, this.sessionOptions); // weights as views, not copied into bytes (runtime.ts)
      session.catch(() => this.inference.delete(key));
      entry = { stamp, session };
      this.inference.set(key, entry);
    }
    const session = await entry.session;
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, t] of Object.entries(feeds)) ortFeeds[k] = toOrt(t);
    for (const p of fed) ortFeeds[p] = toOrt(this.param(p));
    const out = await session.run(ortFeeds);
    return Object.fromEntries(outputs.map((o) => [o, fromOrt(out[o]!)]));
  }

  /**
   * Compile a training step. With `memoryBudget` (bytes, or { bytes, batch, optimizer, … }) it
   * chooses what trains so that the step's accounted memory fits, and resolves to a step whose
   * `budget` field says what it chose and what was dropped (src/train/memory-budget.ts).
   */
  compileTrainStep(opts: CompileOptions): TrainStep;
  compileTrainStep(opts: BudgetCompileOptions): Promise<BudgetedTrainStep>;
  compileTrainStep(opts: CompileOptions | BudgetCompileOptions): TrainStep | Promise<BudgetedTrainStep> {
    // Imported when used: memory-budget.ts reaches PeftModel, which extends this class.
    if ('memoryBudget' in opts && opts.memoryBudget !== undefined) return import('./train/memory-budget.ts').then((m) => m.compileWithinBudget(this, opts as BudgetCompileOptions));
    if (opts.trainable === undefined) throw new Error('compileTrainStep: trainable is required (or pass memoryBudget to have it chosen)');
    const trainable = selectParams(this.ir.graph, opts.trainable);
    return new TrainStep(this, { trainable, loss: opts.loss, outputs: opts.outputs, batchNorm: opts.batchNorm, ...(opts.checkpoint ? { checkpoint: opts.checkpoint } : {}), ...(opts.stopGradient?.length ? { stopGradient: opts.stopGradient } : {}), ...(opts.paddingRows === false ? { paddingRows: false } : {}) }, opts.session ?? this.sessionOptions);
  }

  toBytes(): Uint8Array {
    return encodeModel(this.ir);
  }

  /**
   * Save as a plain inference model. Written to a temp file and renamed, so a failure keeps the old
   * file. A model whose weights exceed 1.5 GiB (protobuf's limit is 2 GiB) is written with them in
   * `<path>_data` beside it, as ONNX external data; `externalData` forces either form.
   */
  async save(path: string, opts: WriteOptions = {}): Promise<void> {
    writeModelFile(path, this.ir, opts);
  }

  /** Free cached inference sessions. */
  async release(): Promise<void> {
    const old = [...this.inference.values()];
    this.inference.clear();
    await Promise.all(old.map((e) => e.session.then((x) => x.release()).catch(() => undefined)));
  }
}

/** Session options, exporter-quirk options (keepTies, read by the constructor) and the opset upgrade. */
export interface LoadOptions extends SessionOptions, QuirkOptions {
  /**
   * Upgrade opset 1–12 models to opset 13 on load (default true), verified in onnxruntime on
   * synthetic inputs (or `feeds`); see src/onnx/opset-upgrade.ts. `false` leaves the model as it
   * is, and RefitModel then refuses opsets below 13.
   */
  upgradeOpset?: boolean | UpgradeOptions;
  /** Receives the upgrade report (which ops were rewritten, how the outputs compared). */
  onUpgrade?: (report: UpgradeReport) => void;
}

/** Load an ONNX model from a path or bytes; models below opset 13 are upgraded and verified (LoadOptions.upgradeOpset). */
export async function loadModel(source: string | Uint8Array, opts: LoadOptions = {}): Promise<RefitModel> {
  const { upgradeOpset: upgrade = true, onUpgrade, ...session } = opts;
  let ir = typeof source === 'string' ? readModelFile(source) : decodeModel(source);
  if (upgrade !== false && opsetVersion(ir) < MIN_OPSET) {
    const r = await upgradeOpset(ir, upgrade === true ? {} : upgrade);
    ir = r.model;
    onUpgrade?.(r.report);
  }
  return new RefitModel(ir, session);
}

