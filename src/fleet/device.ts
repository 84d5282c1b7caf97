// The device side of the fleet (issue 15, part 3): forward-only inference with cheap adaptation
// (BatchNorm statistics by default), CEMA's upload filter under a byte budget, and adapters
// pushed by the cloud applied atomically, watched, and rolled back on a health regression.
//
// Serving is one immutable entry (model + adapter + version). `sync()` builds the next entry
// completely beside it (adapter files parsed and checked against the base model's parameters by
// withAdapterFiles, then one probe batch run to a finite output of the right shape) and only then
// swaps the reference; a failure anywhere leaves the old entry serving, untouched. After a swap
// the device compares a rolling health signal (mean normalised entropy, mean confidence, and
// accuracy when the caller passes labels) over the next `window` batches with the window before;
// a regression beyond the tolerances swaps the previous entry back and tells the cloud.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { Adapter } from '../tta/types.ts';
import { BNAdapt } from '../tta/bn-adapt.ts';
import { defaultLogits } from '../tta/types.ts';
import { softmaxRows } from '../tta/common.ts';
import { withAdapterFiles, type AdapterFiles } from '../peft/files.ts';
import { UploadFilter, type UploadFilterOptions, type UploadFilterState, type PoolItem } from './upload-filter.ts';
import { ItemReservoir } from '../util/item-reservoir.ts';
import { encodedUploadSize, encodeUploadAsync } from './upload-codec.ts';
import { codecName, jpegable, type UploadCodec } from './upload-images.ts';
import { FleetError, type CloudLink, type PushedAdapter, type UploadPayload } from './types.ts';

/** Name of the pushed adapter inside the device's PeftModel (registry names may hold '.', '@'). */
const LOCAL_ADAPTER = 'fleet';

export interface HealthOptions {
  /** Batches per health window (before and after an apply). @default 8 */
  window?: number;
  /** Roll back when accuracy on labelled samples falls by more than this (absolute). @default 0.03 */
  maxAccuracyDrop?: number;
  /** Labelled samples needed in both windows before accuracy decides. @default 32 */
  minLabels?: number;
  /** Without labels: roll back when mean normalised entropy (H / ln C) rises by more than this. @default 0.05 */
  maxEntropyRise?: number;
  /** Without labels: roll back when mean confidence (max probability) falls by more than this. @default 0.05 */
  maxConfidenceDrop?: number;
  /**
   * Paired comparison: during probation the previous version also runs on each batch (one more
   * forward pass, for `window` batches per apply), and the two are compared on the same samples,
   * so a shift in the stream that arrives with the adapter is not blamed on it. false: compare
   * the window after the apply with the window before (no extra compute; confounded by shifts).
   * @default true
   */
  paired?: boolean;
  /**
   * Paired, without labels: roll back when the new version's argmax agrees with the previous
   * version's on fewer than this fraction of samples. Entropy and confidence cannot see an
   * adapter that is confidently wrong (a scrambled one in the tests cut entropy from 0.50 to 0.13
   * while accuracy fell from 86 % to 27 %); a cloud adapter that improves the device changes only
   * the predictions the device got wrong, which on the shifted streams here is 26–42 %. null: off.
   * @default 0.5
   */
  minAgreement?: number | null;
}

export interface FleetDeviceOptions {
  /** The base model (never written). */
  base: RefitModel;
  link: CloudLink;
  /** Registry model name and this device's id (as the cloud knows them). */
  model: string;
  device: string;
  /** The upload filter, or its options (classes default to the model's output width). */
  filter?: UploadFilter | Omit<UploadFilterOptions, 'classes'> & { classes?: number };
  /** Upload the pool every this many batches. @default 10 */
  uploadEvery?: number;
  /**
   * On-device adaptation of whatever model serves: 'bn' (BatchNorm on batch statistics, mixed
   * with the source statistics by `bnPrior`), 'none', or a factory (e.g. the continual
   * controller's fast level: `(m) => new ContinualAdapter(m, { maxLevel: 2 })`). @default 'bn'
   */
  adapt?: 'bn' | 'none' | ((model: RefitModel) => Adapter);
  /** BN-adapt's source prior N (src/tta/bn-adapt.ts). @default 0 */
  bnPrior?: number;
  health?: HealthOptions;
  /** Milliseconds; the budget's clock. @default Date.now */
  now?: () => number;
  /** Sample dims without the batch dim. @default the model input's static dims */
  sampleDims?: number[];
  /**
   * How uploads travel (./upload-images.ts): 'f32', 'u8' (8 bits a value: 4× fewer bytes, lossless
   * for 8-bit images), or { jpeg: quality } (the samples tiled in one JPEG: sharp in Node, the browser's encoder in a page).
   * The budget counts the encoded bytes. @default 'f32'
   */
  codec?: UploadCodec;
}

