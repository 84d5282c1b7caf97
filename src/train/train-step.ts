// A compiled training step: one onnxruntime session per input signature, cached.
import type { RefitModel } from '../model.ts';
import { cloneModel } from '../onnx/ir.ts';
import { blockFedConvs, fewPositionWeights, MIN_BLOCKED_POSITIONS, nchwcBlockForSession } from '../onnx/nchwc.ts';
import { blockStepActivations, blockedStepFits } from '../onnx/nchwc-step.ts';
import { createSession, toOrt, fromOrt, type SessionOptions, ort } from '../onnx/runtime.ts';
import { signatureOf, signatureKey, checkSignature, type InputSignature } from '../onnx/shapes.ts';
import { type Tensor, formatShape } from '../onnx/tensor.ts';
import { checkRunningStats } from './batchnorm-train.ts';
import { buildStepGraph, type StepGraph, type StepGraphOptions } from './step-graph.ts';
import { stepSource } from './step-opset.ts';
import { DataShapes, dataShapedOutputs, subgraphDataShapes } from '../onnx/data-shapes.ts';
import { withEmbeddingBags } from '../onnx/embedding-bag.ts';
import { denseTinyConvs } from './tiny-conv-dense.ts';
import { pointwiseConvsAsMatMul } from './pointwise-matmul.ts';
import { phaseStridedDx } from './strided-dx-phases.ts';
import { firstNonFinite } from './optim/tensors.ts';

export interface StepResult {
  loss: number;
  /** False when the loss was NaN or Inf; the caller must not apply the gradients. */
  finite: boolean;
  grads: Map<string, Float32Array>;
  /**
   * The first non-finite gradient value, or null when every gradient is finite; the caller must
   * not apply gradients that are not. Found once, when first read, so that whoever applies them
   * tells the optimizer (`step(…, { gradsFinite: true })`) instead of scanning them again.
   */
  readonly nonFiniteGrad: { param: string; index: number } | null;
  /** Requested extra forward tensors, by their model names. */
  outputs: Record<string, Tensor>;
  /** Updated BatchNorm running statistics (batchNorm: 'train'); apply with model.setParams to keep them. */
  runningStats: Map<string, Float32Array>;
}

interface Compiled { graph: StepGraph; session: ort.InferenceSession }

/** Steps kept compiled for the data-decided sizes of one model (src/onnx/data-shapes.ts). */
const MAX_DATA_SHAPED = 8;

function firstNonFiniteGrad(grads: Map<string, Float32Array>): StepResult['nonFiniteGrad'] {
  for (const [param, g] of grads) {
    const index = firstNonFinite(g);
    if (index >= 0) return { param, index };
  }
  return null;
}

export class TrainStep {
  private cache = new Map<string, Promise<Compiled>>();
  readonly trainable: string[];
  /** Parameters fed each run (trainables and BatchNorm running statistics); the rest are baked in. */
  private fed: Set<string>;
  /** Sizes the batch's values decide (NonZero's): part of the signature a step is compiled for (src/onnx/data-shapes.ts). */
  private dataShapes: DataShapes;
  private dataKeys: string[] = [];

  constructor(readonly model: RefitModel, readonly options: StepGraphOptions, readonly session: SessionOptions = {}) {
    this.trainable = options.trainable;
    this.fed = new Set(options.trainable);
    this.dataShapes = new DataShapes(model.ir, dataShapedOutputs(model.ir.graph), session, subgraphDataShapes(model.ir.graph).inputs);
    if (options.batchNorm === 'train') {
      for (const n of model.ir.graph.nodes) if (n.opType === 'BatchNormalization') {
        checkRunningStats(model.ir.graph, n); // a precise error now rather than a missing tensor later
        for (const i of n.inputs.slice(3, 5)) if (i) this.fed.add(i);
      }
    }
  }

