// Text inputs for a token model: `inputs: { texts: ["…", ["a premise", "a hypothesis"], …] }`,
// tokenized by the model's tokenizer (refit serve finds it beside the model or takes --tokenizer;
// ../cli/text-tokens.ts) into ids padded to the request's longest, then checked as any ids are
// (./token-inputs.ts). A pair is one sequence ([CLS] a [SEP] b [SEP]); the served graph rebuilds its
// token_type_ids from the ids (withTokenInputs' segmentAfter).
import { tensorOf, type Tensor } from '../onnx/tensor.ts';
import type { TextInput } from '../text/encode.ts';
import { HttpError } from './inputs.ts';

/** Texts and text pairs to ids [n, length] for one model (one sequence each). */
export type EncodeTexts = (texts: readonly TextInput[]) => { values: ArrayLike<number>; n: number; length: number };

/** The longest text accepted, in characters: a tokenizer's work grows with it, and a model reads only max-length tokens. */
export const MAX_TEXT_CHARS = 100_000;

/** Whether a request's inputs are the text form. */
export function isTextInputs(raw: unknown): raw is { texts: unknown } {
  return !!raw && typeof raw === 'object' && !Array.isArray(raw) && 'texts' in raw;
}

/** The ids of `inputs.texts` as a float64 tensor [n, length] (as parsed JSON ids are), or a 4xx naming the first bad text. */
export function textsToTensor(raw: { texts: unknown }, encode: EncodeTexts | undefined, model: string, maxBatch: number): Tensor {
  const extra = Object.keys(raw).filter((k) => k !== 'texts');
  if (extra.length) throw new HttpError(400, `inputs with texts takes no ${extra.map((k) => `'${k}'`).join(', ')}`, 'schema');
  if (!encode) throw new HttpError(400, `model '${model}' has no tokenizer on this server: send token ids, or start the server with the model's tokenizer (refit serve --tokenizer, or tokenizer.json beside the model)`, 'no-tokenizer');
  const texts = raw.texts;
  if (!Array.isArray(texts) || texts.length === 0) throw new HttpError(400, 'inputs.texts must be a non-empty array of strings (or of text pairs, two strings each)', 'schema');
  if (texts.length > maxBatch) throw new HttpError(413, `batch of ${texts.length} texts is over the limit of ${maxBatch}; split it into smaller requests`, 'batch-limit');
  texts.forEach((t, i) => {
    const pair = Array.isArray(t) && t.length === 2 && t.every((x) => typeof x === 'string');
    if (typeof t !== 'string' && !pair) throw new HttpError(400, `inputs.texts[${i}] is ${t === null ? 'null' : Array.isArray(t) ? `an array of ${t.length} ${t.every((x) => typeof x === 'string') ? 'strings' : 'values that are not all strings'}` : typeof t}; each text must be a string, or a pair of two strings`, 'schema');
    const chars = typeof t === 'string' ? t.length : (t as string[])[0]!.length + (t as string[])[1]!.length;
    if (chars > MAX_TEXT_CHARS) throw new HttpError(413, `inputs.texts[${i}] has ${chars} characters, over the limit of ${MAX_TEXT_CHARS}`, 'text-limit');
  });
  let ids;
  try {
    ids = encode(texts as TextInput[]);
  } catch (e) {
    throw new HttpError(400, `inputs.texts: ${(e as Error).message}`, 'bad-text');
  }
  return tensorOf('float64', [ids.n, ids.length], (i) => ids.values[i]!);
}