export interface DevicePrediction {
  logits: Tensor;
  predicted: Int32Array;
  /** Per-sample entropy (nats). */
  entropy: Float32Array;
  /** The adapter version that served the batch (null: the base model). */
  version: AdapterRef | null;
}

export interface AdapterRef { name: string; version: number }

export interface DeviceEvent {
  batch: number;
  kind: 'upload' | 'upload-skipped' | 'upload-rejected' | 'upload-failed' | 'applied' | 'refused' | 'confirmed' | 'rollback' | 'report-failed' | 'restore-failed';
  version?: AdapterRef | null;
  reason?: string;
  detail?: Record<string, number | string | boolean | null>;
}

export interface DeviceStats {
  batches: number;
  samples: number;
  /** Samples that passed the filter (before the budget). */
  kept: number;
  uploads: number;
  uploadedSamples: number;
  uploadedBytes: number;
  /** What uploading every sample in the same rounds would have cost, as float32. */
  everythingBytes: number;
  /** The same at 8 bits a value ('u8', lossless for 8-bit images): the reference for a lossy codec. */
  everythingU8Bytes: number;
}

interface HealthSummary { batches: number; entropy: number; confidence: number; labelled: number; accuracy: number | null; agreement: number | null }
interface BatchHealth { n: number; entropy: number; confidence: number; labelled: number; correct: number; /** paired probation: samples whose argmax matches the previous version's */ agree?: number }

interface Entry {
  ref: AdapterRef | null;
  files: AdapterFiles | null;
  model: RefitModel;
  adapter: Adapter;
  users: number;
  retired: boolean;
}

export interface FleetDeviceState {
  v: 1;
  model: string;
  device: string;
  round: number;
  serving: StoredAdapter | null;
  /** Set while a newly applied version is on probation. */
  probation: { previous: StoredAdapter | null; before: BatchHealth[]; after: BatchHealth[]; shadow: BatchHealth[] } | null;
  rejected: string[];
  health: BatchHealth[];
  filter: UploadFilterState;
  stats: DeviceStats;
  events: DeviceEvent[];
}
interface StoredAdapter { name: string; version: number; weights: string; config: string }

const refKey = (r: AdapterRef) => `${r.name}@${r.version}`;
// btoa/atob rather than Buffer: this file also runs in the browser build.
function b64(u: Uint8Array): string {
  let s = '';
  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
  return btoa(s);
}
const unb64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const MAX_EVENTS = 200;

/** An Adapter that only runs the model (no adaptation). */
class PlainAdapter implements Adapter {
  readonly name = 'none';
  private readonly logits: string;
  constructor(readonly model: RefitModel) { this.logits = defaultLogits(model.outputs); }
  async predict(x: Tensor) {
    const t0 = performance.now();
    const out = await this.model.run({ [this.model.inputs[0]!.name]: x }, { outputs: [this.logits] });
    return { logits: out[this.logits]!, info: { used: 0, skipped: 0, resets: 0, ms: performance.now() - t0 } };
  }
  reset(): void {}
  async release(): Promise<void> {}
}

export class FleetDevice {
  readonly filter: UploadFilter;
  readonly events: DeviceEvent[] = [];
  readonly stats: DeviceStats = { batches: 0, samples: 0, kept: 0, uploads: 0, uploadedSamples: 0, uploadedBytes: 0, everythingBytes: 0, everythingU8Bytes: 0 };
  private readonly base: RefitModel;
  private readonly link: CloudLink;
  private readonly sampleDims: number[];
  private readonly sampleSize: number;
  private readonly codec: 'f32' | 'u8' | 'jpeg';
  /** With the JPEG codec: bytes a sample, learnt from the uploads so far (for the budget's estimate). */
  private readonly jpeg: JpegSizes | null;
  private readonly uploadEvery: number;
  private readonly h: Required<HealthOptions>;
  private readonly now: () => number;
  private serving: Entry;
  private previous: Entry | null = null;
  private probation: { before: BatchHealth[]; after: BatchHealth[]; shadow: BatchHealth[] } | null = null;
  private healthWindow: BatchHealth[] = [];
  private rejected = new Set<string>();
  private pool: PoolItem[] = [];
  /** Every sample since the last upload, reservoir-sampled (only with the filter's uniformShare). */
  private uniform: ItemReservoir<PoolItem>;
  private seq = 0;
  private round = 0;
  private sinceUpload = 0;
  private uploading: Promise<void> = Promise.resolve();
  private syncing = false;
  private lastBatch: Tensor | null = null;

