// A token model with one input. Hugging Face exports (optimum, transformers.js) take token ids
// plus inputs a tokenizer makes from them; withTokenInputs computes those inside the graph, as the
// tokenizer would, so that what feeds one tensor (the test-time adaptation methods, the continual
// controller, the service) can run the model on its ids alone:
//   attention_mask  1 for a token, 0 for padToken (all 1 without one)
//   token_type_ids  0 (one segment); with segmentAfter (a BERT tokenizer's [SEP]), 1 after a row's
//                   first separator up to its padding, as the tokenizer marks a text pair's second
//                   segment ([CLS] a [SEP] b [SEP])
//   position_ids    0 … length−1 in every row
//   a lengths input (an integer [batch] whose name says len: PyTorch's pack_padded_sequence
//                   lengths) the count of tokens that are not padToken in each row
// The CLI makes the same inputs in JavaScript (src/cli/token-inputs.ts, tokenFeeds). A text decoder
// exported with a KV cache loses it first (./kv-cache.ts: empty pasts, use_cache_branch false).
import type { RefitModel } from '../model.ts';
import type { DType } from './tensor.ts';
import { i64, tensorOf } from './tensor.ts';
import { Emitter } from './emitter.ts';
import { opsetVersion, type ValueInfo } from './ir.ts';
import { withoutKvCache } from './kv-cache.ts';

export const TOKEN_COMPANIONS = ['attention_mask', 'token_type_ids', 'position_ids'] as const;
export type TokenCompanion = (typeof TOKEN_COMPANIONS)[number];
export const TOKEN_DTYPES = new Set<DType>(['int64', 'int32']);

/** A lengths input: an integer [batch] named …len… (a pack_padded_sequence model's `lengths`). */
export const isLengthsInput = (i: Pick<ValueInfo, 'name' | 'dtype' | 'shape'>) => TOKEN_DTYPES.has(i.dtype) && i.shape?.length === 1 && /len/i.test(i.name);

/** An input made from the token ids: one of TOKEN_COMPANIONS, or a lengths input. */
export const isCompanion = (i: Pick<ValueInfo, 'name' | 'dtype' | 'shape'>) => (TOKEN_COMPANIONS as readonly string[]).includes(i.name) || isLengthsInput(i);

/** What the inputs made from the ids are called in messages. */
export const COMPANIONS_SAID = `${TOKEN_COMPANIONS.join(', ')} and a [batch] lengths input`;

/** ONNX element types for Cast's `to`. */
const ELEM: Partial<Record<DType, number>> = { float32: 1, int32: 6, int64: 7 };

export interface TokenInputsOptions {
  /** The id that pads a row; attention_mask is 0 there. Without it every position is a token. */
  padToken?: number;
  /**
   * The separator id whose first occurrence in a row ends its first segment: token_type_ids is 1
   * after it (pads excepted), as a BERT-style tokenizer marks a text pair. A row with one text
   * ([CLS] a [SEP] and padding) stays 0, unless the text itself holds the separator token.
   * Without it, token_type_ids is 0 everywhere. Needs opset 11 (CumSum).
   */
  segmentAfter?: number;
}

/** The token-id input: the one input that is not a companion (or 'input_ids'), of an integer type. */
export function tokenIdsInput(model: RefitModel): { name: string; dtype: 'int64' | 'int32' } | undefined {
  const others = model.inputs.filter((i) => !isCompanion(i));
  const ids = others.length === 1 ? others[0]! : model.inputs.find((i) => i.name === 'input_ids');
  return ids && TOKEN_DTYPES.has(ids.dtype) ? { name: ids.name, dtype: ids.dtype as 'int64' | 'int32' } : undefined;
}

/** The first dimension of the initializer a Gather reads with the ids (the vocabulary), if one does. */
export function vocabularySize(model: RefitModel, ids: string): number | null {
  const g = model.ir.graph;
  for (const n of g.nodes) {
    if (n.opType !== 'Gather' || n.inputs[1] !== ids) continue;
    const table = g.initializers.get(n.inputs[0]!);
    if (table && table.dims.length >= 1) return table.dims[0]!;
  }
  return null;
}

/** Names Hugging Face and GPT-2-style exports give a learned position table (BERT, ALBERT, DistilBERT, RoBERTa, GPT-2's wpe, BART's embed_positions). */
const POSITION_TABLE = /(^|[./_])(position_embeddings|wpe|embed_positions|pos_embed(ding)?s?)([./_]weight)?$/i;

/**
 * The rows of the model's learned position table (a Gather on an initializer named like BERT's
 * position_embeddings or GPT-2's wpe), if it has one: no sequence may be longer. RoBERTa and BART
 * start counting at 2, so theirs holds two positions fewer; their tokenizers' model_max_length
 * says so already. Null for a model without one (rotary or relative positions).
 */
