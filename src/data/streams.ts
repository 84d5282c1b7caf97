/**
 * Test-time stream scenarios over a labelled image set (Fashion-MNIST's test set, say):
 * iterables of batches whose labels are kept aside for scoring. All are deterministic for a
 * given seed, and every stream can be iterated again with the same result.
 *
 * | scenario | what the model sees |
 * | --- | --- |
 * | singleDomainStream | one corruption at one severity |
 * | continualStream | the corruptions one after another (default: the 15 in CORRUPTIONS order), severity 5 |
 * | gradualStream | per corruption, severity 1→2→3→4→5→4→3→2→1, then the next corruption |
 * | mixedStream | all corruptions' samples shuffled together, so a batch mixes domains |
 * | correlatedLabelStream | continual, with labels ordered non-i.i.d. by a Dirichlet(gamma) over time slots (RoTTA) |
 * | recurringStream | the continual sequence repeated for N rounds (optionally reshuffled each round) |
 *
 * Every scenario also accepts `gamma` to make its label order temporally correlated.
 *
 * Corruption is lazy: a domain's images are corrupted when a batch first needs them and
 * cached per (domain, severity) in a small LRU (default two sets), so memory stays bounded
 * however long the stream. Corrupted pixels depend only on (corruptionSeed, domain,
 * severity, image index), so an image looks the same wherever it appears in a stream.
 */
import { CORRUPTIONS, assertSeverity, corrupt, isCorruptionName, type CorruptionName } from './corruptions/index.ts';
import { Rng, hashSeed } from './random.ts';

/** The uncorrupted source domain (severity 0). */
export const CLEAN = 'clean';
export type Domain = CorruptionName | typeof CLEAN;

/** What a stream draws from: single-channel images in [0, 1] and their labels. */
export interface LabelledImages {
  images: Float32Array;
  labels: Uint8Array;
  n: number;
  height: number;
  width: number;
  /** Class names; their count is the number of classes (else max label + 1). */
  classes?: readonly string[];
}

export interface StreamBatch {
  /** size*1*height*width floats in [0, 1] (NCHW). */
  x: Float32Array;
  /** Labels, for scoring only: an adaptation method must not read them. */
  y: Uint8Array;
  /** Index of each sample in the source dataset. */
  ids: Uint32Array;
  /** The batch's corruption; 'mixed' in a mixed stream (see `domains`). */
  domain: string;
  /** Per-sample domains (mixed streams only). */
  domains?: string[];
  /** Severity 1..5 (0 for clean). */
  severity: number;
  /** Position of the batch in the stream, from 0. */
  index: number;
  /** Number of samples (batchSize, or fewer in a segment's last batch). */
  size: number;
  /** 0-based round of a recurring stream (0 elsewhere). */
  round: number;
}

export interface StreamSegment {
  domain: string;
  severity: number;
  round: number;
  /** Number of samples and batches in this segment. */
  samples: number;
  batches: number;
}

export interface Stream extends Iterable<StreamBatch> {
  scenario: string;
  batchSize: number;
  /** Total number of batches the iterator yields. */
  numBatches: number;
  numSamples: number;
  /** The stream's schedule: consecutive runs of batches with one domain and severity. */
  segments: readonly StreamSegment[];
}

export interface CommonStreamOptions {
  /** Samples per batch (default 64). */
  batchSize?: number;
  /**
   * Length per domain (per severity level in a gradual stream): this many full batches.
   * Default: one pass over the dataset (n samples, the last batch possibly smaller).
   */
  batchesPerDomain?: number;
  /** Length per domain in samples instead (the last batch possibly smaller). */
  samplesPerDomain?: number;
  /** Seed for sample order and label schedules (default 0). */
  seed?: number;
  /** Seed for the corruptions' noise (default: seed). */
  corruptionSeed?: number;
  /**
   * Make labels temporally correlated (non-i.i.d.): within each domain, each class's samples
   * are spread over `slots` time slots by a Dirichlet(gamma) draw (RoTTA, Yuan et al. 2023;
   * also UnMix-TNS). Smaller gamma → each class concentrated in fewer slots. Default: i.i.d.
   */
  gamma?: number;
  /** Time slots for the Dirichlet schedule (default: number of classes, as in RoTTA). */
  slots?: number;
  /**
   * Order inside a slot: 'shuffle' (default; large gamma approaches i.i.d.) or 'blocks'
   * (RoTTA's sampler: each class's chunk kept contiguous, chunks in random order).
   */
  withinSlot?: 'shuffle' | 'blocks';
  /** How many (domain, severity) corrupted sets to keep in memory (default 2). */
  cacheDomains?: number;
}

