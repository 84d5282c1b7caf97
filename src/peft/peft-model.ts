// A base model with named adapters: each a graph rewrite whose tensors are initializers named
// `<adapter>.<kind>.<module>`. Adapters can be added, trained, blended per request, merged
// into the base weights and unmerged. Every operation returns a new PeftModel; the source
// model's tensors are shared, never written.
import type { Graph, Model } from '../onnx/ir.ts';
import { cloneModel, opsetVersion } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { RefitModel } from '../model.ts';
import type { SessionOptions } from '../onnx/runtime.ts';
import { createSession, toOrt, fromOrt, ort } from '../onnx/runtime.ts';
import { encodeModel } from '../onnx/proto.ts';
import { signatureOf, checkSignature } from '../onnx/shapes.ts';
import { type Tensor, cloneTensor, f32 } from '../onnx/tensor.ts';
import type { ParamGroup } from '../train/optim/types.ts';
import type { AdapterMethod, AdapterPlan } from './types.ts';
import { findSites, withTargetNotes, type Site } from './sites.ts';
import { toposort } from './rewrite.ts';
import { floatValue, floatizeQuantized, asStored, upcastAdapted, checkQuantizedPlan } from './quantized.ts';
import { PeftError } from './errors.ts';

interface Entry {
  name: string;
  method: string;
  plan: AdapterPlan;
  /** Owned current values: the plan's tensors and overrides, and the gate. Shared with the IR while active. */
  values: Map<string, Tensor>;
}

export interface AdapterInfo {
  name: string;
  method: string;
  peftType: string;
  merged: boolean;
  trainable: string[];
  /** Every tensor the adapter owns (new tensors and overridden base tensors). */
  tensors: string[];
}

export const gateName = (adapter: string) => `${adapter}.gate`;

/**
 * Methods that add no nodes (BitFit, norm-affine) or are always on (a new head) never read their
 * gate; an initializer nothing reads makes onnxruntime print a warning on every session.
 */
function dropUnusedGates(g: Graph, gates: string[]): void {
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const name of gates) if (!read.has(name) && !g.outputs.some((o) => o.name === name)) g.initializers.delete(name);
}
const NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

const copyEntry = (e: Entry): Entry => ({ ...e, values: new Map([...e.values].map(([k, t]) => [k, cloneTensor(t)])) });

export class PeftModel extends RefitModel {
  /** The base graph with merged adapters folded or baked in, before the active adapters. */
  readonly root: Model;
  private mixSessions = new Map<string, { stamp: number; session: Promise<ort.InferenceSession> }>();

  private constructor(readonly origin: Model, private readonly merged: Entry[], private readonly active: Entry[], sessionOptions: SessionOptions) {
    const ir = cloneModel(origin);
    const g = ir.graph;
    const opset = opsetVersion(ir);
    for (const e of merged) {
      if (e.plan.fold) {
        const value = (n: string) => floatValue(g, n, e.values.get(n) ?? g.initializers.get(n) ?? missing(n));
        for (const [k, t] of e.plan.fold(value)) g.initializers.set(k, asStored(g.initializers.get(k), t));
        floatizeQuantized(g, new Emitter(g, opset)); // a merged int8 layer becomes a float layer (./quantized.ts)
      } else {
        // Not foldable (a new head, bottleneck adapters): the rewrite becomes part of the base graph.
        for (const [k, t] of e.values) g.initializers.set(k, t);
        g.initializers.set(gateName(e.name), f32([], [1]));
        e.plan.apply({ graph: g, em: new Emitter(g, opset, `${e.name}/`), gate: gateName(e.name) });
      }
    }
    toposort(g);
    const root = cloneModel(ir);
    for (const e of active) {
      for (const [k, t] of e.values) g.initializers.set(k, t);
      e.plan.apply({ graph: g, em: new Emitter(g, opset, `${e.name}/`), gate: gateName(e.name) });
    }
    toposort(g);
    // Adapter rewrites emit float32: on a float16 base the adapted graph runs upcast (./quantized.ts).
    if (active.length || merged.some((e) => !e.plan.fold)) upcastAdapted(g);
    dropUnusedGates(g, [...merged, ...active].map((e) => gateName(e.name)));
    dropUnusedGates(root.graph, merged.map((e) => gateName(e.name)));
    super(ir, sessionOptions);
    this.root = root;
  }

  /** Wrap a model (shared, never written) with no adapters; a PeftModel is returned as is. */
  static from(model: RefitModel): PeftModel {
    return model instanceof PeftModel ? model : new PeftModel(model.ir, [], [], model.sessionOptions);
  }

  /** Active (not merged) adapters, in the order they were added. */
  adapterNames(): string[] { return this.active.map((e) => e.name); }
  mergedNames(): string[] { return this.merged.map((e) => e.name); }

  adapter(name: string): AdapterInfo {
    const e = this.active.find((x) => x.name === name);
    const m = this.merged.find((x) => x.name === name);
    const x = e ?? m;
    if (!x) throw new PeftError(`no adapter '${name}'; adapters: ${[...this.adapterNames(), ...this.mergedNames()].join(', ') || '(none)'}`);
    return { name, method: x.method, peftType: x.plan.peftType, merged: !e, trainable: [...x.plan.trainable], tensors: [...x.plan.tensors.keys(), ...x.plan.overrides.keys()] };
  }

