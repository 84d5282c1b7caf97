// A CPU-only optimisation for onnxruntime-node: convolutions whose weights are *fed* (trainable
// parameters) on onnxruntime's blocked NCHWc kernels.
//
// Why: onnxruntime's NchwcTransformer moves a Conv onto its blocked kernels only when the weight
// is a constant it can reorder once. In a training step the trainable weights are graph inputs,
// so every forward conv falls back to the plain kernel: 1.7–2.4× slower than the same conv with
// a baked weight (docs/speed.md, full-step profile). This pass writes what the transformer would
// have written, with the weight reorder as graph ops (Reshapes and Transposes) that run once
// per step: ReorderOutput(nchwc.Conv(ReorderInput(X), reorder(W), B)).
//
// The standard-op graph stays the portable reference (the browser runs it); this pass is applied
// only where onnxruntime-node reports a block size, and gives the same numbers (tested). The file
// imports nothing Node-only (the web bundle reaches it through train-step.ts): files and the session
// come from process.getBuiltinModule and the registered runtime, only when the backend is Node's.
import { runtime, type SessionOptions } from './runtime.ts';
import { attrFloat, attrInt, attrInts, consumers, type Graph, type Model, type Node } from './ir.ts';
import { encodeModel, decodeModel } from './proto.ts';
import { tensor, type Tensor } from './tensor.ts';
import type { Emitter } from './emitter.ts';

export const NCHWC_DOMAIN = 'com.microsoft.nchwc';
const CANDIDATE_BLOCKS = [4, 8, 16, 32, 64];

let cachedBlock: Promise<number | null> | undefined;

/**
 * Put a step graph's fed convolutions on the blocked kernels when the session will run on
 * onnxruntime-node's CPU provider at optimisation level 'all' and `opts.blockedConvs` is not false.
 * Returns the number of convs rewritten (0 where the pass does not apply).
 */
export async function blockFedConvsForSession(model: Model, fed: ReadonlySet<string>, opts: SessionOptions): Promise<number> {
  const block = await nchwcBlockForSession(opts);
  return block ? blockFedConvs(model, fed, block) : 0;
}

/**
 * The NCHWc block size when a session with `opts` runs on onnxruntime-node's CPU provider at
 * optimisation level 'all' and `opts.blockedConvs` is not false; null where no blocked pass applies.
 */
export async function nchwcBlockForSession(opts: SessionOptions): Promise<number | null> {
  if (opts.blockedConvs === false || (opts.optimization ?? 'all') !== 'all') return null;
  const backend = runtime();
  if (backend.name !== 'onnxruntime-node' || !backend.executionProviders.every((p) => p === 'cpu')) return null;
  return nchwcBlockSize();
}

/**
 * The channel block size of onnxruntime's NCHWc kernels on this CPU, read from what onnxruntime
 * itself writes: a probe Conv with a known constant weight is optimised and saved, and the
 * reordered weight's layout tells the block. null when onnxruntime does not block (e.g. on CPUs
 * without the kernels), which turns the pass off.
 */
export function nchwcBlockSize(): Promise<number | null> {
  cachedBlock ??= probeBlockSize().catch(() => null);
  return cachedBlock;
}

interface NodeFiles {
  fs: { writeFileSync(p: string, d: Uint8Array): void; readFileSync(p: string): Uint8Array; rmSync(p: string, o: object): void; mkdtempSync(p: string): string };
  os: { tmpdir(): string };
  path: { join(...p: string[]): string };
}

function nodeFiles(): NodeFiles | null {
  const get = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule;
  if (typeof get !== 'function') return null;
  return { fs: get('node:fs') as NodeFiles['fs'], os: get('node:os') as NodeFiles['os'], path: get('node:path') as NodeFiles['path'] };
}

