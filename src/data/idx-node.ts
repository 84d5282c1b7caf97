/**
 * Node-only I/O for IDX files: read from disk, gunzip. The parsing itself is in `idx.ts`
 * and works on Uint8Arrays (browser-safe); keep fs and zlib here.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { IdxFormatError, isGzip, parseIdxImages, parseIdxLabels, type IdxImages, type IdxLabels } from './idx.ts';

/** Read a file's bytes; a missing file gets an error that says what was expected. */
export function readBytes(path: string, what = 'file'): Uint8Array {
  try {
    const buf = readFileSync(path);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`${what} not found: ${path}`);
    throw new Error(`cannot read ${what} ${path}: ${err.message}`);
  }
}

/** Gunzip when the bytes carry the gzip magic; a truncated or corrupt stream gets a clear error. */
export function maybeGunzip(bytes: Uint8Array, name: string): Uint8Array {
  if (!isGzip(bytes)) return bytes;
  try {
    const out = gunzipSync(bytes);
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    throw new IdxFormatError(
      `${name}: corrupt or truncated gzip stream (${bytes.length} compressed bytes): ${(e as Error).message}`,
    );
  }
}

/** Read an IDX file from disk (gzip or plain) and return its raw bytes, gunzipped. */
export function readIdxBytes(path: string): Uint8Array {
  return maybeGunzip(readBytes(path, 'IDX file'), path);
}

/** Read an idx3-ubyte image file (optionally .gz). */
export function readIdxImagesFile(path: string): IdxImages {
  return parseIdxImages(readIdxBytes(path), path);
}

/** Read an idx1-ubyte label file (optionally .gz). */
export function readIdxLabelsFile(path: string): IdxLabels {
  return parseIdxLabels(readIdxBytes(path), path);
}
