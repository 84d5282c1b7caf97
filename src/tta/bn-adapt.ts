// BN-adapt (Schneider et al. 2020; Nado et al. 2020): normalise with test-batch statistics,
// optionally mixed with the source statistics by a prior strength N:
//   μ = N/(N+n)·μ_source + n/(N+n)·μ_batch   (same for σ²), n = batch size.
// No parameters change; N = 0 uses the batch statistics alone.
import { RefitModel } from '../model.ts';
import { cloneModel, opsetVersion } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { probeShapes, signatureOf, signatureKey } from '../onnx/shapes.ts';
import { lowerBatchNormTrain } from '../train/batchnorm-train.ts';
import { nchwcBlockForSession } from '../onnx/nchwc.ts';
import { blockBatchStats } from '../onnx/nchwc-batchstats.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { SessionOptions } from '../onnx/runtime.ts';
import { type Adapter, type AdaptResult, defaultLogits } from './types.ts';
import { checkBatch } from './common.ts';
import { noNormLayerMessage } from '../onnx/norm-folding.ts';

export interface BNAdaptOptions {
  /** Source prior strength N (Schneider et al. 2020). Default 0: pure test-batch statistics. */
  prior?: number;
  /** Output to return as logits. Default: the model's first output. */
  logits?: string;
}

/**
 * How BN-adapt's graph is built where onnxruntime-node's blocked kernels exist: 'blocked' keeps
 * activations in the NCHWc layout through the batch statistics (nchwc-batchstats.ts); 'standard'
 * is the portable lowering alone (the browser's, and the reference the tests compare with).
 */
export const bnAdaptForm: { current: 'blocked' | 'standard' } = { current: 'blocked' };

/** A copy of the model whose BatchNorm layers use (prior-mixed) batch statistics, for one input signature. */
export async function batchStatModel(model: RefitModel, feeds: Record<string, Tensor>, prior = 0, session: SessionOptions = model.sessionOptions): Promise<RefitModel> {
  const sig = signatureOf(feeds);
  const shapes = await probeShapes(model.ir, sig);
  const ir = cloneModel(model.ir); // shares parameter tensors: no copy, and the source is never written
  // On onnxruntime-node's CPU provider the BN layers behind blocked convs are computed in the
  // blocked layout (src/onnx/nchwc-batchstats.ts); the rest are lowered as everywhere else.
  const block = bnAdaptForm.current === 'blocked' ? await nchwcBlockForSession(session) : null;
  if (block) blockBatchStats(ir, (t) => shapes.get(t)?.dims, block, { prior });
  const em = new Emitter(ir.graph, opsetVersion(ir));
  lowerBatchNormTrain(ir.graph, em, (t) => shapes.get(t)!.dims, { prior });
  return new RefitModel(ir, session);
}

export function hasBatchNorm(model: RefitModel): boolean {
  return model.ir.graph.nodes.some((n) => n.opType === 'BatchNormalization');
}

export class BNAdapt implements Adapter {
  readonly name = 'bn-adapt';
  private variants = new Map<string, Promise<RefitModel>>();
  private readonly logits: string;

  constructor(readonly model: RefitModel, readonly options: BNAdaptOptions = {}) {
    if (!hasBatchNorm(model)) {
      throw new Error(noNormLayerMessage('bn-adapt re-estimates the statistics of BatchNormalization layers, and this model has none.', model.ir,
        'use a method without BatchNorm statistics: tent, eata or sar adapt LayerNorm and GroupNorm layers too; lame, t3a and source need no norm layer'));
    }
    if ((options.prior ?? 0) < 0) throw new Error(`bn-adapt prior N must be ≥ 0, got ${options.prior}`);
    this.logits = options.logits ?? defaultLogits(model.outputs);
  }

  async predict(x: Tensor): Promise<AdaptResult> {
    checkBatch(this.name, this.model, x);
    const t0 = performance.now();
    const inputName = this.model.inputs[0]!.name;
    const feeds = { [inputName]: x };
    const key = signatureKey(signatureOf(feeds));
    let v = this.variants.get(key);
    if (!v) {
      v = batchStatModel(this.model, feeds, this.options.prior ?? 0);
      this.variants.set(key, v);
    }
    const out = await (await v).run(feeds, { outputs: [this.logits] });
    return { logits: out[this.logits]!, info: { used: x.dims[0]!, skipped: 0, resets: 0, ms: performance.now() - t0 } };
  }

  reset(): void { /* stateless: every batch uses its own statistics */ }

  async release(): Promise<void> {
    for (const v of this.variants.values()) await (await v).release();
    this.variants.clear();
  }
}
