// Text-line crops as PaddleOCR's recognisers are trained and evaluated on them: its recognition
// label files (rec_gt_train.txt: one `image path<TAB>transcript` a line, the path relative to the
// file's folder) and its RecResizeImg transform for a [N, 3, H, W] input — each image resized to
// the model's height H keeping its aspect ratio (width ⌈H·w/h⌉, at most W), channels in BGR order
// as OpenCV reads them, scaled to (x/255 − 0.5)/0.5, padded with zeros on the right to W.
// sharp's linear kernel stands in for OpenCV's INTER_LINEAR.
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import sharp from 'sharp';
import type { Dataset } from './data-files.ts';
import { MAX_PIXELS } from '../data/image-resize.ts';

/** PaddleOCR's rec_image_shape width, where the model leaves the width free. */
export const DEFAULT_LINE_WIDTH = 320;

/** Whether `path` is a recognition label file: a .txt whose first line is `image<TAB>text`. */
export function isLineLabelFile(path: string): boolean {
  if (!/\.txt$/i.test(path) || !existsSync(path) || !statSync(path).isFile()) return false;
  // The first line only: the whole file is read once, by readTextLines.
  const head = Buffer.alloc(4096), fd = openSync(path, 'r');
  let n: number;
  try { n = readSync(fd, head, 0, head.length, 0); } finally { closeSync(fd); }
  const first = head.subarray(0, n).toString('utf8').split(/\r?\n/, 1)[0] ?? '';
  return /^[^\t]+\.(png|jpe?g|bmp|webp|tiff?|gif)\t/i.test(first);
}

export interface TextLines {
  data: Dataset;
  transcripts: string[];
}

/** The images and transcripts of a label file, as PaddleOCR feeds a recogniser of input height H and width W. */
export async function readTextLines(file: string, H: number, W: number): Promise<TextLines> {
  const lines = readFileSync(file, 'utf8').split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  if (!lines.length) throw new Error(`${file}: no lines`);
  const x = new Float32Array(lines.length * 3 * H * W);
  const ids: string[] = [], transcripts: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const tab = lines[i]!.indexOf('\t');
    if (tab <= 0) throw new Error(`${file} line ${i + 1}: expected \`image path<TAB>transcript\`, as PaddleOCR's recognition label files`);
    const rel = lines[i]!.slice(0, tab), path = isAbsolute(rel) ? rel : join(dirname(file), rel);
    ids.push(rel);
    transcripts.push(lines[i]!.slice(tab + 1));
    await placeLine(path, `${file} line ${i + 1}`, x.subarray(i * 3 * H * W, (i + 1) * 3 * H * W), H, W);
  }
  return { data: { x, n: lines.length, sampleShape: [3, H, W], ids, format: 'images', source: file }, transcripts };
}

/** One image into `out` ([3, H, W], zeros beyond its resized width). */
async function placeLine(path: string, where: string, out: Float32Array, H: number, W: number): Promise<void> {
  let data: Buffer, w: number;
  try {
    const img = sharp(path, { limitInputPixels: MAX_PIXELS });
    const m = await img.metadata();
    if (!m.width || !m.height) throw new Error('no size');
    w = Math.min(W, Math.ceil((H * m.width) / m.height));
    data = await img.resize(w, H, { fit: 'fill', kernel: 'linear' }).toColourspace('srgb').removeAlpha().raw().toBuffer();
  } catch (e) {
    throw new Error(`${where}: cannot read image ${path} (${(e as Error).message})`);
  }
  for (let c = 0; c < 3; c++) {
    const src = 2 - c; // BGR
    for (let r = 0; r < H; r++) for (let q = 0; q < w; q++) out[(c * H + r) * W + q] = (data[(r * w + q) * 3 + src]! / 255 - 0.5) / 0.5;
  }
}