async function probeBlockSize(): Promise<number | null> {
  const files = nodeFiles();
  if (!files) return null;
  const { fs, os, path } = files;
  const C = 64, k = 3;
  const w = new Float32Array(C * C * k * k).map((_, i) => i);
  const probe: Model = {
    irVersion: 8, opsets: [{ domain: '', version: 13 }], producerName: 'refit', producerVersion: '', docString: '', metadata: {},
    graph: {
      name: 'nchwc_probe',
      nodes: [{ name: 'conv', opType: 'Conv', domain: '', inputs: ['x', 'w'], outputs: ['y'], attrs: { pads: { kind: 'ints', value: [1, 1, 1, 1] } } }],
      inputs: [{ name: 'x', dtype: 'float32', shape: [1, C, 8, 8] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: [1, C, 8, 8] }],
      initializers: new Map([['w', tensor('float32', [C, C, k, k], w)]]),
      valueInfo: [],
    },
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'refit-nchwc-'));
  try {
    const out = path.join(dir, 'probe.opt.onnx');
    const s = await runtime().ort.InferenceSession.create(encodeModel(probe), { graphOptimizationLevel: 'all', optimizedModelFilePath: out, executionProviders: ['cpu'], logSeverityLevel: 3 });
    await s.release();
    const opt = decodeModel(new Uint8Array(fs.readFileSync(out)));
    if (!opt.graph.nodes.some((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv')) return null;
    const reordered = [...opt.graph.initializers.values()].find((t) => t.dims.length === 4 && t.data.length === w.length);
    if (!reordered) return null;
    for (const b of CANDIDATE_BLOCKS) if (sameData(blockedWeight(tensor('float32', [C, C, k, k], w), C, C, 'OIHWBiBo', b).data as Float32Array, reordered)) return b;
    return null;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function sameData(a: Float32Array, t: Tensor): boolean {
  const d = t.data as Float32Array;
  for (let i = 0; i < a.length; i++) if (a[i] !== d[i]) return false;
  return true;
}

/** Whether fed convs with output channels short of whole blocks are padded onto the blocked kernels; benches switch it off to compare. */
export const padFedOutputs = { current: true };

/**
 * Rewrite every 2-D Conv whose weight is one of `fed` (graph inputs of known shape), or the flipped
 * form of one (input-gradient convs, marked by conv.ts), onto the blocked kernels, in the forms
 * onnxruntime itself would choose (blockedForm). Other convs are
 * left to onnxruntime (it blocks the baked ones itself). Returns the number of convs rewritten.
 * The model is changed in place and gains the com.microsoft.nchwc opset import.
 */
export function blockFedConvs(model: Model, fed: ReadonlySet<string>, block: number): number {
  const g = model.graph;
  const shapeOf = new Map(g.inputs.map((i) => [i.name, i.shape]));
  const used = new Set(g.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  const fresh = (base: string) => {
    let name = base, i = 0;
    while (used.has(name)) name = `${base}_${++i}`;
    used.add(name);
    return name;
  };
  const ints = (name: string, v: number[]) => {
    const n = fresh(name);
    g.initializers.set(n, tensor('int64', [v.length], v));
    return n;
  };
  const reordered = new Map<string, string>(); // one reorder per weight and use, shared by its convs
  const nodes: Node[] = [];
  const op = (opType: string, inputs: string[], attrs: Node['attrs'] = {}): string => {
    const out = fresh(`${inputs[0]}.nchwc_${opType.toLowerCase()}`);
    nodes.push({ name: fresh(`${out}_node`), opType, domain: '', inputs, outputs: [out], attrs });
    return out;
  };
  /**
   * W through Reshape(shape) → Transpose(perm) steps, then Reshape(final). Each layout change is
   * written as at most two 3- or 4-D transposes rather than one 6-D one: onnxruntime's generic
   * 6-D Transpose moved a [512, 512, 3, 3] weight in 17 ms, the two-step form in 8.7 (0.51×; 0.62×
   * at [128, 128, 3, 3]), and these reorders run for every fed weight on every step.
   */
  const permute = (w: string, steps: [number[], number[]][], final: number[]) => {
    let t = w;
    for (const [shape, perm] of steps) t = op('Transpose', [op('Reshape', [t, ints(`${w}.nchwc_split`, shape)])], { perm: { kind: 'ints', value: perm } });
    return op('Reshape', [t, ints(`${w}.nchwc_shape`, final)]);
  };
  let count = 0;
  for (const n of g.nodes) {
    if (n.opType !== 'Conv' || n.domain !== '' || attrString(n) !== 'NOTSET') { nodes.push(n); continue; }
    const group = attrInt(n, 'group', 1);
    // A forward conv reads the fed weight itself; an input-gradient conv (conv.ts) reads its
    // C↔O-swapped, flipped form, which is built here from the fed weight in the blocked layout.
    const direct = n.inputs[1] && fed.has(n.inputs[1]) ? n.inputs[1] : undefined;
    const flipped = !direct && n.meta?.flippedWeightOf && fed.has(n.meta.flippedWeightOf) ? n.meta.flippedWeightOf : undefined;
    // one output phase of a strided conv's input gradient (conv.ts phasesDx): swapped, some taps
    const phase = !direct && !flipped && group === 1 && n.meta?.phaseWeightOf && fed.has(n.meta.phaseWeightOf.weight) ? n.meta.phaseWeightOf : undefined;
    const w = direct ?? flipped ?? phase?.weight;
    const dims = w ? shapeOf.get(w) : undefined;
    if (!w || dims?.length !== 4 || !dims.every((d) => typeof d === 'number')) { nodes.push(n); continue; }
    const [Ow, Iw, kh, kw] = dims as number[];
    // The conv's own [O, I/group]: the weight's, or for the swapped form [C, O/group].
    const [O, I] = direct ? [Ow!, Iw!] : [Iw! * group, Ow! / group];
    // A direct conv whose output channels do not fill whole blocks (a LoRA A conv: O = r) gets its
    // weight padded with zero filters to whole blocks; ReorderOutput keeps the first O channels.
    let form = blockedForm([O, I], group, block), Op = O;
    if (!form && direct && group === 1 && O % block !== 0 && padFedOutputs.current) {
      form = blockedForm([Math.ceil(O / block) * block, I], 1, block);
      if (form) Op = Math.ceil(O / block) * block;
    }
    if (!form) { nodes.push(n); continue; }
    const key = `${direct ? 'direct' : flipped ? 'flipped' : `phase ${phase!.taps.join(',')}`}:${w}`;
    let wr = reordered.get(key);
    if (!wr) {
      // Target layouts: OIHWBiBo [O/b][I/b][kh][kw][b_in][b_out]; OIHWBo [O/b][I][kh][kw][b_out].
      const b = block;
      if (direct) {
        // (ob, bo, I·K) → (ob, I·K, bo); for OIHWBiBo then (ob·ib, bi, K, bo) → (ob·ib, K, bi, bo).
        const K = kh! * kw!;
        const wp = Op > O ? op('Pad', [w, ints(`${w}.nchwc_pads`, [0, 0, 0, 0, Op - O, 0, 0, 0])]) : w;
        const toBo: [number[], number[]] = [[Op / b, b, I * K], [0, 2, 1]];
        wr = form.filter === 'OIHWBiBo'
          ? permute(wp, [toBo, [[(Op / b) * (I / b), b, K, b], [0, 2, 1, 3]]], [Op, I, kh!, kw!])
          : permute(wp, [toBo], [Op, I, kh!, kw!]);
      } else {
        // Flip the taps of W [Ow, Iw, K] with one MatMul by the K×K reversal (the last axis, so no
        // Transpose first), or pick a phase's taps by a K×K' selection; then one Transpose does
        // the C↔O swap and the blocking together.
        const K0 = kh! * kw!;
        const pick = phase ? phase.taps : Array.from({ length: K0 }, (_, i) => K0 - 1 - i);
        const K = pick.length;
        const sel = new Float32Array(K0 * K);
        pick.forEach((t, j) => (sel[t * K + j] = 1));
        const revName = fresh(`${w}.nchwc_${phase ? 'phase_taps' : 'tap_reversal'}`);
        g.initializers.set(revName, tensor('float32', [K0, K], sel));
        const wf = op('MatMul', [op('Reshape', [w, ints(`${w}.nchwc_taps`, [Ow!, Iw!, K0])]), revName]);
        const taps = phase ? attrInts(n, 'kernel_shape')! : [kh!, kw!]; // the conv's own kernel: a phase's fewer taps
        if (group === 1 && form.filter === 'OIHWBiBo') {
          // wf (o, c, h, w) as [Ow/b, b, Iw/b, b, kh, kw] → [C/b][O/b][kh][kw][b_in = o][b_out = c].
          // Two steps: (ob·bo, cb, bc·K) → (cb, ob·bo, bc·K); then (cb·ob, bo·bc, K) → (cb·ob, K, bo·bc).
          wr = permute(wf, [[[Ow!, Iw! / b, b * K], [1, 0, 2]], [[(Iw! / b) * (Ow! / b), b * b, K], [0, 2, 1]]], [O, I, ...taps]);
        } else if (group === 1) {
          // Fewer than b gradient channels in (Ow < b): [C/b][Ow][kh][kw][b_out = c].
          // (o, cb, bc·K) → (cb, o, bc·K); then (cb·o, bc, K) → (cb·o, K, bc).
          wr = permute(wf, [[[Ow!, Iw! / b, b * K], [1, 0, 2]], [[(Iw! / b) * Ow!, b, K], [0, 2, 1]]], [O, I, ...taps]);
        } else {
          // Depthwise: the swap is the identity; [C/b][1][kh][kw][b].
          wr = permute(wf, [[[Ow! / b, b, K], [0, 2, 1]]], [O, I, ...taps]);
        }
      }
      reordered.set(key, wr);
    }
    const xr = form.reorderInput ? fresh(`${n.name}.nchwc_in`) : n.inputs[0]!, yr = fresh(`${n.name}.nchwc_out`);
    const attrs: Node['attrs'] = { group: { kind: 'int', value: group } };
    for (const a of ['dilations', 'pads', 'strides', 'kernel_shape'] as const) {
      const v = attrInts(n, a);
      if (v) attrs[a] = { kind: 'ints', value: v };
    }
    if (form.reorderInput) {
      nodes.push({ name: fresh(`${n.name}.reorder_in`), opType: 'ReorderInput', domain: NCHWC_DOMAIN, inputs: [n.inputs[0]!], outputs: [xr], attrs: { channels_last: { kind: 'int', value: 0 } } });
    }
    nodes.push(
      { name: fresh(`${n.name}.nchwc`), opType: 'Conv', domain: NCHWC_DOMAIN, inputs: [xr, wr, ...(n.inputs[2] ? [Op > O ? op('Pad', [n.inputs[2], ints(`${n.inputs[2]}.nchwc_pads`, [0, Op - O])]) : n.inputs[2]] : [])], outputs: [yr], attrs },
      { name: fresh(`${n.name}.reorder_out`), opType: 'ReorderOutput', domain: NCHWC_DOMAIN, inputs: [yr], outputs: [n.outputs[0]!], attrs: { channels: { kind: 'int', value: O! }, channels_last: { kind: 'int', value: 0 } } },
    );
    count++;
  }
  g.nodes = count ? withoutDeadNodes(nodes, new Set(g.outputs.map((o) => o.name))) : nodes;
  if (count) {
    // The dropped flips' constants too (onnxruntime warns about each unused initializer).
    const read = new Set([...g.nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)]);
    for (const name of [...g.initializers.keys()]) if (!read.has(name)) g.initializers.delete(name);
  }
  if (count && !model.opsets.some((o) => o.domain === NCHWC_DOMAIN)) model.opsets.push({ domain: NCHWC_DOMAIN, version: 1 });
  return count;
}

/**
 * Below this many output positions a fed weight's convs stay on the plain kernels (fewPositionWeights:
 * the step passes blockFedConvs only the other fed weights). Full steps, alternating in one process, with the pass as before (every fed
 * conv blocked) against this threshold: timm's ResNet-26-D, ResNet-18 with blur pooling and DLA-34
 * at 64×64 took 0.81, 0.92 and 0.96 of the time at batch 2, 0.95, 1.02 and 1.00 at batch 8, and
 * at batch 64 (ResNet-26-D, blur ResNet-18, RegNetX-200MF) 1.00, 0.98 and 1.03, where 1024 would
 * have cost 5 % (ResNet-18-style layer4's 2×2 maps are 256 positions there).
 */
export const MIN_BLOCKED_POSITIONS = 256;

/**
 * Fed conv weights whose forward convs produce fewer than `min` output positions (batch × output
 * pixels, summed over the convs that read the weight): there the per-step reorder of the weight,
 * whose cost grows with the weight alone, outweighs what the blocked kernel saves, which grows with
 * the positions (timm's ResNet-26-D at batch 2, 64×64: 4×4 and 2×2 maps of 256 and 512 channels).
 */
export function fewPositionWeights(model: Model, fed: ReadonlySet<string>, shapes: ReadonlyMap<string, { dims: readonly (number | string)[] }>, min: number): Set<string> {
  const positions = new Map<string, number>();
  for (const n of model.graph.nodes) {
    const w = n.opType === 'Conv' && n.domain === '' ? n.inputs[1] : undefined;
    const dims = w && fed.has(w) ? shapes.get(n.outputs[0]!)?.dims : undefined;
    if (!w || !dims || !dims.every((d) => typeof d === 'number')) continue;
    const p = (dims as number[]).reduce((a, d, i) => (i === 1 ? a : a * d), 1);
    positions.set(w, (positions.get(w) ?? 0) + p);
  }
  return new Set([...positions].filter(([, p]) => p < min).map(([w]) => w));
}

/** The nodes without those whose outputs nobody reads (the flips the blocked weights replaced). */
function withoutDeadNodes(nodes: Node[], graphOutputs: ReadonlySet<string>): Node[] {
  const read = new Set(graphOutputs);
  const keep: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!n.outputs.some((o) => o && read.has(o))) continue;
    keep.push(n);
    for (const x of n.inputs) if (x) read.add(x);
  }
  return keep.reverse();
}

/**
 * Which blocked form onnxruntime's NchwcTransformer uses for a conv (its TransformConv): ungrouped
 * with input channels a multiple of the block → reordered input and OIHWBiBo filter; ungrouped
 * with fewer input channels than the block (a stem on RGB) → the plain NCHW input and an OIHWBo
 * filter; depthwise → reordered input and OIHWBo. Output channels must fill whole blocks (the
 * transformer pads them; so does `padChannels`, for BN-adapt's blocked graph (nchwc-batchstats.ts),
 * and blockFedConvs asks again with whole blocks for a direct fed conv, padFedOutputs). Anything else: null.
 */
export function blockedForm([O, I]: number[], group: number, block: number, opts: { padChannels?: boolean } = {}): { filter: 'OIHWBiBo' | 'OIHWBo'; reorderInput: boolean } | null {
  const pad = opts.padChannels === true;
  if (!pad && O! % block !== 0) return null;
  if (group === 1) {
    if (I! < block) return { filter: 'OIHWBo', reorderInput: false };
    return pad || I! % block === 0 ? { filter: 'OIHWBiBo', reorderInput: true } : null;
  }
  return I === 1 && group === O ? { filter: 'OIHWBo', reorderInput: true } : null;
}

function attrString(n: Node): string {
  const a = n.attrs.auto_pad;
  return a && a.kind === 'string' ? a.value : 'NOTSET';
}

/**
 * The activation a blocked Conv fuses (its `activation` attribute), as onnxruntime's
 * NchwcTransformer does: Relu → []; Clip with constant bounds → [min, max] (`constant` looks a
 * bound up); anything else → null.
 */
export function fusedActivation(n: Node, constant: (t: string) => Tensor | undefined): number[] | null {
  if (n.opType === 'Relu') return [];
  if (n.opType !== 'Clip') return null;
  const lowest = -3.4028234663852886e38, highest = 3.4028234663852886e38;
  if (n.inputs.length === 1) return [attrFloat(n, 'min', lowest), attrFloat(n, 'max', highest)];
  const v = (i: number, dflt: number) => {
    const t = n.inputs[i];
    if (!t) return dflt;
    const c = constant(t);
    return c && c.data.length === 1 ? Number(c.data[0]) : undefined;
  };
  const lo = v(1, lowest), hi = v(2, highest);
  return lo === undefined || hi === undefined ? null : [lo, hi];
}

/** What fuseConvTail needs to know of the graph being rewritten. */
export interface TailContext {
  /** Every node that reads `t` (none for a graph output). */
  readers(t: string): readonly Node[];
  /** The blocked twin of `t` when it has one of `like`'s shape. */
  blockedLike(t: string, like: string): string | undefined;
  /** A constant's value (an activation's bounds). */
  constant(t: string): Tensor | undefined;
  /** Marks a node the fused Conv stands for. */
  fused(n: Node): void;
}

/**
 * What a blocked Conv writing `y` fuses after it, as onnxruntime's NchwcTransformer does: a
 * residual Add whose other input is blocked (the Conv's Sum input, accumulated in place), then
 * Relu or Clip with constant bounds (its activation attributes, set on `attrs`). Returns the tensor
 * the Conv then stands for and its Sum input.
 */
export function fuseConvTail(y: string, attrs: Node['attrs'], ctx: TailContext): { out: string; sum?: string } {
  let out = y, sum: string | undefined;
  const soleConsumer = soleReader(ctx.readers);
  const add = soleConsumer(out);
  if (add && add.domain === '' && (add.opType === 'Add' || add.opType === 'Sum') && add.inputs.length === 2) {
    const other = add.inputs[0] === out ? add.inputs[1]! : add.inputs[0]!;
    const twin = other !== out ? ctx.blockedLike(other, y) : undefined;
    if (twin) {
      sum = twin;
      ctx.fused(add);
      out = add.outputs[0]!;
    }
  }
  const swish = hardSwishOf(out, ctx.readers, soleConsumer);
  if (swish) {
    attrs.activation = { kind: 'string', value: 'HardSwish' };
    for (const k of swish) ctx.fused(k);
    return { out: swish[1].outputs[0]!, sum };
  }
  const act = soleConsumer(out);
  const bounds = act && act.domain === '' ? fusedActivation(act, ctx.constant) : null;
  if (bounds) {
    attrs.activation = { kind: 'string', value: act!.opType };
    if (act!.opType === 'Clip') attrs.activation_params = { kind: 'floats', value: bounds };
    ctx.fused(act!);
    out = act!.outputs[0]!;
  }
  return { out, sum };
}

/** Whether fuseConvTail takes x·HardSigmoid(x) as the conv's HardSwish (benches switch it off to compare). */
export const fuseHardSwish = { current: true };

/**
 * x·HardSigmoid(x) with HardSwish's constants (α = 1/6, β = 0.5), as torch.onnx writes
 * nn.Hardswish below opset 14 (MobileNetV3): the HardSigmoid and the Mul, when they are all that
 * read x and the HardSigmoid's output feeds the Mul alone. onnxruntime's blocked Conv applies it as
 * its activation 'HardSwish', as its own optimizer fuses it for inference.
 */
function hardSwishOf(x: string, readers: TailContext['readers'], soleConsumer: (t: string) => Node | undefined): [Node, Node] | null {
  if (!fuseHardSwish.current) return null;
  const r = readers(x);
  if (r.length !== 2 || r.some((n) => n.domain !== '')) return null;
  const hs = r.find((n) => n.opType === 'HardSigmoid'), mul = r.find((n) => n.opType === 'Mul');
  if (!hs || !mul || hs.inputs[0] !== x || Math.abs(attrFloat(hs, 'alpha', 0.2) - 1 / 6) > 1e-6 || attrFloat(hs, 'beta', 0.5) !== 0.5) return null;
  const s = hs.outputs[0]!;
  if (soleConsumer(s) !== mul || !(mul.inputs.length === 2 && mul.inputs.includes(x) && mul.inputs.includes(s))) return null;
  return [hs, mul];
}

/** Every node that reads a tensor of `g` (none for a graph output, which must stay as it is). */
export function readersIn(g: Graph): (t: string) => readonly Node[] {
  const readers = consumers(g);
  const outputs = new Set(g.outputs.map((o) => o.name));
  return (t) => (outputs.has(t) ? [] : readers.get(t) ?? []);
}

/**
 * The node that alone reads a tensor, from a readersIn lookup (undefined when several do, none
 * does, or it is a graph output).
 */
export function soleReader(readers: (t: string) => readonly Node[]): (t: string) => Node | undefined {
  return (t) => {
    const c = readers(t);
    return c.length === 1 ? c[0] : undefined;
  };
}

/**
 * A constant conv weight W [O, I, kh, kw] zero-padded to [Op, Ip, kh, kw] in the layout
 * onnxruntime's blocked Conv reads: OIHWBiBo [Op/b][Ip/b][kh][kw][b_in][b_out], or OIHWBo
 * [Op/b][Ip][kh][kw][b_out] (depthwise, or fewer input channels than a block).
 */
export function blockedWeight(w: Tensor, Op: number, Ip: number, filter: 'OIHWBiBo' | 'OIHWBo', b: number): Tensor {
  const [O, I, kh, kw] = w.dims as [number, number, number, number];
  const K = kh * kw, src = w.data as Float32Array, out = new Float32Array(Op * Ip * K);
  if (filter === 'OIHWBo') {
    for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) for (let t = 0; t < K; t++) {
      out[((Math.floor(o / b) * Ip + i) * K + t) * b + (o % b)] = src[(o * I + i) * K + t]!;
    }
  } else {
    const Ib = Ip / b;
    for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) for (let t = 0; t < K; t++) {
      out[(((Math.floor(o / b) * Ib + Math.floor(i / b)) * K + t) * b + (i % b)) * b + (o % b)] = src[(o * I + i) * K + t]!;
    }
  }
  return tensor('float32', [Op, Ip, kh, kw], out);
}