  constructor(private readonly o: FleetDeviceOptions) {
    this.base = o.base;
    this.link = o.link;
    const input = o.base.inputs[0];
    if (!input) throw new FleetError('device: the model has no input');
    const dims = o.sampleDims ?? (input.shape ?? []).slice(1).map((d) => (typeof d === 'number' ? d : NaN));
    if (!dims.length || !dims.every((d) => Number.isInteger(d) && d > 0)) throw new FleetError(`device: cannot tell the sample dims from input '${input.name}' (shape ${JSON.stringify(input.shape)}); pass sampleDims`);
    this.sampleDims = dims;
    this.sampleSize = dims.reduce((a, b) => a * b, 1);
    try {
      this.codec = codecName(o.codec);
    } catch (e) {
      throw new FleetError(`device: ${(e as Error).message}`);
    }
    if (this.codec === 'jpeg' && !jpegable(dims)) throw new FleetError(`device: the JPEG codec takes images [1 or 3, H, W], and this model's samples are [${dims.join(', ')}]; use 'u8'`);
    this.jpeg = this.codec === 'jpeg' ? new JpegSizes(dims) : null;
    const out = o.base.outputs.find((x) => x.name === defaultLogits(o.base.outputs));
    const classes = typeof out?.shape?.[1] === 'number' ? out.shape[1] : undefined;
    if (o.filter instanceof UploadFilter) this.filter = o.filter;
    else {
      const c = o.filter?.classes ?? classes;
      if (c === undefined) throw new FleetError('device: cannot tell the number of classes from the model output; pass filter.classes');
      this.filter = new UploadFilter({ ...o.filter, classes: c });
    }
    this.uniform = new ItemReservoir(this.filter.poolCapacity, this.filter.seed);
    this.uploadEvery = o.uploadEvery ?? 10;
    if (!(Number.isInteger(this.uploadEvery) && this.uploadEvery >= 1)) throw new FleetError(`device: uploadEvery must be an integer ≥ 1, got ${o.uploadEvery}`);
    this.h = { window: 8, maxAccuracyDrop: 0.03, minLabels: 32, maxEntropyRise: 0.05, maxConfidenceDrop: 0.05, paired: true, minAgreement: 0.5, ...o.health };
    this.now = o.now ?? Date.now;
    this.serving = this.entry(null, null, o.base);
  }

  /** The version serving now (null: the base model). */
  get version(): AdapterRef | null { return this.serving.ref; }
  /** Rounds uploaded so far (the last round number used). */
  get lastRound(): number { return this.round; }
  /** True while a newly applied version is being watched. */
  get onProbation(): boolean { return this.probation !== null; }
  /** Samples waiting for an upload. */
  get pending(): number { return this.pool.length; }

  private entry(ref: AdapterRef | null, files: AdapterFiles | null, model: RefitModel): Entry {
    const a = this.o.adapt ?? 'bn';
    const adapter = a === 'none' ? new PlainAdapter(model) : a === 'bn' ? new BNAdapt(model, { prior: this.o.bnPrior ?? 0 }) : a(model);
    return { ref, files, model, adapter, users: 0, retired: false };
  }

  private async retire(e: Entry | null): Promise<void> {
    if (!e || e === this.serving) return;
    e.retired = true;
    if (e.users > 0) return; // the last user releases it
    await e.adapter.release();
    if (e.model !== this.base) await e.model.release();
  }

