// Node-only readers for the CLI's data: IDX, NPY, CSV files and folders of PNG/JPEG images,
// turned into float samples in the layout of a model's input. Every error names the file (and
// the line, column or image) and what was expected, and nothing here writes anything.
//
// Pixel formats (IDX ubyte, NPY uint8, PNG, JPEG) are divided by 255 (refit's models take [0, 1]
// inputs, as the shipped ones do); float NPY and CSV values are fed as they are.
import { readdirSync, statSync, existsSync, readFileSync } from 'node:fs';
import { join, extname, relative } from 'node:path';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { readBytes, maybeGunzip } from '../data/idx-node.ts';
import { parseIdx } from '../data/idx.ts';
import type { ResizeMode } from '../data/image-resize.ts';
import { writePlanar, normalizePlanar, type DecodedImage, type PixelNorm } from '../data/pixels.ts';

export type { DecodedImage, PixelNorm };

/** What a model's input wants per sample: its dims after the batch dimension (null: free). */
export interface SampleSpec {
  input: string;
  dims: (number | null)[];
  /** Pixel data's normalisation, as torchvision's Normalize after ToTensor (--mean, --std). */
  pixels?: PixelNorm;
  /** Image folders: how images of another size reach the model's (--resize, ../data/image-resize.ts). */
  resize?: ResizeMode;
}

export interface Dataset {
  /** n samples of `sampleShape`, row-major, concatenated. */
  x: Float32Array;
  n: number;
  sampleShape: number[];
  /** Class index per sample, when the data carries labels. */
  labels?: Int32Array;
  /** Per sample: the image's path under the folder, else the row index. */
  ids: string[];
  /** Class names (an image folder's sub-folders), index = label. */
  classes?: string[];
  format: 'idx' | 'npy' | 'csv' | 'images';
  source: string;
  /** Whether the values came from 8-bit pixels (IDX, uint8 NPY, images), scaled to [0, 1]. */
  pixelData?: boolean;
}

export interface ReadOptions {
  /** Separate labels file: IDX (idx1), NPY (integers), or CSV/text with one label per line. */
  labels?: string;
  /**
   * CSV: which column holds the label: a header name, a 0-based index, 'last' or 'none'.
   * @default a header column named label, class, target or y; else 'none' when a row has exactly a sample's values; else 'last'
   */
  labelColumn?: string;
  /** Image folders: images already decoded (and resized, ../data/image-resize.ts), by file. */
  decoded?: ReadonlyMap<string, DecodedImage>;
}

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);
const fmtShape = (d: readonly (number | null)[]) => `[${d.map((v) => v ?? '?').join(', ')}]`;
const prod = (d: readonly number[]) => d.reduce((a, b) => a * b, 1);

/** Read a dataset from a file or folder, checked against the model's sample shape. */
export function readDataset(path: string, spec: SampleSpec, o: ReadOptions = {}): Dataset {
  if (!existsSync(path)) throw new Error(`data not found: ${path}`);
  let ds: Dataset;
  if (statSync(path).isDirectory()) ds = readImageFolder(path, spec, o.decoded);
  else {
    const ext = extname(path).toLowerCase();
    if (ext === '.npy') ds = readNpyData(path, spec);
    else if (ext === '.csv') ds = readCsvData(path, spec, o.labelColumn);
    else if (looksLikeIdx(path)) ds = readIdxData(path, spec);
    else throw new Error(`${path}: unknown data format; give an IDX file (idx3-ubyte, optionally .gz), a .npy or .csv file, or a folder of PNG/JPEG images with one sub-folder per class`);
  }
  if (spec.pixels) normalizePixels(ds, spec.pixels);
  if (o.labels) {
    if (ds.labels) throw new Error(`${path} carries labels already (${ds.format === 'images' ? 'its sub-folders' : 'its label column'}); drop --labels ${o.labels}${ds.format === 'csv' ? ' or pass --label-column none' : ''}`);
    const labels = readLabels(o.labels);
    if (labels.length !== ds.n) throw new Error(`${o.labels} has ${labels.length} labels but ${path} has ${ds.n} samples`);
    ds.labels = labels;
  }
  return ds;
}

