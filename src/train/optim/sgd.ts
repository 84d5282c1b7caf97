import { BaseOptimizer, type ParamSlots } from './base.ts';
import type { CommonOptions } from './types.ts';

export interface SGDHyper {
  lr: number;
  /** Momentum factor (torch `momentum`). Default 0. */
  momentum: number;
  /** Dampening for momentum (torch `dampening`). Default 0. */
  dampening: number;
  /** Nesterov momentum; needs momentum > 0 and dampening 0. Default false. */
  nesterov: boolean;
  /** Coupled (L2) weight decay: grad += weightDecay·param. Default 0. */
  weightDecay: number;
}

export type SGDOptions = Partial<SGDHyper> & CommonOptions<SGDHyper>;

const SGD_DEFAULTS: SGDHyper = { lr: 1e-2, momentum: 0, dampening: 0, nesterov: false, weightDecay: 0 };

/**
 * Stochastic gradient descent with exactly torch.optim.SGD's semantics:
 *
 *     d = g + weightDecay·p
 *     if momentum ≠ 0:
 *       buf = d                                   on the first step of this param
 *       buf = momentum·buf + (1 − dampening)·d    afterwards
 *       d   = nesterov ? d + momentum·buf : buf
 *     p -= lr·d
 */
export class SGD extends BaseOptimizer<SGDHyper> {
  get kind(): string {
    return 'sgd';
  }

  constructor(options: SGDOptions = {}) {
    const { groups, schedule, ...hyper } = options;
    super(defined(SGD_DEFAULTS, hyper), { groups, schedule });
  }

  protected slotNames(h: SGDHyper): readonly string[] {
    return h.momentum !== 0 ? MOMENTUM_SLOTS : NO_SLOTS;
  }

  protected validateHyper(h: SGDHyper, where: string): void {
    const w = `sgd (${where})`;
    nonNegative(w, 'lr', h.lr);
    nonNegative(w, 'momentum', h.momentum);
    nonNegative(w, 'dampening', h.dampening);
    nonNegative(w, 'weightDecay', h.weightDecay);
    if (typeof h.nesterov !== 'boolean') throw new Error(`${w}: nesterov must be a boolean, got ${String(h.nesterov)}`);
    if (h.nesterov && (h.momentum <= 0 || h.dampening !== 0)) {
      throw new Error(`${w}: nesterov momentum requires momentum > 0 and dampening 0 (got momentum ${h.momentum}, dampening ${h.dampening})`);
    }
  }

  protected update(p: Float32Array, g: Float32Array, st: ParamSlots, h: SGDHyper, lr: number): void {
    const n = p.length;
    const wd = h.weightDecay;
    const mu = h.momentum;
    if (mu === 0) {
      for (let i = 0; i < n; i++) p[i] = p[i]! - lr * (g[i]! + wd * p[i]!);
      return;
    }
    const buf = st.slots.momentumBuffer!;
    const first = st.steps === 1;
    const damp = 1 - h.dampening;
    if (h.nesterov) {
      for (let i = 0; i < n; i++) {
        const d = Math.fround(g[i]! + wd * p[i]!);
        buf[i] = first ? d : mu * buf[i]! + damp * d;
        p[i] = p[i]! - lr * (d + mu * buf[i]!);
      }
    } else {
      for (let i = 0; i < n; i++) {
        const d = Math.fround(g[i]! + wd * p[i]!);
        buf[i] = first ? d : mu * buf[i]! + damp * d;
        p[i] = p[i]! - lr * buf[i]!;
      }
    }
  }
}

const MOMENTUM_SLOTS = ['momentumBuffer'] as const;
const NO_SLOTS = [] as const;

/** `base` with the defined entries of `over` on top. */
export function defined<T extends object>(base: T, over: Partial<T>): T {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

export function nonNegative(where: string, key: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new Error(`${where}: ${key} must be a finite number ≥ 0, got ${String(v)}`);
  }
}
