// The demo page (npm run web) in headless Chromium: a few TTA batches on the corrupted stream and a
// few LoRA steps, driven through ?auto=1. Checks: accuracies shown, Tent at least as accurate as the
// source on the noisy stream, the LoRA loss falls and held-out accuracy rises, the adapter reloaded
// from IndexedDB gives the same accuracy, no console errors; a screenshot is kept
// (REFIT_SCREENSHOT=path, else in the temp folder, its path printed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDemo, serveDemo } from '../../web/serve.ts';
import { CHROMIUM, chromiumMissing } from './browser.ts';

interface DemoResult {
  tta?: { source: number; adapted: number; batches: number; losses: number[] };
  lora?: { before: number; after: number; reloaded: number; losses: number[] };
  runtime?: { threads: number; crossOriginIsolated: boolean };
}

test('demo page: TTA on a corrupted stream and LoRA personalization run in Chromium, no console errors', { skip: chromiumMissing }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'refit-demo-page-'));
  const server = await serveDemo(await buildDemo(out));
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });
    const errors: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${server.url}?auto=1&batches=4&steps=8`);
    await page.waitForFunction(() => (globalThis as unknown as { demoDone?: boolean }).demoDone === true || document.getElementById('error')!.textContent !== '', undefined, { timeout: 180_000 });
    assert.equal(await page.textContent('#error'), '');
    const r = await page.evaluate(() => (globalThis as unknown as { demoResult: DemoResult }).demoResult);
    assert.ok(r.runtime!.crossOriginIsolated && r.runtime!.threads >= 1);
    const tta = r.tta!, lora = r.lora!;
    assert.equal(tta.batches, 4);
    assert.equal(tta.losses.length, 4);
    // gaussian_noise at severity 5: the source model is at 49% (models/fmnist-cnn.md); Tent adapts its BN on every batch.
    assert.ok(tta.adapted >= tta.source, `Tent ${tta.adapted} < source ${tta.source}`);
    assert.match((await page.textContent('#tta-source'))!, /^\d+\.\d%$/);
    assert.match((await page.textContent('#tta-adapted'))!, /^\d+\.\d%$/);
    assert.equal(await page.locator('#tta-table tbody tr').count(), 4);
    assert.equal(lora.losses.length, 8);
    const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
    assert.ok(mean(lora.losses.slice(-4)) < mean(lora.losses.slice(0, 4)), `LoRA loss did not fall: ${lora.losses.join(' ')}`);
    assert.ok(lora.after > lora.before, `held-out accuracy ${lora.before} → ${lora.after}`);
    assert.equal(lora.reloaded, lora.after, 'the adapter reloaded from IndexedDB predicts differently');
    assert.match((await page.textContent('#lora-status'))!, /saved to IndexedDB \(personal\)/);
    const shot = process.env.REFIT_SCREENSHOT ?? join(tmpdir(), 'refit-demo-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}; TTA source ${tta.source} Tent ${tta.adapted}; LoRA ${lora.before} → ${lora.after}, losses ${lora.losses.map((l) => l.toFixed(2)).join(' ')}`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.close();
    rmSync(out, { recursive: true, force: true });
  }
});
