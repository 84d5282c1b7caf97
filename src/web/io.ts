// Bytes in a page: from fetch, Blob/File, ArrayBuffer; out as downloads. Nothing here touches
// the file system, so the same functions serve models, adapters, checkpoints and data.
import { loadModel, type RefitModel } from '../model.ts';

export type ByteSource = Uint8Array | ArrayBuffer | Blob | Response | string | URL;

export interface FetchOptions {
  /** Called as bytes arrive: loaded, and total when the server sent Content-Length. */
  onProgress?: (loaded: number, total: number | undefined) => void;
  signal?: AbortSignal;
}

/**
 * The bytes at `url`. A failed request, or a body that ends before its Content-Length (a
 * connection dropped halfway), is an error naming the URL: never a truncated model.
 */
export async function fetchBytes(url: string | URL, opts: FetchOptions = {}): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    throw new Error(`fetching ${url} failed: ${(e as Error).message}`);
  }
  if (!res.ok) throw new Error(`fetching ${url} failed: HTTP ${res.status} ${res.statusText}`);
  return readResponse(res, String(url), opts);
}

async function readResponse(res: Response, what: string, opts: FetchOptions): Promise<Uint8Array> {
  const header = res.headers.get('content-length');
  // Content-Length counts encoded bytes; with a Content-Encoding the body is longer, so no check.
  const total = header !== null && !res.headers.get('content-encoding') ? Number(header) : undefined;
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      loaded += value.byteLength;
      opts.onProgress?.(loaded, total);
    }
  } catch (e) {
    throw new Error(`reading ${what} failed after ${loaded} bytes${total ? ` of ${total}` : ''}: ${(e as Error).message}`);
  }
  if (total !== undefined && Number.isFinite(total) && loaded !== total) {
    throw new Error(`reading ${what}: the body ended after ${loaded} of ${total} bytes (connection dropped?)`);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Bytes from any of the page's usual sources (a string or URL is fetched). */
export async function bytesOf(source: ByteSource, opts: FetchOptions = {}): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (typeof Blob !== 'undefined' && source instanceof Blob) return new Uint8Array(await source.arrayBuffer());
  if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`response for ${source.url || 'the model'} is HTTP ${source.status}`);
    return readResponse(source, source.url || 'the response', opts);
  }
  if (typeof source === 'string' || source instanceof URL) return fetchBytes(source, opts);
  throw new Error(`expected bytes (Uint8Array, ArrayBuffer, Blob, Response) or a URL, got ${Object.prototype.toString.call(source)}`);
}

/** loadModel for a page: the model from a URL, Blob/File, Response or bytes. */
export async function loadModelFrom(source: ByteSource, opts: Parameters<typeof loadModel>[1] & FetchOptions = {}): Promise<RefitModel> {
  const { onProgress, signal, ...load } = opts;
  const bytes = await bytesOf(source, { ...(onProgress ? { onProgress } : {}), ...(signal ? { signal } : {}) });
  return loadModel(bytes, load);
}

/** gunzip in the page (DecompressionStream), for .gz data files such as refit's IDX sets. */
export async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Offer bytes to the user as a file download. */
export function downloadBytes(bytes: Uint8Array | string, filename: string, type = 'application/octet-stream'): void {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