  /**
   * Predict a batch (forward only, plus the cheap adaptation), screen it for upload, and upload
   * every `uploadEvery` batches (in the background: `flush()` waits). `labels`, when given, feed
   * the health signal only.
   */
  async predict(x: Tensor, labels?: ArrayLike<number>): Promise<DevicePrediction> {
    const n = x.dims[0]!;
    if (x.dims.length !== this.sampleDims.length + 1 || x.dims.slice(1).some((d, i) => d !== this.sampleDims[i])) {
      throw new FleetError(`device: batch has shape [${x.dims.join(', ')}], expected [n, ${this.sampleDims.join(', ')}]`);
    }
    if (x.dtype !== 'float32') throw new FleetError(`device: batch is ${x.dtype}, expected float32`);
    if (labels && labels.length !== n) throw new FleetError(`device: ${labels.length} labels for ${n} samples`);
    const s = this.serving;
    s.users++;
    let logits: Tensor;
    try {
      logits = (await s.adapter.predict(x)).logits;
    } finally {
      s.users--;
      if (s.retired && s.users === 0) void this.retire(s);
    }
    const C = this.filter.classes;
    if (logits.data.length !== n * C) throw new FleetError(`device: the model gave ${logits.data.length} scores for ${n} samples, expected ${n} × ${C} classes`);
    const probs = softmaxRows(logits.data as Float32Array, C);
    const sc = this.filter.screen(probs);
    const data = x.data as Float32Array;
    const uniform = this.filter.uniformShare > 0;
    for (let i = 0; i < n; i++) {
      const kept = sc.verdicts[i] === 'kept';
      if ((!kept && !(uniform && sc.predicted[i]! >= 0)) || !finiteRow(data, i * this.sampleSize, this.sampleSize)) continue;
      const item = { x: data.slice(i * this.sampleSize, (i + 1) * this.sampleSize), entropy: sc.entropy[i]!, predicted: sc.predicted[i]!, seq: this.seq++ };
      if (kept) { this.pool.push(item); this.stats.kept++; }
      if (uniform) this.uniform.add(item);
    }
    if (this.pool.length > this.filter.poolCapacity) this.pool = this.filter.trim(this.pool);
    this.lastBatch = { dtype: 'float32', dims: [...x.dims], data: data.slice() };

    const bh = healthOf(probs, C, labels);
    this.healthWindow.push(bh);
    if (this.healthWindow.length > this.h.window) this.healthWindow.shift();
    this.stats.batches++;
    this.stats.samples += n;
    this.sinceUpload += n;
    const version = s.ref;
    const p = this.probation;
    if (p && s === this.serving) {
      let shadow: BatchHealth | null = null;
      const prev = this.previous;
      if (this.h.paired && prev) {
        prev.users++;
        try {
          const sp = softmaxRows((await prev.adapter.predict(x)).logits.data as Float32Array, C);
          shadow = healthOf(sp, C, labels);
          bh.agree = 0;
          for (let i = 0; i < n; i++) if (sc.predicted[i]! >= 0 && argmaxRow(sp, i, C) === sc.predicted[i]) bh.agree++;
        } finally {
          prev.users--;
          if (prev.retired && prev.users === 0) void this.retire(prev);
        }
      }
      if (this.probation === p) { // not judged meanwhile by a concurrent batch
        if (shadow) p.shadow.push(shadow);
        p.after.push(bh);
        if (p.after.length >= this.h.window) await this.judge();
      }
    }
    if (this.stats.batches % this.uploadEvery === 0) this.uploading = this.uploading.then(() => this.uploadPool());
    return { logits, predicted: sc.predicted, entropy: sc.entropy, version };
  }

  /** Wait for uploads in flight. */
  async flush(): Promise<void> { await this.uploading; }

  /** Upload the pool now (most informative first, within the budget); one round per upload. */
  async uploadNow(): Promise<void> {
    this.uploading = this.uploading.then(() => this.uploadPool());
    await this.uploading;
  }

