// `refit train encoder_model.onnx --decoder decoder_model[_merged].onnx --task seq2seq`: an
// encoder-decoder exported as two files (optimum's layout for Marian, T5, BART and the translation
// and summarisation models transformers.js ships) trained as one graph (../onnx/join.ts), on
// source ids [n, source length] (--data; for an encoder of float features such as Whisper's
// input_features, those values [n, …]) and target ids [n, target length] (--labels). As
// Hugging Face trains them: the decoder reads the targets shifted right behind
// --decoder-start (the model's decoder_start_token_id), and each position learns the target
// token there; padding in the targets is not scored. The trained weights (or an adapter folded
// into them) go back into both files, which keep their names and (a merged decoder) their KV cache.
// Without --decoder, the model is an encoder-decoder exported as one graph (torch.onnx.export of
// the whole model: input_ids and decoder_input_ids in, logits out), trained and written as it is.
import { basename, join } from 'node:path';
import { loadModel, RefitModel } from '../model.ts';
import { f32, type Tensor } from '../onnx/tensor.ts';
import { existsSync } from 'node:fs';
import { readBytes } from '../data/idx-node.ts';
import { parseNpy } from './data-files.ts';
import { joinModels, splitWeights } from '../onnx/join.ts';
import { kvCacheOf, withoutKvCache, writeWeightsBack } from '../onnx/kv-cache.ts';
import { tokenInputs, readTokenIds, tokenFeeds } from './token-inputs.ts';
import { IGNORE, idRows, labelsPerPosition } from './token-task.ts';
import type { TrainTask } from './train-task.ts';
import type { TextSource } from './text-tokens.ts';

export interface Seq2seqOptions {
  /** Source token ids [n, source length]. */
  data: string;
  /** Target token ids [n, target length]. */
  targets?: string;
  padToken?: number;
  /** The decoder's first input token (config.json's decoder_start_token_id); default the pad token. */
  decoderStart?: number;
  /** Text data (source and targets, one a line): the tokenizer (./text-tokens.ts). */
  text?: TextSource;
}

/** The two files joined for training, and how to write what trained back into them. */
export interface Seq2seqPair {
  joined: RefitModel;
  /** The decoder's input that takes the target ids in the joined model (decoder_input_ids). */
  decoderIds: string;
  /** Whether the decoder file has a KV cache (trained without it, written back with it). */
  cached: boolean;
  /** Whether a weight of the joined model can be written back (not one defined only inside a merged decoder's If branch). */
  writable(name: string): boolean;
  /** Write the weights of `trained` (default `joined`: the same graph, weights trained or adapters folded in) into copies of both files in folder `out`. */
  write(out: string, write: (model: RefitModel, path: string) => Promise<void>, trained?: RefitModel): Promise<string[]>;
  release(): Promise<void>;
}

const LINKS = { hidden: 'encoder_hidden_states', mask: 'encoder_attention_mask' };

export async function loadSeq2seq(encoderPath: string, decoderPath: string, opts: { keepTies?: boolean | 'auto' } = {}): Promise<Seq2seqPair> {
  const encoder = await loadModel(encoderPath, opts);
  const decoderFile = await loadModel(decoderPath, opts);
  const decoder = kvCacheOf(decoderFile) ? withoutKvCache(decoderFile) : decoderFile;
  const names = (m: RefitModel) => m.inputs.map((i) => i.name).join(', ');
  if (!decoder.inputs.some((i) => i.name === LINKS.hidden)) {
    throw new Error(`${decoderPath}: a seq2seq decoder reads the encoder's output as '${LINKS.hidden}'; its inputs are ${names(decoder)}`);
  }
  const hidden = encoder.outputs.find((o) => o.name === 'last_hidden_state')?.name ?? encoder.outputs[0]!.name;
  const links: Record<string, string> = { [LINKS.hidden]: hidden };
  if (decoder.inputs.some((i) => i.name === LINKS.mask)) {
    if (!encoder.inputs.some((i) => i.name === 'attention_mask')) throw new Error(`${decoderPath} reads '${LINKS.mask}', and ${encoderPath} takes no attention_mask to give it`);
    links[LINKS.mask] = 'attention_mask';
  }
  const j = joinModels(encoder.ir, decoder.ir, { links });
  const decoderIds = j.renamed.get('input_ids') ?? 'input_ids';
  const joined = new RefitModel(j.model, encoder.sessionOptions);
  const inFile = (name: string) => decoderFile.ir.graph.initializers.has(name);
  const decoderName = new Map([...decoder.ir.graph.initializers.keys()].map((n) => [j.renamed.get(n) ?? n, n]));
  return {
    joined,
    decoderIds,
    cached: decoder !== decoderFile,
    writable: (name) => encoder.ir.graph.initializers.has(name) || inFile(decoderName.get(name) ?? name),
    async write(out, write, trained = joined) {
      const parts = splitWeights(trained, encoder, decoder, j);
      const encoderOut = join(out, basename(encoderPath)), decoderOut = join(out, basename(decoderPath));
      await write(encoder, encoderOut);
      if (decoder !== decoderFile) writeWeightsBack(decoderFile, decoder, parts.second.filter(inFile)); // the file keeps its cache
      await write(decoderFile, decoderOut);
      return [encoderOut, decoderOut];
    },
    async release() {
      await Promise.all([joined.release(), encoder.release(), decoder.release(), decoderFile.release()]);
    },
  };
}

/** The decoder's ids in an encoder-decoder exported as one graph, as transformers names them. */
export const ONE_FILE_DECODER_IDS = 'decoder_input_ids';

