// Tenant sessions: each tenant's own adaptation state (a TTA adapter or a continual controller)
// over one shared, never-written base model. All work on one tenant's session runs through a
// per-tenant queue, so updates are serialised and a prediction never sees a half-applied step;
// different tenants run concurrently. Sessions beyond `maxTenants` are released least recently
// used first, after their state is saved to the registry (where the method can save it), and
// come back from it on the tenant's next request.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { createAdapter, CLASSIFIER_METHODS, LANGUAGE_MODEL_METHODS, type Adapter } from '../tta/index.ts';
import { ContinualController, type ControllerOptions } from '../continual/controller.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../continual/checkpoint.ts';
import type { AdapterRegistry } from '../registry/types.ts';
import { KeyedQueue } from './queue.ts';
import { encodeAdapterState, decodeAdapterState } from './state-codec.ts';
import { HttpError } from './inputs.ts';
import type { Metrics } from './metrics.ts';
import type { AdapterState } from '../tta/types.ts';

export const CONTINUAL = 'continual';

/** Methods the service can run per tenant: every TTA method for classifiers, and 'continual' (language models are not served). */
export const SERVE_METHODS = [...CLASSIFIER_METHODS, CONTINUAL];

export interface Session {
  key: string;
  model: string;
  tenant: string;
  /** The registry adapter the session adapts on top of, if any (state then lives in memory only). */
  adapter?: { name: string; version: number };
  method: string;
  /** The model the session adapts (the shared base, or base + registry adapter); never written. */
  base: RefitModel;
  tta?: Adapter;
  controller?: ContinualController;
  /** Batches seen by this session object (ids for TTA predictions). */
  seq: number;
  sinceSave: number;
  /** The TTA adapter's skipped-step count at the last batch (for the metric's increments). */
  skipped: number;
  evicting?: boolean;
}

export interface TenantPoolOptions {
  method: string;
  methodOptions?: Record<string, unknown> | ((model: string) => Record<string, unknown>);
  /** In-distribution batches per model that calibrate a new continual tenant (ServeOptions.calibration). */
  calibration?: (model: string) => Tensor[] | undefined;
  registry: AdapterRegistry;
  metrics: Metrics;
  /** Sessions held in memory at once. @default 64 */
  maxTenants?: number;
  /** Save a tenant's state every this many batches (0: only when released and at shutdown). @default 0 */
  persistEvery?: number;
  log?: { warn: (msg: string) => void; info?: (msg: string) => void };
}

/** The method options of one model: the shared object, or the per-model function's answer. */
export function optionsFor(o: TenantPoolOptions['methodOptions'], model: string): Record<string, unknown> | undefined {
  return typeof o === 'function' ? o(model) : o;
}

/** Make a method's session object for one tenant (validates the method and its options). */
export function makeAdapter(base: RefitModel, method: string, opts: Record<string, unknown> = {}): { tta?: Adapter; controller?: ContinualController } {
  if (method === CONTINUAL) return { controller: new ContinualController(base, opts as ControllerOptions) };
  if (LANGUAGE_MODEL_METHODS.includes(method)) throw new Error(`${method} adapts language models, which the service does not serve; run it with refit adapt or the library`);
  if (!CLASSIFIER_METHODS.includes(method)) throw new Error(`unknown adaptation method '${method}'; known: ${SERVE_METHODS.join(', ')}`);
  return { tta: createAdapter(base, method, opts) };
}

/** What every new continual tenant of a base model starts from (TenantPool.start). */
export interface ContinualStart {
  /** The entropy reference of the calibration batches. */
  reference: number;
  /** The level-3 deep learner's state after its warm-up, when the options give it one. */
  deep: AdapterState | null;
}

export class TenantPool {
  private readonly sessions = new Map<string, Session>(); // Map order = least recently used first
  private readonly queue = new KeyedQueue();
  /** Per base model, what its new continual tenants start from (start). */
  private readonly starts = new WeakMap<RefitModel, Promise<ContinualStart | null>>();
  /** Deep-learner warm-ups running in the background, per base first met in a request (warmUpLater). */
  private readonly warming = new Map<RefitModel, Promise<void>>();
  /** Bases whose background warm-up failed: their tenants warm up at level 3 instead, not again here. */
  private readonly warmFailed = new WeakSet<RefitModel>();
  readonly maxTenants: number;
  private closed = false;

  constructor(readonly opts: TenantPoolOptions) {
    this.maxTenants = opts.maxTenants ?? 64;
    if (!Number.isInteger(this.maxTenants) || this.maxTenants < 1) throw new Error(`maxTenants must be a positive integer, got ${opts.maxTenants}`);
  }