/** Apply --mean/--std to pixel data in place; other data is refused, since it is fed as it is. */
function normalizePixels(ds: Dataset, p: PixelNorm): void {
  if (!ds.pixelData) throw new Error(`${ds.source}: --mean and --std normalise pixel data (IDX, uint8 .npy, images), and this ${ds.format === 'npy' ? 'float .npy' : ds.format.toUpperCase()} data is fed as it is; normalise it before saving it, or drop --mean and --std`);
  const C = ds.sampleShape[0]!;
  if (p.mean.length > 1 && (ds.sampleShape.length < 2 || p.mean.length !== C)) throw new Error(`--mean and --std give ${p.mean.length} channels, but the samples of ${ds.source} have shape ${fmtShape(ds.sampleShape)} (${ds.sampleShape.length < 2 ? 'no channel dimension' : `${C} channels first`}); give one value or one per channel`);
  normalizePlanar(ds.x, ds.x.length / Math.max(1, ds.n), C, p);
}

/** Check labels against the model's class count. */
export function checkLabels(ds: Dataset, classes: number | null, where: string): void {
  if (!ds.labels || classes === null) return;
  for (let i = 0; i < ds.n; i++) {
    const l = ds.labels[i]!;
    if (l < 0 || l >= classes) throw new Error(`${where}: label ${l} of sample ${ds.ids[i]} is outside the model's ${classes} classes (0–${classes - 1})`);
  }
}

/** The sample shape the model takes for data whose own sample shape is `have` (from `file`). */
function conform(have: number[], spec: SampleSpec, file: string): number[] {
  const want = spec.dims;
  const size = prod(have);
  const what = `${file}: each sample has ${size} values (shape ${fmtShape(have)}); the model's input '${spec.input}' takes ${fmtShape(['N' as unknown as number, ...want])}`;
  if (want.every((d): d is number => d !== null)) {
    if (prod(want) !== size) throw new Error(`${what}, ${prod(want)} values per sample`);
    return want;
  }
  // Free dims: the data's own shape must line up with the known ones.
  if (have.length !== want.length || want.some((d, i) => d !== null && d !== have[i])) throw new Error(`${what}; the data's sample shape must match it`);
  return have;
}

// ---- IDX -------------------------------------------------------------------------------------

function looksLikeIdx(path: string): boolean {
  if (/(-ubyte|\.idx\d?)(\.gz)?$/i.test(path)) return true;
  const b = maybeGunzip(readBytes(path, 'data file'), path);
  return b.length >= 4 && b[0] === 0 && b[1] === 0 && b[2] === 0x08 && b[3]! >= 1 && b[3]! <= 4;
}

function readIdxData(path: string, spec: SampleSpec): Dataset {
  const a = parseIdx(maybeGunzip(readBytes(path, 'IDX file'), path), { name: path });
  if (a.dims.length < 2) throw new Error(`${path}: an IDX file of ${a.dims.length} dimension holds labels, not samples; give it to --labels and the images to --data`);
  const [n, ...have] = a.dims as [number, ...number[]];
  const x = new Float32Array(a.data.length);
  for (let i = 0; i < x.length; i++) x[i] = a.data[i]! / 255;
  return { x, n, sampleShape: conform(have, spec, path), ids: rowIds(n), format: 'idx', source: path, pixelData: true };
}

const rowIds = (n: number) => Array.from({ length: n }, (_, i) => String(i));

// ---- NPY -------------------------------------------------------------------------------------
// Written here because npm has nothing well kept for it: the npy packages there are unmaintained,
// read into nested JS arrays, or pull in a whole ndarray stack. The format is a 10-line header
// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html) before raw data.

export interface NpyArray {
  dtype: 'float32' | 'float64' | 'uint8' | 'int32' | 'int64' | 'bool';
  shape: number[];
  /** Values as float64 (int64 values beyond 2^53 are refused). */
  values: Float64Array | Float32Array;
}

const NPY_DTYPES: Record<string, NpyArray['dtype']> = { '<f4': 'float32', '<f8': 'float64', '|u1': 'uint8', '<u1': 'uint8', '<i4': 'int32', '<i8': 'int64', '|b1': 'bool' };

