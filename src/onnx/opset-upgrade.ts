// Opset upgrade in TypeScript: default-domain opset 1–12 graphs become opset 13 (refit's
// minimum), op by op (./upgrade/rewrites.ts), and the result is accepted only if onnxruntime
// gives the same outputs for the old and the new graph on the same inputs (./upgrade/verify.ts).
// Python users have onnx.version_converter; a Node user loading a paddle2onnx or older
// tf2onnx export has nothing else, hence this.
import type { Attr, Model, Node } from './ir.ts';
import { cloneModel, opsetVersion, attrString } from './ir.ts';
import type { DType, Tensor } from './tensor.ts';
import { formatShape } from './tensor.ts';
import { REWRITES, UpgradeRefusal, type RewriteContext } from './upgrade/rewrites.ts';
import { CONTROL_FLOW, LEGACY_REFUSED, MIN_SOURCE_OPSET, TARGET_OPSET, UNCHANGED } from './upgrade/tables.ts';
import { compareOutputs, runAll, syntheticFeeds, RELATIVE_TOLERANCE, type OutputComparison } from './upgrade/verify.ts';
import { rewriteBodies, rewritesInBody } from './upgrade/subgraph-rewrites.ts';

export { TARGET_OPSET, MIN_SOURCE_OPSET, RELATIVE_TOLERANCE };

export interface UpgradeOptions {
  /** Inputs to verify on. Default: synthesised from the declared inputs (seeded), symbolic dims 2, then 1, then 1 on the first axis and 64 on the others. */
  feeds?: Record<string, Tensor>;
  /** Seed of the synthetic inputs (default 0). */
  seed?: number;
}

export interface UpgradeReport {
  from: number;
  to: number;
  /** Nodes rewritten, per op type (ops that carried over unchanged are not listed). */
  rewritten: Record<string, number>;
  /** The verification inputs, e.g. "x: float32[2, 3, 8, 8] (synthetic, seed 0)". */
  verifiedOn: string;
  outputs: OutputComparison[];
  /** What the file computes that its exporter's framework did not (the conversion itself changes nothing). */
  notes?: string[];
}

export interface UpgradeResult {
  model: Model;
  report: UpgradeReport;
}

/** A model that cannot be upgraded exactly; the message names every offending node, or the output that differed. */
export class OpsetUpgradeError extends Error {}

const isDefault = (n: { domain?: string | null }) => !n.domain || n.domain === 'ai.onnx';

/** The nodes, and their op types, inside a subgraph attribute (kept as raw onnx-proto by the IR). */
interface ProtoNode { name?: string | null; opType?: string | null; domain?: string | null; input?: string[] | null; output?: string[] | null; attribute?: ProtoAttr[] | null }
interface ProtoAttr { g?: { node?: ProtoNode[] | null } | null; graphs?: { node?: ProtoNode[] | null }[] | null }

function subgraphNodes(attrs: Record<string, Attr>): ProtoNode[] {
  const out: ProtoNode[] = [];
  const visit = (a: ProtoAttr) => {
    for (const g of [a.g, ...(a.graphs ?? [])]) for (const n of g?.node ?? []) {
      out.push(n);
      for (const b of n.attribute ?? []) visit(b);
    }
  };
  for (const a of Object.values(attrs)) if (a.kind === 'opaque' && a.value && typeof a.value === 'object') visit(a.value as ProtoAttr);
  return out;
}

