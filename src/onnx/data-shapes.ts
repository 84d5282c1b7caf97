// Shapes the input values decide, not only the input shapes. NonZero (PyTorch's `torch.where(mask)`
// in a mixture of experts' routing, PyG's `add_remaining_self_loops`), Unique, Compress and
// NonMaxSuppression give as many elements as the data selects. A training step is compiled for
// one input signature with every shape fixed, so for such a model the sizes these ops give on a
// batch join the signature: the step is compiled for them, probed on that batch's own values,
// and compiled again when a batch selects other sizes (an MoE's routing changes most batches).
import type { Graph, Model } from './ir.ts';
import { cloneModel } from './ir.ts';
import { createSession, toOrt, type SessionOptions, type ort } from './runtime.ts';
import type { Tensor } from './tensor.ts';

export const DATA_SHAPED_OPS = new Set(['NonZero', 'Unique', 'Compress', 'NonMaxSuppression']);

/** The outputs of the ops whose output sizes depend on the values of their inputs. */
export function dataShapedOutputs(g: Graph): string[] {
  return g.nodes.filter((n) => DATA_SHAPED_OPS.has(n.opType) && (n.domain === '' || n.domain === 'ai.onnx')).flatMap((n) => n.outputs.filter(Boolean));
}

/** Computes, per batch, the sizes of a model's data-shaped tensors: one session, created at first use. */
export class DataShapes {
  private session: Promise<ort.InferenceSession> | null = null;

  constructor(private readonly model: Model, readonly tensors: string[], private readonly options: SessionOptions = {}) {}

  /** A key of the sizes on this batch ('' when the model has no data-shaped tensor). */
  async key(batch: Record<string, Tensor>): Promise<string> {
    if (!this.tensors.length) return '';
    this.session ??= (() => {
      const m = cloneModel(this.model);
      m.graph.outputs = this.tensors.map((name) => ({ name, dtype: 'int64', shape: null }));
      return createSession(m, this.options);
    })();
    const s = await this.session;
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of s.inputNames) if (batch[i]) feeds[i] = toOrt(batch[i]);
    const out = await s.run(feeds);
    return this.tensors.map((t) => out[t]!.dims.join('x')).join(';');
  }

  async release(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s) await (await s).release();
  }
}
