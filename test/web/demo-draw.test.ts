// The demo page's "Your own digits" section in headless Chromium, driven as a user would: strokes
// drawn on the 28×28 pad with the mouse, a PNG uploaded, each labelled, then LoRA personalization
// of the shipped ViT for a few steps. Checks: the progress bar finishes, before/after accuracy
// shown, the loss falls, the adapter reloaded from IndexedDB predicts the same, no console errors.
// And the bad input, each a message in the page with no adapter left in IndexedDB: no samples, a
// file that is not an image, a memory budget the step does not fit, WebGPU asked for where there is
// none (the page runs on wasm and says so), a model fetch cut off halfway. Screenshot:
// REFIT_DRAW_SCREENSHOT=path, else in the temp folder, its path printed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Download, Page } from 'playwright-core';
import { buildDemo, serveDemo } from '../../web/serve.ts';
import type { PersonalResult } from '../../web/personal.ts';
import { CHROMIUM, chromiumMissing } from './browser.ts';

let browser: Browser | undefined;
let server: Awaited<ReturnType<typeof serveDemo>> | undefined;
let out = '';

before(async () => {
  if (chromiumMissing) return;
  out = mkdtempSync(join(tmpdir(), 'refit-demo-draw-'));
  server = await serveDemo(await buildDemo(out), undefined, { testRoutes: true });
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (out) rmSync(out, { recursive: true, force: true });
});

