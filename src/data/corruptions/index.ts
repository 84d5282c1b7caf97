/**
 * Common corruptions for 28x28 grayscale images, at severities 1..5, modelled on
 * CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019, make_cifar_c.py) and MNIST-C
 * (Mu & Gilmer 2019). Parameters per severity: docs/corruptions.md (generated from
 * `corruptionTableMarkdown()`, which reads the definitions below).
 *
 * Deterministic: image i's randomness comes from hashSeed(seed, type, severity, id_i), so a
 * corrupted image does not depend on which other images are corrupted with it.
 */
import { Rng, hashSeed, hashString } from '../random.ts';
import { defocusBlur, glassBlur, motionBlur, zoomBlur } from './blur.ts';
import { brightness, contrast, elasticTransform, jpegCompression, pixelate } from './digital.ts';
import { gaussianNoise, impulseNoise, shotNoise } from './noise.ts';
import { SEVERITIES, type CorruptionDef, type Severity } from './types.ts';
import { fog, snow, spatter } from './weather.ts';

export { SEVERITIES, type CorruptionDef, type Severity } from './types.ts';

/** The 15 corruptions, in the order of the CIFAR-10-C benchmark (and the default continual stream). */
export const CORRUPTIONS = [
  'gaussian_noise',
  'shot_noise',
  'impulse_noise',
  'defocus_blur',
  'glass_blur',
  'motion_blur',
  'zoom_blur',
  'snow',
  'fog',
  'brightness',
  'contrast',
  'elastic_transform',
  'pixelate',
  'jpeg_compression',
  'spatter',
] as const;

export type CorruptionName = (typeof CORRUPTIONS)[number];

const DEFS: readonly CorruptionDef[] = [
  gaussianNoise,
  shotNoise,
  impulseNoise,
  defocusBlur,
  glassBlur,
  motionBlur,
  zoomBlur,
  snow,
  fog,
  brightness,
  contrast,
  elasticTransform,
  pixelate,
  jpegCompression,
  spatter,
];

/** Registry: name -> definition. */
export const CORRUPTION_REGISTRY: ReadonlyMap<CorruptionName, CorruptionDef> = new Map(
  DEFS.map((d) => [d.name as CorruptionName, d]),
);

export function isCorruptionName(name: string): name is CorruptionName {
  return CORRUPTION_REGISTRY.has(name as CorruptionName);
}

/** Throws a clear error unless `name` is one of CORRUPTIONS. */
export function assertCorruptionName(name: unknown): asserts name is CorruptionName {
  if (typeof name !== 'string' || !isCorruptionName(name)) {
    throw new Error(`unknown corruption '${String(name)}'; valid corruptions: ${CORRUPTIONS.join(', ')}`);
  }
}

/** Throws a clear error unless `severity` is an integer in 1..5. */
export function assertSeverity(severity: unknown): asserts severity is Severity {
  if (typeof severity !== 'number' || !Number.isInteger(severity) || severity < 1 || severity > 5) {
    throw new Error(`corruption severity must be an integer in 1..5 (valid: ${SEVERITIES.join(', ')}), got ${String(severity)}`);
  }
}

export function getCorruption(name: string): CorruptionDef {
  assertCorruptionName(name);
  return CORRUPTION_REGISTRY.get(name)!;
}

export interface CorruptOptions {
  /**
   * Identity of each image for seeding (default: its position 0..n-1). Pass the dataset
   * indices when corrupting a subset so that it matches corrupting the whole set.
   */
  ids?: ArrayLike<number>;
  /** Write into this array (length n*h*w, must not alias `images`) instead of a new one. */
  out?: Float32Array;
}

/**
 * Corrupt n single-channel h x w images (row-major floats in [0, 1]) with one corruption
 * at one severity. Returns a new Float32Array of the same shape, values in [0, 1].
 * The same (images, type, severity, seed) always gives the same output.
 */
export function corrupt(
  images: Float32Array,
  n: number,
  h: number,
  w: number,
  type: CorruptionName | string,
  severity: number,
  seed: number,
  opts: CorruptOptions = {},
): Float32Array {
  assertCorruptionName(type);
  assertSeverity(severity);
  for (const [k, v] of [
    ['n', n],
    ['h', h],
    ['w', w],
  ] as const) {
    if (!Number.isInteger(v) || v < (k === 'n' ? 0 : 1)) throw new Error(`corrupt: ${k} must be a ${k === 'n' ? 'non-negative' : 'positive'} integer, got ${v}`);
  }
  if (images.length !== n * h * w) {
    throw new Error(`corrupt: images has ${images.length} values, expected n*h*w = ${n}*${h}*${w} = ${n * h * w}`);
  }
  if (!Number.isFinite(seed)) throw new Error(`corrupt: seed must be a finite number, got ${seed}`);
  const ids = opts.ids;
  if (ids !== undefined && ids.length !== n) throw new Error(`corrupt: ids has ${ids.length} entries, expected n = ${n}`);
  const out = opts.out ?? new Float32Array(n * h * w);
  if (out.length !== n * h * w) throw new Error(`corrupt: out has ${out.length} values, expected ${n * h * w}`);
  if (out.buffer === images.buffer && rangesOverlap(out, images)) throw new Error('corrupt: out must not alias images');
  if (n === 0) return out;
  const def = CORRUPTION_REGISTRY.get(type)!;
  const typeHash = hashString(type);
  def.apply(images, out, {
    n,
    h,
    w,
    severity,
    rngFor: (i) => Rng.xoshiro(hashSeed(seed, typeHash, severity, ids ? ids[i]! : i)),
  });
  return out;
}

function rangesOverlap(a: Float32Array, b: Float32Array): boolean {
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function fmt(v: string | number): string {
  return typeof v === 'number' ? String(v) : v;
}

/**
 * The one table of docs/corruptions.md: every corruption's parameters at severities 1..5.
 * A test checks that the docs contain exactly this text.
 */
export function corruptionTableMarkdown(): string {
  const lines = [
    '| corruption | parameter | s1 | s2 | s3 | s4 | s5 | source (and adaptation) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const d of DEFS) {
    d.params.forEach((p, j) => {
      const first = j === 0;
      lines.push(
        `| ${first ? `\`${d.name}\`` : ''} | ${p.name} | ${p.values.map(fmt).join(' | ')} | ${first ? d.basis : ''} |`,
      );
    });
  }
  return lines.join('\n');
}
