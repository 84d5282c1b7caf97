// Node file I/O for models. Kept apart from ./proto.ts so the core stays browser-safe.
import { readFileSync, openSync, readSync, closeSync, writeFileSync, renameSync, unlinkSync, existsSync, fsyncSync } from 'node:fs';
import { dirname, resolve, normalize, sep } from 'node:path';
import { decodeModel, encodeModel, type ExternalDataReader } from './proto.ts';
import type { Model } from './ir.ts';

export function readModelFile(path: string): Model {
  if (!existsSync(path)) throw new Error(`model file not found: ${path}`);
  const bytes = readFileSync(path);
  const base = dirname(resolve(path));
  const readExternal: ExternalDataReader = (location, offset, length) => {
    const full = normalize(resolve(base, location));
    if (!full.startsWith(base + sep)) throw new Error(`external data location '${location}' escapes the model's folder`);
    if (!existsSync(full)) throw new Error(`external data file '${location}' (next to ${path}) not found`);
    const fd = openSync(full, 'r');
    try {
      const len = length ?? readFileSync(full).byteLength - offset;
      const buf = new Uint8Array(len);
      const got = readSync(fd, buf, 0, len, offset);
      if (got !== len) throw new Error(`external data file '${location}' is truncated: wanted ${len} bytes at offset ${offset}, got ${got}`);
      return buf;
    } finally {
      closeSync(fd);
    }
  };
  try {
    return decodeModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), readExternal);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

/** Write bytes atomically: a failed write never replaces a good file. */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeFileSync(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw new Error(`could not save ${path}: ${(e as Error).message}`);
  }
}

export function writeModelFile(path: string, model: Model): void {
  writeFileAtomic(path, encodeModel(model));
}