export function parseNpy(bytes: Uint8Array, name: string): NpyArray {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((m, i) => bytes[i] !== m)) throw new Error(`${name}: not an NPY file (no \\x93NUMPY magic)`);
  const major = bytes[6]!;
  if (major < 1 || major > 3) throw new Error(`${name}: NPY format version ${major}.${bytes[7]} is not supported (1.0–3.0)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  if (start + headerLen > bytes.length) throw new Error(`${name}: truncated NPY header`);
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw new Error(`${name}: malformed NPY header ${JSON.stringify(header.trim())}`);
  const dtype = NPY_DTYPES[descr];
  if (!dtype) throw new Error(`${name}: NPY dtype '${descr}' is not supported; save it as little-endian float32 ('<f4'), float64, uint8, int32, int64 or bool (e.g. arr.astype(np.float32))`);
  if (fortran === 'True') throw new Error(`${name}: NPY array is in Fortran order; save it in C order (np.ascontiguousarray(arr))`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const count = prod(shape);
  const size = { float32: 4, float64: 8, uint8: 1, int32: 4, int64: 8, bool: 1 }[dtype];
  const off = start + headerLen;
  if (bytes.length - off < count * size) throw new Error(`${name}: NPY data is truncated: shape ${fmtShape(shape)} of ${dtype} needs ${count * size} bytes, the file has ${bytes.length - off}`);
  // A copy, so typed-array views are aligned whatever the header length.
  const raw = new Uint8Array(bytes.subarray(off, off + count * size)).buffer; // a copy even of a Node Buffer (whose slice is a view)
  let values: Float64Array | Float32Array;
  switch (dtype) {
    case 'float32': values = new Float32Array(raw); break;
    case 'float64': values = new Float64Array(raw); break;
    case 'uint8': values = Float64Array.from(new Uint8Array(raw)); break;
    case 'bool': { // one byte each, 0 or 1 as numpy writes them; any other byte is not a bool file
      const b = new Uint8Array(raw), bad = b.findIndex((v) => v > 1);
      if (bad >= 0) throw new Error(`${name}: bool NPY element ${bad} is byte ${b[bad]}, not 0 or 1`);
      values = Float64Array.from(b);
      break;
    }
    case 'int32': values = Float64Array.from(new Int32Array(raw)); break;
    case 'int64': {
      const b = new BigInt64Array(raw);
      values = new Float64Array(count);
      for (let i = 0; i < count; i++) {
        const v = b[i]!;
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${name}: int64 value ${v} at element ${i} is too large`);
        values[i] = Number(v);
      }
      break;
    }
  }
  return { dtype, shape, values };
}

/** The header of an NPY file (format 1.0, C order) of `descr` ('<f4', '|u1', …) and `shape`; the raw data follows it. */
export function npyHeader(descr: string, shape: readonly number[]): Uint8Array {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const header = new TextEncoder().encode(dict.padEnd(Math.ceil((dict.length + 11) / 64) * 64 - 11, ' ') + '\n'); // 10 + header: a multiple of 64
  const head = new Uint8Array(10 + header.length);
  head.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
  head.set(header, 10);
  return head;
}

/** The bytes of a typed array, as a view (no copy). */
export const bytesOf = (d: ArrayBufferView) => new Uint8Array(d.buffer, d.byteOffset, d.byteLength);

function readNpyData(path: string, spec: SampleSpec): Dataset {
  const a = parseNpy(readBytes(path, 'NPY file'), path);
  if (a.shape.length < 2) throw new Error(`${path}: NPY array of shape ${fmtShape(a.shape)} is one value per sample; samples need shape [N, ...] (labels go to --labels)`);
  const [n, ...have] = a.shape as [number, ...number[]];
  const x = new Float32Array(a.values.length);
  const scale = a.dtype === 'uint8' ? 1 / 255 : 1;
  for (let i = 0; i < x.length; i++) {
    const v = a.values[i]! * scale;
    if (!Number.isFinite(v)) throw new Error(`${path}: value ${i} (sample ${Math.floor(i / (x.length / n))}) is ${a.values[i]}; inputs must be finite`);
    x[i] = v;
  }
  return { x, n, sampleShape: conform(have, spec, path), ids: rowIds(n), format: 'npy', source: path, pixelData: a.dtype === 'uint8' };
}