  static key(model: string, tenant: string, adapter?: { name: string; version: number }): string {
    return `${model}\u0000${tenant}${adapter ? `\u0000${adapter.name}@${adapter.version}` : ''}`;
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Sessions in memory for a model: tenant and adapter. */
  list(model: string): { tenant: string; adapter?: { name: string; version: number } }[] {
    return [...this.sessions.values()].filter((s) => s.model === model).map((s) => ({ tenant: s.tenant, ...(s.adapter ? { adapter: s.adapter } : {}) }));
  }

  /**
   * Run `fn` on the tenant's session (created, or restored from the registry, on first use),
   * after every earlier task of the same session has finished.
   */
  use<T>(model: string, tenant: string, base: RefitModel, adapter: { name: string; version: number } | undefined, fn: (s: Session) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new HttpError(503, 'the server is shutting down'));
    const key = TenantPool.key(model, tenant, adapter);
    return this.queue.run(key, async () => {
      let s = this.sessions.get(key);
      if (s) {
        this.sessions.delete(key); // move to the most recently used end
      } else {
        s = await this.create(key, model, tenant, base, adapter);
      }
      this.sessions.set(key, s);
      this.opts.metrics.tenants.set({ model }, this.list(model).length);
      this.evictIfNeeded();
      const r = await fn(s);
      s.seq++;
      const every = this.opts.persistEvery ?? 0;
      if (every > 0 && ++s.sinceSave >= every) await this.save(s);
      return r;
    });
  }

  /**
   * What every new continual tenant of a base model starts from, computed once per model by a
   * throwaway controller (every fresh controller would compute the same): the entropy reference of
   * the calibration batches, and the deep learner's state after its warm-up, so that no tenant
   * warms up inside a request (23 s on the shipped CNN with 2000 source images). Null without
   * calibration batches. buildServer calls it for every model before it listens, with
   * `prepareDeep`; a base first met in a request (a registry adapter's) gets the reference at
   * once and its deep learner's warm-up in the background (warmUpLater).
   */
  start(model: string, base: RefitModel, prepareDeep = false): Promise<ContinualStart | null> {
    let p = this.starts.get(base);
    if (!p) {
      p = this.computeStart(model, base, prepareDeep);
      this.starts.set(base, p);
      p.catch(() => this.starts.delete(base));
    }
    return p;
  }

  private async computeStart(model: string, base: RefitModel, prepareDeep: boolean): Promise<ContinualStart | null> {
    const batches = this.opts.calibration?.(model);
    if (this.opts.method !== CONTINUAL || !batches?.length) return null;
    const { controller } = makeAdapter(base, CONTINUAL, optionsFor(this.opts.methodOptions, model));
    try {
      const reference = await controller!.calibrate(batches);
      if (!prepareDeep) return { reference, deep: null };
      await controller!.prepareDeepLearner(batches[0]!);
      return { reference, deep: controller!.preparedDeepLearnerState() };
    } finally {
      await controller!.release();
    }
  }

  /**
   * Warm the deep learner of a base first met in a request (a registry adapter's) up in the
   * background, once, and hand its state to the base's sessions whose deep learner is not built
   * yet and to every later one. Without it each tenant of the adapter would warm up inside the
   * request that first reaches level 3 (23 s on the shipped CNN); now only one that gets there
   * before this finishes does. It takes CPU from the requests while it runs.
   */
  private warmUpLater(model: string, base: RefitModel): void {
    if (this.closed || this.warming.has(base) || this.warmFailed.has(base)) return;
    this.opts.log?.info?.(`model '${model}': warming up the deep learner of a registry adapter in the background`);
    const p = this.computeStart(model, base, true).then((start) => {
      if (!start?.deep) return;
      this.starts.set(base, Promise.resolve(start));
      for (const s of this.sessions.values()) if (s.base === base) s.controller?.useDeepLearnerState(start.deep);
      this.opts.log?.info?.(`model '${model}': a registry adapter's deep learner is warm`);
    }, (e: Error) => {
      this.warmFailed.add(base);
      this.opts.log?.warn(`model '${model}': warming up a registry adapter's deep learner failed (${e.message}); its tenants warm up when they reach level 3`);
    }).finally(() => this.warming.delete(base));
    this.warming.set(base, p);
  }

  /** Resolves when no background warm-up (warmUpLater) is running. */
  async warmUps(): Promise<void> {
    while (this.warming.size) await Promise.all(this.warming.values());
  }

