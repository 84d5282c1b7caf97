// Einsum with any number of operands: the gradient of operand k is itself an einsum of dY with
// the other operands, written to k's indices (for two operands lowered to MatMul/Gemm, for one a
// Transpose, for three or more an Einsum node). Indices only k has (summed away in the forward)
// are broadcast back with Unsqueeze + Expand.
//
// The equation is first made explicit for the input signature: the ellipsis becomes fresh
// letters (right-aligned across operands, as NumPy broadcasting), and an operand whose dim is 1
// where another's is n (in the ellipsis or under a named index) gets a letter of its own for it
// (summing a size-1 axis is the same as broadcasting it). Repeated indices within one operand (diagonals, `ii->i`) are
// refused.
import { attrString, type Node } from '../../onnx/ir.ts';
import { registerRules, type GradContext } from '../rule.ts';

const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

export interface ExplicitEinsum {
  inputs: string[][];
  output: string[];
}

/** Parse an Einsum equation for operands of the given shapes into explicit letter lists. */
export function explicitEinsum(equation: string, shapes: number[][], where = 'Einsum'): ExplicitEinsum {
  const eq = equation.replace(/\s+/g, '');
  const arrow = eq.indexOf('->');
  const lhs = arrow >= 0 ? eq.slice(0, arrow) : eq;
  const terms = lhs.split(',');
  if (terms.length !== shapes.length) throw new Error(`${where}: equation '${equation}' has ${terms.length} operand terms but the node has ${shapes.length} inputs`);
  const used = new Set(eq.replace(/[^A-Za-z]/g, ''));
  const fresh = () => {
    const l = [...LETTERS].find((c) => !used.has(c));
    if (!l) throw new Error(`${where}: equation '${equation}' uses too many indices to make its ellipsis explicit`);
    used.add(l);
    return l;
  };
  // Parse each term into letters around an optional ellipsis and check ranks.
  const parsed = terms.map((t, k) => {
    const parts = t.split('...');
    if (parts.length > 2) throw new Error(`${where}: operand ${k} term '${t}' has more than one ellipsis`);
    for (const p of parts) if (!/^[A-Za-z]*$/.test(p)) throw new Error(`${where}: operand ${k} term '${t}' has characters other than letters and '...'`);
    const named = parts.join('').length;
    const rank = shapes[k]!.length;
    const ell = parts.length === 2 ? rank - named : 0;
    if (ell < 0 || (parts.length === 1 && named !== rank)) throw new Error(`${where}: operand ${k} term '${t}' does not match its rank ${rank} (shape [${shapes[k]}])`);
    const letters = [...parts.join('')];
    const seen = new Set<string>();
    for (const c of letters) {
      if (seen.has(c)) throw new Error(`${where}: repeated index '${c}' within operand ${k} ('${t}', a diagonal or trace) has no gradient rule; rewrite the equation without repeated indices`);
      seen.add(c);
    }
    return { before: [...parts[0]!], after: parts.length === 2 ? [...parts[1]!] : [], ell, hasEll: parts.length === 2 };
  });
  // Ellipsis dims: right-aligned broadcast.
  const ellRank = Math.max(0, ...parsed.map((p) => p.ell));
  const ellSize = Array.from({ length: ellRank }, (_, j) => {
    let s = 1;
    parsed.forEach((p, k) => {
      const off = j - (ellRank - p.ell);
      if (off < 0) return;
      const d = shapes[k]![p.before.length + off]!;
      if (d !== 1 && s !== 1 && d !== s) throw new Error(`${where}: ellipsis dims of the operands do not broadcast (operand ${k} has ${d} where another has ${s})`);
      if (d !== 1) s = d;
    });
    return s;
  });
  const ellLetters = ellSize.map(() => fresh());
  const inputs = parsed.map((p, k) => {
    const ell: string[] = [];
    for (let off = 0; off < p.ell; off++) {
      const j = ellRank - p.ell + off;
      const d = shapes[k]![p.before.length + off]!;
      ell.push(d === ellSize[j] ? ellLetters[j]! : fresh()); // a broadcast size-1 dim: its own letter
    }
    return [...p.before, ...ell, ...p.after];
  });
  let output: string[];
  if (arrow >= 0) {
    const rhs = eq.slice(arrow + 2);
    const parts = rhs.split('...');
    if (parts.length > 2 || parts.some((p) => !/^[A-Za-z]*$/.test(p))) throw new Error(`${where}: bad output term '${rhs}' in '${equation}'`);
    output = parts.length === 2 ? [...parts[0]!, ...ellLetters, ...parts[1]!] : [...parts[0]!];
  } else {
    // Implicit output: the ellipsis, then the letters that occur once, in alphabetical order.
    const count = new Map<string, number>();
    for (const p of parsed) for (const c of [...p.before, ...p.after]) count.set(c, (count.get(c) ?? 0) + 1);
    output = [...ellLetters, ...[...count].filter(([, n]) => n === 1).map(([c]) => c).sort()];
  }
  // A named index of size 1 in one operand and n in another broadcasts too (onnxruntime accepts
  // it): that operand's size-1 dim also gets a letter of its own.
  const full = new Map<string, number>();
  inputs.forEach((t, k) => t.forEach((c, a) => {
    const d = shapes[k]![a]!, s = full.get(c);
    if (s !== undefined && s !== 1 && d !== 1 && s !== d) throw new Error(`${where}: index '${c}' of '${equation}' has size ${s} in one operand and ${d} in operand ${k}`);
    if (s === undefined || s === 1) full.set(c, d);
  }));
  for (let k = 0; k < inputs.length; k++) inputs[k] = inputs[k]!.map((c, a) => (shapes[k]![a] === 1 && full.get(c)! > 1 ? fresh() : c));
  const inAny = new Set(inputs.flat());
  for (const c of output) if (!inAny.has(c)) throw new Error(`${where}: output index '${c}' of '${equation}' appears in no operand`);
  if (new Set(output).size !== output.length) throw new Error(`${where}: output of '${equation}' repeats an index`);
  return { inputs, output };
}

