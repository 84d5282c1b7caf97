// Which nodes on the gradient path have no gradient rule: found all at once by a graph walk,
// so a compile (or a diagnosis) names every blocker instead of the first one met.
import { isDefaultDomain, type Node } from '../onnx/ir.ts';
import { ruleFor, supportedOps, NO_GRADIENT_OPS } from './rule.ts';
import { readsOf } from '../onnx/subgraphs.ts';

export interface Blocker {
  opType: string;
  /** '' for the default domain. */
  domain: string;
  /** Names of the nodes of this op on the gradient path. */
  nodes: string[];
  /** Trainable parameters upstream of at least one of these nodes. */
  params: string[];
  /** Why the op cannot be differentiated, when it is more specific than "no rule". */
  reason?: string;
}

export interface PathQuery {
  nodes: readonly Node[];
  /** Tensors differentiated with respect to. */
  wrt: readonly string[];
  /** Tensors the gradient flows back from (the loss, or every graph output). */
  targets: readonly string[];
  /** Whether a tensor is floating point (integer and bool tensors carry no gradient). */
  isFloat: (tensor: string) => boolean;
  /**
   * Overrides the rule lookup for one node: null when it is handled anyway (a lowering pass
   * rewrites it into ops with rules), a reason string when it is blocked, undefined for the default.
   */
  judge?: (node: Node) => string | null | undefined;
}

export { isDefaultDomain };

/** Tensors that depend on a `wrt` tensor through ops that carry gradient (float tensors only). */
export function dependents(q: Pick<PathQuery, 'nodes' | 'wrt' | 'isFloat'>): Set<string> {
  const dep = new Set(q.wrt);
  for (const n of q.nodes) {
    if (NO_GRADIENT_OPS.has(n.opType) && isDefaultDomain(n)) continue;
    if (!readsOf(n).some((i) => i && dep.has(i))) continue;
    for (const o of n.outputs) if (o && q.isFloat(o)) dep.add(o);
  }
  return dep;
}

/** Tensors a gradient can flow back to from `targets` (never through ops that carry none). */
export function reachedFrom(nodes: readonly Node[], targets: readonly string[]): Set<string> {
  const reach = new Set(targets);
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (NO_GRADIENT_OPS.has(n.opType) && isDefaultDomain(n)) continue;
    if (n.outputs.some((o) => o && reach.has(o))) for (const i of readsOf(n)) if (i) reach.add(i);
  }
  return reach;
}

/** Nodes whose gradient is needed: an output on the path and an input on the path. */
export function nodesOnPath(q: PathQuery): { onPath: Node[]; dep: Set<string>; reach: Set<string> } {
  const dep = dependents(q);
  const reach = reachedFrom(q.nodes, q.targets);
  const on = (t: string) => !!t && dep.has(t) && reach.has(t);
  const onPath = q.nodes.filter((n) => n.outputs.some(on) && readsOf(n).some(on));
  return { onPath, dep, reach };
}

/** Every op on the gradient path without a usable rule, grouped by op, with the parameters upstream. */
export function findBlockers(q: PathQuery): Blocker[] {
  const { onPath, dep } = nodesOnPath(q);
  const groups = new Map<string, { node: Node[]; reason?: string }>();
  for (const n of onPath) {
    const verdict = q.judge?.(n);
    if (verdict === null) continue;
    const reason = verdict;
    if (reason === undefined && isDefaultDomain(n) && ruleFor(n.opType)) continue;
    const key = `${n.domain}|${n.opType}|${reason ?? ''}`;
    const g = groups.get(key);
    if (g) g.node.push(n); else groups.set(key, { node: [n], reason });
  }
  if (groups.size === 0) return [];
  const prod = new Map<string, Node>();
  for (const n of q.nodes) for (const o of n.outputs) if (o) prod.set(o, n);
  const wrt = new Set(q.wrt);
  const out: Blocker[] = [];
  for (const { node, reason } of groups.values()) {
    // Walk back from the blocked nodes' inputs over dependent tensors to the parameters.
    const params = new Set<string>();
    const seen = new Set<string>();
    const stack = node.flatMap((n) => readsOf(n).filter((i) => i && dep.has(i)));
    while (stack.length) {
      const t = stack.pop()!;
      if (seen.has(t)) continue;
      seen.add(t);
      if (wrt.has(t)) params.add(t);
      const p = prod.get(t);
      if (p) for (const i of readsOf(p)) if (i && dep.has(i) && !seen.has(i)) stack.push(i);
    }
    const first = node[0]!;
    out.push({ opType: first.opType, domain: isDefaultDomain(first) ? '' : first.domain, nodes: node.map((n) => n.name), params: q.wrt.filter((p) => params.has(p)), reason });
  }
  return out.sort((a, b) => b.nodes.length - a.nodes.length || a.opType.localeCompare(b.opType));
}

