// Images of any size brought to a model's H×W by sharp (libvips), as the model's own evaluation
// transform would (the CLI's and the service's --resize):
//   a number S   torchvision's Resize(S) then CenterCrop((H, W)): the shorter side scaled to S
//                (the longer one truncated, as torchvision computes it), the centre cropped
//                (offsets rounded half to even, as Python's round)
//   'stretch'    straight to H×W, the aspect ratio not kept
// The kernel is libvips' linear one: on the test image of test/fixtures/resize it came within 0.24
// (crop) and 0.35 (stretch) grey levels on average of PIL's bilinear resize, which torchvision's
// Resize uses on PIL images; on a 640×480 image lanczos3, sharp's default, was 1.8–2.5 away.
// EXIF orientation is not applied, as PIL's Image.open does not.
import sharp, { type Sharp } from 'sharp';
import type { DecodedImage } from './pixels.ts';

export type ResizeMode = number | 'stretch';

/** Largest image decoded, in pixels: a small compressed file can claim a huge image. */
export const MAX_PIXELS = 40_000_000;

/** --resize's value, checked: 'stretch' or a positive integer. */
export function parseResize(v: string | number | undefined): ResizeMode | undefined {
  if (v === undefined) return undefined;
  if (v === 'stretch') return v;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--resize must be a size in pixels for the shorter side before the centre crop (torchvision's Resize(size) + CenterCrop; e.g. 256 for a 224×224 model) or 'stretch', got ${JSON.stringify(v)}`);
  return n;
}

/** Python's round(): halves to the even neighbour. */
const roundHalfEven = (x: number) => {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** RGBA bytes of a sharp pipeline, checked to be W×H. */
async function rgba(img: Sharp, W: number, H: number): Promise<DecodedImage> {
  const { data, info } = await img.toColourspace('srgb').ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 4 || info.width !== W || info.height !== H) throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${W}×${H}×4`);
  return { width: W, height: H, rgba: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/**
 * A PNG or JPEG (or any format libvips reads: WebP, TIFF, GIF …), from a file or its bytes, as
 * RGBA of W×H: resized by `mode`, or refused unless it is W×H already. Errors name `name`.
 */
export async function resizeImage(input: string | Uint8Array, W: number, H: number, mode: ResizeMode | undefined, name = typeof input === 'string' ? input : 'image'): Promise<DecodedImage> {
  const open = () => sharp(input, { limitInputPixels: MAX_PIXELS });
  try {
    const { width: w, height: h } = await open().metadata();
    if (mode === undefined) {
      if (w !== W || h !== H) throw new Error(`--resize: it is ${w}×${h} and the model takes ${W}×${H} images; --resize brings them to it (a size for the shorter side before a centre crop, as torchvision's Resize and CenterCrop, or 'stretch')`);
      return await rgba(open(), W, H);
    }
    if (mode === 'stretch') return await rgba(open().resize(W, H, { fit: 'fill', kernel: 'linear' }), W, H);
    const [rw, rh] = w <= h ? [mode, Math.trunc((mode * h) / w)] : [Math.trunc((mode * w) / h), mode];
    if (rw < W || rh < H) throw new Error(`--resize ${mode} makes it ${rw}×${rh}, smaller than the model's ${W}×${H}; give a size of at least ${Math.max(W, H)}`);
    const left = roundHalfEven((rw - W) / 2), top = roundHalfEven((rh - H) / 2);
    // Resized to a buffer first: in one pipeline sharp would crop before resizing.
    const r = await rgba(open().resize(rw, rh, { fit: 'fill', kernel: 'linear' }), rw, rh);
    return await rgba(sharp(r.rgba, { raw: { width: rw, height: rh, channels: 4 } }).extract({ left, top, width: W, height: H }), W, H);
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(msg.startsWith('--resize') ? `${name}: ${msg.replace(/^--resize: /, '')}` : `${name}: cannot decode or resize image (${msg})`);
  }
}