  private async uploadPool(): Promise<void> {
    const batch = this.stats.batches;
    const round = this.round + 1;
    const meta = { model: this.o.model, device: this.o.device, round };
    if (this.sinceUpload > 0) {
      this.stats.everythingBytes += encodedUploadSize(meta, this.sinceUpload, this.sampleDims);
      this.stats.everythingU8Bytes += encodedUploadSize(meta, this.sinceUpload, this.sampleDims, undefined, 'u8');
    }
    this.sinceUpload = 0;
    if (!this.pool.length) return;
    const ranked = this.filter.rank(this.pool);
    // The kept samples and the budget set the upload's size; uniformShare only changes who fills it.
    // A JPEG's size is known only once encoded: the budget is taken for an estimate, the upload
    // shrunk until its JPEG fits that, and the rest given back.
    if (this.jpeg && !this.jpeg.seen) { // the first JPEG upload: learn the bytes a sample from the top of the ranking (not sent)
      try {
        const probe = ranked.slice(0, 32);
        this.jpeg.observe(probe.length, (await encodeUploadAsync(this.payload(meta, probe))).byteLength);
      } catch { /* the upload below reports it */ }
    }
    const size = (m: number) => (this.jpeg ? this.jpeg.estimate(meta, m) : encodedUploadSize(meta, m, this.sampleDims, undefined, this.codec as 'f32' | 'u8'));
    let { k, bytes } = this.filter.admit(ranked.length, size, this.now());
    if (k === 0) {
      this.pool = this.filter.trim(ranked);
      this.log({ batch, kind: 'upload-skipped', reason: `budget: ${this.filter.bucket?.available(this.now())} bytes available, one sample needs ${size(1)}`, detail: { pending: this.pool.length } });
      return;
    }
    let chosen = this.filter.pick(ranked, this.uniform, k);
    let jpegBytes: Uint8Array | undefined; // the upload as encoded to fit the budget: the link sends these
    if (this.jpeg) {
      const taken = bytes;
      let encoded: number;
      try {
        jpegBytes = await encodeUploadAsync(this.payload(meta, chosen));
        encoded = jpegBytes.byteLength;
        while (encoded > taken && chosen.length > 1) {
          chosen = chosen.slice(0, Math.max(1, Math.floor((chosen.length * taken) / encoded) - 1));
          jpegBytes = await encodeUploadAsync(this.payload(meta, chosen));
          encoded = jpegBytes.byteLength;
        }
      } catch (e) { // no encoder (sharp missing in Node) or it failed: nothing sent, the budget and the pool kept
        this.filter.refund(taken);
        this.pool = this.filter.trim(ranked);
        this.log({ batch, kind: 'upload-failed', reason: (e as Error).message, detail: { samples: chosen.length } });
        return;
      }
      if (encoded > taken) { // not even one sample fits what was taken
        this.filter.refund(taken);
        this.pool = this.filter.trim(ranked);
        this.log({ batch, kind: 'upload-skipped', reason: `budget: one sample's JPEG needs ${encoded} bytes, ${taken} were available`, detail: { pending: this.pool.length } });
        return;
      }
      this.filter.refund(taken - encoded);
      this.jpeg.observe(chosen.length, encoded);
      k = chosen.length;
      bytes = encoded;
    }
    const sent = new Set(chosen.map((c) => c.seq));
    this.pool = this.filter.trim(ranked.filter((it) => !sent.has(it.seq)));
    this.uniform.clear();
    this.round = round; // a round is used once, whatever the answer: rounds only increase
    const payload = this.payload(meta, chosen);
    try {
      const r = await this.link.upload(payload, jpegBytes);
      if (!r.accepted) { this.log({ batch, kind: 'upload-rejected', reason: r.reason ?? 'rejected', detail: { round, samples: k, bytes } }); return; }
      this.stats.uploads++;
      this.stats.uploadedSamples += k;
      this.stats.uploadedBytes += bytes;
      this.log({ batch, kind: 'upload', detail: { round, samples: k, bytes, pending: this.pool.length } });
    } catch (e) {
      this.log({ batch, kind: 'upload-failed', reason: (e as Error).message, detail: { round, samples: k, bytes } });
    }
  }

  private payload(meta: { model: string; device: string; round: number }, chosen: readonly PoolItem<Float32Array>[]): UploadPayload {
    const k = chosen.length;
    const payload: UploadPayload = {
      ...meta,
      dims: [k, ...this.sampleDims],
      data: new Float32Array(k * this.sampleSize),
      entropy: Float32Array.from(chosen, (c) => c.entropy),
      predicted: Int32Array.from(chosen, (c) => c.predicted),
      ...(this.codec !== 'f32' ? { codec: this.o.codec! } : {}),
    };
    chosen.forEach((c, i) => payload.data.set(c.x, i * this.sampleSize));
    return payload;
  }

  /**
   * Fetch the cloud's adapter for this device and apply it atomically. Returns what happened;
   * never throws for a bad adapter (it is refused, logged, and the old version keeps serving).
   */
  async sync(): Promise<{ applied: boolean; version: AdapterRef | null; reason?: string }> {
    if (this.syncing) return { applied: false, version: this.version, reason: 'a sync is already running' };
    if (this.probation) return { applied: false, version: this.version, reason: 'the last applied version is still on probation' };
    this.syncing = true;
    try {
      let pushed: PushedAdapter | undefined;
      try {
        pushed = await this.link.fetchAdapter(this.version);
      } catch (e) {
        return { applied: false, version: this.version, reason: `fetch failed: ${(e as Error).message}` };
      }
      if (!pushed) return { applied: false, version: this.version };
      return await this.apply(pushed);
    } finally {
      this.syncing = false;
    }
  }

