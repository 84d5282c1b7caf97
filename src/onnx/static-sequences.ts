// Sequences whose every element is known by name become those tensors. After a Loop is unrolled
// (./unroll-loop.ts), PyTorch's tensor_split is SequenceEmpty, a chain of SequenceInserts and
// SequenceAt with constant positions: plain wiring that refit has no gradient rules for, since
// sequences are not tensors. Here each read of such a sequence is rewritten into the tensors it
// reads (SequenceAt → Identity, ConcatFromSequence → Concat, SequenceLength → a constant; a
// SplitToSequence into known pieces becomes a Split), and the sequence ops, read by nothing then,
// are dropped.
import type { Graph, Node } from './ir.ts';
import { consumers, constantValue } from './ir.ts';
import { readsOf } from './subgraphs.ts';
import { Emitter } from './emitter.ts';
import { tensor, toNumbers } from './tensor.ts';

function constantInt(g: Graph, name: string | undefined): number | undefined {
  const t = name ? constantValue(g, name) : undefined;
  return t && t.data.length === 1 ? Number(toNumbers(t)[0]) : undefined;
}

/** A position in a sequence of `length` (negative counts from the end); undefined when out of range. */
function position(p: number, length: number, inclusiveEnd: boolean): number | undefined {
  const q = p < 0 ? p + length : p;
  return q >= 0 && (q < length || (inclusiveEnd && q === length)) ? q : undefined;
}

/**
 * Rewrite the reads of statically known sequences in `g`; returns how many reads were rewritten.
 * `shapeOf` (when the caller knows shapes) lets a SplitToSequence into equal chunks or single
 * slices be resolved too: it tells how many pieces there are. Pass the emitter that owns `g` when
 * there is one (fresh names).
 */
export function resolveStaticSequences(g: Graph, opset: number, shapeOf?: (t: string) => number[] | undefined, em = new Emitter(g, opset)): number {
  const known = new Map<string, string[]>();
  let rewritten = 0;
  for (let k = 0; k < g.nodes.length; k++) {
    const n = g.nodes[k]!;
    if (n.domain !== '' && n.domain !== 'ai.onnx') continue;
    const seq = known.get(n.inputs[0] ?? '');
    const out = n.outputs[0];
    switch (n.opType) {
      case 'SequenceEmpty': if (out) known.set(out, []); break;
      case 'SequenceConstruct': if (out) known.set(out, [...n.inputs]); break;
      case 'Identity': if (seq && out) known.set(out, seq); break;
      case 'SplitToSequence': {
        const pieces = out ? splitPieces(g, n, shapeOf) : undefined;
        if (!pieces) break;
        // One Split, then a Squeeze per piece where keepdims=0 dropped the axis of single slices;
        // the sequence op stays (dropped once nothing reads it) and its pieces go before it.
        const axis = n.attrs.axis?.kind === 'int' ? n.attrs.axis.value : 0;
        const dropAxis = !n.inputs[1] && n.attrs.keepdims?.kind === 'int' && n.attrs.keepdims.value === 0;
        const { value: items, nodes } = em.collect(() => {
          const parts = em.emit('Split', opset >= 13 ? [n.inputs[0]!, em.ints(pieces)] : [n.inputs[0]!], opset >= 13 ? { axis } : { axis, split: pieces }, pieces.length, `${out}__piece`);
          return dropAxis ? parts.map((part) => em.squeeze(part, [axis])) : parts;
        });
        g.nodes.splice(k, 0, ...nodes);
        k += nodes.length;
        known.set(out!, items);
        break;
      }
      case 'SequenceInsert': {
        if (!seq || !out) break;
        const at = n.inputs[2] ? constantInt(g, n.inputs[2]) : seq.length;
        const p = at === undefined ? undefined : position(at, seq.length, true);
        if (p !== undefined) known.set(out, [...seq.slice(0, p), n.inputs[1]!, ...seq.slice(p)]);
        break;
      }
      case 'SequenceErase': {
        if (!seq || !out) break;
        const at = n.inputs[1] ? constantInt(g, n.inputs[1]) : -1;
        const p = at === undefined ? undefined : position(at, seq.length, false);
        if (p !== undefined) known.set(out, [...seq.slice(0, p), ...seq.slice(p + 1)]);
        break;
      }
      case 'SequenceAt': {
        const at = constantInt(g, n.inputs[1]);
        const p = seq && at !== undefined ? position(at, seq.length, false) : undefined;
        if (p === undefined) break;
        g.nodes[k] = { name: n.name, opType: 'Identity', domain: '', inputs: [seq![p]!], outputs: n.outputs, attrs: {} };
        rewritten++;
        break;
      }
      case 'SequenceLength': {
        if (!seq) break;
        g.nodes[k] = { name: n.name, opType: 'Constant', domain: '', inputs: [], outputs: n.outputs, attrs: { value: { kind: 'tensor', value: tensor('int64', [], [seq.length]) } } };
        rewritten++;
        break;
      }
      case 'ConcatFromSequence': {
        if (!seq || seq.length === 0) break;
        const axis = n.attrs.axis?.kind === 'int' ? n.attrs.axis.value : 0;
        const newAxis = n.attrs.new_axis?.kind === 'int' && n.attrs.new_axis.value === 1;
        // Stacking: each element gains the axis first (a negative axis counts in the output's rank, as Concat's does after the Unsqueeze).
        const { value: items, nodes } = em.collect(() => (newAxis ? seq.map((x) => em.unsqueeze(x, [axis])) : seq));
        nodes.push({ name: n.name, opType: 'Concat', domain: '', inputs: items, outputs: n.outputs, attrs: { axis: { kind: 'int', value: axis } } });
        g.nodes.splice(k, 1, ...nodes);
        k += nodes.length - 1;
        rewritten++;
        break;
      }
    }
  }
  if (rewritten > 0) dropUnreadSequences(g, new Set(known.keys()));
  return rewritten;
}