/**
 * Y = einsum(ta, tb -> out) of two operands with distinct indices per operand, as Transpose +
 * Reshape + MatMul (or Gemm with a transposed operand where there is no batch index). Measured
 * on onnxruntime-node (shared 2-core machine, noisy): onnxruntime's own Einsum took 1.4–1.7× as
 * long per gradient op (e.g. 'bhqk,bhkd->bhqd' at [8,8,128,128]: 16.7 vs 9.9 ms; 'bij,bid->jd'
 * at [32,128,256]: 44 vs 31 ms, 2 threads), and a whole attention step (q·k scores, softmax,
 * ·v at [4,8,128,64], 1 thread) took 50 vs 33 ms (median of 8 alternating rounds).
 */
function contract(ctx: GradContext, a: string, ta: string[], b: string, tb: string[], out: string[], size: Map<string, number>): string {
  const em = ctx.em;
  const dims = (t: string[]) => t.map((c) => size.get(c)!);
  const n = (t: string[]) => dims(t).reduce((p, d) => p * d, 1);
  const inO = new Set(out);
  // Indices in one operand only and not in the output: sum them away first.
  const own = (x: string, t: string[], other: string[]): [string, string[]] => {
    const axes = t.map((c, i) => (!other.includes(c) && !inO.has(c) ? i : -1)).filter((i) => i >= 0);
    return axes.length ? [em.reduce('ReduceSum', x, axes, false), t.filter((_, i) => !axes.includes(i))] : [x, t];
  };
  [a, ta] = own(a, ta, tb);
  [b, tb] = own(b, tb, ta);
  const batch = out.filter((c) => ta.includes(c) && tb.includes(c));
  const contr = ta.filter((c) => tb.includes(c) && !inO.has(c));
  const aFree = ta.filter((c) => !tb.includes(c));
  const bFree = tb.filter((c) => !ta.includes(c));
  const arrange = (x: string, t: string[], order: string[]) => {
    const perm = order.map((c) => t.indexOf(c));
    return perm.every((p, i) => p === i) ? x : em.transpose(x, perm);
  };
  const isOrder = (t: string[], order: string[]) => t.length === order.length && t.every((c, i) => c === order[i]);
  let y: string;
  if (batch.length === 0) {
    // Gemm reads either operand transposed: pick the layout that needs no Transpose when one does.
    const transA = !isOrder(ta, [...aFree, ...contr]) && isOrder(ta, [...contr, ...aFree]);
    const transB = !isOrder(tb, [...contr, ...bFree]) && isOrder(tb, [...bFree, ...contr]);
    const A = transA ? em.reshape(a, [n(contr), n(aFree)]) : em.reshape(arrange(a, ta, [...aFree, ...contr]), [n(aFree), n(contr)]);
    const B = transB ? em.reshape(b, [n(bFree), n(contr)]) : em.reshape(arrange(b, tb, [...contr, ...bFree]), [n(contr), n(bFree)]);
    y = em.op('Gemm', [A, B], { transA: transA ? 1 : 0, transB: transB ? 1 : 0 });
  } else {
    const A = em.reshape(arrange(a, ta, [...batch, ...aFree, ...contr]), [n(batch), n(aFree), n(contr)]);
    const B = em.reshape(arrange(b, tb, [...batch, ...contr, ...bFree]), [n(batch), n(contr), n(bFree)]);
    y = em.op('MatMul', [A, B]);
  }
  const got = [...batch, ...aFree, ...bFree];
  return arrange(em.reshape(y, dims(got)), got, out);
}

