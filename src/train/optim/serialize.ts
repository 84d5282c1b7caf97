/**
 * A binary file format for OptimizerState that round-trips without loss:
 *
 *     bytes 0..7   magic "RFOPTST1"
 *     bytes 8..11  header length H (uint32, little-endian)
 *     12..12+H     header: UTF-8 JSON of the state with each buffer replaced by
 *                  [offset, length] in float32 elements into the data section
 *     padding      zeros up to a multiple of 4 bytes
 *     data         all buffers as little-endian float32, back to back
 *
 * Hand-written because it is 60 lines: the state is JSON plus flat float32
 * arrays, and a general container (safetensors, npz) would be a dependency for
 * little gain.
 */
import type { OptimizerState } from './types.ts';

const MAGIC = 'RFOPTST1';
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function encodeOptimizerState(state: OptimizerState): Uint8Array {
  let total = 0;
  const layout: Record<string, Record<string, [number, number]>> = {};
  const arrays: Float32Array[] = [];
  for (const [name, slots] of Object.entries(state.buffers)) {
    const l: Record<string, [number, number]> = {};
    for (const [slot, buf] of Object.entries(slots)) {
      if (!(buf instanceof Float32Array)) throw new Error(`encodeOptimizerState: buffer '${name}'.${slot} is not a Float32Array`);
      l[slot] = [total, buf.length];
      total += buf.length;
      arrays.push(buf);
    }
    layout[name] = l;
  }
  const header = new TextEncoder().encode(JSON.stringify({ ...state, buffers: layout }));
  const dataStart = align4(12 + header.length);
  const out = new Uint8Array(dataStart + 4 * total);
  for (let i = 0; i < 8; i++) out[i] = MAGIC.charCodeAt(i);
  new DataView(out.buffer).setUint32(8, header.length, true);
  out.set(header, 12);
  const data = new Float32Array(out.buffer, dataStart, total);
  let off = 0;
  for (const a of arrays) {
    data.set(a, off);
    off += a.length;
  }
  if (!LITTLE_ENDIAN) swap32(out, dataStart);
  return out;
}

export function decodeOptimizerState(bytes: Uint8Array): OptimizerState {
  const fail = (why: string): never => {
    throw new Error(`decodeOptimizerState: ${why}`);
  };
  if (bytes.length < 12) fail(`${bytes.length} bytes is too short for an optimizer state file`);
  for (let i = 0; i < 8; i++) if (bytes[i] !== MAGIC.charCodeAt(i)) fail(`bad magic: not a refit optimizer state file`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = dv.getUint32(8, true);
  if (12 + headerLen > bytes.length) fail(`header of ${headerLen} bytes runs past the end of the file (${bytes.length} bytes)`);
  let header: Omit<OptimizerState, 'buffers'> & { buffers: Record<string, Record<string, [number, number]>> };
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(12, 12 + headerLen)));
  } catch (e) {
    return fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  const dataStart = align4(12 + headerLen);
  const nFloats = Math.floor((bytes.length - dataStart) / 4);
  // Copy the data section: it makes the result independent of `bytes` and aligned.
  // (Not bytes.slice(): on a Node Buffer that is a view into a shared pool.)
  const raw = new Uint8Array(4 * nFloats);
  raw.set(bytes.subarray(dataStart, dataStart + 4 * nFloats));
  if (!LITTLE_ENDIAN) swap32(raw, 0);
  const data = new Float32Array(raw.buffer, 0, nFloats);
  const buffers: Record<string, Record<string, Float32Array>> = {};
  for (const [name, slots] of Object.entries(header.buffers ?? {})) {
    const b: Record<string, Float32Array> = {};
    for (const [slot, loc] of Object.entries(slots)) {
      const [off, len] = Array.isArray(loc) ? loc : [NaN, NaN];
      if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off! < 0 || len! < 0 || off! + len! > nFloats) {
        fail(`buffer '${name}'.${slot} at ${JSON.stringify(loc)} lies outside the ${nFloats} floats of the data section`);
      }
      b[slot] = data.slice(off!, off! + len!);
    }
    buffers[name] = b;
  }
  return { ...header, buffers };
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function swap32(b: Uint8Array, from: number): void {
  for (let i = from; i + 3 < b.length; i += 4) {
    const a0 = b[i]!;
    const a1 = b[i + 1]!;
    b[i] = b[i + 3]!;
    b[i + 1] = b[i + 2]!;
    b[i + 2] = a1;
    b[i + 3] = a0;
  }
}