  /** Build, check, then switch to `pushed`; the old entry serves until the switch and stays for rollback. */
  async apply(pushed: PushedAdapter): Promise<{ applied: boolean; version: AdapterRef | null; reason?: string }> {
    const ref: AdapterRef = { name: String(pushed?.name), version: Number(pushed?.version) };
    const batch = this.stats.batches;
    if (this.version && refKey(this.version) === refKey(ref)) return { applied: false, version: this.version, reason: 'already serving' };
    if (this.rejected.has(refKey(ref))) return { applied: false, version: this.version, reason: `${refKey(ref)} was rolled back or refused before` };
    let next: Entry | null = null;
    try {
      if (typeof pushed?.name !== 'string' || !pushed.name || !Number.isSafeInteger(pushed.version) || pushed.version < 1) throw new FleetError(`bad adapter reference ${JSON.stringify({ name: pushed?.name, version: pushed?.version })}`);
      const files = pushed.files;
      if (!files || !(files.weights instanceof Uint8Array) || typeof files.config !== 'string') throw new FleetError('adapter files are missing or not { weights: bytes, config: text }');
      const files2: AdapterFiles = { weights: files.weights.slice(), config: files.config }; // ours: the caller may reuse its buffers
      const model = withAdapterFiles(this.base, LOCAL_ADAPTER, files2); // names, shapes vs the base, dtypes, finite values
      next = this.entry(ref, files2, model);
      await this.probe(next);
    } catch (e) {
      if (next) { next.retired = true; await next.adapter.release().catch(() => {}); await next.model.release().catch(() => {}); }
      this.rejected.add(refKey(ref));
      const reason = (e as Error).message;
      this.log({ batch, kind: 'refused', version: ref, reason });
      return { applied: false, version: this.version, reason };
    }
    // The switch: one assignment. A predict already running finishes on the old entry.
    const before = [...this.healthWindow];
    const old = this.serving;
    await this.retire(this.previous);
    this.previous = old;
    this.serving = next;
    // Unpaired and with no traffic yet there is no baseline to compare with: applied unwatched.
    this.probation = this.h.paired || before.length > 0 ? { before, after: [], shadow: [] } : null;
    if (!this.probation) { await this.retire(this.previous); this.previous = null; }
    this.log({ batch, kind: 'applied', version: ref, detail: { from: old.ref ? refKey(old.ref) : 'base', probation: this.probation !== null } });
    await this.report(ref);
    return { applied: true, version: ref };
  }

