// T3A (Iwasawa & Matsuo, NeurIPS 2021, "Test-Time Classifier Adjustment Module for
// Model-Agnostic Domain Generalization"): output-only. The linear head is replaced by a
// prototype classifier over the penultimate features, as the paper's code (DomainBed's
// algorithms.T3A) does:
//   warm-up supports = the head's weight rows (one per class), labelled by the head's own
//   prediction on them (bias included), with that prediction's entropy;
//   each batch: append the batch's features z, one-hot argmax labels and entropies of the
//   model's logits; per class keep the `filterK` supports with the lowest entropy
//   (filterK = 100, DomainBed's default; −1 keeps all); prototypes = Σ normalize(support)·label,
//   normalised per class; logits = z · prototypes (no bias).
// The batch is added to the supports before it is classified, as in the code.
// Deviation: the code's filter_K = −1 slices off each class's last support ([:−1]); here −1 keeps all.
// The prototype arithmetic runs in TypeScript: at most C·K supports of width D (10·100·128
// multiply-adds per batch), tiny next to the forward pass.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32 } from '../onnx/tensor.ts';
import { parseOptions, checkBatch, softmaxRows, allFinite } from './common.ts';
import { resolveOutputs, logitsAndFeatures } from './output-only.ts';
import type { Adapter, AdaptResult, AdapterState } from './types.ts';

export const T3A_DEFAULTS = { filterK: 100 } as const;

export const t3aSchema = z.object({
  /** Supports kept per class (lowest entropy first); −1 keeps all. */
  filterK: z.number().int().refine((k) => k === -1 || k > 0, 'must be a positive integer or -1').default(T3A_DEFAULTS.filterK),
  /** The head's weight initializer ([D, C] for MatMul or [C, D] for Gemm transB=1); default: found from the logits. */
  headWeight: z.string().optional(),
  headBias: z.string().optional(),
  logits: z.string().optional(),
  features: z.string().optional(),
  mode: z.enum(['continual', 'episodic']).default('continual'),
  seed: z.number().int().default(0),
});
export type T3AOptions = z.input<typeof t3aSchema>;

interface Head { W: Float32Array; b: Float32Array | null; C: number; D: number }

/** Find the linear head that produces `logits` (MatMul [+ Add] or Gemm) and return W as [C, D] rows. */
export function findHead(model: RefitModel, logits: string, weight?: string, bias?: string): Head {
  const g = model.ir.graph;
  const producer = (t: string) => g.nodes.find((n) => n.outputs.includes(t));
  const init = (t: string | undefined) => (t ? g.initializers.get(t) : undefined);
  let wName = weight, bName = bias, transposed = false; // transposed: stored [C, D]
  if (!wName) {
    let node = producer(logits);
    while (node && node.opType === 'Identity') node = producer(node.inputs[0]!);
    if (node?.opType === 'Add') {
      const [a, b] = node.inputs as [string, string];
      bName = init(b) ? b : init(a) ? a : undefined;
      node = producer(init(b) ? a : b);
    }
    if (node?.opType === 'MatMul' && init(node.inputs[1])) wName = node.inputs[1];
    else if (node?.opType === 'Gemm' && init(node.inputs[1])) {
      wName = node.inputs[1];
      const tb = node.attrs.transB;
      transposed = !!(tb && tb.kind === 'int' && tb.value === 1);
      if (node.inputs[2] && init(node.inputs[2])) bName = node.inputs[2];
    }
    if (!wName) throw new Error(`t3a: cannot find the linear head producing '${logits}' (expected MatMul/Gemm with an initializer weight, optionally + Add); pass headWeight (and headBias)`);
  } else {
    const t = init(wName);
    if (!t) throw new Error(`t3a: headWeight '${wName}' is not an initializer`);
  }
  const t = init(wName)!;
  if (t.dims.length !== 2) throw new Error(`t3a: head weight '${wName}' must be 2-D, got [${t.dims}]`);
  const [r, c] = t.dims as [number, number];
  const C = transposed ? r : c, D = transposed ? c : r;
  const src = t.data as Float32Array;
  const W = new Float32Array(C * D);
  for (let k = 0; k < C; k++) for (let d = 0; d < D; d++) W[k * D + d] = transposed ? src[k * D + d]! : src[d * C + k]!;
  const bt = init(bName);
  if (bt && bt.data.length !== C) throw new Error(`t3a: head bias '${bName}' has ${bt.data.length} elements, expected ${C}`);
  return { W, b: bt ? (bt.data as Float32Array).slice() : null, C, D };
}

function entropyRows(p: Float64Array, C: number): Float64Array {
  const n = p.length / C;
  const e = new Float64Array(n);
  for (let i = 0; i < n; i++) { let s = 0; for (let c = 0; c < C; c++) { const v = p[i * C + c]!; if (v > 0) s -= v * Math.log(v); } e[i] = s; }
  return e;
}

function argmax(row: ArrayLike<number>, off: number, C: number): number {
  let best = 0;
  for (let c = 1; c < C; c++) if (row[off + c]! > row[off + best]!) best = c;
  return best;
}

export class T3A implements Adapter {
  readonly name = 't3a';
  private readonly o: z.output<typeof t3aSchema>;
  private readonly names: { logits: string; features: string };
  private readonly head: Head;
  private supports: Float32Array = new Float32Array(0);
  private labels: Int32Array = new Int32Array(0);
  private ent: Float64Array = new Float64Array(0);
  private batches = 0;
  private resets = 0;