  /** The adapter's plan (its tensors, file keys and rewrite). */
  planOf(name: string): AdapterPlan { return this.entry(name).plan; }

  /** Current values of an adapter's tensors (live: training updates them). */
  adapterValues(name: string): Map<string, Tensor> {
    const e = this.entry(name);
    return new Map([...e.values].filter(([k]) => k !== gateName(name)));
  }

  /** Attachable layers of the base graph. */
  sites(): Site[] {
    const prefixes = [...this.active, ...this.merged].map((e) => `${e.name}/`);
    const owned = new Set([...this.active, ...this.merged].flatMap((e) => [...e.plan.tensors.keys()]));
    return findSites(this.root.graph, (n) => owned.has(n) || prefixes.some((p) => n.startsWith(p)));
  }

  /** A new model with one more adapter. */
  withAdapter(name: string, method: AdapterMethod): PeftModel {
    if (!NAME.test(name)) throw new PeftError(`adapter name '${name}' must match ${NAME} (it prefixes tensor names)`);
    if ([...this.active, ...this.merged].some((e) => e.name === name)) throw new PeftError(`an adapter named '${name}' already exists; remove it first or choose another name`);
    const g = this.ir.graph;
    let plan: AdapterPlan;
    try {
      plan = method.plan({ graph: g, name, sites: this.sites(), value: (n) => floatValue(g, n, g.initializers.get(n) ?? missing(n)), source: { opsets: this.ir.opsets, producerName: this.ir.producerName } });
    } catch (e) { throw withTargetNotes(e, g); }
    checkQuantizedPlan(g, method.method, name, plan.overrides.keys(), plan.fileConfig, this.sites());
    for (const k of plan.tensors.keys()) if (g.initializers.has(k) || g.inputs.some((i) => i.name === k)) throw new PeftError(`${method.method} '${name}': tensor '${k}' already exists in the model`);
    for (const k of plan.overrides.keys()) {
      if (!g.initializers.has(k)) throw new PeftError(`${method.method} '${name}': overrides '${k}', which is not an initializer of the model`);
      const other = this.active.find((e) => e.plan.overrides.has(k));
      if (other) throw new PeftError(`${method.method} '${name}': '${k}' is already owned by adapter '${other.name}'; merge or remove that adapter first`);
    }
    const values = new Map<string, Tensor>();
    for (const [k, t] of [...plan.tensors, ...plan.overrides]) values.set(k, cloneTensor(t));
    values.set(gateName(name), f32([], [1]));
    return this.derive(this.merged.map(copyEntry), [...this.active.map(copyEntry), { name, method: method.method, plan, values }]);
  }

  /** A new model without the adapter (active or merged). */
  removeAdapter(name: string): PeftModel {
    this.entry(name);
    return this.derive(this.merged.filter((e) => e.name !== name).map(copyEntry), this.active.filter((e) => e.name !== name).map(copyEntry));
  }

  /**
   * Fold the adapter into the base weights (LoRA, DoRA, VeRA, (IA)^3, BitFit, norm-affine): the
   * graph is then the base graph, with no added latency. Adapters that cannot be folded (a new
   * head, bottleneck adapters) are baked into the base graph instead. `unmerge` undoes either exactly.
   */
  merge(name: string): PeftModel {
    const e = this.active.find((x) => x.name === name);
    if (!e) throw new PeftError(`cannot merge '${name}': ${this.merged.some((x) => x.name === name) ? 'it is already merged' : `no such adapter; active adapters: ${this.adapterNames().join(', ') || '(none)'}`}`);
    return this.derive([...this.merged.map(copyEntry), copyEntry(e)], this.active.filter((x) => x !== e).map(copyEntry));
  }

  /** Merge every active adapter, in order. */
  mergeAll(): PeftModel {
    return this.derive([...this.merged, ...this.active].map(copyEntry), []);
  }

  /** Take a merged adapter back out: the base weights return to their exact values before the merge. */
  unmerge(name: string): PeftModel {
    const e = this.merged.find((x) => x.name === name);
    if (!e) throw new PeftError(`cannot unmerge '${name}': it is not merged (merged: ${this.mergedNames().join(', ') || 'none'})`);
    return this.derive(this.merged.filter((x) => x !== e).map(copyEntry), [...this.active.map(copyEntry), copyEntry(e)]);
  }

  /** Names to pass as `compileTrainStep({ trainable })`: every active adapter's, or one adapter's. */
  trainableNames(name?: string): string[] {
    const es = name === undefined ? this.active : [this.activeEntry(name)];
    // A tensor a later rewrite removed from the graph (a layer behind a replaced head) does not train.
    return es.flatMap((e) => e.plan.trainable).filter((n) => this.ir.graph.initializers.has(n));
  }