  /** One batch through the new entry: finite logits of the right shape, or the entry is refused. */
  private async probe(e: Entry): Promise<void> {
    const x: Tensor = this.lastBatch ?? { dtype: 'float32', dims: [2, ...this.sampleDims], data: new Float32Array(2 * this.sampleSize).fill(0.5) };
    const out = (await e.adapter.predict(x)).logits;
    const C = this.filter.classes;
    if (out.dims.length !== 2 || out.dims[0] !== x.dims[0] || out.dims[1] !== C) throw new FleetError(`probe batch gave logits [${out.dims.join(', ')}], expected [${x.dims[0]}, ${C}]`);
    const d = out.data as Float32Array;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) throw new FleetError(`probe batch gave a non-finite logit (${d[i]}) at index ${i}`);
  }

  /** Compare the windows before and after the apply; keep the new version or roll back. */
  private async judge(): Promise<void> {
    const p = this.probation!;
    this.probation = null;
    const after = summarise(p.after);
    const paired = this.h.paired && p.shadow.length === p.after.length;
    const b = summarise(paired ? p.shadow : p.before);
    const detail = { paired, agreement: after.agreement, entropyBefore: b.entropy, entropyAfter: after.entropy, confidenceBefore: b.confidence, confidenceAfter: after.confidence, accuracyBefore: b.accuracy, accuracyAfter: after.accuracy };
    let reason: string | null = null;
    if (b.accuracy !== null && after.accuracy !== null && b.labelled >= this.h.minLabels && after.labelled >= this.h.minLabels) {
      if (b.accuracy - after.accuracy > this.h.maxAccuracyDrop) reason = `accuracy fell from ${pct(b.accuracy)} to ${pct(after.accuracy)} (tolerance ${pct(this.h.maxAccuracyDrop)})`;
    } else if (paired && this.h.minAgreement !== null && after.agreement !== null && after.agreement < this.h.minAgreement) {
      reason = `its predictions agree with the previous version's on ${pct(after.agreement)} of samples (minimum ${pct(this.h.minAgreement)})`;
    } else if (after.entropy - b.entropy > this.h.maxEntropyRise) {
      reason = `mean normalised entropy rose from ${b.entropy.toFixed(3)} to ${after.entropy.toFixed(3)} (tolerance ${this.h.maxEntropyRise})`;
    } else if (b.confidence - after.confidence > this.h.maxConfidenceDrop) {
      reason = `mean confidence fell from ${b.confidence.toFixed(3)} to ${after.confidence.toFixed(3)} (tolerance ${this.h.maxConfidenceDrop})`;
    }
    const batch = this.stats.batches;
    if (!reason) {
      this.log({ batch, kind: 'confirmed', version: this.version, detail });
      await this.retire(this.previous);
      this.previous = null;
      return;
    }
    const bad = this.serving;
    const back = this.previous!;
    this.serving = back;
    this.previous = null;
    this.rejected.add(refKey(bad.ref!));
    // The baseline for the next apply: the previous version's own health on the latest batches.
    this.healthWindow = paired ? [...p.shadow] : [...p.before];
    await this.retire(bad);
    this.log({ batch, kind: 'rollback', version: back.ref, reason: `${refKey(bad.ref!)}: ${reason}`, detail });
    await this.report(back.ref);
  }

  private async report(ref: AdapterRef | null): Promise<void> {
    try {
      await this.link.reportApplied(ref);
    } catch (e) {
      this.log({ batch: this.stats.batches, kind: 'report-failed', version: ref, reason: (e as Error).message });
    }
  }

  private log(e: DeviceEvent): void {
    this.events.push(e);
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
  }

  /** Serialisable state (JSON): rounds, the serving (and on probation, previous) adapter files, filter, health, stats. Pending samples are not kept. */
  state(): FleetDeviceState {
    const store = (e: Entry | null): StoredAdapter | null => (e?.ref && e.files ? { ...e.ref, weights: b64(e.files.weights), config: e.files.config } : null);
    return structuredClone({
      v: 1 as const,
      model: this.o.model,
      device: this.o.device,
      round: this.round,
      serving: store(this.serving),
      probation: this.probation ? { previous: store(this.previous), before: this.probation.before, after: this.probation.after, shadow: this.probation.shadow } : null,
      rejected: [...this.rejected],
      health: this.healthWindow,
      filter: this.filter.state(),
      stats: this.stats,
      events: this.events,
    });
  }

  /**
   * Restore a state from `state()` (after a restart). The serving adapter is rebuilt from its
   * files and its tensors checked again; if that fails the base model serves and the event says why.
   */
  async restore(s: FleetDeviceState): Promise<void> {
    if (!s || s.v !== 1) throw new FleetError(`device state: unknown version ${(s as { v?: unknown })?.v}`);
    if (s.model !== this.o.model || s.device !== this.o.device) throw new FleetError(`device state is for ${s.model}/${s.device}, this device is ${this.o.model}/${this.o.device}`);
    if (!Number.isSafeInteger(s.round) || s.round < 0) throw new FleetError(`device state: bad round ${s.round}`);
    const build = async (st: StoredAdapter | null): Promise<Entry> => {
      if (!st) return this.entry(null, null, this.base);
      const files = { weights: unb64(st.weights), config: st.config };
      // The files are checked again (names, shapes against the base, finite values); the probe
      // batch is not run: it passed when the version was applied, and here it would build an
      // onnxruntime session for a batch shape nothing else uses (a fleet restores devices often).
      return this.entry({ name: st.name, version: st.version }, files, withAdapterFiles(this.base, LOCAL_ADAPTER, files));
    };
    let serving: Entry;
    let previous: Entry | null = null;
    let failure: DeviceEvent | null = null;
    try {
      serving = await build(s.serving);
      if (s.probation) previous = await build(s.probation.previous);
    } catch (e) {
      serving = this.entry(null, null, this.base);
      failure = { batch: s.stats.batches, kind: 'restore-failed', version: s.serving ? { name: s.serving.name, version: s.serving.version } : null, reason: (e as Error).message };
    }
    this.filter.restore(s.filter);
    await this.retire(this.previous);
    const old = this.serving;
    this.serving = serving;
    await this.retire(old);
    this.previous = previous;
    this.probation = s.probation && previous ? { before: [...s.probation.before], after: [...s.probation.after], shadow: [...(s.probation.shadow ?? [])] } : null;
    this.round = s.round;
    this.rejected = new Set(s.rejected);
    this.healthWindow = [...s.health];
    Object.assign(this.stats, s.stats);
    this.events.splice(0, this.events.length, ...s.events);
    if (failure) { this.log(failure); await this.report(null); } // the cloud thinks the lost version runs
    this.pool = [];
    this.uniform.clear();
    this.sinceUpload = 0;
  }

  /** Release every session this device built (not the base model's own). */
  async release(): Promise<void> {
    await this.flush();
    for (const e of [this.serving, this.previous]) {
      if (!e) continue;
      await e.adapter.release();
      if (e.model !== this.base) await e.model.release();
    }
    this.previous = null;
  }
}

