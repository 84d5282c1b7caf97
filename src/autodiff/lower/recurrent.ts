// LSTM, GRU and RNN unrolled into MatMul, Split, their activations (Sigmoid and Tanh by default;
// any the ONNX spec lists, with activation_alpha/beta), Mul and Add for the compiled
// sequence length (a step is compiled per input signature, so the length is fixed), so the
// existing rules differentiate them. Equations and gate orders are those of the ONNX spec:
// LSTM gates i, o, f, c with peepholes P = [Pi, Po, Pf]; GRU gates z, r, h; B = [Wb, Rb].
import type { Graph, Node } from '../../onnx/ir.ts';
import { attrInt, attrString } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32, i64 } from '../../onnx/tensor.ts';
import { floatAttr } from '../../onnx/ir.ts';
import { bind, constantValue, present, refuse, split, wanted } from './util.ts';

export const RECURRENT_OPS = new Set(['LSTM', 'GRU', 'RNN']);

const DEFAULT_ACTIVATIONS: Record<string, string[]> = { LSTM: ['Sigmoid', 'Tanh', 'Tanh'], GRU: ['Sigmoid', 'Tanh'], RNN: ['Tanh'] };

/** The ONNX recurrent activations and how many of activation_alpha / activation_beta each consumes. */
const ACTIVATION_PARAMS: Record<string, [alphas: number, betas: number]> = {
  Relu: [0, 0], Tanh: [0, 0], Sigmoid: [0, 0], Softsign: [0, 0], Softplus: [0, 0],
  LeakyRelu: [1, 0], ThresholdedRelu: [1, 0], Elu: [1, 0], HardSigmoid: [1, 1], ScaledTanh: [1, 1], Affine: [1, 1],
};

interface Activation { name: string; alpha?: number; beta?: number }

/**
 * The activations per direction ([f, g, h] for LSTM, [f, g] for GRU, [f] for RNN), their
 * parameters consumed in order from activation_alpha and activation_beta as the ONNX spec says;
 * a string when the node's list cannot be unrolled exactly (an unknown name, a count that does
 * not fit, a parameter the list does not give).
 */
function activationsOf(node: Node, nd: number): Activation[][] | string {
  const defaults = DEFAULT_ACTIVATIONS[node.opType]!;
  const listed = node.attrs.activations?.value as string[] | undefined;
  const names = listed ?? Array.from({ length: nd }, () => defaults).flat();
  if (names.length !== defaults.length * nd) return `activations [${names.join(', ')}] has ${names.length} entries; ${node.opType} ${nd === 2 ? 'bidirectional ' : ''}takes ${defaults.length * nd}`;
  const alphas = [...((node.attrs.activation_alpha?.value as number[] | undefined) ?? [])];
  const betas = [...((node.attrs.activation_beta?.value as number[] | undefined) ?? [])];
  const out: Activation[] = [];
  for (const raw of names) {
    const name = Object.keys(ACTIVATION_PARAMS).find((k) => k.toLowerCase() === raw.toLowerCase());
    if (!name) return `activation '${raw}' is not one of ${Object.keys(ACTIVATION_PARAMS).join(', ')}`;
    const [na, nb] = ACTIVATION_PARAMS[name]!;
    if (alphas.length < na || betas.length < nb) return `activation ${name} needs ${na} activation_alpha and ${nb} activation_beta values, which the node does not give`;
    out.push({ name, ...(na ? { alpha: alphas.shift()! } : {}), ...(nb ? { beta: betas.shift()! } : {}) });
  }
  return Array.from({ length: nd }, (_, d) => out.slice(d * defaults.length, (d + 1) * defaults.length));
}

/** One recurrent activation in standard ops. */
function activate(em: Emitter, a: Activation, x: string): string {
  switch (a.name) {
    case 'LeakyRelu': case 'ThresholdedRelu': case 'Elu': return em.op(a.name, [x], { alpha: floatAttr(a.alpha!) });
    case 'HardSigmoid': return em.op('HardSigmoid', [x], { alpha: floatAttr(a.alpha!), beta: floatAttr(a.beta!) });
    case 'ScaledTanh': return em.mul(em.scalar(a.alpha!), em.op('Tanh', [em.mul(em.scalar(a.beta!), x)]));
    case 'Affine': return em.add(em.mul(em.scalar(a.alpha!), x), em.scalar(a.beta!));
    default: return em.op(a.name, [x]);
  }
}

/** Why this recurrent node cannot be unrolled exactly, or undefined when it can. */
export function recurrentRefusal(node: Node): string | undefined {
  const direction = attrString(node, 'direction', 'forward');
  if (!['forward', 'reverse', 'bidirectional'].includes(direction)) return `unknown direction '${direction}'`;
  const nd = direction === 'bidirectional' ? 2 : 1;
  const acts = activationsOf(node, nd);
  if (typeof acts === 'string') return acts;
  if (node.attrs.clip) return `attribute clip=${node.attrs.clip.value} is not supported (cell clipping is not unrolled)`;
  if (node.opType === 'LSTM' && attrInt(node, 'input_forget', 0) !== 0) return 'attribute input_forget=1 (coupled input and forget gates) is not supported';
  const layout = attrInt(node, 'layout', 0);
  if (layout !== 0 && layout !== 1) return `unknown layout ${layout}`;
  return undefined;
}