export function positionTableRows(model: RefitModel): number | null {
  const g = model.ir.graph;
  for (const n of g.nodes) {
    if (n.opType !== 'Gather' || !POSITION_TABLE.test(n.inputs[0]!)) continue;
    const table = g.initializers.get(n.inputs[0]!);
    if (table && table.dims.length === 2) return table.dims[0]!;
  }
  return null;
}

/**
 * This model with its companion inputs (attention_mask, token_type_ids, position_ids) made from
 * the token ids inside the graph: a sharing clone whose only input is the ids. Throws, naming the
 * inputs, for a model it cannot reduce to one input. A model that takes the ids alone is returned as it is.
 * A model with a KV cache (past_key_values inputs, optimum's use_cache_branch) runs without it (withoutKvCache).
 */
export function withTokenInputs(cached: RefitModel, opts: TokenInputsOptions = {}): RefitModel {
  const model = withoutKvCache(cached);
  const names = model.inputs.map((i) => `${i.name} (${i.dtype})`).join(', ');
  const ids = tokenIdsInput(model);
  if (!ids) throw new Error(`withTokenInputs: the model needs one input of int64 or int32 token ids (e.g. input_ids) besides ${COMPANIONS_SAID}; it has ${names}`);
  const companions = model.inputs.filter((i) => i.name !== ids.name);
  const unknown = companions.filter((i) => !isCompanion(i));
  if (unknown.length) throw new Error(`withTokenInputs: cannot make the input${unknown.length > 1 ? 's' : ''} ${unknown.map((i) => `'${i.name}'`).join(', ')} from the token ids (it makes ${COMPANIONS_SAID}); model inputs: ${names}`);
  for (const c of companions) if (ELEM[c.dtype] === undefined) throw new Error(`withTokenInputs: the model's input '${c.name}' is ${c.dtype}; it makes int64, int32 or float32 companions`);
  const pad = opts.padToken;
  if (pad !== undefined && !(Number.isInteger(pad) && pad >= 0)) throw new Error(`withTokenInputs: padToken must be a non-negative integer, got ${pad}`);
  const sep = opts.segmentAfter;
  if (sep !== undefined && !(Number.isInteger(sep) && sep >= 0)) throw new Error(`withTokenInputs: segmentAfter must be a non-negative integer (the separator's id), got ${sep}`);
  if (sep !== undefined && companions.some((c) => c.name === 'token_type_ids') && opsetVersion(model.ir) < 11) throw new Error(`withTokenInputs: segmentAfter marks segments with CumSum, which needs opset 11; the model is opset ${opsetVersion(model.ir)}`);
  if (!companions.length) return model;

  const m = model.clone({ copy: [] });
  const g = m.ir.graph;
  const em = new Emitter(g, opsetVersion(m.ir), 'refit_tokens_');
  const before = g.nodes.length;
  const idConst = (v: number) => em.constant(tensorOf(ids.dtype, [], () => v), 'id');
  const cast = (x: string, c: { name: string; dtype: DType }) => g.nodes.push({ name: em.fresh(`${c.name}_node`), opType: 'Cast', domain: '', inputs: [x], outputs: [c.name], attrs: { to: { kind: 'int', value: ELEM[c.dtype]! } } });
  // Equal(ids, ids) is all true: every position a token without a pad token.
  const token = () => (pad === undefined ? em.op('Equal', [ids.name, ids.name]) : em.op('Not', [em.op('Equal', [ids.name, idConst(pad)])]));
  for (const c of companions) {
    if (c.name === 'attention_mask') {
      cast(token(), c);
    } else if (isLengthsInput(c)) {
      cast(em.reduce('ReduceSum', em.op('Cast', [token()], { to: 7 }), [1], false), c);
    } else if (c.name === 'token_type_ids' && sep !== undefined) {
      // separators strictly before each position (an exclusive running count): ≥ 1 past the first
      const before = em.op('CumSum', [em.op('Cast', [em.op('Equal', [ids.name, idConst(sep)])], { to: 7 }), em.constant(i64([], [1]), 'axis')], { exclusive: 1 });
      cast(em.op('And', [em.op('Greater', [before, em.constant(i64([], [0]), 'zero')]), token()]), c);
    } else if (c.name === 'token_type_ids') {
      cast(em.op('Mul', [ids.name, idConst(0)]), c);
    } else {
      const shape = em.op('Shape', [ids.name]);
      const length = em.op('Gather', [shape, em.constant(i64([], [1]), 'one')], { axis: 0 });
      const range = em.op('Range', [em.constant(i64([], [0]), 'zero'), length, em.constant(i64([], [1]), 'one')]);
      cast(em.op('Expand', [em.unsqueeze(range, [0]), shape]), c);
    }
  }
  // The new nodes read only the ids: they go first, keeping the graph in topological order.
  g.nodes.unshift(...g.nodes.splice(before));
  g.inputs = g.inputs.filter((i) => i.name === ids.name);
  return m;
}
