// Decoded images into a model's input layout, and the per-channel normalisation that models
// trained on normalised inputs expect (torchvision's ToTensor then Normalize). Shared by the CLI's
// image folders and the service's image inputs.

/** An RGBA image, 8 bits per channel, row-major. */
export interface DecodedImage {
  width: number;
  height: number;
  rgba: Uint8Array;
}

/**
 * (v − mean[c]) / std[c] per channel c of pixel data already scaled to [0, 1]; one value applies to
 * every channel. The channel is the sample's first dimension ([C, H, W]).
 */
export interface PixelNorm {
  mean: number[];
  std: number[];
}

/**
 * Write `img` into `out` at `offset` as planar [C, H, W] values in [0, 1]: RGB as it is for C = 3,
 * grey (ITU-R 601 luma, as PIL's convert('L'); kept exactly when R = G = B) for C = 1. The image
 * must be W×H already.
 */
export function writePlanar(img: DecodedImage, C: 1 | 3, out: Float32Array, offset: number): void {
  const px = img.width * img.height;
  for (let p = 0; p < px; p++) {
    const r = img.rgba[4 * p]!, g = img.rgba[4 * p + 1]!, b = img.rgba[4 * p + 2]!;
    if (C === 1) out[offset + p] = (r === g && g === b ? r : 0.299 * r + 0.587 * g + 0.114 * b) / 255;
    else { out[offset + p] = r / 255; out[offset + px + p] = g / 255; out[offset + 2 * px + p] = b / 255; }
  }
}

/** Normalise samples of `perSample` values with `C` channels first, in place (one mean/std value: C is ignored). */
export function normalizePlanar(x: Float32Array, perSample: number, C: number, p: PixelNorm): void {
  const channels = p.mean.length > 1 ? C : 1;
  if (p.mean.length > 1 && p.mean.length !== C) throw new Error(`normalizePlanar: ${p.mean.length} mean values for ${C} channels`);
  const plane = perSample / channels;
  for (let i = 0; i < x.length; i++) {
    const c = channels === 1 ? 0 : Math.floor((i % perSample) / plane);
    x[i] = (x[i]! - p.mean[c]!) / p.std[c]!;
  }
}
