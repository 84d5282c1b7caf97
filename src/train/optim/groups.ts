import type { ParamGroup, ParamMatcher } from './types.ts';

/** A group's hyperparameters after merging its overrides onto the defaults. */
export interface ResolvedGroup<H> {
  /** Index in the `groups` option, or -1 for the defaults. */
  index: number;
  hyper: H;
  lrScale: number;
}

export function matches(matcher: ParamMatcher, name: string): boolean {
  if (typeof matcher === 'string') return matcher === name;
  if (typeof matcher === 'function') return matcher(name);
  if (matcher instanceof RegExp) {
    matcher.lastIndex = 0; // a /g or /y regex keeps position between test() calls
    return matcher.test(name);
  }
  return matcher.includes(name);
}

export function describeMatcher(matcher: ParamMatcher): string {
  if (typeof matcher === 'string') return JSON.stringify(matcher);
  if (typeof matcher === 'function') return `predicate ${matcher.name || '(anonymous)'}`;
  if (matcher instanceof RegExp) return String(matcher);
  return JSON.stringify(matcher);
}

/**
 * Param groups: the first group whose matcher accepts a name owns it, otherwise
 * the defaults apply. The name → group lookup is cached, so steady-state steps
 * do not re-run matchers.
 */
export class GroupTable<H extends { lr: number }> {
  private readonly cache = new Map<string, ResolvedGroup<H>>();
  private resolved: ResolvedGroup<H>[] = [];
  private fallback!: ResolvedGroup<H>;

  constructor(
    private defaults: H,
    private readonly groups: readonly ParamGroup<H>[],
    private readonly validate: (hyper: H, where: string) => void,
  ) {
    this.rebuild();
  }

  get defaultHyper(): Readonly<H> {
    return this.defaults;
  }

  /** Changes a default hyperparameter; groups that override it keep their own. */
  setDefault<K extends keyof H>(key: K, value: H[K]): void {
    this.defaults = { ...this.defaults, [key]: value };
    this.rebuild();
  }

  get(name: string): ResolvedGroup<H> {
    let g = this.cache.get(name);
    if (g === undefined) {
      g = this.fallback;
      for (let i = 0; i < this.groups.length; i++) {
        if (matches(this.groups[i]!.params, name)) {
          g = this.resolved[i]!;
          break;
        }
      }
      this.cache.set(name, g);
    }
    return g;
  }

  /** JSON description for OptimizerState.hyper. */
  describe(): Record<string, unknown> {
    return {
      defaults: { ...this.defaults },
      groups: this.groups.map((g, i) => {
        const { params, ...rest } = g;
        return { ...(rest as object), params: describeMatcher(params), index: i };
      }),
    };
  }

  private rebuild(): void {
    this.validate(this.defaults, 'defaults');
    this.fallback = { index: -1, hyper: this.defaults, lrScale: 1 };
    this.resolved = this.groups.map((g, i) => {
      if (g === null || typeof g !== 'object' || g.params === undefined) {
        throw new Error(`optimizer: param group ${i} needs a 'params' matcher (regex, names or predicate)`);
      }
      const { params: _params, lrScale, name: _name, ...overrides } = g;
      const hyper = { ...this.defaults } as H;
      for (const [k, v] of Object.entries(overrides)) {
        if (v !== undefined) (hyper as Record<string, unknown>)[k] = v;
      }
      const where = `param group ${i}${g.name ? ` '${g.name}'` : ''}`;
      this.validate(hyper, where);
      const scale = lrScale ?? 1;
      if (!(Number.isFinite(scale) && scale >= 0)) {
        throw new Error(`optimizer: ${where}: lrScale must be a finite number ≥ 0, got ${scale}`);
      }
      return { index: i, hyper, lrScale: scale };
    });
    this.cache.clear();
  }
}
