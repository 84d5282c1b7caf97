import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeUpload, encodeUploadAsync, decodeUpload, encodedUploadSize } from '../../src/fleet/upload-codec.ts';
import { FleetError, type UploadPayload } from '../../src/fleet/types.ts';
import { serializeSafetensors, parseSafetensors } from '../../src/io/safetensors.ts';

const dims = [1, 4, 4];
function payload(n = 3): UploadPayload {
  const data = new Float32Array(n * 16).map((_, i) => i / 7);
  return { model: 'fmnist', device: 'cam-1', round: 5, dims: [n, ...dims], data, entropy: new Float32Array(n).fill(0.5), predicted: new Int32Array(n).map((_, i) => i) };
}
const opts = { sampleDims: dims };

/** Throws a FleetError with code 'invalid' whose message matches `re` (never a TypeError). */
function rejects(bytes: Uint8Array, re: RegExp, o: Parameters<typeof decodeUpload>[1] = opts) {
  assert.throws(() => decodeUpload(bytes, o), (e: unknown) => {
    assert.ok(e instanceof FleetError, `expected FleetError, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.equal(e.code, 'invalid');
    assert.match(e.message, re);
    return true;
  });
}
/** Hand-built safetensors bytes with an arbitrary header. */
function raw(header: unknown, data = new Uint8Array(0), claimed?: number): Uint8Array {
  const h = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(claimed ?? h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}
const meta = { format: 'refit.fleet.upload', version: '1', model: 'fmnist', device: 'cam-1', round: '5' };

test('round trip keeps every field, with and without the optional tensors', () => {
  const p = payload();
  const back = decodeUpload(encodeUpload(p), opts);
  assert.deepEqual(back, p);
  const { entropy: _e, predicted: _p, ...bare } = p;
  assert.deepEqual(decodeUpload(encodeUpload(bare), opts), bare);
});

test('truncated bytes, at every length, are refused as invalid', () => {
  const bytes = encodeUpload(payload());
  for (let len = 0; len < bytes.byteLength; len += 7) rejects(bytes.subarray(0, len), /too short|truncated|data section|header/);
});

test('huge header length and oversize bodies are refused before parsing', () => {
  const bytes = encodeUpload(payload());
  const huge = bytes.slice();
  new DataView(huge.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
  rejects(huge, /header length .* over/);
  rejects(bytes, /over the 100-byte limit/, { ...opts, maxBytes: 100 });
  rejects(encodeUpload(payload(10)), /10 samples is over the limit of 4/, { ...opts, maxSamples: 4 });
});

test('wrong dtype, shape, n mismatch and unknown tensors are refused', () => {
  const f = (n: number) => new Float32Array(n);
  rejects(serializeSafetensors({ x: { dtype: 'float64', dims: [1, 1, 4, 4], data: new Float64Array(16) } }, meta), /dtype "F64", expected F32/);
  rejects(serializeSafetensors({ x: { dtype: 'float32', dims: [1, 1, 4, 5], data: f(20) } }, meta), /shape \[1, 1, 4, 5\], expected \[n, 1, 4, 4\]/);
  rejects(serializeSafetensors({ x: { dtype: 'float32', dims: [2, 1, 4, 4], data: f(32) }, entropy: { dtype: 'float32', dims: [3], data: f(3) } }, meta), /'entropy' has shape \[3\], expected \[2\]/);
  rejects(serializeSafetensors({ x: { dtype: 'float32', dims: [2, 1, 4, 4], data: f(32) }, predicted: { dtype: 'float32', dims: [2], data: f(2) } }, meta), /'predicted' has dtype "F32", expected I32/);
  rejects(serializeSafetensors({ x: { dtype: 'float32', dims: [1, 1, 4, 4], data: f(16) }, y: { dtype: 'float32', dims: [1], data: f(1) } }, meta), /unexpected tensor 'y'/);
  rejects(serializeSafetensors({ entropy: { dtype: 'float32', dims: [1], data: f(1) } }, meta), /missing tensor 'x'/);
  rejects(serializeSafetensors({ x: { dtype: 'float32', dims: [0, 1, 4, 4], data: f(0) } }, meta), /no samples/);
});

test('NaN, infinity, negative entropy and negative classes are refused', () => {
  const p = payload();
  p.data[17] = NaN;
  rejects(encodeUpload(p), /'x' has a non-finite value \(NaN\) at index 17/);
  const q = payload();
  q.entropy![1] = Infinity;
  rejects(encodeUpload(q), /'entropy' has Infinity at index 1/);
  const r = payload();
  r.entropy![2] = -1;
  rejects(encodeUpload(r), /'entropy' has -1/);
  const s = payload();
  s.predicted![0] = -3;
  rejects(encodeUpload(s), /'predicted' has -3/);
  const t = payload();
  t.predicted![1] = 10;
  assert.equal(decodeUpload(encodeUpload(t), opts).predicted![1], 10);
  rejects(encodeUpload(t), /'predicted' has 10 at index 1, expected a class index in \[0, 10\)/, { ...opts, classes: 10 });
});

test('malformed headers: not JSON, not an object, bad entries, offsets that lie', () => {
  rejects(raw('{"x":'), /not valid JSON/);
  rejects(raw('null'), /not a JSON object/);
  rejects(raw('[1,2]'), /not a JSON object/);
  rejects(raw({ x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 64] } }, new Uint8Array(64)), /__metadata__ is missing/);
  rejects(raw({ __metadata__: meta, x: 7 }), /entry is not an object/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: 'big', data_offsets: [0, 64] } }, new Uint8Array(64)), /shape "big"/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: [1, 1, 4, 4] } }, new Uint8Array(64)), /data_offsets undefined/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 1e9] } }, new Uint8Array(64)), /outside the 64-byte data section/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 60] } }, new Uint8Array(60)), /needs 64 bytes, its offsets give 60/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 64] } }, new Uint8Array(80)), /data section has 80 bytes but the tensors cover 64/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 64] }, entropy: { dtype: 'F32', shape: [1], data_offsets: [60, 64] } }, new Uint8Array(64)), /overlaps or leaves a gap/);
  rejects(raw({ __metadata__: meta, x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 64] } }, new Uint8Array(64), 1 << 20), /header length|truncated/);
});

test('metadata types, format, round and names are checked', () => {
  const x = { x: { dtype: 'float32' as const, dims: [1, 1, 4, 4], data: new Float32Array(16) } };
  rejects(raw({ __metadata__: { ...meta, round: 5 }, x: { dtype: 'F32', shape: [1, 1, 4, 4], data_offsets: [0, 64] } }, new Uint8Array(64)), /__metadata__.round must be a string/);
  rejects(serializeSafetensors(x, { ...meta, round: '0' }), /round must be a positive integer/);
  rejects(serializeSafetensors(x, { ...meta, round: '1.5' }), /round must be a positive integer/);
  rejects(serializeSafetensors(x, { ...meta, round: '99999999999999999' }), /round must be a positive integer/);
  rejects(serializeSafetensors(x, { ...meta, format: 'pt' }), /format is "pt"/);
  rejects(serializeSafetensors(x, { ...meta, version: '2' }), /version is "2"/);
  rejects(serializeSafetensors(x, { ...meta, device: '../etc' }), /device "..\/etc" is not a valid name/);
  const { model: _m, ...noModel } = meta;
  rejects(serializeSafetensors(x, noModel), /model undefined is not a valid name/);
  const ok = serializeSafetensors(x, meta);
  assert.equal(decodeUpload(ok, opts).round, 5);
  rejects(ok, /device is 'cam-1', but the caller is 'cam-2'/, { ...opts, device: 'cam-2' });
  rejects(ok, /model is 'fmnist', expected 'other'/, { ...opts, model: 'other' });
});

test('encode refuses a payload that would not decode', () => {
  assert.throws(() => encodeUpload({ ...payload(), round: 0 }), FleetError);
  assert.throws(() => encodeUpload({ ...payload(), dims: [3, 1, 4, 5] }), FleetError);
  assert.throws(() => encodeUpload({ ...payload(), entropy: new Float32Array(2) }), FleetError);
});

test('random byte corruption never escapes as anything but FleetError', () => {
  const good = encodeUpload(payload());
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let k = 0; k < 500; k++) {
    const b = good.slice();
    const flips = 1 + Math.floor(rnd() * 4);
    for (let j = 0; j < flips; j++) b[Math.floor(rnd() * b.byteLength)] = Math.floor(rnd() * 256);
    try { decodeUpload(b, opts); } catch (e) { assert.ok(e instanceof FleetError, `corruption ${k}: ${(e as Error).constructor.name}: ${(e as Error).message}`); }
  }
});

test('encodedUploadSize is the exact encoded length', () => {
  for (const n of [1, 3, 9, 10, 99, 100, 1234]) {
    for (const round of [1, 9, 10, 123456789]) {
      const p = { ...payload(n), round };
      assert.equal(encodedUploadSize(p, n, dims), encodeUpload(p).byteLength, `n=${n} round=${round}`);
      const { entropy: _e, ...noEntropy } = p;
      assert.equal(encodedUploadSize(p, n, dims, { predicted: true }), encodeUpload(noEntropy).byteLength);
    }
  }
});

test('codecs: 8 bits and JPEG round trip within their precision; sizes known before encoding for 8 bits', async () => {
  const p = payload(5);
  const u8 = encodeUpload({ ...p, codec: 'u8' });
  assert.equal(u8.byteLength, encodedUploadSize(p, 5, dims, undefined, 'u8'), 'the 8-bit size is exact before encoding');
  const back = decodeUpload(u8, opts);
  assert.equal(back.codec, 'u8');
  const span = 79 / 7; // the payload's values run from 0 to 79/7
  back.data.forEach((v, i) => assert.ok(Math.abs(v - p.data[i]!) <= span / 510 + 1e-6, `value ${i}: ${v} against ${p.data[i]}`));
  assert.deepEqual([back.entropy, back.predicted, back.dims], [p.entropy, p.predicted, p.dims]);
  // JPEG: 40 smooth 16×16 grey images and 3 RGB ones; normalised values (outside [0, 1]) travel too.
  for (const [C, n] of [[1, 40], [3, 3]] as const) {
    const sd = [C, 16, 16];
    const data = Float32Array.from({ length: n * C * 256 }, (_, i) => 2 * Math.sin((i % 16) / 5 + Math.floor(i / 256)) * Math.cos(Math.floor(i / 16) % 16 / 4) - 0.5);
    const q: UploadPayload = { model: 'fmnist', device: 'cam-1', round: 2, dims: [n, ...sd], data, codec: { jpeg: 75 } };
    const bytes = await encodeUploadAsync(q);
    const j = decodeUpload(bytes, { sampleDims: sd });
    assert.deepEqual(j.dims, [n, ...sd]);
    assert.deepEqual(j.codec, { jpeg: 75 }, 'a decoded upload says how it came');
    let err = 0;
    j.data.forEach((v, i) => { err += Math.abs(v - data[i]!); });
    assert.ok(err / data.length < 0.05, `C ${C}: mean error ${err / data.length} on values spanning 4`);
    assert.ok(bytes.byteLength < encodedUploadSize(q, n, sd, undefined, 'u8'), 'smaller than 8 bits');
  }
  assert.throws(() => encodeUpload({ ...p, codec: { jpeg: 50 } }), /encodes asynchronously; use encodeUploadAsync/);
  await assert.rejects(encodeUploadAsync({ model: 'm', device: 'd', round: 1, dims: [2, 8], data: new Float32Array(16), codec: { jpeg: 50 } }), /JPEG codec takes images \[1 or 3, H, W\], got samples \[8\]/);
});

test('codecs: bad metadata, a damaged JPEG or one of the wrong size are refused as invalid', async () => {
  const p = payload(2);
  const f = parseSafetensors(encodeUpload({ ...p, codec: 'u8' }), 'u8');
  const x = f.tensors.get('x')!;
  const m = f.metadata!;
  rejects(serializeSafetensors({ x }, { ...m, x_codec: 'png' }), /x_codec is "png", expected 'u8' or 'jpeg'/);
  rejects(serializeSafetensors({ x }, { ...m, x_min: '0.5' }), /x_min and x_max must be float32 bits in 8 hex digits/);
  rejects(serializeSafetensors({ x }, { ...m, x_min: '7f800000' }), /must be finite with x_min ≤ x_max/); // +Infinity
  rejects(serializeSafetensors({ x }, { ...m, x_n: '3' }), /x_n is 3, but tensor 'x' holds 2 samples/);
  rejects(serializeSafetensors({ x: { dtype: 'float32', dims: [2, ...dims], data: p.data } }, m), /dtype "F32", expected U8/);
  const sd = [1, 16, 16];
  const q: UploadPayload = { model: 'fmnist', device: 'cam-1', round: 2, dims: [20, ...sd], data: new Float32Array(20 * 256).map((_, i) => (i % 7) / 7), codec: { jpeg: 50 } };
  const j = parseSafetensors(await encodeUploadAsync(q), 'jpeg');
  const jpg = j.tensors.get('x_jpeg')!;
  const damaged = { ...jpg, data: (jpg.data as Uint8Array).slice(0, 40), dims: [40] };
  rejects(serializeSafetensors({ x_jpeg: damaged }, j.metadata!), /tensor 'x_jpeg': not a JPEG it can decode/, { sampleDims: sd });
  rejects(serializeSafetensors({ x_jpeg: jpg }, { ...j.metadata!, x_quality: '0' }), /x_quality must be the JPEG quality 1–100, got "0"/, { sampleDims: sd });
  rejects(serializeSafetensors({ x_jpeg: jpg }, { ...j.metadata!, x_n: '40' }), /the JPEG is 256×32, but 40 samples of 16×16 tile to 256×48/, { sampleDims: sd });
  rejects(serializeSafetensors({ x_jpeg: jpg }, j.metadata!), /a JPEG upload needs image samples \[1 or 3, H, W\]; this model's are \[256\]/, { sampleDims: [256] });
  rejects(serializeSafetensors({ x_jpeg: jpg, x: { dtype: 'uint8', dims: [20, ...sd], data: new Uint8Array(20 * 256) } }, j.metadata!), /tensor 'x' does not go with codec jpeg/, { sampleDims: sd });
});