/** Why a node cannot be converted, found without running anything; null when it can. */
function staticProblem(node: Node, from: number): string | null {
  if (!isDefault(node)) return null; // other domains keep their own opset import
  const legacy = LEGACY_REFUSED[node.opType];
  if (legacy !== undefined && from < legacy) return `opset ${from}'s ${node.opType} differs from its opset ${legacy} form and is not converted`;
  if (node.opType === 'Split' && from < 2 && node.inputs.length > 1) return 'Split-1 with its sizes as a second input is not converted';
  const rw = REWRITES[node.opType];
  if (rw && from < rw.below) return null;
  if (CONTROL_FLOW.has(node.opType)) {
    if (node.opType === 'Scan' && from < 9) return 'Scan-8 (batch axis semantics) was replaced at opset 9 and is not converted';
    for (const inner of subgraphNodes(node.attrs)) {
      if (!isDefault(inner)) continue;
      const op = inner.opType ?? '';
      const r = REWRITES[op];
      if (r && from < r.below && !rewritesInBody(op, from)) return `its body holds ${op} (node '${inner.name ?? '?'}'), whose rewrite to opset ${TARGET_OPSET} needs its input's rank or type, which refit does not know inside a body`;
      if (!r && !UNCHANGED.has(op) && !CONTROL_FLOW.has(op)) return `its body holds ${op} (node '${inner.name ?? '?'}'), which refit's opset ${from} → ${TARGET_OPSET} table does not know`;
    }
    return null;
  }
  if (UNCHANGED.has(node.opType) || rw) return null;
  return `op ${node.opType} is not in refit's opset ${from} → ${TARGET_OPSET} table (not a standard op at opset ${from}, or one refit cannot vouch for)`;
}

/**
 * Int attributes of ±INT64_MAX decode to the double 2^63, which onnx-proto would encode back as
 * INT64_MIN (Slice-1 `ends` from torch.onnx is the common case): pull them just inside the range.
 * Every use of such a value is a clamp (slice bounds), so the meaning is unchanged.
 */
function sanitizeIntAttrs(model: Model): void {
  const LIMIT = 9223372036854774784; // the largest double below 2^63
  for (const n of model.graph.nodes) for (const [k, a] of Object.entries(n.attrs)) {
    if (a.kind === 'int' && a.value > LIMIT) n.attrs[k] = { kind: 'int', value: LIMIT };
    if (a.kind === 'ints' && a.value.some((v) => v > LIMIT)) n.attrs[k] = { kind: 'ints', value: a.value.map((v) => Math.min(v, LIMIT)) };
  }
}

/**
 * What an old-opset torch.onnx export computes differently from the PyTorch model. Below opset 11,
 * `F.interpolate(mode='bilinear')` can only be written as Upsample or Resize-10, whose linear mode
 * has asymmetric coordinates where PyTorch's (align_corners=False) are half-pixel: the file is
 * another function, and torch.onnx only warns. (TensorFlow's resize_bilinear is asymmetric, so a
 * tf2onnx file computes what its model did: only torch's files are named.)
 */
function exportNotes(model: Model, from: number): string[] {
  if (model.producerName !== 'pytorch' || from > 10) return [];
  const linear = model.graph.nodes.filter((n) => (n.opType === 'Upsample' || n.opType === 'Resize') && attrString(n, 'mode', 'nearest') === 'linear');
  if (!linear.length) return [];
  const names = linear.slice(0, 3).map((n) => `'${n.name}'`).join(', ') + (linear.length > 3 ? `, … (${linear.length} in all)` : '');
  return [`${linear.length} ${linear[0]!.opType} node${linear.length > 1 ? 's' : ''} (${names}) resize bilinearly with opset ${from}'s asymmetric coordinates, where PyTorch's F.interpolate(mode='bilinear', align_corners=False) uses half-pixel ones: this file does not compute what the PyTorch model did (torch.onnx warns of it at export), and refit trains the file as it computes. Export at opset 11 or later to match PyTorch`];
}

function describeFeeds(feeds: Record<string, Tensor>, how: string): string {
  return `${Object.entries(feeds).map(([k, t]) => `${k}: ${t.dtype}${formatShape(t.dims)}`).join(', ')} (${how})`;
}

/**
 * Convert a default-domain opset 1–12 model to opset 13 and verify it: the original and the
 * converted model run in onnxruntime on the same inputs, and every output must be equal
 * (bit-exact, or within RELATIVE_TOLERANCE per element). Models at 13 or above are returned as they are.
 * Throws OpsetUpgradeError naming every node that cannot be converted, or the output that differs.
 * The converted model shares initializer tensors with `model` (rewrites never mutate them).
 */
