// Einsum with any number of operands: the gradient of operand k is itself an Einsum of dY with
// the other operands, written to k's indices. Indices only k has (summed away in the forward)
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

function einsumGrad(ctx: GradContext, node: Node, dY: string, needs: boolean[]): (string | null)[] {
  const em = ctx.em;
  const where = `Einsum node '${node.name}'`;
  const equation = attrString(node, 'equation');
  if (!equation) throw new Error(`${where}: missing 'equation' attribute`);
  const shapes = node.inputs.map((i) => ctx.shape(i));
  const { inputs, output } = explicitEinsum(equation, shapes, where);
  return node.inputs.map((x, k) => {
    if (!needs[k]) return null;
    const mine = inputs[k]!;
    const elsewhere = new Set([...output, ...inputs.filter((_, j) => j !== k).flat()]);
    const kept = mine.filter((c) => elsewhere.has(c));
    const others = node.inputs.map((name, j) => ({ name, term: inputs[j]! })).filter((_, j) => j !== k);
    const eq = [output, ...others.map((o) => o.term)].map((t) => t.join('')).join(',') + '->' + kept.join('');
    // A lone operand whose indices all reach the output in the same order: dY itself.
    let g = others.length === 0 && output.join('') === kept.join('') ? dY : em.op('Einsum', [dY, ...others.map((o) => o.name)], { equation: eq });
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
