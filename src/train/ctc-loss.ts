// Connectionist temporal classification (Graves et al., ICML 2006): the loss wav2vec 2.0, HuBERT
// and other CTC speech recognisers are fine-tuned with, as PyTorch's F.ctc_loss computes it. The
// forward (alpha) recursion in log space is unrolled over the compiled number of frames, so the
// existing gradient rules differentiate it: per frame a shift by one and by two label positions,
// a log-sum-exp of the three ways in, plus the frame's log-probability of each label position.
//
// "Impossible" is a large negative number (NEG) rather than −∞: −∞ makes the log-sum-exp's
// gradient exp(−∞ − (−∞)) = NaN wherever all three ways in are impossible.
import { f32, i64 } from '../onnx/tensor.ts';
import type { LossSpec } from './loss-spec.ts';
import { split } from '../autodiff/lower/util.ts';

const NEG = -1e30;
/** A per-sample loss above this came from no path at all (too few frames for the labels). */
const IMPOSSIBLE = 1e29;

export interface CtcOptions {
  /** Frame logits [batch, frames, classes] (the model's output: wav2vec 2.0's `logits`). Log-softmax is applied here. */
  logits: string;
  /** Integer labels [batch, maxLabelLength] (default input name 'y'), each row's labels first, then `pad`. */
  labels?: string;
  /** The label that fills a row after its labels. Default −100, as PyTorch's ignore index. */
  pad?: number;
  /** The blank class. Default 0 (the `<pad>` token of HF's wav2vec 2.0 vocabularies). */
  blank?: number;
  /** Label positions per row; default the number of frames (a row cannot hold more labels than frames). */
  maxLabelLength?: number;
  /** Name of an int64 [batch] input with each row's number of valid frames (padded audio); default every frame. */
  inputLengths?: string;
  /** 'mean' (PyTorch's default: each row's loss over its label count, then the batch mean) or 'sum'. */
  reduction?: 'mean' | 'sum';
  /** A row no alignment can produce gets loss 0 (PyTorch's zero_infinity) instead of +∞. */
  zeroInfinity?: boolean;
}

