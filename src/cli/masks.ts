// Segmentation masks from a folder of PNG files, one per image, a class index per pixel: 8-bit
// grayscale (the value is the class: ADE20K, Cityscapes' label ids) or palette (the palette
// index is the class: Pascal VOC, whose void is index 255). pngjs turns a palette image into
// colours, so each colour is mapped back to its index through the file's own palette.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { PNG } from 'pngjs';
import { readBytes } from '../data/idx-node.ts';

const GRAY = 0, PALETTE = 3;

/** One mask's class indices [H·W], row-major. */
export function readMaskPng(file: string): { width: number; height: number; values: Uint8Array } {
  let png: { width: number; height: number; colorType: number; depth: number; palette?: number[][] | boolean; data: Uint8Array };
  try {
    png = PNG.sync.read(Buffer.from(readBytes(file, 'PNG mask'))) as unknown as typeof png;
  } catch (e) {
    throw new Error(`${file}: not a readable PNG (${(e as Error).message})`);
  }
  const n = png.width * png.height;
  const values = new Uint8Array(n);
  if (png.colorType === GRAY && png.depth === 8) {
    for (let i = 0; i < n; i++) values[i] = png.data[4 * i]!;
    return { width: png.width, height: png.height, values };
  }
  if (png.colorType === PALETTE && Array.isArray(png.palette)) {
    const index = new Map<number, number>(), twice = new Set<number>();
    png.palette.forEach(([r, g, b], k) => {
      const key = (r! << 16) | (g! << 8) | b!;
      if (index.has(key)) twice.add(key); else index.set(key, k);
    });
    for (let i = 0; i < n; i++) {
      const key = (png.data[4 * i]! << 16) | (png.data[4 * i + 1]! << 8) | png.data[4 * i + 2]!;
      if (twice.has(key)) throw new Error(`${file}: palette entries ${png.palette.flatMap(([r, g, b], k) => (((r! << 16) | (g! << 8) | b!) === key ? [k] : [])).join(' and ')} have the same colour, so pixel ${i} does not say its class`);
      values[i] = index.get(key)!;
    }
    return { width: png.width, height: png.height, values };
  }
  throw new Error(`${file}: a mask must be an 8-bit grayscale or palette PNG holding a class index per pixel (this one has PNG colour type ${png.colorType}, depth ${png.depth}); an RGB mask has no class index`);
}

/**
 * The masks of a folder for `ids` (the images' paths under their folder, as the image reader
 * gives them): each image's mask is the PNG of the same name stem. For data without file names
 * (NPY, IDX, CSV) the folder's PNGs in sorted order, one per sample.
 */
export function readMaskFolder(dir: string, ids: readonly string[], byName: boolean): { files: string[]; masks: Uint8Array[]; width: number; height: number } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`masks not found: ${dir} is not a folder`);
  const pngs = readdirSync(dir).filter((f) => extname(f).toLowerCase() === '.png').sort();
  const stem = (f: string) => basename(f, extname(f));
  let files: string[];
  if (byName) {
    const have = new Map(pngs.map((f) => [stem(f), f]));
    files = ids.map((id) => {
      const f = have.get(stem(id));
      if (!f) throw new Error(`${dir}: no mask for image '${id}' (expected ${stem(id)}.png)`);
      return join(dir, f);
    });
  } else {
    if (pngs.length !== ids.length) throw new Error(`${dir}: ${pngs.length} PNG masks for ${ids.length} samples`);
    files = pngs.map((f) => join(dir, f));
  }
  const masks: Uint8Array[] = [];
  let width = 0, height = 0;
  files.forEach((f, i) => {
    const m = readMaskPng(f);
    if (i === 0) ({ width, height } = m);
    else if (m.width !== width || m.height !== height) throw new Error(`${f}: ${m.width}×${m.height}, and ${files[0]} is ${width}×${height}; every mask must have one size`);
    masks.push(m.values);
  });
  return { files, masks, width, height };
}