/** An encoder-decoder exported as one graph: the pair is the file itself, written back under its own name. */
export async function loadSeq2seqFile(path: string, opts: { keepTies?: boolean | 'auto' } = {}): Promise<Seq2seqPair> {
  const model = await loadModel(path, opts);
  if (!model.inputs.some((i) => i.name === ONE_FILE_DECODER_IDS)) {
    await model.release();
    throw new Error(`${path}: --task seq2seq takes an encoder-decoder: give the decoder file with --decoder (the model argument is the encoder), or a model exported as one graph that takes '${ONE_FILE_DECODER_IDS}'; this one's inputs are ${model.inputs.map((i) => i.name).join(', ')}`);
  }
  return {
    joined: model,
    decoderIds: ONE_FILE_DECODER_IDS,
    cached: false,
    writable: (name) => model.ir.graph.initializers.has(name),
    async write(out, write, trained = model) {
      const file = join(out, basename(path));
      await write(trained, file);
      return [file];
    },
    release: () => model.release(),
  };
}

export function seq2seqTask(pair: Seq2seqPair, o: Seq2seqOptions): TrainTask {
  const model = pair.joined;
  if (!o.targets) throw new Error('--task seq2seq learns the target sequences: give their token ids with --labels <file> (.npy [sequences, length])');
  const source = sourceOf(pair, o);
  const logits = model.outputs.find((v) => v.shape?.length === 3)?.name ?? model.outputs[0]!.name;
  const vocabDim = model.outputs.find((v) => v.name === logits)?.shape?.[2];
  const vocab = typeof vocabDim === 'number' && vocabDim > 0 ? vocabDim : null;
  const tgt = readTokenIds(o.targets, vocab, 1, false, o.text);
  const pad = o.padToken ?? tgt.padToken;
  const start = o.decoderStart ?? pad;
  if (start === undefined) throw new Error("--task seq2seq: give --decoder-start <id>, the model's decoder_start_token_id (config.json; Marian and T5 start with the pad id, BART with 2), or --pad-token when it is the pad id");
  if (!Number.isInteger(start) || start < 0 || (vocab !== null && start >= vocab)) throw new Error(`--decoder-start must be a token id in [0, ${vocab ?? '?'}), got ${start}`);
  if (tgt.n !== source.n) throw new Error(`${o.targets}: ${tgt.n} target sequences for ${source.n} sources in ${o.data}`);
  const T = tgt.length;
  // labels: the targets, padding unscored; decoder ids: the targets shifted right behind the start token
  const labels = Float64Array.from({ length: tgt.n * T }, (_, i) => (tgt.values[i] === pad ? IGNORE : tgt.values[i]!));
  const shifted = Float64Array.from({ length: tgt.n * T }, (_, i) => (i % T === 0 ? start : tgt.values[i - 1]!));
  const feeds = (idx: number[]) => ({ ...source.feeds(idx), [pair.decoderIds]: idRows(shifted, T, idx) });
  return {
    data: { source: `${o.data} → ${o.targets}`, format: `${source.format} → ${tgt.format}`, samples: source.n, sampleShape: [...source.shape, T] },
    ...labelsPerPosition(logits, labels, T, feeds),
  };
}

/**
 * The encoder's feeds from --data: token ids [n, length] with their companions (a text encoder),
 * or, for an encoder whose one input is float (Whisper's input_features [n, 80, frames]), the
 * .npy's rows as they are.
 */
function sourceOf(pair: Seq2seqPair, o: Seq2seqOptions): { n: number; shape: number[]; format: string; feeds(idx: number[]): Record<string, Tensor> } {
  const encoder = pair.joined.inputs.filter((i) => i.name !== pair.decoderIds);
  const only = encoder.length === 1 ? encoder[0]! : undefined;
  if (only?.dtype === 'float32') {
    if (!existsSync(o.data)) throw new Error(`data not found: ${o.data}`);
    if (!o.data.toLowerCase().endsWith('.npy')) throw new Error(`${o.data}: the encoder's input '${only.name}' is float; give its values as a .npy [n, ${(only.shape ?? []).slice(1).join(', ')}]`);
    const a = parseNpy(readBytes(o.data, 'NPY file'), o.data);
    const want = (only.shape ?? []).slice(1);
    const fits = a.shape.length === want.length + 1 && want.every((d, k) => typeof d !== 'number' || d <= 0 || d === a.shape[k + 1]);
    if (!fits) throw new Error(`${o.data}: shape [${a.shape.join(', ')}] does not fit the encoder's input '${only.name}' [n, ${want.map((d) => d ?? '?').join(', ')}]`);
    const per = a.shape.slice(1).reduce((x, y) => x * y, 1);
    const values = Float32Array.from(a.values as ArrayLike<number>);
    for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) throw new Error(`${o.data}: value ${i} is ${values[i]}; the encoder's input must be finite`);
    return {
      n: a.shape[0]!, shape: a.shape.slice(1), format: 'npy features',
      feeds: (idx) => ({ [only.name]: f32([idx.length, ...a.shape.slice(1)], Float32Array.from(idx.flatMap((s) => Array.from(values.subarray(s * per, (s + 1) * per))))) }),
    };
  }
  // The joined model's inputs: the encoder's ids and companions, and the decoder's ids.
  const inputs = tokenInputs(pair.joined, '--task seq2seq (the encoder)', [pair.decoderIds]);
  const src = readTokenIds(o.data, inputs.vocab, 1, false, o.text && { ...o.text, fixedLength: inputs.length, positions: inputs.positions });
  const pad = o.padToken ?? src.padToken;
  return { n: src.n, shape: [src.length], format: src.format, feeds: (idx) => tokenFeeds(inputs, src.values, src.length, idx, pad, src.types) };
}
