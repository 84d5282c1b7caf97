// `refit adapt` on a sequence classifier (BERT-style: token ids in, [batch, classes] logits out):
// the stream is a .npy of token ids [sequences, length] or text (one text or a text pair a row),
// labels (optional) one per sequence, and the model gets its Hugging Face companion inputs made
// inside the graph (withTokenInputs; a pair's token_type_ids from its separator), so the adapters
// feed the ids alone.
import type { RefitModel } from '../model.ts';
import { tensorOf, type Tensor } from '../onnx/tensor.ts';
import { withTokenInputs } from '../onnx/token-companions.ts';
import { defaultLogits } from '../tta/types.ts';
import { readLabels } from './data-files.ts';
import { tokenInputs, readTokenIds, type TokenIds } from './token-inputs.ts';
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
  const { ids, vocab, length, positions } = tokenInputs(model, what);
  const a = readTokenIds(path, vocab, 1, false, text && { ...text, fixedLength: length, positions });
  return tensorOf(ids.dtype, [a.n, a.length], (i) => a.values[i]!);
}

export function tokenStream(model: RefitModel, o: { stream: string; labels?: string; logits?: string; padToken?: number; text?: TextSource }): { model: RefitModel; io: ModelIO; ds: StreamData; padToken: number | undefined } {
  const what = 'refit adapt on a token model';
  const inputs = tokenInputs(model, what);
  const logitsIO = tokenModelIO(model, o.logits, what); // its errors before the data's
  const a = readTokenIds(o.stream, inputs.vocab, 1, false, o.text && { ...o.text, fixedLength: inputs.length, positions: inputs.positions, wantLabels: !o.labels });
  // the adapted model makes its companions in the graph (withTokenInputs), a pair's segments from its separator
  const padToken = o.padToken ?? a.padToken;
  const segmentAfter = a.types ? pairSeparator(model, { ...a, types: a.types, padToken, tokenizer: a.tokenizer! }, o.stream) : undefined;
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
    model: withTokenInputs(model, { ...(padToken !== undefined ? { padToken } : {}), ...(segmentAfter !== undefined ? { segmentAfter } : {}) }),
    padToken,
    io,
    ds: { n: a.n, ids: Array.from({ length: a.n }, (_, i) => String(i)), ...(labels ? { labels } : {}), source: o.stream, format: a.format, batch },
  };
}

/**
 * The separator after which a text pair's second segment starts, for a model that takes
 * token_type_ids (undefined for one that does not: its ids alone say it all), checked to give the
 * tokenizer's own types on every row of the stream (rows [n, length], padded with `pad`).
 */
function pairSeparator(model: RefitModel, a: { values: ArrayLike<number>; types: Uint8Array; length: number; padToken: number | undefined; tokenizer: NonNullable<TokenIds['tokenizer']> }, stream: string): number | undefined {
  if (!model.inputs.some((i) => i.name === 'token_type_ids')) return undefined;
  const t = a.tokenizer;
  const sep = t.segments.separator;
  const refuse = (why: string) => new Error(`${stream}: text pairs (two text columns) for a model that takes token_type_ids: ${why}; choose one text column with --text-column`);
  if (sep === undefined) throw refuse(`${t.path} marks the second segment without a separator token, which the adapted model (fed the ids alone) cannot rebuild`);
  let seen = false;
  for (let i = 0; i < a.types.length; i++) {
    if (i % a.length === 0) seen = false;
    const v = Number(a.values[i]);
    if ((seen && v !== a.padToken ? 1 : 0) !== a.types[i]) throw refuse(`row ${Math.floor(i / a.length) + 1} holds the separator token ${sep} inside a text, so its segments cannot be rebuilt from the ids`);
    if (v === sep) seen = true;
  }
  return sep;
}