export async function upgradeOpset(model: Model, opts: UpgradeOptions = {}): Promise<UpgradeResult> {
  const from = opsetVersion(model);
  const fail = (msg: string) => new OpsetUpgradeError(`cannot upgrade this model from opset ${from} to ${TARGET_OPSET}: ${msg}`);
  if (from >= TARGET_OPSET) return { model, report: { from, to: from, rewritten: {}, verifiedOn: 'nothing (no upgrade needed)', outputs: [] } };
  if (from < MIN_SOURCE_OPSET) throw fail(`opset ${from} is not an ONNX opset`);

  const problems = model.graph.nodes.map((n) => [n, staticProblem(n, from)] as const).filter((p) => p[1] !== null);
  if (problems.length) throw fail(problems.map(([n, why]) => `node '${n.name}' (${n.opType}): ${why}`).join('; '));

  const original = cloneModel(model);
  original.irVersion = Math.max(original.irVersion, 7); // opset 13 needs IR 7; IR 3's initializers-as-inputs are already dropped
  sanitizeIntAttrs(original);

  // Reference run, every value exposed: the outputs to match, and the ranks and dtypes rewrites need.
  const attempts: { feeds: Record<string, Tensor>; how: string }[] = [];
  const seed = opts.seed ?? 0;
  if (opts.feeds) attempts.push({ feeds: opts.feeds, how: 'given' });
  else {
    // Small symbolic dims first (cheap); then a batch of 1 with 64 on every other symbolic axis:
    // YOLO's dynamic height and width must survive five stride-2 stages and a 2× upsample.
    const sizes: [number | ((axis: number) => number), string][] = [[2, '2'], [1, '1'], [(axis) => (axis === 0 ? 1 : 64), '1 on the first axis and 64 on the others']];
    for (const [dim, what] of sizes) {
      try {
        attempts.push({ feeds: syntheticFeeds(original.graph.inputs, seed, dim), how: `synthetic, seed ${seed}, symbolic dims ${what}` });
      } catch (e) {
        throw fail(`cannot make verification inputs (${(e as Error).message}); pass \`feeds\` to verify on`);
      }
    }
  }
  let ref: Map<string, Tensor> | undefined;
  let used: (typeof attempts)[number] | undefined;
  const errors: string[] = [];
  for (const a of attempts) {
    try {
      ref = await runAll(original, a.feeds, true);
      used = a;
      break;
    } catch (e) {
      errors.push(`on ${describeFeeds(a.feeds, a.how)}: ${(e as Error).message.trim()}`);
    }
  }
  const noKernel = /Could not find an implementation for (\w+)\((\d+)\)/.exec(errors.join(' '));
  if (!ref && noKernel) throw fail(`onnxruntime has no kernel for ${noKernel[1]}-${noKernel[2]} (node types of opset ${from}), so it cannot run this file and refit cannot verify a conversion of it; in Python: onnx.version_converter.convert_version(model, ${TARGET_OPSET})`);
  if (!ref || !used) throw fail(`the converted model could not be verified, because the original does not run ${errors.join('; ')}. Pass \`feeds\` (inputs it runs on) to verify on`);

  const converted = cloneModel(original);
  const g = converted.graph;
  const dtypes = new Map<string, DType>();
  const ranks = new Map<string, number>();
  for (const [k, t] of g.initializers) { dtypes.set(k, t.dtype); ranks.set(k, t.dims.length); }
  for (const [k, t] of Object.entries(used.feeds)) { dtypes.set(k, t.dtype); ranks.set(k, t.dims.length); }
  for (const [k, t] of ref) { dtypes.set(k, t.dtype); ranks.set(k, t.dims.length); }
  const constants = new Map<string, Tensor>();
  for (const n of g.nodes) if (n.opType === 'Constant' && n.attrs.value?.kind === 'tensor') {
    constants.set(n.outputs[0]!, n.attrs.value.value);
    dtypes.set(n.outputs[0]!, n.attrs.value.value.dtype);
    ranks.set(n.outputs[0]!, n.attrs.value.value.dims.length);
  }
  const taken = new Set<string>([...g.initializers.keys(), ...g.inputs.map((v) => v.name)]);
  const reads = new Set<string>(g.outputs.map((o) => o.name));
  for (const n of g.nodes) {
    taken.add(n.name);
    for (const t of [...n.inputs, ...n.outputs]) taken.add(t);
    for (const t of n.inputs) reads.add(t);
    for (const inner of subgraphNodes(n.attrs)) {
      for (const t of inner.input ?? []) reads.add(t);
      for (const t of [inner.name ?? '', ...inner.output ?? []]) taken.add(t);
    }
  }
  const ctx: RewriteContext = {
    from,
    rank: (n) => ranks.get(n),
    dtype: (n) => dtypes.get(n),
    value: (n) => g.initializers.get(n) ?? constants.get(n) ?? ref!.get(n),
    used: (n) => reads.has(n),
    fresh(hint) {
      let name = hint;
      for (let i = 1; taken.has(name); i++) name = `${hint}_${i}`;
      taken.add(name);
      return name;
    },
  };
  // Below opset 6 many ops carried `consumed_inputs`, a hint for in-place kernels that means nothing since.
  if (from < 6) for (const n of g.nodes) if (isDefault(n) && n.attrs.consumed_inputs) delete n.attrs.consumed_inputs;
  const nodes: Node[] = [];
  const rewritten: Record<string, number> = {};
  const refusals: string[] = [];
  for (const n of g.nodes) {
    const rw = isDefault(n) ? REWRITES[n.opType] : undefined;
    // Attribute-to-input moves inside If/Loop/Scan bodies (./upgrade/subgraph-rewrites.ts).
    if (isDefault(n) && CONTROL_FLOW.has(n.opType)) { nodes.push({ ...n, attrs: rewriteBodies(n.attrs, from, ctx.fresh, rewritten) }); continue; }
    if (!rw || from >= rw.below) { nodes.push(n); continue; }
    try {
      nodes.push(...rw.apply(ctx, n));
      rewritten[n.opType] = (rewritten[n.opType] ?? 0) + 1;
    } catch (e) {
      if (!(e instanceof UpgradeRefusal)) throw e;
      refusals.push(e.message);
    }
  }
  if (refusals.length) throw fail(refusals.join('; '));
  g.nodes = nodes;
  // Outputs a rewrite dropped (an unread Dropout mask) must not keep a stale type annotation.
  const produced = new Set(nodes.flatMap((n) => n.outputs));
  g.valueInfo = g.valueInfo.filter((v) => produced.has(v.name));
  converted.opsets = converted.opsets.map((o) => (isDefault(o) ? { ...o, version: TARGET_OPSET } : o));

  let got: Map<string, Tensor>;
  try {
    got = await runAll(converted, used.feeds);
  } catch (e) {
    throw fail(`the converted graph does not run on ${describeFeeds(used.feeds, used.how)} although the original does: ${(e as Error).message.trim()}`);
  }
  const outputs = g.outputs.map((o) => compareOutputs(o.name, ref!.get(o.name), got.get(o.name)));
  const bad = outputs.filter((c) => c.verdict === 'different');
  if (bad.length) {
    const what = bad.map((c) => `output '${c.output}' ${c.detail ?? `differs by up to ${c.maxAbsDiff.toExponential(3)} (relative ${c.maxRelDiff.toExponential(3)}; tolerance ${RELATIVE_TOLERANCE})`}`).join('; ');
    throw fail(`verification failed on ${describeFeeds(used.feeds, used.how)}: ${what}`);
  }
  const notes = exportNotes(model, from);
  return { model: converted, report: { from, to: TARGET_OPSET, rewritten, verifiedOn: describeFeeds(used.feeds, used.how), outputs, ...(notes.length ? { notes } : {}) } };
}
