import { GroupTable, type ResolvedGroup } from './groups.ts';
import { constant } from './schedules.ts';
import { firstNonFinite, getTensor, tensorEntries } from './tensors.ts';
import type { CommonOptions, Optimizer, OptimizerState, OptimizerStepOptions, Schedule, TensorMap } from './types.ts';

/** Per-parameter state: named Float32Array slots plus the parameter's own update count. */
export interface ParamSlots {
  steps: number;
  slots: Record<string, Float32Array>;
}

/**
 * The shared machinery of refit's optimizers: param groups, schedule, the
 * check-then-update step, and state save/load. A subclass names its slots and
 * implements the update for one tensor.
 */
export abstract class BaseOptimizer<H extends { lr: number }> implements Optimizer {
  abstract readonly kind: string;
  protected readonly groups: GroupTable<H>;
  protected readonly schedule: Schedule;
  private readonly perParam = new Map<string, ParamSlots>();
  private steps = 0;
  // Reused between steps so that a steady-state step allocates nothing.
  private readonly work: { name: string; p: Float32Array; g: Float32Array; st: ParamSlots | undefined; grp: ResolvedGroup<H> }[] = [];

  protected constructor(defaults: H, options: CommonOptions<H>) {
    this.groups = new GroupTable(defaults, options.groups ?? [], (h, where) => this.validateHyper(h, where));
    this.schedule = options.schedule ?? constant();
    if (typeof this.schedule !== 'function') throw new Error(`${this.constructor.name}: schedule must be a function step → multiplier`);
  }

  /** Names of the slots this optimizer keeps per parameter, in a fixed order. */
  protected abstract slotNames(hyper: H): readonly string[];
  /** Throws a precise error if `hyper` is invalid. */
  protected abstract validateHyper(hyper: H, where: string): void;
  /** Updates one parameter in place. `st.steps` has already been incremented. */
  protected abstract update(p: Float32Array, g: Float32Array, st: ParamSlots, hyper: H, lr: number): void;

  get lr(): number {
    return this.groups.defaultHyper.lr;
  }
  set lr(value: number) {
    this.groups.setDefault('lr', value);
  }

  get stepCount(): number {
    return this.steps;
  }

  lrMultiplier(): number {
    const m = this.schedule(this.steps);
    if (!Number.isFinite(m) || m < 0) {
      throw new Error(`${this.kind}: schedule returned ${m} at step ${this.steps}; expected a finite multiplier ≥ 0`);
    }
    return m;
  }

  currentLr(name?: string): number {
    const g = name === undefined ? { hyper: this.groups.defaultHyper, lrScale: 1 } : this.groups.get(name);
    return g.hyper.lr * g.lrScale * this.lrMultiplier();
  }

  step(params: TensorMap, grads: TensorMap, options: OptimizerStepOptions = {}): void {
    const mult = this.lrMultiplier();
    const work = this.work;
    let n = 0;
    // Pass 1: check everything, change nothing.
    for (const [name, p] of tensorEntries(params)) {
      const g = getTensor(grads, name);
      if (g === undefined) continue;
      if (!(g instanceof Float32Array)) {
        throw new Error(`${this.kind}.step: gradient of '${name}' must be a Float32Array, got ${describe(g)}`);
      }
      if (g.length !== p.length) {
        throw new Error(`${this.kind}.step: gradient of '${name}' has ${g.length} elements, parameter has ${p.length}`);
      }
      const bad = options.gradsFinite ? -1 : firstNonFinite(g);
      if (bad >= 0) {
        throw new Error(
          `${this.kind}.step: gradient of '${name}' is not finite (element ${bad} is ${g[bad]}); ` +
            `refusing to update any parameter`,
        );
      }
      const grp = this.groups.get(name);
      const st = this.perParam.get(name);
      if (st !== undefined) this.checkSlots(name, st, p.length);
      if (n < work.length) {
        const w = work[n]!;
        w.name = name;
        w.p = p;
        w.g = g;
        w.st = st;
        w.grp = grp;
      } else {
        work.push({ name, p, g, st, grp });
      }
      n++;
    }
    // Pass 2: update.
    for (let i = 0; i < n; i++) {
      const w = work[i]!;
      const st = w.st ?? this.createSlots(w.name, w.p.length, w.grp.hyper);
      st.steps++;
      this.update(w.p, w.g, st, w.grp.hyper, w.grp.hyper.lr * w.grp.lrScale * mult);
    }
    for (let i = 0; i < n; i++) {
      // Drop references to caller-owned arrays between steps.
      const w = work[i]!;
      w.p = EMPTY;
      w.g = EMPTY;
      w.st = undefined;
    }
    this.steps++;
  }