export interface SingleDomainOptions extends CommonStreamOptions {
  domain: Domain;
  /** Default 5. */
  severity?: number;
}

export interface MultiDomainOptions extends CommonStreamOptions {
  /** Default: all 15 corruptions, in CORRUPTIONS order. */
  domains?: readonly Domain[];
  /** Default 5. */
  severity?: number;
}

export interface GradualOptions extends CommonStreamOptions {
  domains?: readonly Domain[];
  /** Severity schedule within each domain (default [1, 2, 3, 4, 5, 4, 3, 2, 1]). */
  levels?: readonly number[];
}

export interface RecurringOptions extends MultiDomainOptions {
  /** How many times the continual sequence repeats (default 10). */
  rounds?: number;
  /** Reshuffle the order of the domains in every round after the first (seeded; default false). */
  shuffleRounds?: boolean;
}

export interface CorrelatedOptions extends MultiDomainOptions {
  /** Dirichlet concentration (default 0.1, RoTTA's setting). */
  gamma?: number;
}

// ------------------------------------------------------------------ public scenarios

export function singleDomainStream(data: LabelledImages, opts: SingleDomainOptions): Stream {
  const o = common(data, opts);
  const sev = severityFor(opts.domain, opts.severity ?? 5);
  const plan: PlanSegment[] = [segmentFor(data, o, [opts.domain], [0], sev, 0, Rng.xoshiro(hashSeed(o.seed, 1)))];
  return makeStream('single', data, o, [opts.domain], plan);
}

export function continualStream(data: LabelledImages, opts: MultiDomainOptions = {}): Stream {
  const o = common(data, opts);
  const domains = domainsOf(opts.domains);
  const plan = domains.map((d, k) =>
    segmentFor(data, o, domains, [k], severityFor(d, opts.severity ?? 5), 0, Rng.xoshiro(hashSeed(o.seed, 2, k))),
  );
  return makeStream('continual', data, o, domains, plan);
}

export function gradualStream(data: LabelledImages, opts: GradualOptions = {}): Stream {
  const o = common(data, opts);
  const domains = domainsOf(opts.domains);
  const levels = opts.levels ?? [1, 2, 3, 4, 5, 4, 3, 2, 1];
  if (levels.length === 0) throw new Error('gradualStream: levels must not be empty');
  levels.forEach((l) => assertSeverity(l));
  const plan: PlanSegment[] = [];
  domains.forEach((d, k) => {
    levels.forEach((l, j) => {
      plan.push(segmentFor(data, o, domains, [k], severityFor(d, l), 0, Rng.xoshiro(hashSeed(o.seed, 3, k, j))));
    });
  });
  return makeStream('gradual', data, o, domains, plan);
}

export function mixedStream(data: LabelledImages, opts: MultiDomainOptions = {}): Stream {
  const o = common(data, opts);
  const domains = domainsOf(opts.domains);
  const sev = opts.severity ?? 5;
  domains.forEach((d) => severityFor(d, sev));
  const plan = [segmentFor(data, o, domains, domains.map((_, k) => k), sev, 0, Rng.xoshiro(hashSeed(o.seed, 4)))];
  return makeStream('mixed', data, o, domains, plan);
}

export function correlatedLabelStream(data: LabelledImages, opts: CorrelatedOptions = {}): Stream {
  const s = continualStream(data, { ...opts, gamma: opts.gamma ?? 0.1 });
  return { ...s, scenario: 'correlated' };
}

