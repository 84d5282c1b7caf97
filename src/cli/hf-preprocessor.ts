// A Hugging Face image processor's preprocessor_config.json (what transformers and transformers.js
// ship beside an image model) as the CLI's --resize, --mean and --std, so a model exported with
// its processor is fed as it was trained. The mapping, per processor field:
//   size {height, width} (or a number), no centre crop   → 'stretch' (straight to the model's H×W)
//   size {shortest_edge: S}, do_center_crop, crop_size   → S (the shorter side to S, then the centre H×W)
//   size S or {shortest_edge: S} with crop_pct (ConvNeXt) → trunc(S / crop_pct) below 384 (then the centre S×S), 'stretch' from 384
//   a number size: {height, width} without a crop (ViT), the shorter side with one (CLIP), as transformers reads it
//   do_rescale with rescale_factor 1/255                 → how refit reads pixels already (ToTensor)
//   do_normalize, image_mean, image_std                  → --mean, --std
// refit resizes with a linear kernel; a processor whose resample is bicubic or Lanczos gets a note
// saying so (the pixels differ slightly from the processor's). What it cannot follow is refused.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ResizeMode } from '../data/image-resize.ts';
import type { PixelNorm } from '../data/pixels.ts';

export interface HfPreprocess {
  pixels?: PixelNorm;
  resize?: ResizeMode;
  /** The crop or target size the processor names, [H, W], for the caller to check against the model. */
  size?: [number, number];
  /** What the mapping did that the user should know (the resize kernel, ignored fields). */
  notes: string[];
  /** One line saying what was read. */
  summary: string;
  /** The preprocessor_config.json read. */
  file: string;
}

/** PIL's resample codes, as processors store them. */
const RESAMPLE: Record<number, string> = { 0: 'nearest', 1: 'Lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming' };

type Size = number | { height?: number; width?: number; shortest_edge?: number; longest_edge?: number };

/** A preprocessor_config.json (or the folder holding one) as a JSON object, and the file read. */
export function readPreprocessorConfig(path: string): { file: string; config: Record<string, unknown> } {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'preprocessor_config.json') : path;
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`--preprocessor: cannot read ${file} as JSON (${(e as Error).message})`);
  }
  if (!config || typeof config !== 'object' || Array.isArray(config)) throw new Error(`--preprocessor: ${file} is not a JSON object`);
  return { file, config };
}

/**
 * Read `path` (a preprocessor_config.json, or a folder holding one) into --resize, --mean and
 * --std; throws a message naming the field it cannot follow.
 */
