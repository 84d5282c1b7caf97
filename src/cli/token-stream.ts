// `refit adapt` on a sequence classifier (BERT-style: token ids in, [batch, classes] logits out):
// the stream is a .npy of token ids [sequences, length], labels (optional) one per sequence, and
// the model gets its Hugging Face companion inputs made inside the graph (withTokenInputs), so
// the adapters feed the ids alone.
import type { RefitModel } from '../model.ts';
import { tensorOf, type Tensor } from '../onnx/tensor.ts';
import { withTokenInputs } from '../onnx/token-companions.ts';
import { defaultLogits } from '../tta/types.ts';
import { readLabels } from './data-files.ts';
import { tokenInputs, readTokenIds } from './token-inputs.ts';
import type { TextSource } from './text-tokens.ts';
import { classIds } from './text-labels.ts';
import type { ModelIO } from './common.ts';

/** What `refit adapt` reads of a stream, images or tokens. */
export interface StreamData {
  n: number;
  ids: string[];
  labels?: Int32Array;
  classes?: string[];
  source: string;
  format: string;
  /** The model's input for these samples. */
  batch(idx: readonly number[]): Tensor;
}

export { TOKEN_METHODS } from '../tta/common.ts';

/** A sequence classifier's input and logits, as modelIO gives them for image models; `what` names the command in errors. */
export function tokenModelIO(model: RefitModel, logitsName: string | undefined, what: string, length: number | null = null): ModelIO {
  const inputs = tokenInputs(model, what);
  const logits = logitsName ?? defaultLogits(model.outputs);
  const out = model.outputs.find((v) => v.name === logits);
  if (!out) throw new Error(`the model has no output '${logits}' (outputs: ${model.outputs.map((v) => v.name).join(', ')})`);
  if (out.shape && out.shape.length !== 2) throw new Error(`${what} classifies sequences and needs [batch, classes] logits; output '${logits}' has shape ${JSON.stringify(out.shape)}`);
  const c = out.shape?.[1];
  return { spec: { input: inputs.ids.name, dims: [length] }, logits, classes: typeof c === 'number' && c > 0 ? c : null };
}

/** In-distribution sequences for a token model (--source): a .npy of ids as one [M, length] tensor of the model's id type. */
export function tokenSourceIds(model: RefitModel, path: string, what: string, text?: TextSource): Tensor {
  const { ids, vocab, length } = tokenInputs(model, what);
  const a = readTokenIds(path, vocab, 1, false, text && { ...text, fixedLength: length });
  return tensorOf(ids.dtype, [a.n, a.length], (i) => a.values[i]!);
}

export function tokenStream(model: RefitModel, o: { stream: string; labels?: string; logits?: string; padToken?: number; text?: TextSource }): { model: RefitModel; io: ModelIO; ds: StreamData; padToken: number | undefined } {
  const what = 'refit adapt on a token model';
  const inputs = tokenInputs(model, what);
  const logitsIO = tokenModelIO(model, o.logits, what); // its errors before the data's
  const a = readTokenIds(o.stream, inputs.vocab, 1, false, o.text && { ...o.text, fixedLength: inputs.length, wantLabels: !o.labels });
  // the adapted model makes its companions in the graph (withTokenInputs): one segment only
  if (a.types) throw new Error(`${o.stream}: refit adapt reads one text a row; this file gives pairs (two text columns): choose one with --text-column`);
  const padToken = o.padToken ?? a.padToken;
  const io = { ...logitsIO, spec: { ...logitsIO.spec, dims: [a.length] } };
  const classes = io.classes;
  let labels: Int32Array | undefined;
  if (a.labels || o.labels) {
    labels = a.labels ? classIds(a.labels, o.stream, o.text!.modelPath).ids : readLabels(o.labels!);
    if (labels.length !== a.n) throw new Error(`${o.labels}: ${labels.length} labels for ${a.n} sequences in ${o.stream}`);
    const bad = classes === null ? -1 : labels.findIndex((y) => y >= classes);
    if (bad >= 0) throw new Error(`${o.labels ?? o.stream}: label ${bad} is ${labels[bad]}, but the model has ${classes} classes`);
  }
  const { dtype } = inputs.ids;
  const batch = (idx: readonly number[]): Tensor => {
    const v = (i: number) => a.values[idx[Math.floor(i / a.length)]! * a.length + (i % a.length)]!;
    return tensorOf(dtype, [idx.length, a.length], v);
  };
  return {
    model: withTokenInputs(model, padToken !== undefined ? { padToken } : {}),
    padToken,
    io,
    ds: { n: a.n, ids: Array.from({ length: a.n }, (_, i) => String(i)), ...(labels ? { labels } : {}), source: o.stream, format: a.format, batch },
  };
}