/** A fresh page (its own context, so its own IndexedDB) on the demo, runtime started. */
async function open(query: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser!.newPage({ viewport: { width: 1000, height: 1000 } });
  const errors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${server!.url}${query}`);
  await page.waitForFunction(() => /^Runtime:/.test(document.getElementById('runtime')!.textContent!));
  return { page, errors };
}

type Pt = [number, number];
/** Strokes in pad pixels (0–28) for three digits. */
const SHAPES: Record<number, Pt[][]> = {
  0: [Array.from({ length: 17 }, (_, i): Pt => [14 + 6 * Math.sin((i * Math.PI) / 8), 14 - 9 * Math.cos((i * Math.PI) / 8)])],
  1: [[[15, 5], [14, 23]], [[11, 8], [15, 5]]],
  7: [[[7, 6], [21, 6], [12, 23]]],
};

/** Draw `digit` on the pad with the mouse, moved by (ox, oy) pad pixels, and add it with class `digit`. */
async function drawDigit(page: Page, digit: number, ox: number, oy: number): Promise<void> {
  const box = (await page.locator('#my-pad').boundingBox())!;
  const at = ([x, y]: Pt) => [box.x + ((x + ox) / 28) * box.width, box.y + ((y + oy) / 28) * box.height] as const;
  for (const stroke of SHAPES[digit]!) {
    await page.mouse.move(...at(stroke[0]!));
    await page.mouse.down();
    for (const p of stroke.slice(1)) await page.mouse.move(...at(p), { steps: 4 });
    await page.mouse.up();
  }
  await page.selectOption('#my-label', String(digit));
  await page.click('#my-add');
}

const listAdapters = (page: Page) => page.evaluate(() => (globalThis as unknown as { demoApi: { listAdapters(): Promise<string[]> } }).demoApi.listAdapters());

/** Click Personalize and wait until it has finished or failed. */
async function personalize(page: Page): Promise<string> {
  await page.evaluate(() => { document.getElementById('my-status')!.textContent = ''; });
  await page.click('#my-run');
  await page.waitForFunction(() => /^(done|failed)/.test(document.getElementById('my-status')!.textContent!) || /no samples/.test(document.getElementById('my-message')!.textContent!), undefined, { timeout: 60_000 });
  return (await page.textContent('#my-status'))!;
}

test('own digits: drawn and uploaded, labelled, LoRA personalization with before/after accuracy, saved and reloaded; bad samples and budget are messages', { skip: chromiumMissing }, async () => {
  const { page, errors } = await open('?psteps=16');
  // No samples yet.
  await page.click('#my-run');
  assert.match((await page.textContent('#my-message'))!, /no samples yet: draw a digit/);
  // A file that is not an image: named in the message, not added.
  await page.setInputFiles('#my-files', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('these are not pixels') });
  await page.waitForFunction(() => document.getElementById('my-message')!.textContent !== '' && !/no samples/.test(document.getElementById('my-message')!.textContent!));
  assert.match((await page.textContent('#my-message'))!, /^Not added: notes\.png is not an image this browser can decode \(PNG or JPEG expected, got type image\/png\)/);
  assert.equal(await page.textContent('#my-count'), '0 samples');
  // An empty pad is not a sample.
  await page.click('#my-add');
  assert.match((await page.textContent('#my-message'))!, /pad is empty/);

  // Twelve drawn digits (0, 1, 7, moved about) and one uploaded PNG: a dark "1" on white, wider than tall.
  const offsets: Pt[] = [[0, 0], [-2, 1], [2, -1], [1, 2]];
  for (const [ox, oy] of offsets) for (const d of [0, 1, 7]) await drawDigit(page, d, ox, oy);
  const png = await page.evaluate(async () => {
    const c = new OffscreenCanvas(60, 40);
    const g = c.getContext('2d')!;
    g.fillStyle = '#fff'; g.fillRect(0, 0, 60, 40);
    g.fillStyle = '#000'; g.fillRect(27, 4, 6, 32);
    const b = new Uint8Array(await (await c.convertToBlob({ type: 'image/png' })).arrayBuffer());
    return btoa(String.fromCharCode(...b));
  });
  await page.selectOption('#my-label', '1');
  await page.setInputFiles('#my-files', { name: 'one.png', mimeType: 'image/png', buffer: Buffer.from(png, 'base64') });
  await page.waitForFunction(() => document.getElementById('my-count')!.textContent === '13 samples');
  // The upload was inverted to a bright stroke on dark, like the training data: its thumbnail's centre is light, its corner dark.
  const [centre, corner] = await page.evaluate(() => {
    const c = [...document.querySelectorAll('#my-samples canvas')].at(-1) as HTMLCanvasElement;
    const d = c.getContext('2d')!.getImageData(0, 0, 28, 28).data;
    return [d[4 * (14 * 28 + 14)]!, d[0]!];
  });
  assert.ok(centre > 200 && corner < 30, `uploaded image centre ${centre}, corner ${corner}`);

  // A memory budget the step does not fit: MemoryBudgetError as a message, nothing trained or saved.
  await page.fill('#my-budget', '0.01');
  assert.equal(await personalize(page), 'failed');
  assert.match((await page.textContent('#my-message'))!, /^This model does not fit the memory budget, nothing was trained or saved\. memoryBudget of 10\.0 kB \(10000 bytes; batch 16, adamw\) fits no candidate: .* needs \d+\.\d\d MB/);
  console.log(`# budget message: ${await page.textContent('#my-message')}`);
  assert.deepEqual(await listAdapters(page), []);
  // A budget it fits: the same LoRA selection, and what it needs is shown.
  await page.fill('#my-budget', '50');

  assert.match(await personalize(page), /^done: adapter 'my-digits' saved to IndexedDB/);
  assert.match((await page.textContent('#my-budget-used'))!, /^the step needs \d+\.\d\d MB of 50 MB budget \(.*\)$/);
  const r = await page.evaluate(() => (globalThis as unknown as { demoResult: { personal: PersonalResult } }).demoResult.personal);
  assert.equal(await page.textContent('#my-message'), '');
  assert.equal(r.n, 13);
  assert.equal(r.nHeld, 2);
  assert.deepEqual(await page.evaluate(() => { const p = document.getElementById('my-progress') as HTMLProgressElement; return [p.value, p.max]; }), [16, 16]);
  assert.equal(r.losses.length, 16);
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(mean(r.losses.slice(-4)) < mean(r.losses.slice(0, 4)) / 2, `loss did not fall by half: ${r.losses.join(' ')}`);
  assert.ok(r.after.train >= 0.9 && r.after.train > r.before.train, `accuracy on the trained samples ${r.before.train} → ${r.after.train}`);
  assert.ok(r.before.held !== undefined && r.after.held !== undefined);
  assert.match((await page.textContent('#my-before'))!, /^\d+% on 11 trained on, \d+% on 2 held out$/);
  assert.match((await page.textContent('#my-after'))!, /^\d+% on 11 trained on, \d+% on 2 held out$/);
  assert.ok(r.reloadedSame && r.reloadedMaxDiff < 1e-4, `reloaded: same ${r.reloadedSame}, max logit difference ${r.reloadedMaxDiff}`);
  assert.match((await page.textContent('#my-reloaded'))!, /^same predictions on all 13/);
  assert.deepEqual(await listAdapters(page), ['my-digits']);
  // The download: HF PEFT's two files, the config naming the LoRA targets.
  const downloads: Download[] = [];
  const both = new Promise<void>((ok) => page.on('download', (d) => { if (downloads.push(d) === 2) ok(); }));
  await page.click('#my-download');
  await both;
  const [cfg, weights] = downloads;
  assert.deepEqual([cfg!.suggestedFilename(), weights!.suggestedFilename()], ['my-digits-adapter_config.json', 'my-digits-adapter_model.safetensors']);
  const config = JSON.parse(readFileSync((await cfg!.path())!, 'utf8')) as { peft_type: string; r: number };
  assert.equal(config.peft_type, 'LORA');
  assert.equal(config.r, 4);
  const shot = process.env.REFIT_DRAW_SCREENSHOT ?? join(tmpdir(), 'refit-demo-draw.png');
  // One more digit on the pad (not added), so the screenshot shows a drawing.
  const box = (await page.locator('#my-pad').boundingBox())!;
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.25);
  await page.mouse.down();
  for (const [x, y] of [[0.7, 0.25], [0.4, 0.8]] as const) await page.mouse.move(box.x + box.width * x, box.y + box.height * y, { steps: 4 });
  await page.mouse.up();
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`# screenshot: ${shot}; accuracy on trained ${r.before.train} → ${r.after.train}, held ${r.before.held} → ${r.after.held}; losses ${r.losses.map((l) => l.toFixed(2)).join(' ')}`);
  assert.deepEqual(errors, []);
  await page.context().close();
});

