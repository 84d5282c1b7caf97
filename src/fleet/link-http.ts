// CloudLink over HTTP (fetch; Node or a browser): what a device uses to talk to the cloud service
// (./cloud-server.ts). Connection errors and 5xx answers are retried with exponential backoff and
// jitter (the service's writes are idempotent per round, so a retried upload is safe); a 4xx is
// the cloud's considered answer and is never retried: an upload comes back { accepted: false,
// reason }, anything else throws a FleetError carrying the cloud's message.
import { FleetError, type CloudLink, type PushedAdapter, type UploadPayload } from './types.ts';
import { encodeUploadAsync } from './upload-codec.ts';

export interface HttpRetryOptions {
  /** Retries after the first try (connection errors and 5xx only). @default 4 */
  retries?: number;
  /** First backoff in ms; doubles per retry, with ±50% jitter. @default 200 */
  backoffMs?: number;
  /** Longest backoff in ms. @default 5000 */
  maxBackoffMs?: number;
  /** Per-request timeout in ms. @default 30000 */
  timeoutMs?: number;
  /** The fetch to use (tests). @default globalThis.fetch */
  fetch?: typeof fetch;
}

export interface HttpLinkOptions extends HttpRetryOptions {
  /** The cloud service's base URL, e.g. http://cloud:8080 */
  url: string;
  model: string;
  device: string;
  /** The device's token, given once at registration. */
  token: string;
}

const CODE: Record<number, FleetError['code']> = { 400: 'invalid', 401: 'unauthorized', 403: 'unauthorized', 404: 'not-found', 409: 'conflict', 413: 'invalid', 415: 'invalid' };

interface Answer { status: number; body: Record<string, unknown> | undefined }

/** One request with retries on connection errors and 5xx; returns the final answer (2xx or 4xx). */
async function request(base: string, path: string, init: RequestInit, o: HttpRetryOptions): Promise<Answer> {
  const retries = o.retries ?? 4, base0 = o.backoffMs ?? 200, cap = o.maxBackoffMs ?? 5000, timeout = o.timeoutMs ?? 30_000;
  const f = o.fetch ?? globalThis.fetch;
  const url = `${base.replace(/\/+$/, '')}${path}`;
  let last = '';
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await f(url, { ...init, signal: AbortSignal.timeout(timeout) });
      const text = await r.text();
      let body: Record<string, unknown> | undefined;
      try { body = text ? JSON.parse(text) as Record<string, unknown> : undefined; } catch { body = { message: text.slice(0, 200) }; }
      if (r.status < 500) return { status: r.status, body };
      last = `${r.status} ${typeof body?.message === 'string' ? body.message : ''}`.trim();
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      last = `${err.name === 'TimeoutError' ? `no answer within ${timeout} ms` : err.message}${err.cause?.code ? ` (${err.cause.code})` : ''}`;
    }
    if (attempt >= retries) throw new FleetError(`${init.method ?? 'GET'} ${url}: the cloud did not answer after ${attempt + 1} tries: ${last}`, 'unavailable');
    const d = Math.min(cap, base0 * 2 ** attempt);
    await new Promise((r) => setTimeout(r, d * (0.5 + Math.random())));
  }
}

const fail = (what: string, a: Answer): never => {
  const msg = typeof a.body?.message === 'string' ? a.body.message : `HTTP ${a.status}`;
  throw new FleetError(`${what}: ${msg}`, CODE[a.status] ?? 'invalid');
};

/** Register a device with the admin token; returns the device's token (shown only this once). */
export async function registerDevice(url: string, adminToken: string, model: string, device: string, o: HttpRetryOptions = {}): Promise<string> {
  const a = await request(url, `/v1/fleet/${encodeURIComponent(model)}/devices`, {
    method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ device }),
  }, o);
  if (a.status !== 201 || typeof a.body?.token !== 'string') return fail(`registering device '${device}'`, a);
  return a.body.token;
}

export class HttpCloudLink implements CloudLink {
  private readonly path: string;
  private readonly auth: Record<string, string>;

  constructor(private readonly o: HttpLinkOptions) {
    this.path = `/v1/fleet/${encodeURIComponent(o.model)}/devices/${encodeURIComponent(o.device)}`;
    this.auth = { authorization: `Bearer ${o.token}` };
  }

  async upload(p: UploadPayload, encoded?: Uint8Array): Promise<{ accepted: boolean; reason?: string }> {
    const bytes = encoded ?? await encodeUploadAsync(p);
    const a = await request(this.o.url, `${this.path}/uploads`, {
      method: 'POST', headers: { ...this.auth, 'content-type': 'application/octet-stream' }, body: bytes as Uint8Array<ArrayBuffer>,
    }, this.o);
    if (a.status >= 200 && a.status < 300) return { accepted: true };
    const reason = typeof a.body?.reason === 'string' ? a.body.reason : `http-${a.status}`;
    return { accepted: false, reason: `${reason}: ${typeof a.body?.message === 'string' ? a.body.message : ''}` };
  }

  async fetchAdapter(current: { name: string; version: number } | null): Promise<PushedAdapter | undefined> {
    const q = current ? `?current=${encodeURIComponent(`${current.name}@${current.version}`)}` : '';
    const a = await request(this.o.url, `${this.path}/adapter${q}`, { method: 'GET', headers: this.auth }, this.o);
    if (a.status === 204) return undefined;
    if (a.status !== 200) return fail('fetching the adapter', a);
    const b = a.body as { name?: unknown; version?: unknown; sha256?: unknown; config?: unknown; weights?: unknown } | undefined;
    if (typeof b?.name !== 'string' || !Number.isInteger(b.version) || typeof b.config !== 'string' || typeof b.weights !== 'string' || typeof b.sha256 !== 'string') {
      throw new FleetError('fetching the adapter: the answer lacks name, version, sha256, config or weights', 'invalid');
    }
    const w = base64Bytes(b.weights);
    // The registry verified the bytes when it read them; this checks the way here.
    const got = await sha256Hex(w);
    if (got !== b.sha256) throw new FleetError(`fetching the adapter: ${b.name}@${b.version} weights have sha256 ${got}, the cloud said ${b.sha256} (corrupted in transit)`, 'invalid');
    return { name: b.name, version: b.version as number, files: { weights: w, config: b.config } };
  }

  async reportApplied(applied: { name: string; version: number } | null): Promise<void> {
    const a = await request(this.o.url, `${this.path}/applied`, {
      method: 'POST', headers: { ...this.auth, 'content-type': 'application/json' }, body: JSON.stringify(applied ? { name: applied.name, version: applied.version } : {}),
    }, this.o);
    if (a.status !== 200) fail('reporting the applied adapter', a);
  }
}

// Web APIs only (atob, WebCrypto; both in Node 20 too), so devices in a browser use this link as is.
function base64Bytes(s: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw new FleetError('fetching the adapter: the weights are not valid base64', 'invalid');
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (x) => x.toString(16).padStart(2, '0')).join('');
}