  /** Optimizer param groups for per-tensor lr multipliers (LoRA+'s larger lr for B). Empty when none. */
  paramGroups<H>(): ParamGroup<H>[] {
    const byScale = new Map<number, string[]>();
    for (const e of this.active) for (const [k, s] of e.plan.lrScales ?? []) byScale.set(s, [...(byScale.get(s) ?? []), k]);
    return [...byScale].map(([lrScale, params]) => ({ params, lrScale, name: `lrScale ${lrScale}` }) as unknown as ParamGroup<H>);
  }

  /** A deep copy: adapter values and base parameters are copied. */
  override clone(): PeftModel {
    const origin = cloneModel(this.origin);
    for (const [k, t] of origin.graph.initializers) origin.graph.initializers.set(k, cloneTensor(t));
    return new PeftModel(origin, this.merged.map(copyEntry), this.active.map(copyEntry), this.sessionOptions);
  }

  /**
   * Inference with a blend of adapters chosen per call: `{ digits: 1 }` activates one adapter,
   * `{ a: 0.5, b: 0.5 }` averages two; unnamed adapters get weight 0 (adapters without a gate —
   * BitFit, norm-affine, a new head — are always on). Every adapter tensor is a graph input, so
   * one onnxruntime session serves every blend, and trained adapter values need no rebuild.
   */
  async runMix(feeds: Record<string, Tensor>, weights: Record<string, number>, opts: { outputs?: string[] } = {}): Promise<Record<string, Tensor>> {
    for (const [k, w] of Object.entries(weights)) {
      this.activeEntry(k);
      if (!Number.isFinite(w)) throw new PeftError(`adapter weight for '${k}' is ${w}; weights must be finite`);
    }
    checkSignature(this.ir.graph.inputs, signatureOf(feeds));
    const outputs = opts.outputs ?? this.ir.graph.outputs.map((o) => o.name);
    const fed = this.active.flatMap((e) => [...e.values.keys()]).filter((k) => this.ir.graph.initializers.has(k));
    const key = outputs.join(',');
    const stamp = this.bakedStamp(new Set(fed));
    let hit = this.mixSessions.get(key);
    if (hit && hit.stamp !== stamp) { hit.session.then((s) => s.release()).catch(() => undefined); hit = undefined; }
    if (!hit) {
      const m = cloneModel(this.ir);
      for (const p of fed) {
        const t = m.graph.initializers.get(p)!;
        m.graph.initializers.delete(p);
        m.graph.inputs.push({ name: p, dtype: t.dtype, shape: [...t.dims] });
      }
      const declared = new Map(this.ir.graph.outputs.map((o) => [o.name, o]));
      m.graph.outputs = outputs.map((o) => declared.get(o) ?? { name: o, dtype: 'float32', shape: null, untyped: true });
      hit = { stamp, session: createSession(encodeModel(m), this.sessionOptions) };
      hit.session.catch(() => this.mixSessions.delete(key));
      this.mixSessions.set(key, hit);
    }
    const ortFeeds: Record<string, ort.Tensor> = {};
    const fedSet = new Set(fed);
    for (const [k, t] of Object.entries(feeds)) ortFeeds[k] = toOrt(t);
    for (const e of this.active) {
      for (const [k, t] of e.values) if (fedSet.has(k)) ortFeeds[k] = toOrt(k === gateName(e.name) ? f32([], [weights[e.name] ?? 0]) : t);
    }
    const out = await (await hit.session).run(ortFeeds);
    return Object.fromEntries(outputs.map((o) => [o, fromOrt(out[o]!)]));
  }

  override async release(): Promise<void> {
    const old = [...this.mixSessions.values()];
    this.mixSessions.clear();
    await Promise.all(old.map((e) => e.session.then((s) => s.release()).catch(() => undefined)));
    await super.release();
  }

  private derive(merged: Entry[], active: Entry[]): PeftModel {
    return new PeftModel(this.origin, merged, active, this.sessionOptions);
  }

  private entry(name: string): Entry {
    const e = this.active.find((x) => x.name === name) ?? this.merged.find((x) => x.name === name);
    if (!e) throw new PeftError(`no adapter '${name}'; adapters: ${[...this.adapterNames(), ...this.mergedNames()].join(', ') || '(none)'}`);
    return e;
  }

  private activeEntry(name: string): Entry {
    const e = this.active.find((x) => x.name === name);
    if (!e) throw new PeftError(`no active adapter '${name}'; active adapters: ${this.adapterNames().join(', ') || '(none)'}${this.merged.some((x) => x.name === name) ? ` ('${name}' is merged; unmerge it first)` : ''}`);
    return e;
  }
}

function missing(n: string): never {
  throw new PeftError(`tensor '${n}' is not an initializer of the model`);
}

/**
 * Add a named adapter to a model.
 * @example
 * const peft = withAdapter(model, 'digits', lora({ targets: /attn\.(q|v)/, rank: 8, alpha: 16 }));
 * const step = peft.compileTrainStep({ trainable: peft.trainableNames(), loss });
 */
export function withAdapter(model: RefitModel, name: string, method: AdapterMethod): PeftModel {
  return PeftModel.from(model).withAdapter(name, method);
}
