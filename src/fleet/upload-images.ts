// How an upload's samples travel, besides float32 (upload-codec.ts):
//   'u8'          8 bits a value, between the upload's min and max (lossless for 8-bit images)
//   { jpeg: Q }   the samples, 8 bits as above, tiled 16 to a row into one image and compressed as
//                 one JPEG of quality Q: by sharp's mozjpeg in Node, by the browser's encoder in a
//                 page (images [1|3, H, W] only)
// Measured with a teacher better than the device (docs/fleet.md, "Compressed uploads"): every
// sample as JPEG quality 50 erred 0.2 (validation) and 0.4 (test) point more than every sample as
// float32, in 23× fewer bytes than float32, 5.8× fewer than 8 bits and 3.5–5.2× fewer than lossless
// PNG. jpeg-js, pure JavaScript, needed 1.6× the bytes of mozjpeg, which is why the encoder is
// sharp's. Decoding (the cloud's) is jpeg-js: synchronous, and within 1 grey level of libvips on
// mozjpeg's progressive files.
import jpeg from 'jpeg-js';

export type UploadCodec = 'f32' | 'u8' | { jpeg: number };

/** Samples a row in a tiled JPEG. */
export const TILE_COLS = 16;

/** Largest JPEG decoded, in pixels (a small file can claim a huge image). */
const MAX_JPEG_PIXELS = 64 * 2 ** 20;

/** The codec's name in an upload's metadata. */
export function codecName(c: UploadCodec | undefined): 'f32' | 'u8' | 'jpeg' {
  if (c === undefined || c === 'f32' || c === 'u8') return c ?? 'f32';
  if (typeof c === 'object' && Number.isInteger(c.jpeg) && c.jpeg >= 1 && c.jpeg <= 100) return 'jpeg';
  throw new Error(`upload codec must be 'f32', 'u8' or { jpeg: quality 1–100 }, got ${JSON.stringify(c)}`);
}

/** Values as 8 bits between their min and max: v ≈ min + q·(max − min)/255. */
export function quantize(data: Float32Array): { q: Uint8Array; min: number; max: number } {
  let min = Infinity, max = -Infinity;
  for (const v of data) { if (v < min) min = v; if (v > max) max = v; }
  const span = max - min;
  const q = new Uint8Array(data.length);
  if (span > 0) for (let i = 0; i < data.length; i++) q[i] = Math.round(((data[i]! - min) / span) * 255);
  return { q, min, max };
}

export function dequantize(q: Uint8Array, min: number, max: number): Float32Array {
  const span = max - min;
  return Float32Array.from(q, (v) => min + (v / 255) * span);
}

/** Where n samples of W×H go in the tiled image: TILE_COLS to a row. */
function tileLayout(n: number, H: number, W: number): { cols: number; width: number; height: number } {
  const cols = Math.min(TILE_COLS, n);
  return { cols, width: cols * W, height: Math.ceil(n / cols) * H };
}

/**
 * Visit every value of n samples [C, H, W]: `at(i, p)` with i its index in the samples and p its
 * pixel's index in the tiled image (row-major, `width` wide). tile and untile are its two directions.
 */
function eachTiled(n: number, [C, H, W]: readonly number[], at: (i: number, p: number, c: number) => void): void {
  const { cols, width } = tileLayout(n, H!, W!);
  for (let k = 0; k < n; k++) {
    const x0 = (k % cols) * W!, y0 = Math.floor(k / cols) * H!;
    for (let c = 0; c < C!; c++) for (let y = 0; y < H!; y++) for (let x = 0; x < W!; x++) at(((k * C! + c) * H! + y) * W! + x, (y0 + y) * width + x0 + x, c);
  }
}

/** n samples [C, H, W] (C 1 or 3) as one image TILE_COLS samples wide, interleaved channels. */
export function tile(q: Uint8Array, n: number, dims: readonly number[]): { pixels: Uint8Array; width: number; height: number; channels: number } {
  const C = dims[0]!;
  const { width, height } = tileLayout(n, dims[1]!, dims[2]!);
  const pixels = new Uint8Array(width * height * C);
  eachTiled(n, dims, (i, p, c) => { pixels[p * C + c] = q[i]!; });
  return { pixels, width, height, channels: C };
}

