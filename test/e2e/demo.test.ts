// End to end: `refit demo --quick` prints the table and writes an HTML report that renders in
// headless Chromium without console errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { METHODS, runDemo, type DemoOptions } from '../../src/cli/demo.ts';
import { CORRUPTIONS } from '../../src/data/corruptions/index.ts';
import { readmeBlock } from '../helpers/readme.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'refit-demo-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const report = join(dir, 'report.html');

// One batch of 16 per corruption keeps the run short (15 batches per method: each method's set-up
// and step, through the CLI). The methods whose set-up or stream costs seconds are left out to
// keep CI short: ROID (one step per count of kept samples), RoTTA (teacher and memory bank), RMT
// (a warm-up pass over the bundled set: 13 s), EATA (Fisher over the set: 6 s) and CoTTA
// (augmented passes: 5 s). Their streams run in test/tta/methods.test.ts and baselines.test.ts, the source data
// the demo gives them (sourceDataOptions) is checked in test/tta/mean-teacher.test.ts, and RMT on the
// shipped CNN with the bundled set runs through the CLI in test/e2e/cli-commands.test.ts (adapt --source).
const SLOW = new Set(['roid', 'rotta', 'rmt', 'eata', 'cotta']);
const DEMO_TESTED = METHODS.filter((m) => !SLOW.has(m));

