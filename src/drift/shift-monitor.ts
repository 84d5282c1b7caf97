// Shift signals of a model's live batches, from one forward pass: prediction entropy and
// confidence, BatchNorm input statistics against the running (source) statistics, and MMD
// between the batch's embeddings and a reservoir of source embeddings under a fixed kernel.
import type { RefitModel } from '../model.ts';
import { attrFloat } from '../onnx/ir.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { predictionStats, channelStats, gaussianSymmetricKl, mmd2, medianDistance } from './signals.ts';
import { Reservoir } from './reservoir.ts';

export interface ShiftSignals {
  entropy: number;
  confidence: number;
  /** Mean over BatchNorm layers of the channel-averaged symmetric KL (null: the model has no BatchNorm). */
  bnKl: number | null;
  bnKlPerLayer: { node: string; kl: number }[];
  /** Squared MMD to the source reservoir (null until a reference is frozen, or without an embedding output). */
  mmd: number | null;
  /** The forward pass's outputs, so the caller need not run the model again. */
  logits: Tensor;
  embedding?: Tensor;
}

export interface ShiftMonitorOptions {
  /** Output holding class scores. @default the model's last output */
  logits?: string;
  /** Output (or intermediate tensor) holding a per-sample embedding [N, D], for MMD. */
  embedding?: string;
  /** Source embeddings kept for MMD. @default 256 */
  referenceSize?: number;
  /** Kernel bandwidth; default: the median pairwise distance of the reference, fixed at freeze(). */
  bandwidth?: number;
  seed?: number;
}

interface BnLayer { node: string; input: string; mean: string; variance: string; eps: number }

export class ShiftMonitor {
  readonly logits: string;
  readonly embedding?: string;
  readonly layers: BnLayer[];
  private reference?: Reservoir;
  private frozen?: { rows: Float32Array; n: number; bandwidth: number };

  constructor(readonly model: RefitModel, readonly options: ShiftMonitorOptions = {}) {
    const outs = model.outputs.map((o) => o.name);
    this.logits = options.logits ?? outs[outs.length - 1]!;
    if (options.embedding) this.embedding = options.embedding;
    this.layers = model.ir.graph.nodes
      .filter((n) => n.opType === 'BatchNormalization' && n.inputs[3] && n.inputs[4] && model.ir.graph.initializers.has(n.inputs[3]) && model.ir.graph.initializers.has(n.inputs[4]))
      .map((n) => ({ node: n.name, input: n.inputs[0]!, mean: n.inputs[3]!, variance: n.inputs[4]!, eps: attrFloat(n, 'epsilon', 1e-5) }));
  }

  private async forward(x: Tensor): Promise<Record<string, Tensor>> {
    const wanted = [this.logits, ...this.layers.map((l) => l.input)];
    if (this.embedding) wanted.push(this.embedding);
    const feeds = { [this.model.inputs[0]!.name]: x };
    return this.model.run(feeds, { outputs: [...new Set(wanted)] });
  }

  private rowsOf(t: Tensor): { data: Float32Array; n: number; dim: number } {
    const n = t.dims[0]!;
    return { data: t.data as Float32Array, n, dim: (t.data as Float32Array).length / n };
  }

  /** Add a source batch's embeddings to the reference reservoir (before `freeze`). */
  async observeSource(x: Tensor): Promise<void> {
    if (!this.embedding) throw new Error("ShiftMonitor: observeSource needs the 'embedding' option (an [N, D] tensor of the model)");
    if (this.frozen) throw new Error('ShiftMonitor: the reference is frozen; create a new monitor to change it');
    const e = this.rowsOf((await this.forward(x))[this.embedding]!);
    this.reference ??= new Reservoir(this.options.referenceSize ?? 256, e.dim, this.options.seed ?? 0);
    if (e.dim !== this.reference.dim) throw new Error(`ShiftMonitor: embedding has ${e.dim} values per sample, the reference ${this.reference.dim}`);
    this.reference.offer(e.data, e.n);
  }

  /** Fix the reference sample and the kernel bandwidth; MMD is reported from now on. */
  freeze(): void {
    if (!this.reference || this.reference.size < 2) throw new Error('ShiftMonitor: freeze needs at least two source embeddings (call observeSource first)');
    const rows = this.reference.sample();
    const n = this.reference.size;
    this.frozen = { rows, n, bandwidth: this.options.bandwidth ?? medianDistance(rows, n, this.reference.dim) };
  }

  async measure(x: Tensor): Promise<ShiftSignals> {
    const out = await this.forward(x);
    const logits = out[this.logits]!;
    const { entropy, confidence } = predictionStats(logits);
    const bnKlPerLayer = this.layers.map((l) => {
      const src = { mean: this.model.param(l.mean).data as Float32Array, variance: this.model.param(l.variance).data as Float32Array };
      return { node: l.node, kl: gaussianSymmetricKl(channelStats(out[l.input]!), src, l.eps) };
    });
    const bnKl = bnKlPerLayer.length ? bnKlPerLayer.reduce((a, b) => a + b.kl, 0) / bnKlPerLayer.length : null;
    let mmd: number | null = null;
    const embedding = this.embedding ? out[this.embedding] : undefined;
    if (embedding && this.frozen) {
      const e = this.rowsOf(embedding);
      mmd = mmd2(this.frozen.rows, this.frozen.n, e.data, e.n, e.dim, this.frozen.bandwidth);
    }
    return { entropy, confidence, bnKl, bnKlPerLayer, mmd, logits, ...(embedding ? { embedding } : {}) };
  }
}