function argmaxRow(p: Float64Array, i: number, C: number): number {
  let best = 0;
  for (let c = 1; c < C; c++) if (p[i * C + c]! > p[i * C + best]!) best = c;
  return best;
}

function finiteRow(d: Float32Array, off: number, len: number): boolean {
  for (let j = off; j < off + len; j++) if (!Number.isFinite(d[j]!)) return false;
  return true;
}

/** A batch's health from its class probabilities: normalised entropy, confidence, accuracy on labels. */
function healthOf(probs: Float64Array, C: number, labels?: ArrayLike<number>): BatchHealth {
  const n = probs.length / C;
  const lnC = Math.log(C);
  const bh: BatchHealth = { n, entropy: 0, confidence: 0, labelled: 0, correct: 0 };
  for (let i = 0; i < n; i++) {
    let h = 0, best = 0, ok = true;
    for (let c = 0; c < C; c++) {
      const p = probs[i * C + c]!;
      if (!(p >= 0 && p <= 1)) ok = false;
      if (p > 0) h -= p * Math.log(p);
      if (p > probs[i * C + best]!) best = c;
    }
    // A row that is not a distribution counts as the worst case: no confidence, maximum entropy, wrong.
    bh.entropy += ok ? h / lnC : 1;
    bh.confidence += ok ? probs[i * C + best]! : 0;
    if (labels) { bh.labelled++; if (ok && labels[i] === best) bh.correct++; }
  }
  return bh;
}

function summarise(hs: BatchHealth[]): HealthSummary {
  let n = 0, ent = 0, conf = 0, lab = 0, cor = 0, agN = 0, ag = 0;
  for (const h of hs) {
    n += h.n; ent += h.entropy; conf += h.confidence; lab += h.labelled; cor += h.correct;
    if (h.agree !== undefined) { agN += h.n; ag += h.agree; }
  }
  return { batches: hs.length, entropy: n ? ent / n : 0, confidence: n ? conf / n : 0, labelled: lab, accuracy: lab ? cor / lab : null, agreement: agN ? ag / agN : null };
}
const pct = (v: number) => `${(100 * v).toFixed(1)}%`;

/**
 * The budget's estimate of a JPEG upload's size before it is encoded: the 8-bit upload's header,
 * plus samples at 1.25× the bytes a sample the earlier uploads took (before the first, what a probe
 * of the top-ranked samples took; the 8-bit size if that failed). Increasing in the number of
 * samples, as UploadFilter.admit needs.
 */
class JpegSizes {
  /** Bytes a sample at 8 bits, the estimate before any JPEG was seen. */
  private readonly u8PerSample: number;
  private perSample: number;
  constructor(private readonly dims: readonly number[]) {
    this.u8PerSample = this.perSample = dims.reduce((a, b) => a * b, 1);
  }
  estimate(meta: { model: string; device: string; round: number }, m: number): number {
    const header = encodedUploadSize(meta, m, this.dims, undefined, 'u8') - m * this.u8PerSample;
    return header + Math.ceil(1.25 * m * this.perSample);
  }
  observe(samples: number, bytes: number): void {
    this.perSample = this.seen ? 0.7 * this.perSample + 0.3 * (bytes / samples) : bytes / samples;
    this.seen = true;
  }
  /** Whether an encoded upload (or the first upload's probe) has set the estimate. */
  seen = false;
}
