// `refit adapt lm.onnx --method dynamic-eval --stream ids.npy --out scores.csv`: a language model
// reads a stream of token sequences in file order and adapts to it as it reads
// (src/tta/dynamic-eval.ts). A decoder exported with a KV cache runs without it.
// Output: one row per sequence, with its next-token log-loss (nats per token) before the model
// adapted on it, and the unadapted model's log-loss on the same sequence. The summary gives both
// means, weighted by tokens, with their perplexities.
import { extname } from 'node:path';
import { loadModel } from '../model.ts';
import { withTokenInputs } from '../onnx/token-companions.ts';
import { tensorOf, type Tensor } from '../onnx/tensor.ts';
import { createAdapter } from '../tta/index.ts';
import { progressBar, range, scoreLogits, writeTextAtomic } from './common.ts';
import { readTokenIds, tokenInputs } from './token-inputs.ts';
import type { TextSource } from './text-tokens.ts';
import { withoutKvCache } from '../onnx/kv-cache.ts';

export interface LanguageModelScores {
  /** Labelled positions (a next token that is not padding) over the stream. */
  tokens: number;
  /** Mean next-token log-loss, nats per token: adapted (each sequence before its own update), and unadapted. */
  nll: number;
  sourceNll: number;
}

/** Per-sequence log-loss of `ids` [b, T] under logits [b, T, V]; positions whose next token pads are left out. */
function perSequence(z: Float32Array, ids: ArrayLike<number>, b: number, T: number, pad?: number): { sum: number; n: number }[] {
  const V = z.length / (b * T);
  return Array.from({ length: b }, (_, s) => {
    let sum = 0, n = 0;
    for (let t = 0; t + 1 < T; t++) {
      const y = ids[s * T + t + 1]!;
      if (y === pad) continue;
      sum += scoreLogits(z.subarray((s * T + t) * V, (s * T + t + 1) * V), V, [y]).lossSum;
      n++;
    }
    return { sum, n };
  });
}

export async function adaptLanguageModel(modelPath: string, o: { method: string; stream: string; out: string; batchSize: number; padToken?: number; logits?: string; json?: boolean; methodOptions?: Record<string, unknown>; text?: TextSource }): Promise<{ samples: number; batches: number; scores: LanguageModelScores; ms: number; format: string }> {
  const ext = extname(o.out).toLowerCase();
  const given = await loadModel(modelPath);
  const base = withoutKvCache(given); // a model without a cache comes back as it is
  const inputs = tokenInputs(base, `--method ${o.method}`);
  const logits = o.logits ?? base.outputs.find((out) => out.shape?.length === 3)?.name;
  if (!logits) throw new Error(`--method ${o.method} adapts language models: it needs [batch, sequence, vocabulary] logits; this model's outputs are ${base.outputs.map((out) => `${out.name} ${JSON.stringify(out.shape)}`).join(', ')}`);
  const vocab = base.outputs.find((out) => out.name === logits)!.shape?.[2];
  const data = readTokenIds(o.stream, typeof vocab === 'number' ? vocab : inputs.vocab, 2, false, o.text && { ...o.text, fixedLength: inputs.length, positions: inputs.positions });
  const padToken = o.padToken ?? data.padToken;
  const model = withTokenInputs(base, padToken !== undefined ? { padToken } : {});
  const adapter = createAdapter(model, o.method, { logits, ...(padToken !== undefined ? { padToken } : {}), ...o.methodOptions });
  const T = data.length;
  const batches = Math.ceil(data.n / o.batchSize);
  const lines = ext === '.csv' ? ['id,tokens,nll,source_nll'] : [];
  const bar = progressBar(!o.json, 'batches');
  bar?.start(batches, 0, { label: o.method, metrics: '' });
  let tokens = 0, sum = 0, sourceSum = 0, ms = 0;
  try {
    for (let k = 0; k < batches; k++) {
      const idx = range(k * o.batchSize, Math.min((k + 1) * o.batchSize, data.n));
      const ids = Array.from({ length: idx.length * T }, (_, i) => data.values[idx[0]! * T + i]!);
      const x: Tensor = tensorOf(inputs.ids.dtype, [idx.length, T], (i) => ids[i]!);
      // The unadapted model first (the adapter's copy changes, the model does not), then the method.
      const before = perSequence((await model.run({ [model.inputs[0]!.name]: x }, { outputs: [logits] }))[logits]!.data as Float32Array, ids, idx.length, T, padToken);
      const t0 = performance.now();
      const r = await adapter.predict(x);
      ms += performance.now() - t0;
      const adapted = perSequence(r.logits.data as Float32Array, ids, idx.length, T, padToken);
      idx.forEach((id, s) => {
        const { sum: a, n } = adapted[s]!, b = before[s]!.sum;
        tokens += n; sum += a; sourceSum += b;
        const row = { id, tokens: n, nll: +(a / Math.max(1, n)).toFixed(6), source_nll: +(b / Math.max(1, n)).toFixed(6) };
        lines.push(ext === '.csv' ? Object.values(row).join(',') : JSON.stringify(row));
      });
      bar?.update(k + 1, { metrics: `log-loss ${(sum / Math.max(1, tokens)).toFixed(3)} (unadapted ${(sourceSum / Math.max(1, tokens)).toFixed(3)})` });
    }
  } finally {
    bar?.stop();
    await adapter.release();
    await Promise.all([model.release(), base.release(), given.release()]);
  }
  writeTextAtomic(o.out, lines.join('\n') + '\n');
  return { samples: data.n, batches, scores: { tokens, nll: sum / Math.max(1, tokens), sourceNll: sourceSum / Math.max(1, tokens) }, ms: ms / Math.max(1, batches), format: data.format };
}