/**
 * How blockedChannelSums sums squares: 'mul' squares in one Mul and sums like the first moment;
 * 'reduce' is one ReduceSumSquare (benches and tests switch it to compare).
 */
export const sumOfSquares = { current: 'mul' as 'mul' | 'reduce' };

/**
 * Per-channel sums over N, H, W of a blocked tensor whose channels `Cp` fill whole blocks of `b`:
 * [Cp], channel c = block index · b + lane. onnxruntime's fast keep-reduce-keep reduction of the
 * [N·Cp/b, H·W, b] view over H·W, then over N. `op` ReduceSumSquare sums squares, as x·x summed
 * that way: onnxruntime's keep-reduce-keep ReduceSum is a product with a ones vector (MLAS, on
 * every thread, and summing in blocks of K), where its ReduceSumSquare is one single-threaded
 * chain of additions per output. Squares then sum took 0.92–0.96 of the time of Tent steps and
 * BN-adapt on MobileNetV2 and EfficientNet-B0, and MobileNetV2's BN-adapt logits moved from
 * 2.6e-3 to 4.7e-4 of a float64 forward (docs/speed.md, session 35).
 */
export function blockedChannelSums(em: Emitter, t: string, [N, Cp, H, W]: number[], b: number, op: 'ReduceSum' | 'ReduceSumSquare' = 'ReduceSum'): string {
  const v = em.reshape(t, [N! * (Cp! / b), H! * W!, b]);
  const perSample = op === 'ReduceSumSquare' && sumOfSquares.current === 'mul' ? em.reduce('ReduceSum', em.mul(v, v), [1], false) : em.reduce(op, v, [1], false);
  return em.reduce('ReduceSum', em.reshape(perSample, [N!, Cp!]), [0], false);
}