  constructor(readonly model: RefitModel, options: T3AOptions = {}) {
    this.o = parseOptions('t3a', t3aSchema, options);
    this.names = resolveOutputs('t3a', model, this.o.logits, this.o.features);
    this.head = findHead(model, this.names.logits, this.o.headWeight, this.o.headBias);
    this.warmup();
  }

  private warmup(): void {
    const { W, b, C, D } = this.head;
    const logits = new Float32Array(C * C);
    for (let i = 0; i < C; i++) for (let k = 0; k < C; k++) {
      let s = b ? b[k]! : 0;
      for (let d = 0; d < D; d++) s += W[i * D + d]! * W[k * D + d]!;
      logits[i * C + k] = s;
    }
    const p = softmaxRows(logits, C);
    this.supports = W.slice();
    this.labels = Int32Array.from({ length: C }, (_, i) => argmax(logits, i * C, C));
    this.ent = entropyRows(p, C);
  }

  /** Number of supports kept now. */
  get supportCount(): number { return this.labels.length; }

  async predict(x: Tensor): Promise<AdaptResult> {
    checkBatch(this.name, this.model, x);
    const t0 = performance.now();
    if (this.o.mode === 'episodic' && this.batches > 0) { this.warmup(); this.resets++; }
    this.batches++;
    const { logits, features, C, D, n } = await logitsAndFeatures(this.model, x, this.names);
    if (C !== this.head.C || D !== this.head.D) throw new Error(`t3a: head is ${this.head.C}×${this.head.D} but the model gives ${C} classes and ${D} features`);
    // Append the batch, then select supports per class by entropy.
    const p = softmaxRows(logits, C);
    const e = entropyRows(p, C);
    const m = this.labels.length;
    const allS = new Float32Array((m + n) * D); allS.set(this.supports); allS.set(features, m * D);
    const allL = new Int32Array(m + n); allL.set(this.labels);
    const allE = new Float64Array(m + n); allE.set(this.ent);
    for (let i = 0; i < n; i++) { allL[m + i] = argmax(logits, i * C, C); allE[m + i] = e[i]!; }
    const keep: number[] = [];
    for (let c = 0; c < C; c++) {
      const idx: number[] = [];
      for (let i = 0; i < m + n; i++) if (allL[i] === c) idx.push(i);
      idx.sort((a, b) => allE[a]! - allE[b]! || a - b); // torch.sort is not stable; ties are measure-zero
      keep.push(...(this.o.filterK === -1 ? idx : idx.slice(0, this.o.filterK)));
    }
    this.supports = new Float32Array(keep.length * D);
    keep.forEach((i, r) => this.supports.set(allS.subarray(i * D, (i + 1) * D), r * D));
    this.labels = Int32Array.from(keep, (i) => allL[i]!);
    this.ent = Float64Array.from(keep, (i) => allE[i]!);
    // Prototypes: Σ normalize(support) per class, then each class vector normalised.
    const proto = new Float64Array(C * D);
    for (let r = 0; r < keep.length; r++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += this.supports[r * D + d]! ** 2;
      const inv = 1 / Math.max(Math.sqrt(s), 1e-12), c = this.labels[r]!;
      for (let d = 0; d < D; d++) proto[c * D + d]! += this.supports[r * D + d]! * inv;
    }
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += proto[c * D + d]! ** 2;
      const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
      for (let d = 0; d < D; d++) proto[c * D + d]! *= inv;
    }
    const out = new Float32Array(n * C);
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += features[i * D + d]! * proto[c * D + d]!;
      out[i * C + c] = s;
    }
    return { logits: f32([n, C], out), info: { used: n, skipped: 0, resets: this.resets, ms: performance.now() - t0, extra: { supports: keep.length } } };
  }

  reset(): void {
    this.warmup();
    this.resets++;
  }

  async save(): Promise<AdapterState> {
    return {
      method: this.name, version: 1,
      tensors: { supports: this.supports.slice(), labels: Float32Array.from(this.labels), entropy: Float32Array.from(this.ent) },
      meta: { batches: this.batches, resets: this.resets, entropy64: JSON.stringify(Array.from(this.ent)) },
    };
  }

  async load(state: AdapterState): Promise<void> {
    if (state?.method !== this.name) throw new Error(`t3a.load: state was saved by '${String(state?.method)}', not 't3a'`);
    const { supports, labels } = state.tensors ?? {};
    const D = this.head.D, C = this.head.C;
    if (!(supports instanceof Float32Array) || !(labels instanceof Float32Array) || supports.length !== labels.length * D) throw new Error(`t3a.load: supports must be [M, ${D}] with M labels`);
    if (allFinite(supports) >= 0) throw new Error('t3a.load: supports have a non-finite value');
    if (labels.some((l) => !Number.isInteger(l) || l < 0 || l >= C)) throw new Error(`t3a.load: labels must be integers in [0, ${C})`);
    const ent = JSON.parse(String(state.meta?.entropy64 ?? '[]')) as number[];
    if (!Array.isArray(ent) || ent.length !== labels.length) throw new Error('t3a.load: entropies do not match the supports');
    this.supports = supports.slice();
    this.labels = Int32Array.from(labels);
    this.ent = Float64Array.from(ent);
    this.batches = typeof state.meta.batches === 'number' ? state.meta.batches : 0;
    this.resets = typeof state.meta.resets === 'number' ? state.meta.resets : 0;
  }

  async release(): Promise<void> {}
}
