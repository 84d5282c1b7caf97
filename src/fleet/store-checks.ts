// What both FleetStores (in memory, PostgreSQL) check before touching state, so that they refuse
// the same inputs with the same messages: names, rounds, counts, hashes, blob keys, tokens.
import { createHash, timingSafeEqual } from 'node:crypto';
import { isSafeName } from '../registry/types.ts';
import { checkBlobKey } from '../registry/blob-key.ts';
import { FleetError, type UploadRecord, type JobResult } from './types.ts';

export function checkFleetName(kind: 'model' | 'device', v: string): void {
  if (!isSafeName(v)) {
    throw new FleetError(`${kind} name ${JSON.stringify(v)} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'`, 'invalid');
  }
}

export function checkToken(token: string): void {
  if (typeof token !== 'string' || token.length < 1 || token.length > 1024) throw new FleetError('a device token must be a string of 1-1024 characters', 'invalid');
}

/** sha256 of the token: the only form stored. */
export function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** Constant-time comparison of a presented token with a stored hash. */
export function tokenMatches(stored: Buffer, token: string): boolean {
  if (typeof token !== 'string') return false;
  const h = tokenHash(token);
  return stored.length === h.length && timingSafeEqual(stored, h);
}

const nonNegInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

export function checkUpload(rec: Omit<UploadRecord, 'createdAt'>): void {
  if (rec === null || typeof rec !== 'object') throw new FleetError('an upload record must be an object', 'invalid');
  checkFleetName('model', rec.model);
  checkFleetName('device', rec.device);
  if (!Number.isSafeInteger(rec.round) || rec.round < 1) throw new FleetError(`upload round must be a positive integer, got ${rec.round}`, 'invalid');
  if (!nonNegInt(rec.samples)) throw new FleetError(`upload samples must be a non-negative integer, got ${rec.samples}`, 'invalid');
  if (!nonNegInt(rec.bytes)) throw new FleetError(`upload bytes must be a non-negative integer, got ${rec.bytes}`, 'invalid');
  if (typeof rec.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(rec.sha256)) throw new FleetError(`upload sha256 must be 64 lowercase hex digits, got ${JSON.stringify(rec.sha256)}`, 'invalid');
  checkBlobKey(rec.blobKey);
}

export function checkAppliedVersion(v: number | null): void {
  if (v !== null && (!Number.isSafeInteger(v) || v < 1)) throw new FleetError(`applied version must be a positive integer or null, got ${v}`, 'invalid');
}

export function checkJob(r: Omit<JobResult, 'finishedAt'>): void {
  if (r === null || typeof r !== 'object') throw new FleetError('a job result must be an object', 'invalid');
  checkJobId(r.jobId);
  if (r.version !== null && (!Number.isSafeInteger(r.version) || r.version < 1)) throw new FleetError(`job ${r.jobId}: version must be a positive integer or null, got ${r.version}`, 'invalid');
  if (r.detail === null || typeof r.detail !== 'object' || Array.isArray(r.detail)) throw new FleetError(`job ${r.jobId}: detail must be an object`, 'invalid');
}

export function checkJobId(id: string): void {
  if (typeof id !== 'string' || id.length < 1 || id.length > 512) throw new FleetError(`job id must be a string of 1-512 characters, got ${JSON.stringify(id)}`, 'invalid');
}

export const notRegistered = (model: string, device: string) => new FleetError(`device '${device}' of model '${model}' is not registered`, 'unauthorized');
export const wrongToken = (model: string, device: string) => new FleetError(`the token is not device '${device}''s (model '${model}')`, 'unauthorized');
export const replay = (round: number, last: number, device: string) =>
  new FleetError(`round ${round} is not newer than device '${device}''s last accepted round ${last} (a replay); send round ${last + 1} or later`, 'conflict');