/**
 * x·gate for a blocked x [N, Cp, H, W] and a per-sample, per-channel gate whose blocked memory is
 * [N, Cp] (a squeeze-excitation's, [N, Cp, 1, 1]): one blocked depthwise 1×1 Conv over the
 * [1, N·Cp, H, W] view of x (the same memory), the gate its weight. onnxruntime's broadcast Mul
 * reads the gate b floats at a time; the conv once per row. EfficientNet-B0's Tent step 0.93-0.96,
 * MobileNetV3-Large's 0.96 (docs/speed.md, session 39). `attrs` may carry a fused activation, `sum`
 * a blocked [N, Cp, H, W] the conv adds (its Sum input). Returns the blocked product [N, Cp, H, W]
 * (`y`), the Conv and the Reshape that writes `y` (a bias may join the Conv later: nchwc-step.ts).
 */
export function gateConv(em: Emitter, x: string, gate: string, [N, Cp, H, W]: number[], opts: { attrs?: Node['attrs']; sum?: string } = {}): { y: string; conv: Node; reshape: Node } {
  const view = (t: string) => em.reshape(t, [1, N! * Cp!, H!, W!]);
  const out = em.fresh('gate_nchwc');
  const attrs: Node['attrs'] = { ...opts.attrs, group: { kind: 'int', value: N! * Cp! }, kernel_shape: { kind: 'ints', value: [1, 1] } };
  const conv: Node = { name: em.fresh('gate_conv'), opType: 'Conv', domain: NCHWC_DOMAIN, inputs: [view(x), em.reshape(gate, [N! * Cp!, 1, 1, 1]), ...(opts.sum ? ['', view(opts.sum)] : [])], outputs: [out], attrs };
  em.graph.nodes.push(conv);
  const y = em.reshape(out, [N!, Cp!, H!, W!]);
  return { y, conv, reshape: em.graph.nodes[em.graph.nodes.length - 1]! };
}
