/**
 * IDX file format (LeCun's MNIST format, also used by Fashion-MNIST): parsing and encoding
 * on plain Uint8Arrays, with no Node APIs, so it runs in the browser too. Reading files and
 * gunzipping lives in `idx-node.ts`.
 *
 * Layout: a 4-byte magic [0, 0, type, ndims], then ndims big-endian uint32 dimensions,
 * then the data in row-major order. refit reads unsigned bytes (type 0x08), which is what
 * MNIST and Fashion-MNIST use.
 */

export const IDX_UBYTE = 0x08;

const TYPE_NAMES: Record<number, string> = {
  0x08: 'ubyte',
  0x09: 'byte',
  0x0b: 'short',
  0x0c: 'int',
  0x0d: 'float',
  0x0e: 'double',
};

export interface IdxArray {
  /** Dimensions, outermost first, e.g. [10000, 28, 28] for idx3 images. */
  dims: number[];
  /** The payload, a view into the input bytes (no copy). */
  data: Uint8Array;
}

export interface IdxImages {
  n: number;
  rows: number;
  cols: number;
  /** n*rows*cols bytes, row-major, 0..255. */
  pixels: Uint8Array;
}

export interface IdxLabels {
  n: number;
  labels: Uint8Array;
}

/** An error in an IDX file, with the file (or a caller-given name) in the message. */
export class IdxFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IdxFormatError';
  }
}

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

function hex(v: number, width = 8): string {
  return '0x' + v.toString(16).padStart(width, '0');
}

/**
 * Parse an (uncompressed) IDX buffer. `expectedNdims` checks the idx1/idx3 kind;
 * `name` (a path, say) is put into error messages.
 */
export function parseIdx(bytes: Uint8Array, opts: { expectedNdims?: number; name?: string } = {}): IdxArray {
  const name = opts.name ?? 'IDX data';
  const want = opts.expectedNdims;
  const wantMagic = want !== undefined ? `magic ${hex((IDX_UBYTE << 8) | want)} (idx${want} ubyte)` : 'an IDX magic 0x000008NN';
  if (isGzip(bytes)) {
    throw new IdxFormatError(`${name}: is gzip-compressed; gunzip it first (readIdxFile in idx-node.ts does this)`);
  }
  if (bytes.length < 4) {
    throw new IdxFormatError(`${name}: file is ${bytes.length} bytes, too short for an IDX header; expected ${wantMagic}`);
  }
  const magic = ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
  const type = bytes[2]!;
  const ndims = bytes[3]!;
  if (bytes[0] !== 0 || bytes[1] !== 0 || ndims === 0) {
    throw new IdxFormatError(`${name}: bad magic number ${hex(magic)}; expected ${wantMagic}. Not an IDX file, or corrupt`);
  }
  if (type !== IDX_UBYTE) {
    const tn = TYPE_NAMES[type];
    throw new IdxFormatError(
      `${name}: IDX data type ${hex(type, 2)}${tn ? ` (${tn})` : ' (unknown)'} is not supported; expected ${hex(IDX_UBYTE, 2)} (ubyte), ${wantMagic}`,
    );
  }
  if (want !== undefined && ndims !== want) {
    throw new IdxFormatError(
      `${name}: IDX file has ${ndims} dimension(s) (magic ${hex(magic)}); expected ${want} (${wantMagic})`,
    );
  }
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw new IdxFormatError(
      `${name}: truncated header: ${bytes.length} bytes, expected at least ${headerBytes} (4-byte magic + ${ndims} uint32 dims)`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    count *= d;
  }
  const expectedBytes = headerBytes + count;
  if (bytes.length < expectedBytes) {
    throw new IdxFormatError(
      `${name}: truncated: dims [${dims.join(', ')}] need ${count} data bytes (${expectedBytes} in all), but the file has ${bytes.length} bytes (${bytes.length - headerBytes} data bytes)`,
    );
  }
  if (bytes.length > expectedBytes) {
    throw new IdxFormatError(
      `${name}: ${bytes.length - expectedBytes} trailing bytes: dims [${dims.join(', ')}] need exactly ${expectedBytes} bytes, the file has ${bytes.length}. Corrupt or not an IDX file`,
    );
  }
  return { dims, data: bytes.subarray(headerBytes, expectedBytes) };
}

/** Parse idx3-ubyte images (magic 0x00000803). */
export function parseIdxImages(bytes: Uint8Array, name?: string): IdxImages {
  const a = parseIdx(bytes, { expectedNdims: 3, ...(name !== undefined ? { name } : {}) });
  const [n, rows, cols] = a.dims as [number, number, number];
  return { n, rows, cols, pixels: a.data };
}

/** Parse idx1-ubyte labels (magic 0x00000801). */
export function parseIdxLabels(bytes: Uint8Array, name?: string): IdxLabels {
  const a = parseIdx(bytes, { expectedNdims: 1, ...(name !== undefined ? { name } : {}) });
  return { n: a.dims[0]!, labels: a.data };
}

/** Encode a ubyte IDX buffer (uncompressed). Used by tests and by tools that write subsets. */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Uint8Array {
  const count = dims.reduce((a, b) => a * b, 1);
  if (data.length !== count) {
    throw new Error(`encodeIdx: dims [${dims.join(', ')}] need ${count} bytes, got ${data.length}`);
  }
  if (dims.length === 0 || dims.length > 255) throw new Error(`encodeIdx: 1..255 dims, got ${dims.length}`);
  const out = new Uint8Array(4 + 4 * dims.length + count);
  const view = new DataView(out.buffer);
  out[2] = IDX_UBYTE;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

/** Bytes 0..255 to floats in [0, 1]. */
export function bytesToUnitFloats(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = bytes[i]! / 255;
  return out;
}
