// Image inputs: `inputs: { images: [base64 PNG or JPEG, …] }` → the model's float32 input, prepared
// as `refit adapt` prepares an image folder (../data/image-resize.ts, ../data/pixels.ts): decoded,
// brought to the model's H×W by the server's resize mode (or refused unless already that size),
// converted to its channel count, scaled to [0, 1] and normalised by the server's mean and std.
import type { Tensor } from '../onnx/tensor.ts';
import { formatShape } from '../onnx/tensor.ts';
import { resizeImage, type ResizeMode } from '../data/image-resize.ts';
import { writePlanar, normalizePlanar, type PixelNorm } from '../data/pixels.ts';
import { HttpError, strictBase64, type InputShape } from './inputs.ts';

/** How the server prepares image inputs (refit serve --resize, --mean, --std). */
export interface ImageOptions {
  resize?: ResizeMode;
  pixels?: PixelNorm;
}

/** Whether a request's inputs are the image form. */
export function isImageInputs(raw: unknown): raw is { images: unknown } {
  return !!raw && typeof raw === 'object' && !Array.isArray(raw) && 'images' in raw;
}

/** The batch tensor for `inputs.images`, or a 4xx naming the first bad image. */
export async function imagesToTensor(raw: { images: unknown }, inputName: string, shape: InputShape, maxBatch: number, o: ImageOptions = {}): Promise<Tensor> {
  const images = raw.images;
  const extra = Object.keys(raw).filter((k) => k !== 'images');
  if (extra.length) throw new HttpError(400, `inputs with images takes no ${extra.map((k) => `'${k}'`).join(', ')}`, 'schema');
  if (!Array.isArray(images) || images.length === 0 || !images.every((s) => typeof s === 'string')) throw new HttpError(400, 'inputs.images must be a non-empty array of base64-encoded PNG or JPEG files', 'schema');
  if (images.length > maxBatch) throw new HttpError(413, `batch of ${images.length} images is over the limit of ${maxBatch}; split it into smaller requests`, 'batch-limit');
  const [, C, H, W] = shape ?? [];
  if (shape?.length !== 4 || (C !== 1 && C !== 3) || typeof H !== 'number' || typeof W !== 'number') {
    throw new HttpError(400, `images need a model input of shape [N, C, H, W] with C = 1 or 3 and a fixed H and W; input '${inputName}' is ${shape ? formatShape(shape) : 'of unknown shape'}: send tensors instead`, 'schema');
  }
  const per = C * H * W;
  const data = new Float32Array(images.length * per);
  for (let i = 0; i < images.length; i++) {
    const s = images[i] as string;
    if (s === '') throw new HttpError(400, `inputs.images[${i}] is not base64 (RFC 4648, with padding)`, 'bad-base64');
    const bytes = strictBase64(s, `inputs.images[${i}]`);
    let img;
    try {
      img = await resizeImage(bytes, W, H, o.resize, `inputs.images[${i}]`);
    } catch (e) {
      throw new HttpError(400, (e as Error).message, 'bad-image');
    }
    writePlanar(img, C, data, i * per);
  }
  if (o.pixels) normalizePlanar(data, per, C, o.pixels);
  return { dtype: 'float32', dims: [images.length, C, H, W], data };
}