/** PyTorch's `F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), labels, input_lengths, label_lengths, blank, reduction, zero_infinity)`. */
export function ctc(o: CtcOptions): LossSpec {
  const labels = o.labels ?? 'y';
  const pad = o.pad ?? -100, blank = o.blank ?? 0;
  for (const [k, v] of [['pad', pad], ['blank', blank]] as const) if (!Number.isInteger(v)) throw new Error(`ctc: ${k} must be an integer, got ${v}`);
  if (o.maxLabelLength !== undefined && !(Number.isInteger(o.maxLabelLength) && o.maxLabelLength >= 1)) throw new Error(`ctc: maxLabelLength must be a positive integer, got ${o.maxLabelLength}`);
  const labelLength = (s: (t: string) => number[]) => o.maxLabelLength ?? s(o.logits)[1]!;
  return {
    describe: `ctc(${o.logits}, ${labels})`,
    reads: [o.logits],
    inputs: [
      { name: labels, dtype: 'int64', shape: (s) => [s(o.logits)[0]!, labelLength(s)] },
      ...(o.inputLengths ? [{ name: o.inputLengths, dtype: 'int64' as const, shape: (s: (t: string) => number[]) => [s(o.logits)[0]!] }] : []),
    ],
    build(ctx) {
      const em = ctx.em;
      const dims = ctx.shape(o.logits);
      if (dims.length !== 3) throw new Error(`ctc expects '${o.logits}' to be [batch, frames, classes] logits, got shape [${dims}]`);
      const [N, T, C] = dims as [number, number, number];
      if (blank < 0 || blank >= C) throw new Error(`ctc: blank ${blank} is not a class of '${o.logits}' (${C} classes)`);
      const S = labelLength(ctx.shape), L = 2 * S + 1;
      const y = ctx.input(labels);
      const int = (v: number) => em.constant(i64([], [v]));
      const neg = (shape: number[]) => em.constant(f32(shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NEG)), 'ctc_neg');

      // Each row's labels, blanks between and around: [blank, y1, blank, y2, …, blank], [N, L].
      const valid = em.op('Not', [em.op('Equal', [y, int(pad)])]);
      const ySafe = em.op('Where', [valid, y, int(blank)]);
      const blanks = em.constant(i64([N, S, 1], new Array(N * S).fill(blank)), 'ctc_blanks');
      const pairs = em.op('Concat', [blanks, em.unsqueeze(ySafe, [2])], { axis: 2 });
      const ext = em.op('Concat', [em.reshape(pairs, [N, 2 * S]), em.constant(i64([N, 1], new Array(N).fill(blank)))], { axis: 1 });
      // A label may be reached from two positions back unless it is a blank or repeats that label.
      const prev2 = em.op('Concat', [em.constant(i64([N, 2], new Array(2 * N).fill(blank))), em.op('Slice', [ext, em.ints([0]), em.ints([L - 2]), em.ints([1])])], { axis: 1 });
      const skipOk = em.op('And', [em.op('Not', [em.op('Equal', [ext, int(blank)])]), em.op('Not', [em.op('Equal', [ext, prev2])])]);
      const skipMask = em.op('Where', [skipOk, em.scalar(0), em.scalar(NEG)]);

      // The frames' log-probabilities of each label position: [N, T, L], then one [N, L] per frame.
      const logp = em.op('LogSoftmax', [o.logits], { axis: -1 });
      const idx = em.op('Expand', [em.unsqueeze(ext, [1]), em.ints([N, T, L])]);
      const emit = em.op('GatherElements', [logp, idx], { axis: 2 });
      const frames = (T === 1 ? [emit] : split(em, emit, new Array(T).fill(1), 1)).map((f) => em.squeeze(f, [1]));

      const lengths = o.inputLengths ? ctx.input(o.inputLengths) : null;
      const shift = (a: string, k: number) => em.op('Concat', [neg([N, k]), em.op('Slice', [a, em.ints([0]), em.ints([L - k]), em.ints([1])])], { axis: 1 });
      const start = em.constant(f32([1, L], Array.from({ length: L }, (_, s) => (s < 2 ? 0 : NEG))));
      let alpha = em.add(frames[0]!, start);
      for (let t = 1; t < T; t++) {
        const ways = [alpha, L > 1 ? shift(alpha, 1) : neg([N, L]), L > 2 ? em.add(shift(alpha, 2), skipMask) : neg([N, L])];
        const inflow = em.reduce('ReduceLogSumExp', em.op('Concat', ways.map((w) => em.unsqueeze(w, [0])), { axis: 0 }), [0], false);
        const next = em.add(inflow, frames[t]!);
        alpha = lengths ? em.op('Where', [em.unsqueeze(em.op('Less', [int(t), lengths]), [1]), next, alpha]) : next;
      }

      // log p(labels) = logsumexp of the last label and the blank after it, at each row's length.
      const count = em.reduce('ReduceSum', em.op('Cast', [valid], { to: 7 }), [1], false); // [N] int64
      const last = em.unsqueeze(em.mul(count, int(2)), [1]); // index of the final blank
      const beforeLast = em.op('Max', [em.sub(last, em.constant(i64([1, 1], [1]))), em.constant(i64([1, 1], [0]))]);
      const hasLabel = em.op('Greater', [em.unsqueeze(count, [1]), int(0)]);
      const ends = em.op('Concat', [
        em.op('GatherElements', [alpha, last], { axis: 1 }),
        em.add(em.op('GatherElements', [alpha, beforeLast], { axis: 1 }), em.op('Where', [hasLabel, em.scalar(0), em.scalar(NEG)])),
      ], { axis: 1 });
      let perRow = em.neg(em.reduce('ReduceLogSumExp', ends, [1], false)); // [N]
      perRow = em.op('Where', [em.op('Greater', [perRow, em.scalar(IMPOSSIBLE)]), em.scalar(o.zeroInfinity ? 0 : Infinity), perRow]);
      if ((o.reduction ?? 'mean') === 'sum') return em.reduce('ReduceSum', perRow, [0], false);
      const perLabel = em.div(perRow, em.op('Max', [em.op('Cast', [count], { to: 1 }), em.scalar(1)]));
      return em.div(em.reduce('ReduceSum', perLabel, [0], false), em.scalar(N));
    },
  };
}