  state(): OptimizerState {
    const paramSteps: Record<string, number> = {};
    const buffers: Record<string, Record<string, Float32Array>> = {};
    for (const [name, st] of this.perParam) {
      paramSteps[name] = st.steps;
      const slots: Record<string, Float32Array> = {};
      for (const [slot, buf] of Object.entries(st.slots)) slots[slot] = buf.slice();
      buffers[name] = slots;
    }
    return { version: 1, kind: this.kind, hyper: this.groups.describe(), step: this.steps, paramSteps, buffers };
  }

  loadState(state: OptimizerState, params?: TensorMap): void {
    const who = `${this.kind}.loadState`;
    if (state === null || typeof state !== 'object') throw new Error(`${who}: state must be an object, got ${describe(state)}`);
    if (state.kind !== this.kind) {
      throw new Error(`${who}: state is for optimizer kind '${String(state.kind)}', this optimizer is '${this.kind}'`);
    }
    if (state.version !== 1) throw new Error(`${who}: unsupported state version ${String(state.version)} (expected 1)`);
    if (!Number.isSafeInteger(state.step) || state.step < 0) {
      throw new Error(`${who}: step must be an integer ≥ 0, got ${String(state.step)}`);
    }
    const buffers = state.buffers ?? {};
    const paramSteps = state.paramSteps ?? {};
    const next = new Map<string, ParamSlots>();
    const names = new Set([...Object.keys(buffers), ...Object.keys(paramSteps)]);
    for (const name of names) {
      const steps = paramSteps[name];
      if (!Number.isSafeInteger(steps) || steps! < 0) {
        throw new Error(`${who}: paramSteps['${name}'] must be an integer ≥ 0, got ${String(steps)}`);
      }
      const hyper = this.groups.get(name).hyper;
      const want = this.slotNames(hyper);
      const have = buffers[name] ?? {};
      for (const slot of Object.keys(have)) {
        if (!want.includes(slot)) {
          throw new Error(`${who}: parameter '${name}' has unknown slot '${slot}' (expected ${fmtSlots(want)})`);
        }
      }
      const p = params === undefined ? undefined : getTensor(params, name);
      if (params !== undefined && p === undefined) {
        throw new Error(`${who}: state has buffers for '${name}', which is not among the parameters`);
      }
      let len = p?.length;
      const slots: Record<string, Float32Array> = {};
      for (const slot of want) {
        const buf = have[slot];
        if (buf === undefined) {
          throw new Error(`${who}: parameter '${name}' is missing slot '${slot}' (expected ${fmtSlots(want)})`);
        }
        if (!(buf instanceof Float32Array)) {
          throw new Error(`${who}: buffer '${name}'.${slot} must be a Float32Array, got ${describe(buf)}`);
        }
        if (len === undefined) len = buf.length;
        else if (buf.length !== len) {
          const of = p !== undefined ? `parameter '${name}' has ${p.length}` : `other slots of '${name}' have ${len}`;
          throw new Error(`${who}: shape mismatch: buffer '${name}'.${slot} has ${buf.length} elements, ${of}`);
        }
        slots[slot] = buf.slice();
      }
      next.set(name, { steps: steps!, slots });
    }
    this.perParam.clear();
    for (const [k, v] of next) this.perParam.set(k, v);
    this.steps = state.step;
  }

  private createSlots(name: string, length: number, hyper: H): ParamSlots {
    const slots: Record<string, Float32Array> = {};
    for (const s of this.slotNames(hyper)) slots[s] = new Float32Array(length);
    const st = { steps: 0, slots };
    this.perParam.set(name, st);
    return st;
  }

  private checkSlots(name: string, st: ParamSlots, length: number): void {
    for (const slot in st.slots) {
      const n = st.slots[slot]!.length;
      if (n !== length) {
        throw new Error(
          `${this.kind}.step: shape mismatch: optimizer buffer '${name}'.${slot} has ${n} elements, parameter has ${length}`,
        );
      }
    }
  }
}

const EMPTY = new Float32Array(0);

function fmtSlots(slots: readonly string[]): string {
  return slots.length === 0 ? 'no slots' : slots.map((s) => `'${s}'`).join(', ');
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}