  /**
   * Build (or fetch from cache) the step for one input signature; rebuilt when a baked-in
   * parameter changed. A model with data-shaped tensors gives their sizes on `batch` (`sizes`),
   * and the step is probed on that batch.
   */
  compile(sig: InputSignature, data?: { batch: Record<string, Tensor>; sizes: string }): Promise<Compiled> {
    const key = `${this.model.bakedStamp(this.fed)}|${signatureKey(sig)}${data ? `|${data.sizes}` : ''}`;
    let hit = this.cache.get(key);
    if (!hit) {
      hit = (async () => {
        // At opset 16 where that is exact and a MaxPool's or an embedding's gradient gains by it
        // (step-opset.ts; an EmbeddingBag's Loop rewritten first, so its table counts and no Loop
        // forbids the lift); convs on tiny images as dense MatMuls (tiny-conv-dense.ts); constant
        // 1×1 convs as MatMuls (pointwise-matmul.ts).
        const base = stepSource(withEmbeddingBags(this.model.ir)).model;
        const frozen = (t: string) => !this.fed.has(t);
        const block = await nchwcBlockForSession(this.session);
        const dense = denseTinyConvs(base, sig, frozen);
        // Only where onnxruntime blocks the convs: MobileNet- and bottleneck-style steps whose convs
        // are all constants then run in the blocked layout (src/onnx/nchwc-step.ts), their 1×1 convs
        // as convs; other steps take their 1×1 convs as MatMuls, saving the reorders onnxruntime
        // writes around each conv (pointwise-matmul.ts).
        const blocked = block !== null && this.options.batchNorm === 'train' && blockedStepFits(dense.model, frozen);
        const pointwise = block && !blocked ? pointwiseConvsAsMatMul(dense.model, sig, frozen) : { model: dense.model, assumed: new Map<string, number[]>() };
        const assumed = [...dense.assumed, ...pointwise.assumed];
        // The dense matrices and the 1×1 MatMuls hold the shapes a static propagation found; where
        // the probe disagrees (an op that propagation reads wrongly) or fails on them, the step is
        // built without them.
        const plain = () => buildStepGraph(base, sig, this.options, data?.batch);
        let graph = assumed.length ? await buildStepGraph(pointwise.model, sig, this.options, data?.batch).catch(() => null) : await plain();
        if (!graph || assumed.some(([t, dims]) => graph!.shapes.get(t)?.dims.join() !== dims.join())) graph = await plain();
        let t = performance.now();
        // graph.model stays the portable standard-op graph; where onnxruntime-node's blocked kernels
        // run, the session gets a copy whose fed convolutions use them (src/onnx/nchwc.ts) and whose
        // strided convs' input gradients are stride-1 Convs by phase (strided-dx-phases.ts).
        const forSession = cloneModel(graph.model);
        if (block) {
          phaseStridedDx(forSession);
          const fed = new Set(graph.paramInputs);
          const few = fewPositionWeights(graph.model, fed, graph.shapes, MIN_BLOCKED_POSITIONS);
          blockFedConvs(forSession, new Set([...fed].filter((w) => !few.has(w))), block);
          if (blocked) blockStepActivations(forSession, graph.shapes, block);
        }
        graph.timings.blockedConvs = performance.now() - t;
        // Encoded inside createSession: the baked weights go to onnxruntime as views, not in the bytes.
        t = performance.now();
        const session = await createSession(forSession, this.session);
        graph.timings.session = performance.now() - t;
        return { graph, session };
      })();
      hit.catch(() => this.cache.delete(key));
      this.cache.set(key, hit);
      if (data) this.keepNewestDataShaped(key);
    }
    return hit;
  }

  /** A mixture of experts routes most batches differently: keep the newest MAX_DATA_SHAPED steps compiled for data sizes. */
  private keepNewestDataShaped(key: string): void {
    this.dataKeys.push(key);
    while (this.dataKeys.length > MAX_DATA_SHAPED) {
      const k = this.dataKeys.shift()!;
      const old = this.cache.get(k);
      this.cache.delete(k);
      void old?.then((c) => c.session.release(), () => undefined);
    }
  }

  /** Run forward, loss and backward on one batch. Parameters are read, never written. */
  async run(batch: Record<string, Tensor>): Promise<StepResult> {
    const modelInputs = new Set(this.model.ir.graph.inputs.map((i) => i.name));
    const sig: InputSignature = {};
    for (const [k, t] of Object.entries(signatureOf(batch))) if (modelInputs.has(k)) sig[k] = t;
    checkSignature(this.model.ir.graph.inputs, sig);
    const sizes = await this.dataShapes.key(batch);
    const { graph, session } = await this.compile(sig, sizes ? { batch, sizes } : undefined);
    const feeds: Record<string, ort.Tensor> = {};
    for (const k of Object.keys(sig)) feeds[k] = toOrt(batch[k]!);
    for (const [lossName, inputName] of graph.lossInputs) {
      const t = batch[lossName];
      const decl = graph.model.graph.inputs.find((i) => i.name === inputName)!;
      if (!t) throw new Error(`the loss needs input '${lossName}' (${decl.dtype} ${formatShape(decl.shape ?? [])}) in the batch`);
      if (t.dtype !== decl.dtype || t.dims.join(',') !== (decl.shape ?? []).join(',')) {
        throw new Error(`loss input '${lossName}' is ${t.dtype} ${formatShape(t.dims)}, expected ${decl.dtype} ${formatShape(decl.shape ?? [])}`);
      }
      feeds[inputName] = toOrt(t);
    }
    for (const p of graph.paramInputs) feeds[p] = toOrt(this.model.param(p));
    const out = await session.run(feeds);
    const loss = Number((out[graph.lossOutput]!.data as Float32Array)[0]);
    const grads = new Map<string, Float32Array>();
    for (const [p, name] of graph.gradOutputs) {
      grads.set(p, name ? (out[name]!.data as Float32Array) : new Float32Array(this.model.param(p).data.length));
    }
    const outputs: Record<string, Tensor> = {};
    for (const [o, name] of graph.extraOutputs) outputs[o] = fromOrt(out[name]!);
    const runningStats = new Map<string, Float32Array>();
    for (const r of graph.runningStats) runningStats.set(r.param, out[r.updated]!.data as Float32Array);
    // Scanned on first read only: a caller that does not apply the gradients pays nothing for it.
    let scanned: StepResult['nonFiniteGrad'] | undefined;
    return {
      loss, finite: Number.isFinite(loss), grads, outputs, runningStats,
      get nonFiniteGrad() { return scanned === undefined ? (scanned = firstNonFiniteGrad(grads)) : scanned; },
    };
  }

  /** Free the onnxruntime sessions. */
  async release(): Promise<void> {
    for (const p of this.cache.values()) (await p.catch(() => null))?.session.release();
    this.cache.clear();
    await this.dataShapes.release();
  }
}