test('own digits, bad runtime and model: WebGPU asked for without one runs on wasm with a message; a model fetch cut off halfway is a message and saves nothing', { skip: chromiumMissing }, async () => {
  const { page, errors } = await open('?device=webgpu&psteps=2&vit=/test/cut/fmnist-vit.onnx');
  assert.match((await page.textContent('#warning'))!, /WebGPU was asked for but cannot be used: .*running on wasm/);
  assert.match((await page.textContent('#runtime'))!, /^Runtime: wasm, /);
  await drawDigit(page, 7, 0, 0);
  assert.equal(await personalize(page), 'failed');
  assert.match((await page.textContent('#my-message'))!, /^Personalization failed, nothing was saved: (reading \S*\/test\/cut\/fmnist-vit\.onnx (failed after \d+ bytes of \d+|: the body ended after \d+ of \d+ bytes))/);
  assert.deepEqual(await listAdapters(page), []);
  const shot = `${process.env.REFIT_DRAW_SCREENSHOT ?? join(tmpdir(), 'refit-demo-draw.png')}`.replace(/\.png$/, '-bad.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`# screenshot: ${shot}; warning: ${await page.textContent('#warning')}; message: ${await page.textContent('#my-message')}; console errors: ${errors.join(' | ')}`);
  // The browser logs the dropped connection itself (net::ERR_…); nothing else may be an error.
  assert.ok(errors.length <= 1 && errors.every((e) => /Failed to load resource|net::ERR_/.test(e)), errors.join('\n'));
  await page.context().close();
});