test('refit demo --batches 1 prints a table of error per corruption and mean for every method but the slow set-ups', () => {
  const out = execFileSync(process.execPath, [join(root, 'bin/refit.js'), 'demo', '--batches', '1', '--batch-size', '16', '--methods', DEMO_TESTED.join(','), '--out', report], { encoding: 'utf8', cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = out.split('\n');
  const header = lines.find((l) => l.startsWith('method'));
  assert.ok(header, `no table header in:\n${out}`);
  assert.match(header, /gaussian.*spatter.*mean/);
  for (const m of DEMO_TESTED) {
    const row = lines.find((l) => l.startsWith(m.padEnd(10)));
    assert.ok(row, `no row for ${m}`);
    const nums = row.slice(10).trim().split(/\s+/).map(Number);
    // errors per corruption, mean, ms per batch after the first, first batch ms
    assert.equal(nums.length, CORRUPTIONS.length + 3, `row ${m}: ${row}`);
    for (const v of nums.slice(0, -2)) assert.ok(v >= 0 && v <= 100, `error ${v} out of range in ${row}`);
    for (const v of nums.slice(-2)) assert.ok(Number.isFinite(v) && v >= 0, `time ${v} in ${row}`);
  }
  // The shipped model is far better than chance on mild domains (jpeg_compression), so the
  // numbers are real predictions, not a placeholder.
  const source = lines.find((l) => l.startsWith('source'))!.slice(10).trim().split(/\s+/).map(Number);
  assert.ok(source[CORRUPTIONS.indexOf('jpeg_compression')]! < 50, `source error on jpeg_compression ${source[CORRUPTIONS.indexOf('jpeg_compression')]}`);
  assert.ok(existsSync(report));
});

// The README's demo block runs as written, each line in a fresh folder (relative --out paths land
// there); a line's output is checked as a table or, with --json, as JSON, and its report must exist.
// Every line must be --quick with --methods, so that the block stays a few seconds of CI.
test("README: the demo section's block runs as written (a table, the JSON, the report)", (t) => {
  const lines = readmeBlock('## `refit demo`');
  assert.ok(lines.length >= 2 && lines.some((l) => l.includes(' --json')) && lines.some((l) => !l.includes(' --json')), `the block shows a table run and a --json run:\n${lines.join('\n')}`);
  for (const line of lines) {
    assert.match(line, /^npx refit demo /, `a line in the demo block that is not a refit demo command: ${line}`);
    const args = line.slice('npx refit '.length).split(/\s+/);
    assert.ok(args.includes('--quick') && args.includes('--methods'), `each line of the block takes seconds (--quick, --methods …); longer runs belong in the prose: ${line}`);
    const opt = (name: string) => { const i = args.indexOf(name); return i < 0 ? undefined : args[i + 1]; };
    const methods = opt('--methods')!.split(',');
    const batchSize = Number(opt('--batch-size') ?? 64);
    const cwd = mkdtempSync(join(tmpdir(), 'refit-readme-demo-'));
    t.after(() => rmSync(cwd, { recursive: true, force: true }));
    const out = execFileSync(process.execPath, [join(root, 'bin/refit.js'), ...args], { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    if (args.includes('--json')) {
      const r = JSON.parse(out);
      assert.deepEqual(r.scores.map((s: { method: string }) => s.method), methods);
      assert.deepEqual(r.stream.domains, [...CORRUPTIONS]);
      assert.deepEqual([r.stream.severity, r.stream.batchSize, r.stream.batches], [5, batchSize, 3 * CORRUPTIONS.length]);
      for (const s of r.scores) {
        assert.equal(s.domains.length, CORRUPTIONS.length);
        assert.ok(s.meanError > 0 && s.meanError < 1 && s.firstBatchMs > 0 && s.msPerBatch > 0, JSON.stringify(s).slice(0, 300));
      }
    } else {
      const rows = out.split('\n');
      assert.match(rows.find((l) => l.startsWith('method')) ?? '', /gaussian.*spatter.*mean/, out);
      assert.match(out, new RegExp(`severity 5, batch ${batchSize};`));
      for (const m of methods) {
        const nums = rows.find((l) => l.startsWith(m.padEnd(10)))?.slice(10).trim().split(/\s+/).map(Number);
        assert.equal(nums?.length, CORRUPTIONS.length + 3, `row ${m} in:\n${out}`);
        for (const v of nums!.slice(0, -2)) assert.ok(v >= 0 && v <= 100, `error ${v} in row ${m}`);
      }
    }
    const report = join(cwd, opt('--out') ?? 'refit-demo-report.html');
    assert.match(readFileSync(report, 'utf8'), /<table>/, `${line}: no report at ${report}`);
    rmSync(cwd, { recursive: true, force: true });
  }
});

// One bad option through the CLI (its one-line error and exit status 1); the others through
// runDemo in this process, which is what the CLI calls, without a process start each.
test('bad demo input gets a clear error', async () => {
  let stderr = '', status = 0;
  try {
    execFileSync(process.execPath, [join(root, 'bin/refit.js'), 'demo', '--quick', '--methods', 'nope'], { encoding: 'utf8', cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    ({ stderr, status } = e as { stderr: string; status: number });
  }
  assert.equal(status, 1);
  assert.match(stderr, /unknown method 'nope'; known methods: source/);
  const bad = (o: DemoOptions, re: RegExp) => assert.rejects(runDemo({ quick: true, out: join(dir, 'never.html'), ...o }), re);
  await bad({ model: join(dir, 'missing.onnx') }, /model not found/);
  await bad({ severity: 9 }, /severity/i);
  await bad({ batches: 0 }, /--batches must be a positive integer, got 0/);
  await bad({ batches: 2, full: true }, /--batches and --full do not go together/);
  await bad({ model: join(root, 'test/fixtures/torch/mlp/model.onnx') }, /expected \[N, 1, 28, 28\]/);
  assert.ok(!existsSync(join(dir, 'never.html')), 'no report written');
});

test('the HTML report renders in headless Chromium with no console errors', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} not installed (.ci/run installs it)` }, async () => {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    const errors: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`file://${report}`);
    // error over the stream, the continual controller's levels, error per domain
    await page.waitForFunction(() => document.querySelectorAll('canvas').length === 3);
    // Chart.js drew something: the canvases are sized and not blank.
    const painted = await page.evaluate(() => [...document.querySelectorAll('canvas')].map((c) => {
      const ctx = (c as HTMLCanvasElement).getContext('2d')!;
      const d = ctx.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data;
      let ink = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) ink++;
      return ink;
    }));
    assert.ok(painted.every((ink) => ink > 1000), `canvases look blank: ${painted}`);
    if (process.env.REFIT_SCREENSHOT) await page.screenshot({ path: process.env.REFIT_SCREENSHOT, fullPage: true });
    assert.deepEqual(errors, []);
    assert.match(readFileSync(report, 'utf8'), /<table>/);
  } finally {
    await browser.close();
  }
});