function einsumGrad(ctx: GradContext, node: Node, dY: string, needs: boolean[]): (string | null)[] {
  const em = ctx.em;
  const where = `Einsum node '${node.name}'`;
  const equation = attrString(node, 'equation');
  if (!equation) throw new Error(`${where}: missing 'equation' attribute`);
  const shapes = node.inputs.map((i) => ctx.shape(i));
  const { inputs, output } = explicitEinsum(equation, shapes, where);
  const size = new Map<string, number>();
  inputs.forEach((t, k) => t.forEach((c, a) => size.set(c, Math.max(size.get(c) ?? 1, shapes[k]![a]!))));
  return node.inputs.map((x, k) => {
    if (!needs[k]) return null;
    const mine = inputs[k]!;
    const elsewhere = new Set([...output, ...inputs.filter((_, j) => j !== k).flat()]);
    const kept = mine.filter((c) => elsewhere.has(c));
    const others = node.inputs.map((name, j) => ({ name, term: inputs[j]! })).filter((_, j) => j !== k);
    let g: string;
    if (others.length === 0) {
      // One operand: every output index is one of its own, so dY only needs reordering.
      const perm = kept.map((c) => output.indexOf(c));
      g = perm.every((p, i) => p === i) ? dY : em.transpose(dY, perm);
    } else if (others.length === 1) {
      g = contract(ctx, dY, output, others[0]!.name, others[0]!.term, kept, size);
    } else {
      const eq = [output, ...others.map((o) => o.term)].map((t) => t.join('')).join(',') + '->' + kept.join('');
      g = em.op('Einsum', [dY, ...others.map((o) => o.name)], { equation: eq });
    }
    if (kept.length < mine.length) {
      // Indices only this operand had: the gradient does not vary along them.
      const axes = mine.map((c, a) => (kept.includes(c) ? -1 : a)).filter((a) => a >= 0);
      g = em.op('Expand', [em.unsqueeze(g, axes), em.ints(shapes[k]!)]);
    }
    return g;
  });
}

registerRules({
  Einsum(ctx, node, [dY], needs) {
    return einsumGrad(ctx, node, dY!, needs);
  },
});