/** The n samples [C, H, W] back from a tiled image whose pixels are `stride` values apart (channel c at offset c). */
export function untile(pixels: ArrayLike<number>, stride: number, n: number, dims: readonly number[]): Uint8Array {
  const q = new Uint8Array(n * dims[0]! * dims[1]! * dims[2]!);
  eachTiled(n, dims, (i, p, c) => { q[i] = pixels[p * stride + c]!; });
  return q;
}

/**
 * The JPEG of the tiled samples: sharp's mozjpeg in Node (loaded on first use), the browser's own
 * encoder (OffscreenCanvas) in a page or worker.
 */
export async function encodeJpeg(q: Uint8Array, n: number, sampleDims: readonly number[], quality: number): Promise<Uint8Array> {
  const t = tile(q, n, sampleDims);
  const inNode = typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === 'string';
  if (!inNode && typeof OffscreenCanvas === 'function') return encodeJpegCanvas(t, quality);
  const name = 'sharp'; // not a literal, so browser bundles leave it out
  let sharp;
  try {
    sharp = (await import(name)).default;
  } catch (e) {
    throw new Error(`the JPEG upload codec needs sharp in Node (npm install sharp), or a browser's OffscreenCanvas: ${(e as Error).message}`);
  }
  // Colour at full resolution (4:4:4): a model's channels are features, not a viewer's chroma.
  const b: Buffer = await sharp(t.pixels, { raw: { width: t.width, height: t.height, channels: t.channels } }).jpeg({ quality, mozjpeg: true, chromaSubsampling: '4:4:4' }).toBuffer();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * The browser's JPEG encoder (Chromium: libjpeg-turbo). A canvas is RGBA, so a grey image goes in
 * as R = G = B: its chroma is constant and costs next to nothing, and R decodes back as the grey.
 * The browser subsamples colour (4:2:0) and chooses its own tables; quality is Q/100.
 */
async function encodeJpegCanvas(t: ReturnType<typeof tile>, quality: number): Promise<Uint8Array> {
  const rgba = new Uint8ClampedArray(t.width * t.height * 4);
  for (let p = 0; p < t.width * t.height; p++) {
    for (let c = 0; c < 3; c++) rgba[p * 4 + c] = t.pixels[p * t.channels + (t.channels === 1 ? 0 : c)]!;
    rgba[p * 4 + 3] = 255;
  }
  const canvas = new OffscreenCanvas(t.width, t.height);
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('the JPEG upload codec: this browser gave no 2D context for an OffscreenCanvas');
  ctx.putImageData(new ImageData(rgba, t.width, t.height), 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/jpeg', quality: quality / 100 });
  if (blob.type !== 'image/jpeg') throw new Error(`the JPEG upload codec: this browser wrote ${blob.type || 'no image'} instead of a JPEG`);
  return new Uint8Array(await blob.arrayBuffer());
}

/** The 8-bit samples back from a tiled JPEG; throws with the reason when it is not what was declared. */
export function decodeJpeg(bytes: Uint8Array, n: number, dims: readonly number[]): Uint8Array {
  const [, H, W] = dims as [number, number, number];
  const { width, height } = tileLayout(n, H, W);
  let img;
  try {
    // Refused before its pixels are allocated when it claims more than the declared samples tile to.
    img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: Math.min(MAX_JPEG_PIXELS, width * height) / 1e6 + 1e-6, maxMemoryUsageInMB: 512 });
  } catch (e) {
    throw new Error(`not a JPEG it can decode (${(e as Error).message})`);
  }
  if (img.width !== width || img.height !== height) throw new Error(`the JPEG is ${img.width}×${img.height}, but ${n} samples of ${W}×${H} tile to ${width}×${height}`);
  return untile(img.data, 4, n, dims);
}

/** Whether samples of these dims can travel as a JPEG: images [1|3, H, W]. */
export const jpegable = (d: readonly number[]) => d.length === 3 && (d[0] === 1 || d[0] === 3) && d[1]! > 0 && d[2]! > 0;