// ---- CSV -------------------------------------------------------------------------------------

/** Header names read as the label column by default (numeric CSV here, text data in ./text-tokens.ts). */
export const LABEL_NAMES = new Set(['label', 'labels', 'class', 'target', 'y']);
const num = (s: string) => (s.trim() === '' ? NaN : Number(s));

function readCsvData(path: string, spec: SampleSpec, labelColumn?: string): Dataset {
  const text = readFileSync(path, 'utf8');
  const lines = text.split(/\r?\n/);
  const rows: { line: number; cells: string[] }[] = [];
  lines.forEach((l, i) => { if (l.trim() !== '') rows.push({ line: i + 1, cells: l.split(',') }); });
  if (rows.length === 0) throw new Error(`${path}: empty CSV file`);
  // A header is a first row in which no cell is a number.
  const header = rows[0]!.cells.every((c) => !Number.isFinite(num(c))) ? rows.shift()!.cells.map((c) => c.trim()) : undefined;
  if (rows.length === 0) throw new Error(`${path}: CSV file has a header and no rows`);
  const width = rows[0]!.cells.length;
  const known = spec.dims.every((d) => d !== null) ? prod(spec.dims as number[]) : null;
  let col: number | null;
  // Default: a header column named like a label, else none when a row is exactly one sample, else the last.
  const named = header?.find((h) => LABEL_NAMES.has(h.toLowerCase()));
  const lc = labelColumn ?? named ?? (known !== null && width === known ? 'none' : 'last');
  if (lc === 'none') col = null;
  else if (lc === 'last') col = width - 1;
  else if (/^\d+$/.test(lc)) col = Number(lc);
  else {
    col = header ? header.indexOf(lc) : -1;
    if (col < 0) throw new Error(`${path}: no column named '${lc}'${header ? ` (columns: ${header.slice(0, 10).join(', ')}${header.length > 10 ? ', …' : ''})` : ' (the file has no header row)'}; give --label-column a name, a 0-based index, 'last' or 'none'`);
  }
  if (col !== null && col >= width) throw new Error(`${path}: label column ${col} is past the ${width} columns`);
  const features = width - (col === null ? 0 : 1);
  const n = rows.length;
  const x = new Float32Array(n * features);
  const labels = col === null ? undefined : new Int32Array(n);
  rows.forEach(({ line, cells }, r) => {
    if (cells.length !== width) throw new Error(`${path}:${line}: ${cells.length} columns, expected ${width} as in the first row`);
    let k = 0;
    cells.forEach((c, j) => {
      const v = num(c);
      if (!Number.isFinite(v)) throw new Error(`${path}:${line}: column ${j + 1}${header ? ` ('${header[j]}')` : ''} is ${JSON.stringify(c.trim())}, not a finite number`);
      if (j === col) {
        if (!Number.isInteger(v) || v < 0) throw new Error(`${path}:${line}: label ${JSON.stringify(c.trim())} is not a class index (a non-negative integer)`);
        labels![r] = v;
      } else x[r * features + k++] = v;
    });
  });
  return { x, n, sampleShape: conform([features], spec, path), labels, ids: rowIds(n), format: 'csv', source: path };
}

// ---- labels files ----------------------------------------------------------------------------