export function readHfPreprocessor(path: string): HfPreprocess {
  const { file, config: c } = readPreprocessorConfig(path);
  const bad = (m: string): never => { throw new Error(`--preprocessor ${file}: ${m}`); };
  const notes: string[] = [];
  const on = (k: string, dflt: boolean) => (c[k] === undefined ? dflt : c[k] === true ? true : c[k] === false ? false : bad(`${k} must be true or false, got ${JSON.stringify(c[k])}`));
  const positive = (v: unknown, what: string) => (Number.isInteger(v) && (v as number) > 0 ? (v as number) : bad(`${what} must be a positive integer, got ${JSON.stringify(v)}`));

  // Rescaling: refit reads pixels as value / 255 (torchvision's ToTensor), which is the processors' default.
  if (on('do_rescale', true)) {
    const f = c.rescale_factor ?? 1 / 255;
    if (typeof f !== 'number' || Math.abs(f * 255 - 1) > 1e-6) bad(`rescale_factor ${JSON.stringify(f)} is not 1/255; refit reads pixels as value / 255`);
  } else bad('do_rescale is false (pixels fed as 0–255); refit reads pixels as value / 255, so this processor cannot be followed');

  let pixels: PixelNorm | undefined;
  if (on('do_normalize', true)) {
    const list = (k: string) => {
      const v = c[k];
      const a = typeof v === 'number' ? [v] : Array.isArray(v) ? v : bad(`do_normalize is set but ${k} is ${v === undefined ? 'missing' : JSON.stringify(v)}`);
      if (!a.length || !a.every((x) => typeof x === 'number' && Number.isFinite(x))) bad(`${k} must be numbers, got ${JSON.stringify(v)}`);
      return a as number[];
    };
    const mean = list('image_mean'), std = list('image_std');
    if (mean.length !== std.length) bad(`image_mean has ${mean.length} values and image_std ${std.length}`);
    if (!std.every((s) => s > 0)) bad(`image_std must be positive, got ${JSON.stringify(std)}`);
    pixels = { mean, std };
  }

  let resize: ResizeMode | undefined;
  let size: [number, number] | undefined;
  if (on('do_resize', true)) {
    const s = c.size as Size | undefined;
    const crop = on('do_center_crop', false);
    const cropSize = c.crop_size as Size | undefined;
    const hw = (v: Size | undefined, what: string): [number, number] | undefined => {
      if (v === undefined) return undefined;
      if (typeof v === 'number') return [positive(v, what), v];
      if (v && typeof v === 'object' && v.height !== undefined && v.width !== undefined) return [positive(v.height, `${what}.height`), positive(v.width, `${what}.width`)];
      return undefined;
    };
    if (s === undefined) bad('do_resize is set but size is missing');
    const fixed = hw(s, 'size');
    const edgeOf = () => {
      const e = typeof s === 'object' ? s?.shortest_edge : s;
      if (e === undefined) bad(`size ${JSON.stringify(s)}: refit follows {shortest_edge} (or a number) before a crop, or {height, width} without one`);
      if (typeof s === 'object' && s?.longest_edge !== undefined) bad('size.longest_edge is not followed: refit scales the shorter side only');
      return positive(e, 'size.shortest_edge');
    };
    if (c.crop_pct !== undefined && c.crop_pct !== null && !(typeof s === 'object' && s?.height !== undefined)) {
      // ConvNeXt's processor (a number size means shortest_edge there): below 384 the shorter side
      // to trunc(S / crop_pct), then the centre S×S; from 384 on, straight to S×S.
      const S = edgeOf();
      const p = c.crop_pct;
      if (typeof p !== 'number' || !(p > 0 && p <= 1)) bad(`crop_pct must be in (0, 1], got ${JSON.stringify(p)}`);
      resize = S < 384 ? Math.trunc(S / (p as number)) : 'stretch';
      size = [S, S];
    } else if (fixed && !crop) {
      resize = 'stretch';
      size = fixed;
    } else {
      const S = edgeOf();
      if (!crop) bad(`size {shortest_edge: ${S}} without a centre crop keeps each image's aspect ratio, and the model takes one fixed size; give --resize yourself`);
      size = hw(cropSize, 'crop_size') ?? bad(`do_center_crop is set but crop_size is ${JSON.stringify(cropSize)}`);
      resize = S;
    }
    const r = c.resample;
    if (r !== undefined && r !== 2) notes.push(`the processor resamples ${RESAMPLE[r as number] ?? `with PIL code ${JSON.stringify(r)}`}; refit resizes bilinear, so pixels differ slightly from the processor's`);
  }
  for (const k of ['do_pad', 'do_reduce_labels']) if (c[k] === true) notes.push(`${k} is not followed`);

  const parts = [
    resize === undefined ? 'no resize' : resize === 'stretch' ? `resize straight to ${size![0]}×${size![1]}` : `shorter side to ${resize}, then the centre ${size![0]}×${size![1]}`,
    pixels ? `mean ${pixels.mean.join(',')}, std ${pixels.std.join(',')}` : 'no normalisation',
  ];
  return { ...(pixels ? { pixels } : {}), ...(resize !== undefined ? { resize } : {}), ...(size ? { size } : {}), notes, summary: `${file}: ${parts.join('; ')}`, file };
}
