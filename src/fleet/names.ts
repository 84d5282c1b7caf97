// Names the cloud service and the workers agree on: registry adapter names, job ids, blob keys.
// Device names are at most DEVICE_NAME_MAX characters so that 'device.<name>' is still a valid
// registry name (NAME_PATTERN allows 128).
import { createHash } from 'node:crypto';

/** The registry adapter that holds the fleet's aggregate (one per model). */
export const FLEET_ADAPTER = 'fleet';
export const DEVICE_ADAPTER_PREFIX = 'device.';
export const DEVICE_NAME_MAX = 120;

/** The registry adapter that holds one device's consolidated adapter. */
export const deviceAdapterName = (device: string): string => `${DEVICE_ADAPTER_PREFIX}${device}`;

/** The device whose adapter `name` is, or undefined for any other adapter. */
export const deviceOfAdapter = (name: string): string | undefined => (name.startsWith(DEVICE_ADAPTER_PREFIX) ? name.slice(DEVICE_ADAPTER_PREFIX.length) : undefined);

/** Longest job id the queues take (src/fleet/queue-common.ts). */
const MAX_JOB_ID = 200;

/**
 * One consolidation job per device round: publishing it twice is a no-op (the queue's dedup; the
 * store's job result). Readable when it fits the queue's id limit; names too long for it are
 * replaced by a hash of model and device (still one id per device round).
 */
export function consolidateJobId(model: string, device: string, round: number): string {
  const id = `consolidate:${model}:${device}:${round}`;
  return id.length <= MAX_JOB_ID ? id : `consolidate:h${createHash('sha256').update(`${model}\u0000${device}`).digest('hex')}:${round}`;
}
export const aggregateJobId = (model: string, round: number): string => `aggregate:${model}:${round}`;

/** Where an upload's bytes live in the BlobStore: content-addressed under the device's round. */
export const uploadBlobKey = (model: string, device: string, round: number, sha256: string): string => `uploads/${model}/${device}/${round}-${sha256}`;

/** The key in AdapterMeta.config under which a published version records the job that made it (idempotent publishing). */
export const JOB_META_KEY = 'fleetJob';
