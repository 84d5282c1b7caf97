// A BlobStore on any S3-compatible object store through the AWS SDK's S3 client. An S3 PUT is
// atomic (a reader sees the whole old object or the whole new one), so no temporary object is
// needed. Keys are checked exactly as FsBlobStore checks them, then stored under `prefix`.
import {
  S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand, ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import type { BlobStore } from '../fleet/types.ts';
import { FleetError } from '../fleet/types.ts';
import { checkBlobKey, checkBlobPrefix } from './blob-key.ts';

export interface S3BlobStoreOptions {
  bucket: string;
  /** e.g. http://127.0.0.1:9000 for a local server; unset for AWS itself. */
  endpoint?: string;
  /** @default 'us-east-1' */
  region?: string;
  /** Bucket in the path (http://host/bucket/key) rather than the host name; most local servers need it. @default true when `endpoint` is set */
  forcePathStyle?: boolean;
  /** Unset: the SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Prepended to every key, e.g. 'refit/'. @default '' */
  prefix?: string;
}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err.name === 'NoSuchKey' || err.name === 'NotFound' || err.$metadata?.httpStatusCode === 404;
}

export class S3BlobStore implements BlobStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;

  constructor(opts: S3BlobStoreOptions) {
    if (typeof opts?.bucket !== 'string' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(opts.bucket)) {
      throw new FleetError(`S3 bucket name ${JSON.stringify(opts?.bucket)} is not valid: 3-63 lowercase letters, digits, '.' or '-'`, 'invalid');
    }
    this.bucket = opts.bucket;
    this.prefix = opts.prefix ?? '';
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region ?? 'us-east-1',
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      credentials: opts.credentials,
      // Checksums only where S3 requires them: many S3-compatible servers reject the SDK's
      // default trailing-checksum (aws-chunked) uploads. The registry verifies sha256 itself.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private where(e: unknown, op: string, key: string): Error {
    const err = e as Error & { $metadata?: { httpStatusCode?: number }; code?: string };
    const status = err.$metadata?.httpStatusCode;
    const msg = `S3 ${op} of s3://${this.bucket}/${this.prefix}${key} failed: ${err.name}: ${err.message}`;
    // No HTTP answer at all (refused, reset, DNS) or a 5xx: the store is unavailable, not the request wrong.
    if (status === undefined || status >= 500) return new FleetError(msg, 'unavailable');
    return new FleetError(msg, status === 403 || status === 401 ? 'unauthorized' : 'invalid');
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    checkBlobKey(key);
    if (!(bytes instanceof Uint8Array)) throw new FleetError(`blob ${key}: bytes must be a Uint8Array`, 'invalid');
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: bytes, ContentLength: bytes.byteLength }));
    } catch (e) {
      throw this.where(e, 'put', key);
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    checkBlobKey(key);
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return r.Body ? await r.Body.transformToByteArray() : new Uint8Array(0);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.where(e, 'get', key);
    }
  }

  async delete(key: string): Promise<boolean> {
    checkBlobKey(key);
    // S3's DELETE answers 204 whether or not the key existed; HEAD first says which.
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
    } catch (e) {
      if (isNotFound(e)) return false;
      throw this.where(e, 'head', key);
    }
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
    } catch (e) {
      throw this.where(e, 'delete', key);
    }
    return true;
  }

  async list(prefix: string): Promise<string[]> {
    checkBlobPrefix(prefix);
    const out: string[] = [];
    let token: string | undefined;
    do {
      let r;
      try {
        r = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ContinuationToken: token }));
      } catch (e) {
        throw this.where(e, 'list', prefix);
      }
      for (const o of r.Contents ?? []) if (o.Key) out.push(o.Key.slice(this.prefix.length));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
