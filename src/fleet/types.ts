// The fleet's shared vocabulary (issue 15): devices adapt fast and upload a few samples; the
// cloud consolidates them slowly into per-device adapters and a fleet adapter, and publishes
// versions through the same AdapterRegistry that `refit serve` uses. Storage, queue, device and
// cloud code meet only at these interfaces, so each can be swapped (PostgreSQL or in-memory,
// NATS JetStream or in-process) without touching the others.
import type { AdapterRegistry, AdapterFiles } from '../registry/types.ts';
import type { UploadCodec } from './upload-images.ts';

/** Content-addressed bytes (uploads, adapter blobs). Keys are '/'-separated names checked by the store. */
export interface BlobStore {
  /** Write all-or-nothing: a reader sees the whole blob or none. Rewriting a key with the same bytes is a no-op. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  get(key: string): Promise<Uint8Array | undefined>;
  delete(key: string): Promise<boolean>;
  list(prefix: string): Promise<string[]>;
  close(): Promise<void>;
}

/** A device known to the cloud. The token is never stored, only its sha256. */
export interface DeviceRecord {
  model: string;
  device: string;
  registeredAt: string;
  /** Highest upload round accepted so far (0 before the first). Rounds must increase. */
  lastRound: number;
  /** Adapter version the device last reported as applied (null before any). */
  appliedVersion: number | null;
}

/** One accepted upload: which samples a device sent in one round, and where their bytes are. */
export interface UploadRecord {
  model: string;
  device: string;
  round: number;
  /** BlobStore key of the upload's tensor bytes. */
  blobKey: string;
  sha256: string;
  samples: number;
  bytes: number;
  createdAt: string;
}

/** Outcome of a job, committed once per job id; a redelivered job that finds one does nothing. */
export interface JobResult {
  jobId: string;
  /** Registry version the job published, if any. */
  version: number | null;
  detail: Record<string, unknown>;
  finishedAt: string;
}

/**
 * Devices, uploads and job results. Every method is one transaction. `acceptUpload` is the
 * guard against replays and impersonation: it checks the token and that `round` is newer than
 * the device's last, then records the upload, all at once.
 */
export interface FleetStore {
  registerDevice(model: string, device: string, token: string): Promise<DeviceRecord>;
  getDevice(model: string, device: string): Promise<DeviceRecord | undefined>;
  /** True when `token` is the device's. */
  checkToken(model: string, device: string, token: string): Promise<boolean>;
  /** Records the upload; throws FleetError('conflict') for a round not newer than the last, ('unauthorized') for a wrong token. */
  acceptUpload(rec: Omit<UploadRecord, 'createdAt'>, token: string): Promise<UploadRecord>;
  uploads(model: string, device: string, sinceRound?: number): Promise<UploadRecord[]>;
  setAppliedVersion(model: string, device: string, version: number | null): Promise<void>;
  /** Commits a job's result unless one exists; returns the stored one either way (`created` says which). */
  commitJob(result: Omit<JobResult, 'finishedAt'>): Promise<{ result: JobResult; created: boolean }>;
  jobResult(jobId: string): Promise<JobResult | undefined>;
  close(): Promise<void>;
}

/** A unit of slow work. `id` makes it idempotent: one id per device round (or per aggregation round). */
export interface Job {
  id: string;
  kind: 'consolidate' | 'aggregate';
  model: string;
  /** consolidate: the device; aggregate: unset. */
  device?: string;
  round: number;
  payload?: Record<string, unknown>;
}

export interface JobContext {
  /** 1 on first delivery. */
  attempt: number;
  /** Extends the job's lease while long work runs (no-op where the queue has no leases). */
  keepAlive(): void;
}

export interface ConsumeOptions {
  /** Jobs handled at once by this consumer. @default 1 */
  concurrency?: number;
}

/**
 * At-least-once job delivery with idempotent publishing: publishing a job whose id was already
 * published (within the queue's deduplication window) is a no-op. A job is acknowledged only
 * after its handler resolves; a handler that throws (or a consumer that dies) gets it
 * redelivered with backoff, up to a maximum number of attempts.
 */
export interface JobQueue {
  publish(job: Job): Promise<{ duplicate: boolean }>;
  consume(handler: (job: Job, ctx: JobContext) => Promise<void>, opts?: ConsumeOptions): Promise<{ stop(): Promise<void> }>;
  close(): Promise<void>;
}

/** The samples a device sends in one round (encoded by src/fleet/upload-codec.ts). */
export interface UploadPayload {
  model: string;
  device: string;
  /** Increases with every upload of the device; the cloud refuses a round it has seen. */
  round: number;
  /** [n, ...sample dims], float32. */
  dims: number[];
  data: Float32Array;
  /** Per-sample prediction entropy measured on the device (nats). */
  entropy?: Float32Array;
  /** Per-sample predicted class on the device. */
  predicted?: Int32Array;
  /**
   * How `data` travels (upload-images.ts): float32 (the default), 8 bits a value ('u8'), or one
   * JPEG of the tiled images ({ jpeg: quality }); a decoded upload says how it came.
   */
  codec?: UploadCodec;
}

/** An adapter version the cloud publishes for a device. */
export interface PushedAdapter {
  /** Registry adapter name (per device, or the fleet's). */
  name: string;
  version: number;
  files: AdapterFiles;
}

/** The device's view of the cloud (HTTP in src/fleet/link-http.ts; in-process in tests). */
export interface CloudLink {
  /**
   * Send one round. `encoded`, when given, is encodeUploadAsync(p) already made (a JPEG device
   * encodes to fit its budget): a link that sends bytes sends those instead of encoding again.
   */
  upload(p: UploadPayload, encoded?: Uint8Array): Promise<{ accepted: boolean; reason?: string }>;
  /** The adapter the device should run when it differs from `current` (name@version); undefined when nothing newer. */
  fetchAdapter(current: { name: string; version: number } | null): Promise<PushedAdapter | undefined>;
  /** Tells the cloud which version the device now runs (null: the base model). */
  reportApplied(applied: { name: string; version: number } | null): Promise<void>;
}

/** What a cloud worker needs. */
export interface CloudDeps {
  registry: AdapterRegistry;
  store: FleetStore;
  blobs: BlobStore;
  queue: JobQueue;
}

/** A fleet failure with a reason a log or an HTTP answer can carry. */
export class FleetError extends Error {
  constructor(message: string, readonly code: 'invalid' | 'unauthorized' | 'conflict' | 'not-found' | 'unavailable' = 'invalid') {
    super(message);
    this.name = 'FleetError';
  }
}