/**
 * Whether the node's sequence_lens may end a sequence early (PyTorch's pack_padded_sequence feeds
 * the lengths at run time): then each step is masked. A constant of full lengths needs no mask.
 */
function variableLengths(node: Node, graph: Graph, seqLen: number): boolean {
  if (!present(node, 4)) return false;
  const lens = constantValue(graph, node.inputs[4]!);
  return !lens || Array.from(lens.data as ArrayLike<number | bigint>, Number).some((v) => v !== seqLen);
}

/** Replace one LSTM/GRU/RNN node by its unrolled form, writing its original output names. */
export function lowerRecurrent(node: Node, graph: Graph, em: Emitter, shapeOf: (t: string) => number[]): void {
  const x = node.inputs[0]!;
  const xDims = shapeOf(x);
  const layout = attrInt(node, 'layout', 0);
  const [S, Bn] = layout === 0 ? [xDims[0]!, xDims[1]!] : [xDims[1]!, xDims[0]!];
  const why = recurrentRefusal(node);
  if (why) refuse(node, why);
  const direction = attrString(node, 'direction', 'forward');
  const nd = direction === 'bidirectional' ? 2 : 1;
  const nGates = node.opType === 'LSTM' ? 4 : node.opType === 'GRU' ? 3 : 1;
  const wDims = shapeOf(node.inputs[1]!);
  const H = attrInt(node, 'hidden_size') ?? wDims[1]! / nGates;
  if (wDims[1] !== nGates * H) refuse(node, `W has shape [${wDims}], expected [${nd}, ${nGates * H}, input_size] for hidden_size ${H}`);

  // Time-major input [S, B, I]; states stay 3-D [1, B, H] (fewer nodes than squeezing each step).
  const xs = layout === 0 ? x : em.transpose(x, [1, 0, 2]);
  const stateIn = (i: number) => (present(node, i) ? (layout === 0 ? node.inputs[i]! : em.transpose(node.inputs[i]!, [1, 0, 2])) : null);
  const perDir = (t: string | null, squeeze = true): (string | null)[] => {
    if (t === null) return Array.from({ length: nd }, () => null);
    const parts = nd === 1 ? [t] : split(em, t, [1, 1], 0);
    return squeeze ? parts.map((p) => em.squeeze(p, [0])) : parts;
  };
  const Ws = perDir(node.inputs[1]!) as string[];
  const Rs = perDir(node.inputs[2]!) as string[];
  const Bs = perDir(present(node, 3) ? node.inputs[3]! : null);
  const h0s = perDir(stateIn(5), false);
  const c0s = node.opType === 'LSTM' ? perDir(stateIn(6), false) : [];
  const Ps = node.opType === 'LSTM' ? perDir(present(node, 7) ? node.inputs[7]! : null) : [];
  const zeros = () => em.constant(f32([1, Bn, H], new Float32Array(Bn * H)), 'zero_state');
  // With sequence_lens, step t of sequence b runs only for t < lens[b] (ONNX's semantics): a masked
  // step keeps the state it was given and outputs zeros. Forward, the state then stays at the
  // last valid step; in reverse it stays at the initial state until the sequence's last element,
  // so each sequence is read backwards from its own end.
  let valid: string[] | null = null;
  if (variableLengths(node, graph, S)) {
    const lens = em.op('Cast', [node.inputs[4]!], { to: 7 }); // int32 by the spec; int64 for the comparison
    const steps = em.constant(i64([S, 1], Array.from({ length: S }, (_, t) => t)), 'steps');
    const mask = em.unsqueeze(em.op('Less', [steps, em.unsqueeze(lens, [0])]), [2]); // [S, B, 1]
    valid = S === 1 ? [mask] : split(em, mask, Array.from({ length: S }, () => 1), 0);
  }
  const masked = (t: number, next: string, prev: string) => (valid ? em.op('Where', [valid[t]!, next, prev]) : next);

  const acts = activationsOf(node, nd) as Activation[][];
  const Ys: string[] = [], Yh: string[] = [], Yc: string[] = [];
  for (let d = 0; d < nd; d++) {
    const [fAct, gAct, hAct] = acts[d]! as [Activation, Activation?, Activation?];
    const f = (v: string) => activate(em, fAct, v), g = (v: string) => activate(em, gAct!, v), hh = (v: string) => activate(em, hAct!, v);
    const reverse = direction === 'reverse' || d === 1;
    const order = Array.from({ length: S }, (_, t) => (reverse ? S - 1 - t : t));
    const WT = em.transpose(Ws[d]!, [1, 0]); // [I, G·H]
    const RT = em.transpose(Rs[d]!, [1, 0]); // [H, G·H]
    // Input projections of all steps in one MatMul; biases folded in where the equations allow.
    let xw = em.op('MatMul', [xs, WT]); // [S, B, G·H]
    let wb: string | null = null, rb: string | null = null;
    if (Bs[d]) [wb, rb] = split(em, Bs[d]!, [nGates * H, nGates * H], 0);
    const lbr = node.opType === 'GRU' ? attrInt(node, 'linear_before_reset', 0) !== 0 : false;
    let rbh: string | null = null;
    if (wb && rb) {
      if (node.opType === 'GRU') {
        // Rb_h sits inside r ⊙ (·) when linear_before_reset; otherwise it adds like the others.
        const [rbzr, rbhPart] = split(em, rb, [2 * H, H], 0);
        const [wbzr, wbh] = split(em, wb, [2 * H, H], 0);
        rbh = rbhPart!;
        const fold = em.op('Concat', [em.add(wbzr!, rbzr!), lbr ? wbh! : em.add(wbh!, rbh)], { axis: 0 });
        xw = em.add(xw, fold);
      } else {
        xw = em.add(xw, em.add(wb, rb));
      }
    }
    const xSteps = split(em, xw, Array.from({ length: S }, () => 1), 0); // S × [1, B, G·H]

    let h = h0s[d] ?? zeros();
    let c = node.opType === 'LSTM' ? (c0s[d] ?? zeros()) : '';
    let pi = '', po = '', pf = '';
    if (Ps[d]) [pi, po, pf] = split(em, Ps[d]!, [H, H, H], 0) as [string, string, string];
    let rzrT = '', rhT = '';
    if (node.opType === 'GRU' && !lbr) [rzrT, rhT] = split(em, RT, [2 * H, H], 1) as [string, string];
    const hs: string[] = new Array(S);
    for (const t of order) {
      const xt = xSteps[t]!;
      const [hPrev, cPrev] = [h, c];
      if (node.opType === 'LSTM') {
        const gates = em.add(xt, em.op('MatMul', [h, RT]));
        let i: string, fg: string, o: string, cc: string;
        if (pi) {
          let [gi, go, gf, gc] = split(em, gates, [H, H, H, H], 2) as [string, string, string, string];
          gi = em.add(gi, em.mul(pi, c));
          gf = em.add(gf, em.mul(pf, c));
          i = f(gi); fg = f(gf); cc = g(gc);
          c = em.add(em.mul(fg, c), em.mul(i, cc));
          o = f(em.add(go, em.mul(po, c)));
        } else {
          // Gates i, o, f are contiguous: one activation (and one backward) for all three.
          const [gsig, gc] = split(em, gates, [3 * H, H], 2) as [string, string];
          [i, o, fg] = split(em, f(gsig), [H, H, H], 2) as [string, string, string];
          cc = g(gc);
          c = em.add(em.mul(fg, c), em.mul(i, cc));
        }
        h = em.mul(o, hh(c));
      } else if (node.opType === 'GRU') {
        const [xzr, xh] = split(em, xt, [2 * H, H], 2) as [string, string];
        let z: string, r: string, ht: string;
        if (lbr) {
          const [hzr, hhr] = split(em, em.op('MatMul', [h, RT]), [2 * H, H], 2) as [string, string];
          [z, r] = split(em, f(em.add(xzr, hzr)), [H, H], 2) as [string, string];
          ht = g(em.add(xh, em.mul(r, rbh ? em.add(hhr, rbh) : hhr)));
        } else {
          [z, r] = split(em, f(em.add(xzr, em.op('MatMul', [h, rzrT]))), [H, H], 2) as [string, string];
          ht = g(em.add(xh, em.op('MatMul', [em.mul(r, h), rhT])));
        }
        h = em.add(em.mul(em.sub(em.scalar(1), z), ht), em.mul(z, h));
      } else {
        h = f(em.add(xt, em.op('MatMul', [h, RT])));
      }
      hs[t] = valid ? masked(t, h, em.constant(f32([], [0]), 'zero')) : h;
      h = masked(t, h, hPrev);
      if (node.opType === 'LSTM') c = masked(t, c, cPrev);
    }
    if (wanted(node, 0)) Ys.push(S === 1 ? hs[0]! : em.op('Concat', hs, { axis: 0 })); // [S, B, H]
    Yh.push(h);
    if (node.opType === 'LSTM') Yc.push(c);
  }
  const stack = (parts: string[], axis: number) => (parts.length === 1 ? em.unsqueeze(parts[0]!, [axis]) : em.op('Concat', parts.map((p) => em.unsqueeze(p, [axis])), { axis }));
  if (wanted(node, 0)) {
    const y = stack(Ys, 1); // [S, nd, B, H]
    bind(em, layout === 0 ? y : em.transpose(y, [2, 0, 1, 3]), node.outputs[0]!);
  }
  const last = (parts: string[], out: string) => {
    const v = parts.length === 1 ? parts[0]! : em.op('Concat', parts, { axis: 0 }); // [nd, B, H]
    bind(em, layout === 0 ? v : em.transpose(v, [1, 0, 2]), out);
  };
  if (wanted(node, 1)) last(Yh, node.outputs[1]!);
  if (node.opType === 'LSTM' && wanted(node, 2)) last(Yc, node.outputs[2]!);
}