  private async create(key: string, model: string, tenant: string, base: RefitModel, adapter?: { name: string; version: number }): Promise<Session> {
    const { method, methodOptions } = this.opts;
    const s: Session = { key, model, tenant, method, base, seq: 0, sinceSave: 0, skipped: 0, ...makeAdapter(base, method, optionsFor(methodOptions, model)), ...(adapter ? { adapter } : {}) };
    const saved = adapter ? null : await this.opts.registry.getTenantState(model, tenant);
    const start = s.controller ? await this.start(model, base) : null;
    // A saved tenant whose deep learner was never in use builds it from the warm state too.
    if (start?.deep) s.controller!.useDeepLearnerState(start.deep);
    else if (start && s.controller!.hasDeepLearner) this.warmUpLater(model, base);
    if (!saved) {
      if (start) s.controller!.useReference(start.reference);
      return s;
    }
    const reset = `DELETE /v1/models/${model}/tenants/${tenant} starts it again from the base model`;
    if (saved.method !== method) {
      await this.release(s);
      throw new HttpError(409, `tenant '${tenant}' has saved state of method '${saved.method}', but this server adapts with '${method}'; ${reset}`);
    }
    try {
      if (s.controller) s.controller.load(decodeCheckpoint(base, saved.bytes, `saved state of tenant '${tenant}'`));
      else if (s.tta?.load) await s.tta.load(decodeAdapterState(base, saved.bytes, `saved state of tenant '${tenant}'`));
    } catch (e) {
      await this.release(s);
      throw new HttpError(409, `${(e as Error).message}; ${reset}`);
    }
    return s;
  }

  private evictIfNeeded(): void {
    let over = this.sessions.size - this.maxTenants;
    for (const s of this.sessions.values()) {
      if (over <= 0) break;
      if (s.evicting) continue;
      s.evicting = true;
      over--;
      // Queued behind the victim's own pending work, so nothing it was asked to do is lost.
      void this.queue.run(s.key, async () => {
        if (this.sessions.get(s.key) !== s) return;
        this.sessions.delete(s.key);
        this.opts.metrics.evictions.inc({ model: s.model });
        this.opts.metrics.tenants.set({ model: s.model }, this.list(s.model).length);
        try {
          await this.save(s);
        } finally {
          await this.release(s);
        }
      }).catch((e) => this.opts.log?.warn(`saving tenant '${s.tenant}' on release failed: ${(e as Error).message}`));
    }
  }

  /** Save a base-model session's state to the registry (methods without save() keep none). */
  private async save(s: Session): Promise<void> {
    s.sinceSave = 0;
    if (s.adapter) return;
    let bytes: Uint8Array | undefined;
    if (s.controller) bytes = encodeCheckpoint(s.base, s.controller.state());
    else if (s.tta?.save) bytes = encodeAdapterState(s.base, await s.tta.save());
    if (!bytes) return;
    await this.opts.registry.putTenantState(s.model, s.tenant, s.method, bytes);
    this.opts.metrics.registryWrites.inc({ op: 'tenant-state' });
  }

  private async release(s: Session): Promise<void> {
    await s.tta?.release();
    await s.controller?.release();
  }

  /** Forget a tenant: its sessions in memory and its saved state. */
  async reset(model: string, tenant: string): Promise<{ sessions: number; saved: boolean }> {
    const keys = [...this.sessions.values()].filter((s) => s.model === model && s.tenant === tenant).map((s) => s.key);
    let n = 0;
    await Promise.all(keys.map((k) => this.queue.run(k, async () => {
      const s = this.sessions.get(k);
      if (!s) return;
      this.sessions.delete(k);
      n++;
      await this.release(s);
    })));
    this.opts.metrics.tenants.set({ model }, this.list(model).length);
    const saved = await this.opts.registry.deleteTenantState(model, tenant);
    if (saved) this.opts.metrics.registryWrites.inc({ op: 'tenant-state' });
    return { sessions: n, saved };
  }

  /** Drop sessions built on a registry adapter (after it was deleted). */
  async dropAdapter(model: string, name: string): Promise<void> {
    const victims = [...this.sessions.values()].filter((s) => s.model === model && s.adapter?.name === name);
    await Promise.all(victims.map((v) => this.queue.run(v.key, async () => {
      if (this.sessions.get(v.key) !== v) return;
      this.sessions.delete(v.key);
      await this.release(v);
    })));
  }

  /** Finish queued work, save every session's state, release everything. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.drain();
    await this.warmUps(); // they use the base models' sessions
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of all) {
      try {
        await this.save(s);
      } catch (e) {
        this.opts.log?.warn(`saving tenant '${s.tenant}' at shutdown failed: ${(e as Error).message}`);
      }
      await this.release(s);
    }
  }
}
