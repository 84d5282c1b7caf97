// The user's own images for the demo's personalization: a 28×28 drawing canvas (mouse, pen or touch,
// shown enlarged) and PNG/JPEG files decoded by the browser, both turned into 28×28 gray in [0, 1]
// with a bright object on a dark ground, as Fashion-MNIST (the training data) has them.

export const SIDE = 28;
const PX = SIDE * SIDE;

/** Gray values of a 28×28 RGBA image: the mean of R, G and B over 255. */
function grayOf(rgba: Uint8ClampedArray): Float32Array {
  const x = new Float32Array(PX);
  for (let i = 0; i < PX; i++) x[i] = (rgba[4 * i]! + rgba[4 * i + 1]! + rgba[4 * i + 2]!) / 765;
  return x;
}

/** A drawing pad on a 28×28 canvas: white strokes on black, drawn in canvas pixels whatever its CSS size. */
export class DrawPad {
  private readonly ctx: CanvasRenderingContext2D;
  private last: { x: number; y: number } | undefined;
  /** Strokes drawn since the last clear (an empty pad is not a sample). */
  strokes = 0;

  constructor(readonly canvas: HTMLCanvasElement, readonly lineWidth = 2.4) {
    canvas.width = canvas.height = SIDE;
    this.ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    this.clear();
    canvas.style.touchAction = 'none'; // touch draws instead of scrolling
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      this.last = this.at(e);
      this.strokes++;
      this.line(this.last, this.last);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!this.last) return;
      const p = this.at(e);
      this.line(this.last, p);
      this.last = p;
    });
    const end = () => { this.last = undefined; };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
  }

  private at(e: PointerEvent): { x: number; y: number } {
    const r = this.canvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) / r.width) * SIDE, y: ((e.clientY - r.top) / r.height) * SIDE };
  }

  private line(a: { x: number; y: number }, b: { x: number; y: number }): void {
    const c = this.ctx;
    c.strokeStyle = '#fff';
    c.lineWidth = this.lineWidth;
    c.lineCap = c.lineJoin = 'round';
    c.beginPath();
    c.moveTo(a.x, a.y);
    c.lineTo(b.x + 0.01, b.y); // a zero-length line draws nothing, so a tap still leaves a dot
    c.stroke();
  }

  clear(): void {
    this.ctx.fillStyle = '#000';
    this.ctx.fillRect(0, 0, SIDE, SIDE);
    this.strokes = 0;
  }

  /** The drawing as 784 gray values in [0, 1]. */
  pixels(): Float32Array {
    return grayOf(this.ctx.getImageData(0, 0, SIDE, SIDE).data);
  }
}

/**
 * A PNG or JPEG file as 28×28 gray: decoded by the browser (createImageBitmap), fitted into the
 * square keeping its aspect ratio, and inverted when its border is mostly light (dark ink on paper),
 * so the object is bright on dark. Anything the browser cannot decode is an error naming the file.
 */
export async function imageFileTo28(file: Blob & { name?: string }): Promise<Float32Array> {
  const name = file.name ?? 'the file';
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(file);
  } catch (e) {
    throw new Error(`${name} is not an image this browser can decode (PNG or JPEG expected${file.type ? `, got type ${file.type}` : ''}): ${(e as Error).message}`);
  }
  const c = document.createElement('canvas');
  c.width = c.height = SIDE;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  const s = SIDE / Math.max(bmp.width, bmp.height);
  const w = bmp.width * s, h = bmp.height * s;
  // Fill with the image's own corner colour, so a letterboxed photo does not get a black bar on one side only.
  ctx.drawImage(bmp, 0, 0, 1, 1, 0, 0, SIDE, SIDE);
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bmp, (SIDE - w) / 2, (SIDE - h) / 2, w, h);
  bmp.close();
  const x = grayOf(ctx.getImageData(0, 0, SIDE, SIDE).data);
  let border = 0, nb = 0;
  for (let i = 0; i < SIDE; i++) for (const j of [0, SIDE - 1]) { border += x[i * SIDE + j]! + x[j * SIDE + i]!; nb += 2; }
  if (border / nb > 0.5) for (let i = 0; i < PX; i++) x[i] = 1 - x[i]!;
  return x;
}

/** `x` (28×28) shifted by (dx, dy) pixels, zeros coming in: the augmentation the personalization trains on. */
export function shifted(x: Float32Array, dx: number, dy: number, out = new Float32Array(PX)): Float32Array {
  out.fill(0);
  for (let r = 0; r < SIDE; r++) {
    const rs = r - dy;
    if (rs < 0 || rs >= SIDE) continue;
    for (let c = 0; c < SIDE; c++) {
      const cs = c - dx;
      if (cs >= 0 && cs < SIDE) out[r * SIDE + c] = x[rs * SIDE + cs]!;
    }
  }
  return out;
}

/** A small seeded generator (mulberry32), so a run's augmentation can be repeated. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Draw 28×28 gray `x` into `canvas` (any size; pixels stay square). */
export function show(x: Float32Array, canvas: HTMLCanvasElement): void {
  canvas.width = canvas.height = SIDE;
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(SIDE, SIDE);
  for (let i = 0; i < PX; i++) {
    const v = Math.round(255 * Math.min(1, Math.max(0, x[i]!)));
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