/**
 * The piece sizes a SplitToSequence node cuts: a constant 1-D `split` gives them; a constant scalar
 * chunk size, or no `split` (single slices), needs the input's length along the axis from `shapeOf`.
 */
function splitPieces(g: Graph, n: Node, shapeOf?: (t: string) => number[] | undefined): number[] | undefined {
  const axis = n.attrs.axis?.kind === 'int' ? n.attrs.axis.value : 0;
  const split = n.inputs[1] ? constantValue(g, n.inputs[1]) : undefined;
  if (n.inputs[1] && !split) return undefined;
  if (split && split.dims.length === 1) return toNumbers(split);
  const dims = shapeOf?.(n.inputs[0]!);
  if (!dims) return undefined;
  const len = dims[axis < 0 ? axis + dims.length : axis];
  if (len === undefined) return undefined;
  const chunk = split ? toNumbers(split)[0]! : 1;
  if (!(chunk > 0)) return undefined;
  return Array.from({ length: Math.ceil(len / chunk) }, (_, i) => Math.min(chunk, len - i * chunk));
}

/** Remove the nodes that build `sequences` once nothing reads them, repeatedly (a chain of inserts). */
function dropUnreadSequences(g: Graph, sequences: Set<string>): void {
  for (;;) {
    const readers = consumers(g);
    const outer = new Set([...g.nodes.flatMap((n) => (n.inputs === readsOf(n) ? [] : readsOf(n))), ...g.outputs.map((o) => o.name)]);
    const dead = g.nodes.filter((n) => n.outputs.some((o) => o && sequences.has(o)) && n.outputs.every((o) => !o || (sequences.has(o) && !readers.has(o) && !outer.has(o))));
    if (dead.length === 0) return;
    const gone = new Set(dead);
    g.nodes = g.nodes.filter((n) => !gone.has(n));
  }
}