const list = (xs: readonly string[], max: number, quote = true) => {
  const q = quote ? xs.map((x) => `'${x}'`) : [...xs];
  return q.length <= max ? q.join(', ') : `${q.slice(0, max).join(', ')} … (${q.length} in all)`;
};

/** The graph inputs `tensor` is computed from (what decides an If's branch, say). */
export function inputsBehind(nodes: readonly Node[], inputs: ReadonlySet<string>, tensor: string): string[] {
  const producer = new Map<string, Node>();
  for (const n of nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const found = new Set<string>(), seen = new Set<string>();
  const stack = [tensor];
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    if (inputs.has(t)) found.add(t);
    for (const i of producer.get(t)?.inputs ?? []) if (i) stack.push(i);
  }
  return [...found];
}

/**
 * The error a compile raises: every blocked op, its nodes, the parameters upstream, and what to
 * do. `ifInputs`: the graph inputs the blocked Ifs' conditions are computed from.
 */
export function missingRulesError(blockers: Blocker[], wrt: readonly string[], ifInputs: readonly string[] = []): Error {
  const nNodes = blockers.reduce((a, b) => a + b.nodes.length, 0);
  const lines = blockers.map((b) => {
    const dom = b.domain ? ` (domain '${b.domain}')` : '';
    const why = b.reason ? ` [${b.reason}]` : '';
    return `  - ${b.opType}${dom} ×${b.nodes.length}${why}: node${b.nodes.length > 1 ? 's' : ''} ${list(b.nodes, 6)}; ` +
      `trainable parameters upstream: ${list(b.params, 6)}`;
  });
  const blocked = new Set(blockers.flatMap((b) => b.params));
  const free = wrt.filter((p) => !blocked.has(p));
  const advice = free.length
    ? `Freeze the parameters upstream of these nodes: of the ${wrt.length} selected, the ${free.length} not upstream of any of them would train, ` +
      `e.g. trainable: [${list(free, 8)}].`
    : 'Every selected parameter lies upstream of one of them: freeze those parameters (select only parameters after these nodes) or replace the ops.';
  const ops = blockers.map((b) => b.opType);
  const head = blockers.length === 1 && !blockers[0]!.reason
    ? `no gradient rule for op ${ops[0]}`
    : `no gradient rule for ${blockers.length} op type${blockers.length > 1 ? 's' : ''} (${ops.join(', ')})`;
  const fix = ifInputs.length
    ? `Here the If's condition is computed from the input${ifInputs.length > 1 ? 's' : ''} ${list(ifInputs, 4)}: fix ${ifInputs.length > 1 ? 'them' : 'it'} to a value with withFixedInputs(model, { ${ifInputs[0]}: … }). `
    : '';
  const control = ops.some((o) => o === 'If' || o === 'Loop' || o === 'Scan')
    ? `Control flow is not differentiated; an If whose condition is a constant is inlined when the step compiles. ${fix}A text decoder exported with a KV cache (optimum's merged decoder, with use_cache_branch) trains as withoutKvCache(model). `
    : '';
  return new Error(
    `${head} on the gradient path (${nNodes} node${nNodes > 1 ? 's' : ''}):\n${lines.join('\n')}\n${control}${advice} ` +
    `diagnoseTraining(model) lists the blockers per parameter group. Supported ops: ${supportedOps().join(', ')}.`,
  );
}