/** Labels from an IDX idx1 file, an NPY vector of integers, or a text/CSV file with one per line. */
export function readLabels(path: string): Int32Array {
  if (!existsSync(path)) throw new Error(`labels not found: ${path}`);
  const ext = extname(path).toLowerCase();
  let values: ArrayLike<number>;
  if (ext === '.npy') {
    const a = parseNpy(readBytes(path, 'NPY file'), path);
    if (a.shape.length !== 1 && !(a.shape.length === 2 && a.shape[1] === 1)) throw new Error(`${path}: labels must be a vector [N], got shape ${fmtShape(a.shape)}`);
    values = a.values;
  } else if (ext === '.csv' || ext === '.txt') {
    const lines = readFileSync(path, 'utf8').split(/\r?\n/).map((l, i) => ({ l: l.trim(), i: i + 1 })).filter((r) => r.l !== '');
    if (lines.length && !Number.isFinite(num(lines[0]!.l))) lines.shift(); // a header
    values = lines.map(({ l, i }) => {
      const v = num(l);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${path}:${i}: label ${JSON.stringify(l)} is not a class index (a non-negative integer)`);
      return v;
    });
  } else {
    const a = parseIdx(maybeGunzip(readBytes(path, 'IDX file'), path), { name: path });
    if (a.dims.length !== 1) throw new Error(`${path}: labels must be an idx1 file (one dimension), got dims ${fmtShape(a.dims)}`);
    values = a.data;
  }
  const out = new Int32Array(values.length);
  for (let i = 0; i < out.length; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < 0) throw new Error(`${path}: label ${i} is ${v}, not a class index (a non-negative integer)`);
    out[i] = v;
  }
  return out;
}

// ---- image folders ---------------------------------------------------------------------------

/** An RGBA image decoded by pngjs or jpeg-js. */
function decodeImage(file: string): DecodedImage {
  const buf = readFileSync(file);
  try {
    if (extname(file).toLowerCase() === '.png') {
      const p = PNG.sync.read(buf);
      return { width: p.width, height: p.height, rgba: p.data };
    }
    const j = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 256 });
    return { width: j.width, height: j.height, rgba: j.data };
  } catch (e) {
    throw new Error(`${file}: cannot decode image (${(e as Error).message})`);
  }
}

function listImages(dir: string): string[] {
  return readdirSync(dir).filter((f) => !f.startsWith('.') && IMAGE_EXT.has(extname(f).toLowerCase())).sort().map((f) => join(dir, f));
}

/** A folder's images, with their class when it has one sub-folder per class (sorted names). */
function imageFolder(dir: string): { files: { file: string; label?: number }[]; classes?: string[] } {
  const subdirs = readdirSync(dir).filter((f) => !f.startsWith('.') && statSync(join(dir, f)).isDirectory()).sort();
  const files: { file: string; label?: number }[] = [];
  let classes: string[] | undefined;
  if (subdirs.length > 0) {
    classes = subdirs;
    subdirs.forEach((c, k) => { for (const f of listImages(join(dir, c))) files.push({ file: f, label: k }); });
  } else for (const f of listImages(dir)) files.push({ file: f });
  if (files.length === 0) throw new Error(`${dir}: no PNG or JPEG images found (expected one sub-folder per class, or images directly in the folder)`);
  return { files, ...(classes ? { classes } : {}) };
}

/** The image files the folder reader reads, in its order. */
export const imageFiles = (dir: string) => imageFolder(dir).files;

/**
 * A folder with one sub-folder per class (classes in sorted order, as torchvision's ImageFolder),
 * or a flat folder of images (no labels). Images must have the model's height and width, or come
 * resized in `decoded` (--resize, ../data/image-resize.ts). Grayscale and RGB are converted to
 * the model's channel count (../data/pixels.ts).
 */
function readImageFolder(dir: string, spec: SampleSpec, decoded?: ReadonlyMap<string, DecodedImage>): Dataset {
  const [C, H, W] = spec.dims;
  if (spec.dims.length !== 3 || (C !== 1 && C !== 3) || typeof H !== 'number' || typeof W !== 'number') {
    throw new Error(`${dir}: images need a model input of shape [N, C, H, W] with C = 1 or 3 and a fixed H and W; the model's input '${spec.input}' is ${fmtShape(['N' as unknown as number, ...spec.dims])}`);
  }
  const { files, classes } = imageFolder(dir);
  const px = H * W;
  const x = new Float32Array(files.length * C * px);
  files.forEach(({ file }, i) => {
    const img = decoded?.get(file) ?? decodeImage(file);
    if (img.width !== W || img.height !== H) throw new Error(`${file} is ${img.width}×${img.height}; the model's input '${spec.input}' takes ${W}×${H} images (--resize brings them to it: a size for the shorter side before a centre crop, as torchvision's Resize and CenterCrop, or 'stretch')`);
    writePlanar(img, C, x, i * C * px);
  });
  const labels = classes ? Int32Array.from(files, (f) => f.label!) : undefined;
  return { x, n: files.length, sampleShape: [C, H, W], labels, ids: files.map((f) => relative(dir, f.file)), classes, format: 'images', source: dir, pixelData: true };
}
