// --resize: images of any size brought to the model's H×W by sharp (libvips), as the model's own
// evaluation transform would:
//   a number S   torchvision's Resize(S) then CenterCrop((H, W)): the shorter side scaled to S
//                (the longer one truncated, as torchvision computes it), the centre cropped
//                (offsets rounded half to even, as Python's round)
//   'stretch'    straight to H×W, the aspect ratio not kept
// The kernel is libvips' linear one: on a 640×480 test image it came within 0.24–0.61 grey levels
// on average (at most 4–6) of PIL's bilinear resize, which torchvision's Resize uses on PIL images;
// lanczos3, sharp's default, was 1.8–2.5 away (docs in README's CLI section).
import { existsSync, statSync } from 'node:fs';
import sharp, { type Sharp } from 'sharp';
import { imageFiles, type DecodedImage, type SampleSpec } from './data-files.ts';

export type ResizeMode = number | 'stretch';

/** --resize's value, checked: 'stretch' or a positive integer. */
export function parseResize(v: string | undefined): ResizeMode | undefined {
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

/** One image file decoded by sharp and brought to W×H, as RGBA. */
export async function resizeImage(file: string, W: number, H: number, mode: ResizeMode): Promise<DecodedImage> {
  try {
    const img = sharp(file); // EXIF orientation not applied, as PIL's Image.open and jpeg-js
    let out: Sharp;
    if (mode === 'stretch') {
      out = img.resize(W, H, { fit: 'fill', kernel: 'linear' });
    } else {
      const { width: w, height: h } = await sharp(file).metadata();
      const [rw, rh] = w <= h ? [mode, Math.trunc((mode * h) / w)] : [Math.trunc((mode * w) / h), mode];
      if (rw < W || rh < H) throw new Error(`--resize ${mode} makes it ${rw}×${rh}, smaller than the model's ${W}×${H}; give a size of at least ${Math.max(W, H)}`);
      const left = roundHalfEven((rw - W) / 2), top = roundHalfEven((rh - H) / 2);
      // Resized to a buffer first: sharp would otherwise crop before resizing.
      const r = await img.resize(rw, rh, { fit: 'fill', kernel: 'linear' }).toColourspace('srgb').ensureAlpha().raw().toBuffer({ resolveWithObject: true });
      out = sharp(r.data, { raw: { width: r.info.width, height: r.info.height, channels: r.info.channels } }).extract({ left, top, width: W, height: H });
    }
    const { data, info } = await out.toColourspace('srgb').ensureAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 4 || info.width !== W || info.height !== H) throw new Error(`resized to ${info.width}×${info.height}×${info.channels}, expected ${W}×${H}×4`);
    return { width: W, height: H, rgba: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(msg.startsWith('--resize') ? `${file}: ${msg}` : `${file}: cannot decode or resize image (${msg})`);
  }
}

/**
 * Every image of a folder (as the folder reader lists them) decoded and resized to the model's
 * H×W, by file; the folder reader then converts them as it converts images of the right size.
 */
export async function resizeFolder(path: string, spec: SampleSpec, mode: ResizeMode): Promise<Map<string, DecodedImage>> {
  if (!existsSync(path) || !statSync(path).isDirectory()) throw new Error(`--resize resizes the images of a folder; ${path} is not a folder (resize the data before saving it, or drop --resize)`);
  const [, H, W] = spec.dims;
  if (spec.dims.length !== 3 || typeof H !== 'number' || typeof W !== 'number') throw new Error(`--resize needs a model input of shape [N, C, H, W] with a fixed H and W; the model's input '${spec.input}' is [N, ${spec.dims.map((d) => d ?? '?').join(', ')}]`);
  const out = new Map<string, DecodedImage>();
  for (const { file } of imageFiles(path)) out.set(file, await resizeImage(file, W, H, mode));
  return out;
}
