// Node file I/O for models. Kept apart from ./proto.ts so the core stays browser-safe.
import { openSync, readSync, closeSync, fstatSync, writeSync, renameSync, unlinkSync, existsSync, fsyncSync } from 'node:fs';
import { basename, dirname, join, resolve, normalize, sep } from 'node:path';
import { decodeModel, encodeModel, encodeModelWithDataFile, type ExternalDataReader } from './proto.ts';
import type { Model } from './ir.ts';

/**
 * The file's bytes in a resizable ArrayBuffer: decoding copies every tensor out of them, and
 * resize(0) then hands their pages back at once. A plain buffer stays garbage until V8 next collects
 * it, which it did not do before ResNet-18's Tent step peaked (43 MB of it held there: docs/speed.md,
 * session 6).
 */
function readResizable(path: string): ArrayBuffer & { resize(n: number): void } {
  const fd = openSync(path, 'r');
  try {
    const n = fstatSync(fd).size;
    const buf = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void })(n, { maxByteLength: n });
    const view = new Uint8Array(buf);
    for (let at = 0; at < n;) {
      const got = readSync(fd, view, at, n - at, at);
      if (got === 0) throw new Error(`model file ${path} ended after ${at} of ${n} bytes`);
      at += got;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Attributes kept verbatim (subgraphs, sparse tensors) may still view the file's bytes. */
const viewsFileBytes = (m: Model) => m.graph.nodes.some((n) => Object.values(n.attrs).some((a) => a.kind === 'opaque'));

export function readModelFile(path: string): Model {
  if (!existsSync(path)) throw new Error(`model file not found: ${path}`);
  const file = readResizable(path);
  const bytes = new Uint8Array(file);
  const base = dirname(resolve(path));
  const readExternal: ExternalDataReader = (location, offset, length) => {
    const full = normalize(resolve(base, location));
    if (!full.startsWith(base + sep)) throw new Error(`external data location '${location}' escapes the model's folder`);
    if (!existsSync(full)) throw new Error(`external data file '${location}' (next to ${path}) not found`);
    const fd = openSync(full, 'r');
    try {
      const len = length ?? fstatSync(fd).size - offset;
      const buf = new Uint8Array(len);
      const got = readSync(fd, buf, 0, len, offset);
      if (got !== len) throw new Error(`external data file '${location}' is truncated: wanted ${len} bytes at offset ${offset}, got ${got}`);
      return buf;
    } finally {
      closeSync(fd);
    }
  };
  let model: Model;
  try {
    model = decodeModel(bytes, readExternal);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  if (!viewsFileBytes(model)) file.resize(0);
  return model;
}

/**
 * A file written in pieces into a temporary beside `path` that takes its place only on commit():
 * a failed or abandoned write (abort()) never replaces a good file, and what is written need not
 * fit in memory at once.
 */
export class AtomicFileWriter {
  private readonly tmp: string;
  private fd: number | null;

  constructor(readonly path: string) {
    this.tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
    this.fd = openSync(this.tmp, 'w');
  }

  write(...chunks: readonly Uint8Array[]): void {
    if (this.fd === null) throw new Error(`${this.path}: written after commit or abort`);
    try {
      for (const c of chunks) for (let at = 0; at < c.byteLength;) at += writeSync(this.fd, c, at, c.byteLength - at);
    } catch (e) {
      this.abort();
      throw new Error(`could not save ${this.path}: ${(e as Error).message}`);
    }
  }

  commit(): void {
    if (this.fd === null) throw new Error(`${this.path}: committed after commit or abort`);
    try {
      fsyncSync(this.fd);
      closeSync(this.fd);
      this.fd = null;
      renameSync(this.tmp, this.path);
    } catch (e) {
      this.abort();
      throw new Error(`could not save ${this.path}: ${(e as Error).message}`);
    }
  }

  /** Drop the temporary; the file at `path`, if any, stays as it was. */
  abort(): void {
    if (this.fd !== null) { try { closeSync(this.fd); } catch { /* closed */ } this.fd = null; }
    try { unlinkSync(this.tmp); } catch { /* already gone */ }
  }
}

/** Write bytes (or chunks, in order) atomically: a failed write never replaces a good file. */
export function writeFileAtomic(path: string, bytes: Uint8Array | readonly Uint8Array[]): void {
  let w: AtomicFileWriter;
  try {
    w = new AtomicFileWriter(path);
  } catch (e) {
    throw new Error(`could not save ${path}: ${(e as Error).message}`);
  }
  w.write(...(bytes instanceof Uint8Array ? [bytes] : bytes));
  w.commit();
}

/**
 * Above this many bytes of initializers a model is written with its weights in a data file beside
 * it: protobuf caps a message at 2 GiB, and onnxruntime cannot read a larger single file.
 */
export const EXTERNAL_DATA_ABOVE = 1.5 * 2 ** 30;

export interface WriteOptions {
  /**
   * Weights in `<file>_data` beside the model (`model.onnx_data`; ONNX external data): true, false, or 'auto'
   * (the default: when the initializers exceed EXTERNAL_DATA_ABOVE bytes, or `above` if given).
   */
  externalData?: boolean | 'auto';
  above?: number;
}

/**
 * Write a model atomically. With external data the data file is written (to a temporary name,
 * then renamed) before the model file, so a model file on disk never names data that is missing.
 * A failed write leaves the old files; a crash between the two renames leaves the new data beside
 * the old model file.
 */
export function writeModelFile(path: string, model: Model, opts: WriteOptions = {}): void {
  const weights = [...model.graph.initializers.values()].reduce((a, t) => a + t.data.byteLength, 0);
  const external = opts.externalData === true || ((opts.externalData ?? 'auto') === 'auto' && weights > (opts.above ?? EXTERNAL_DATA_ABOVE));
  if (!external) { writeFileAtomic(path, encodeModel(model)); return; }
  const location = `${basename(path)}_data`;
  const { bytes, chunks } = encodeModelWithDataFile(model, location);
  writeFileAtomic(join(dirname(path), location), chunks);
  writeFileAtomic(path, bytes);
}