export function recurringStream(data: LabelledImages, opts: RecurringOptions = {}): Stream {
  const o = common(data, opts);
  const domains = domainsOf(opts.domains);
  const rounds = opts.rounds ?? 10;
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`recurringStream: rounds must be a positive integer, got ${rounds}`);
  const plan: PlanSegment[] = [];
  const orderRng = Rng.xoshiro(hashSeed(o.seed, 6));
  for (let r = 0; r < rounds; r++) {
    const order = opts.shuffleRounds && r > 0 ? Array.from(orderRng.permutation(domains.length)) : domains.map((_, k) => k);
    order.forEach((k) => {
      const d = domains[k]!;
      plan.push(segmentFor(data, o, domains, [k], severityFor(d, opts.severity ?? 5), r, Rng.xoshiro(hashSeed(o.seed, 5, r, k))));
    });
  }
  return makeStream('recurring', data, o, domains, plan);
}

export const STREAM_SCENARIOS = ['single', 'continual', 'gradual', 'mixed', 'correlated', 'recurring'] as const;

// ------------------------------------------------------------------ planning

interface ResolvedOptions {
  batchSize: number;
  samplesPerDomain: number;
  seed: number;
  corruptionSeed: number;
  gamma: number | undefined;
  slots: number;
  withinSlot: 'shuffle' | 'blocks';
  cacheDomains: number;
  numClasses: number;
}

interface PlanSegment {
  /** Domain name for the batch ('mixed' when several). */
  domain: string;
  severity: number;
  round: number;
  /** Per sample: dataset index and index into the stream's domain list. */
  ids: Uint32Array;
  dom: Uint8Array;
}

function posInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${what} must be a positive integer, got ${String(v)}`);
  return v;
}

function common(data: LabelledImages, opts: CommonStreamOptions): ResolvedOptions {
  const { n, height, width } = data;
  posInt(n, 'stream data: n');
  posInt(height, 'stream data: height');
  posInt(width, 'stream data: width');
  if (data.images.length !== n * height * width) {
    throw new Error(`stream data: images has ${data.images.length} values, expected n*height*width = ${n}*${height}*${width}`);
  }
  if (data.labels.length !== n) throw new Error(`stream data: labels has ${data.labels.length} entries, expected n = ${n}`);
  const batchSize = posInt(opts.batchSize ?? 64, 'batchSize');
  if (opts.batchesPerDomain !== undefined && opts.samplesPerDomain !== undefined) {
    throw new Error('give batchesPerDomain or samplesPerDomain, not both');
  }
  const samplesPerDomain =
    opts.batchesPerDomain !== undefined
      ? posInt(opts.batchesPerDomain, 'batchesPerDomain') * batchSize
      : opts.samplesPerDomain !== undefined
        ? posInt(opts.samplesPerDomain, 'samplesPerDomain')
        : n;
  const seed = opts.seed ?? 0;
  if (!Number.isFinite(seed)) throw new Error(`seed must be a finite number, got ${seed}`);
  const corruptionSeed = opts.corruptionSeed ?? seed;
  if (!Number.isFinite(corruptionSeed)) throw new Error(`corruptionSeed must be a finite number, got ${corruptionSeed}`);
  let maxLabel = 0;
  for (let i = 0; i < n; i++) maxLabel = Math.max(maxLabel, data.labels[i]!);
  const numClasses = data.classes?.length ?? maxLabel + 1;
  if (maxLabel >= numClasses) throw new Error(`stream data: label ${maxLabel} but only ${numClasses} classes`);
  if (opts.gamma !== undefined && !(opts.gamma > 0 && Number.isFinite(opts.gamma))) {
    throw new Error(`gamma (Dirichlet concentration) must be a positive finite number, got ${opts.gamma}`);
  }
  const slots = posInt(opts.slots ?? numClasses, 'slots');
  const withinSlot = opts.withinSlot ?? 'shuffle';
  if (withinSlot !== 'shuffle' && withinSlot !== 'blocks') throw new Error(`withinSlot must be 'shuffle' or 'blocks', got '${String(withinSlot)}'`);
  const cacheDomains = posInt(opts.cacheDomains ?? 2, 'cacheDomains');
  return { batchSize, samplesPerDomain, seed, corruptionSeed, gamma: opts.gamma, slots, withinSlot, cacheDomains, numClasses };
}

function domainsOf(domains: readonly Domain[] | undefined): Domain[] {
  const list = domains ? [...domains] : [...CORRUPTIONS];
  if (list.length === 0) throw new Error('domains must not be empty');
  if (list.length > 255) throw new Error(`at most 255 domains, got ${list.length}`);
  for (const d of list) checkDomain(d);
  return list;
}

function checkDomain(d: unknown): asserts d is Domain {
  if (d !== CLEAN && (typeof d !== 'string' || !isCorruptionName(d))) {
    throw new Error(`unknown domain '${String(d)}'; valid: ${CLEAN}, ${CORRUPTIONS.join(', ')}`);
  }
}

function severityFor(domain: Domain, severity: number): number {
  checkDomain(domain);
  if (domain === CLEAN) return 0;
  assertSeverity(severity);
  return severity;
}

/** `count` sample ids: successive random permutations of 0..n-1 (each epoch reshuffled). */
function sampleIds(n: number, count: number, rng: Rng): Uint32Array {
  const out = new Uint32Array(count);
  let k = 0;
  while (k < count) {
    const p = rng.permutation(n);
    const take = Math.min(n, count - k);
    out.set(p.subarray(0, take), k);
    k += take;
  }
  return out;
}

/**
 * Reorder items (parallel arrays ids/dom) so that labels are temporally correlated:
 * RoTTA's Dirichlet time-slot schedule. Each class's items are split over `slots` slots in
 * proportions drawn from Dirichlet(gamma, ..., gamma); slots are played in order.
 */
export function dirichletOrder(
  labelsOf: (k: number) => number,
  count: number,
  numClasses: number,
  gamma: number,
  slots: number,
  withinSlot: 'shuffle' | 'blocks',
  rng: Rng,
): Uint32Array {
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  for (let k = 0; k < count; k++) byClass[labelsOf(k)]!.push(k);
  const slotChunks: number[][][] = Array.from({ length: slots }, () => []);
  const alpha = new Array<number>(slots).fill(gamma);
  for (const items of byClass) {
    const p = rng.dirichlet(alpha);
    let start = 0;
    let cum = 0;
    for (let s = 0; s < slots; s++) {
      cum += p[s]!;
      const end = s === slots - 1 ? items.length : Math.min(items.length, Math.floor(cum * items.length));
      if (end > start) slotChunks[s]!.push(items.slice(start, end));
      start = Math.max(start, end);
    }
  }
  const out = new Uint32Array(count);
  let o = 0;
  for (const chunks of slotChunks) {
    if (withinSlot === 'blocks') {
      for (const c of rng.shuffle(chunks)) for (const k of c) out[o++] = k;
    } else {
      const flat = rng.shuffle(chunks.flat());
      for (const k of flat) out[o++] = k;
    }
  }
  return out;
}

/**
 * One segment: samplesPerDomain samples from each of the stream's domains listed in
 * `which` (indices into the stream's domain list), shuffled together when several.
 */
function segmentFor(
  data: LabelledImages,
  o: ResolvedOptions,
  domains: readonly Domain[],
  which: readonly number[],
  severity: number,
  round: number,
  rng: Rng,
): PlanSegment {
  const per = o.samplesPerDomain;
  const total = per * which.length;
  let ids = new Uint32Array(total);
  let dom = new Uint8Array(total);
  which.forEach((d, k) => {
    ids.set(sampleIds(data.n, per, rng), k * per);
    dom.fill(d, k * per, (k + 1) * per);
  });
  if (which.length > 1) {
    const perm = rng.permutation(total);
    ids = perm.map((k) => ids[k]!);
    dom = Uint8Array.from(perm, (k) => dom[k]!);
  }
  if (o.gamma !== undefined) {
    const order = dirichletOrder((k) => data.labels[ids[k]!]!, total, o.numClasses, o.gamma, o.slots, o.withinSlot, rng);
    ids = order.map((k) => ids[k]!);
    dom = Uint8Array.from(order, (k) => dom[k]!);
  }
  return { domain: which.length === 1 ? domains[which[0]!]! : 'mixed', severity, round, ids, dom };
}

// ------------------------------------------------------------------ corruption cache

/** LRU of lazily corrupted sets, keyed by domain and severity; pixels filled per image on demand. */
class CorruptionCache {
  private sets = new Map<string, { x: Float32Array; done: Uint8Array }>();
  constructor(
    private readonly data: LabelledImages,
    private readonly seed: number,
    private readonly capacity: number,
  ) {}

  /** Write the corrupted images `ids` of (domain, severity) into out at sample slots `slots`. */
  fill(domain: Domain, severity: number, ids: readonly number[], slots: readonly number[], out: Float32Array, cache: boolean): void {
    const { data } = this;
    const px = data.height * data.width;
    if (domain === CLEAN) {
      ids.forEach((id, j) => out.set(data.images.subarray(id * px, (id + 1) * px), slots[j]! * px));
      return;
    }
    if (!cache) {
      const x = this.corruptIds(domain, severity, ids);
      ids.forEach((_, j) => out.set(x.subarray(j * px, (j + 1) * px), slots[j]! * px));
      return;
    }
    const key = `${domain}@${severity}`;
    let set = this.sets.get(key);
    if (set) {
      this.sets.delete(key); // refresh LRU position
    } else {
      while (this.sets.size >= this.capacity) this.sets.delete(this.sets.keys().next().value!);
      set = { x: new Float32Array(data.n * px), done: new Uint8Array(data.n) };
    }
    this.sets.set(key, set);
    const missing = [...new Set(ids.filter((id) => !set!.done[id]))];
    if (missing.length > 0) {
      const x = this.corruptIds(domain, severity, missing);
      missing.forEach((id, j) => {
        set!.x.set(x.subarray(j * px, (j + 1) * px), id * px);
        set!.done[id] = 1;
      });
    }
    ids.forEach((id, j) => out.set(set!.x.subarray(id * px, (id + 1) * px), slots[j]! * px));
  }

  private corruptIds(domain: CorruptionName, severity: number, ids: readonly number[]): Float32Array {
    const { data } = this;
    const px = data.height * data.width;
    const src = new Float32Array(ids.length * px);
    ids.forEach((id, j) => src.set(data.images.subarray(id * px, (id + 1) * px), j * px));
    return corrupt(src, ids.length, data.height, data.width, domain, severity, this.seed, { ids });
  }
}

// ------------------------------------------------------------------ iteration

function makeStream(
  scenario: string,
  data: LabelledImages,
  o: ResolvedOptions,
  domains: readonly Domain[],
  plan: PlanSegment[],
): Stream {
  const B = o.batchSize;
  const segments: StreamSegment[] = plan.map((s) => ({
    domain: s.domain,
    severity: s.severity,
    round: s.round,
    samples: s.ids.length,
    batches: Math.ceil(s.ids.length / B),
  }));
  const numBatches = segments.reduce((a, s) => a + s.batches, 0);
  const numSamples = segments.reduce((a, s) => a + s.samples, 0);
  const px = data.height * data.width;
  return {
    scenario,
    batchSize: B,
    numBatches,
    numSamples,
    segments,
    *[Symbol.iterator](): Iterator<StreamBatch> {
      // A fresh cache per iteration keeps iterations independent and memory bounded.
      const cache = new CorruptionCache(data, o.corruptionSeed, o.cacheDomains);
      let index = 0;
      for (const seg of plan) {
        const mixed = seg.domain === 'mixed';
        for (let start = 0; start < seg.ids.length; start += B) {
          const end = Math.min(seg.ids.length, start + B);
          const size = end - start;
          const ids = seg.ids.slice(start, end);
          const x = new Float32Array(size * px);
          const y = new Uint8Array(size);
          for (let j = 0; j < size; j++) y[j] = data.labels[ids[j]!]!;
          // Group the batch's samples by domain and corrupt each group.
          const groups = new Map<number, { ids: number[]; slots: number[] }>();
          for (let j = 0; j < size; j++) {
            const d = seg.dom[start + j]!;
            let g = groups.get(d);
            if (!g) groups.set(d, (g = { ids: [], slots: [] }));
            g.ids.push(ids[j]!);
            g.slots.push(j);
          }
          for (const [d, g] of groups) cache.fill(domains[d]!, seg.severity === 0 || domains[d] === CLEAN ? 0 : seg.severity, g.ids, g.slots, x, !mixed);
          const batch: StreamBatch = { x, y, ids, domain: seg.domain, severity: seg.severity, index, size, round: seg.round };
          if (mixed) batch.domains = Array.from(seg.dom.subarray(start, end), (d) => domains[d]!);
          index++;
          yield batch;
        }
      }
    },
  };
}
