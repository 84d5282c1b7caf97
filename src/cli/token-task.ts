// `refit train --task next-token`: a language model's next-token loss on token sequences from a
// .npy file of integer ids, [sequences, length] (tokenize with the model's own tokenizer first:
// refit reads ids, not text). Position t's label is token t + 1; the last position and positions
// whose next token is --pad-token have none (-100, as PyTorch's ignore_index).
import { existsSync } from 'node:fs';
import type { RefitModel } from '../model.ts';
import { i64, tensor } from '../onnx/tensor.ts';
import { tokenCrossEntropy } from '../train/losses.ts';
import { parseNpy } from './data-files.ts';
import { scoreLogits } from './common.ts';
import { readBytes } from '../data/idx-node.ts';
import type { TrainTask } from './train-task.ts';

export interface NextTokenOptions {
  data: string;
  logits?: string;
  padToken?: number;
}

const IGNORE = -100;

export function nextTokenTask(model: RefitModel, o: NextTokenOptions): TrainTask {
  const ids = model.inputs.filter((i) => i.dtype === 'int64' || i.dtype === 'int32');
  if (model.inputs.length !== 1 || ids.length !== 1) {
    throw new Error(`--task next-token feeds one input of token ids; this model has ${model.inputs.map((i) => `${i.name} (${i.dtype})`).join(', ')}; use the library (losses.tokenCrossEntropy) for more`);
  }
  const input = ids[0]!;
  const logits = o.logits ?? model.outputs.find((out) => out.shape?.length === 3)?.name;
  if (!logits || !model.outputs.some((out) => out.name === logits)) {
    throw new Error(`--task next-token needs [batch, sequence, vocabulary] logits; name the output with --logits (outputs: ${model.outputs.map((out) => `${out.name} ${JSON.stringify(out.shape)}`).join(', ')})`);
  }
  const vocabDim = model.outputs.find((out) => out.name === logits)!.shape?.[2];
  const vocab = typeof vocabDim === 'number' && vocabDim > 0 ? vocabDim : null;

  if (!existsSync(o.data)) throw new Error(`data not found: ${o.data}`);
  if (!o.data.toLowerCase().endsWith('.npy')) throw new Error(`${o.data}: --task next-token reads token ids from a .npy file of integers [sequences, length] (tokenize with the model's tokenizer first)`);
  const a = parseNpy(readBytes(o.data, 'NPY file'), o.data);
  if (a.dtype !== 'int32' && a.dtype !== 'int64') throw new Error(`${o.data}: token ids must be int32 or int64, got ${a.dtype} (np.asarray(ids, dtype=np.int64))`);
  if (a.shape.length !== 2 || a.shape[1]! < 2) throw new Error(`${o.data}: token ids must have shape [sequences, length] with length ≥ 2, got [${a.shape.join(', ')}]`);
  const [n, T] = a.shape as [number, number];
  for (let i = 0; i < a.values.length; i++) {
    const v = a.values[i]!;
    if (v < 0 || (vocab !== null && v >= vocab)) throw new Error(`${o.data}: token ${v} (sequence ${Math.floor(i / T)}, position ${i % T}) is outside the model's vocabulary [0, ${vocab ?? '?'})`);
  }
  if (o.padToken !== undefined && !(Number.isInteger(o.padToken) && o.padToken >= 0)) throw new Error(`--pad-token must be a non-negative integer, got ${o.padToken}`);
  const labels = new Float64Array(n * T);
  for (let s = 0; s < n; s++) {
    for (let t = 0; t < T; t++) {
      const next = t + 1 < T ? a.values[s * T + t + 1]! : IGNORE;
      labels[s * T + t] = next === o.padToken ? IGNORE : next;
    }
  }
  const pick = (src: ArrayLike<number>, idx: number[]) => idx.flatMap((i) => Array.from({ length: T }, (_, t) => src[i * T + t]!));
  const rows = (src: ArrayLike<number>, idx: number[]) => i64([idx.length, T], pick(src, idx));
  const tokens = (idx: number[]) => (input.dtype === 'int32' ? tensor('int32', [idx.length, T], Int32Array.from(pick(a.values, idx))) : rows(a.values, idx));
  /** Loss sum, correct and scored positions of logits [b, T, V] against the labels of `idx`. */
  const tally = (z: Float32Array, idx: number[]) => {
    const V = z.length / (idx.length * T);
    let lossSum = 0, correct = 0, scored = 0;
    idx.forEach((s, k) => {
      for (let t = 0; t < T; t++) {
        const y = labels[s * T + t]!;
        if (y === IGNORE) continue;
        const r = scoreLogits(z.subarray((k * T + t) * V, (k * T + t + 1) * V), V, [y]);
        lossSum += r.lossSum;
        correct += r.correct;
        scored++;
      }
    });
    return { lossSum, correct, scored };
  };
  return {
    data: { source: o.data, format: 'npy token ids', samples: n, sampleShape: [T] },
    logits,
    loss: tokenCrossEntropy({ logits, labels: 'refit_labels' }),
    feeds: (idx) => ({ [input.name]: tokens(idx), refit_labels: rows(labels, idx) }),
    score(z, idx) {
      const r = tally(z.data as Float32Array, idx);
      return { correct: r.correct, scored: r.scored };
    },
    async evaluate(m, idx, bs) {
      let lossSum = 0, correct = 0, scored = 0;
      for (let s = 0; s < idx.length; s += bs) {
        const part = idx.slice(s, s + bs);
        const out = (await m.run({ [input.name]: tokens(part) }, { outputs: [logits] }))[logits]!;
        const r = tally(out.data as Float32Array, part);
        lossSum += r.lossSum; correct += r.correct; scored += r.scored;
      }
      return { loss: lossSum / Math.max(1, scored), accuracy: correct / Math.max(1, scored) };
    },
  };
}
