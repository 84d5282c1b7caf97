// Two onnxruntime-web graph optimization levels for the same step in one Chromium page, created one
// after the other and then timed alternating step by step (issue 14: is 'all', the default, worth its
// longer session creation in wasm?). Medians; B / A per case.
//
//   npx tsx bench/web-opt-ab.ts [--a all] [--b basic] [--cases vit-lora,cnn-tent] [--batches 32,64] [--extra vit-full-b32,cnn-full-b32] [--threads 1,2] [--rounds 15] [--warmup 3] [--out bench/results/web-opt-ab]
import * as esbuild from 'esbuild';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { quantile } from './stats.ts';
import { buildWeb } from '../scripts/build-web.ts';
import { serve } from '../web/server.ts';
import { specName, type BenchSpec } from './web/cases.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1]! : d; };
const levels = { a: arg('a', 'all'), b: arg('b', 'basic') };
const batches = arg('batches', '32,64').split(',').map(Number);
const specOf = (c: string, b: number): BenchSpec => { const [model, adapter] = c.split('-') as [BenchSpec['model'], BenchSpec['adapter']]; return { model, adapter, batch: b, seed: 0 }; };
const specs = [...arg('cases', 'vit-lora,cnn-tent').split(',').flatMap((c) => batches.map((b) => specOf(c, b))),
  ...arg('extra', 'vit-full-b32,cnn-full-b32').split(',').filter(Boolean).map((e) => { const m = /^(.+)-b(\d+)$/.exec(e)!; return specOf(m[1]!, Number(m[2])); })];
const rounds = Number(arg('rounds', '15')), warmup = Number(arg('warmup', '3'));
const out = arg('out', join(root, 'bench/results/web-opt-ab'));
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

const work = mkdtempSync(join(tmpdir(), 'refit-web-opt-'));
await buildWeb({ entry: join(root, 'test/web/page-entry.ts'), outDir: join(work, 'page') });
await esbuild.build({ entryPoints: [join(here, 'web/page-entry.ts')], bundle: true, platform: 'browser', format: 'esm', outfile: join(work, 'page/web-bench.js'), logLevel: 'error', target: 'es2022' });
writeFileSync(join(work, 'page/index.html'), '<!doctype html><meta charset=utf-8><link rel=icon href="data:,"><title>web opt a/b</title><script type=module src="/refit-web.js"></script><script type=module src="/web-bench.js"></script>\n');
const server = await serve({ mounts: { '/': join(work, 'page'), '/models/': join(root, 'models') } });
const { chromium } = await import('playwright-core');
type WB = { webBench: Record<string, (...a: unknown[]) => Promise<unknown>> };
const call = <R>(page: Page, fn: string, ...a: unknown[]) => page.evaluate(([f, args]) => (globalThis as unknown as WB).webBench[f as string]!(...(args as unknown[])), [fn, a] as const) as Promise<R>;

const rows: Record<string, unknown>[] = [];
const lines = [`# onnxruntime-web optimization levels in one page: A '${levels.a}' against B '${levels.b}'`, '',
  `\`npx tsx bench/web-opt-ab.ts ${process.argv.slice(2).join(' ')}\` (${new Date().toISOString()}); each case's two sessions created A then B, ${warmup} warm-up steps each, then ${rounds} rounds alternating A/B (B/A in odd rounds); ms per step, medians.`, '',
  '| case | threads | A ms | B ms | B / A | session creation A / B ms | load |', '|---|---:|---:|---:|---:|---|---|'];
try {
  for (const threads of arg('threads', '1,2').split(',').map(Number)) {
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'] });
    try {
      const page = await browser.newPage();
      await page.goto(server.url);
      await page.waitForFunction(() => 'refitTest' in globalThis && 'webBench' in globalThis);
      await page.evaluate((t) => (globalThis as unknown as { refitTest: { setup(o: unknown): Promise<unknown> } }).refitTest.setup({ threads: t, start: true }), threads);
      for (const s of specs) {
        const l0 = load();
        const a = await call<{ id: number; timings: Record<string, number> }>(page, 'ortOpen', s, { threads, optimization: levels.a });
        const b = await call<{ id: number; timings: Record<string, number> }>(page, 'ortOpen', s, { threads, optimization: levels.b });
        for (let i = 0; i < warmup; i++) { await call(page, 'time', a.id); await call(page, 'time', b.id); }
        const ms = { a: [] as number[], b: [] as number[] };
        for (let r = 0; r < rounds; r++) for (const k of (r % 2 ? ['b', 'a'] : ['a', 'b']) as ('a' | 'b')[]) ms[k].push(await call<number>(page, 'time', (k === 'a' ? a : b).id));
        await call(page, 'close', a.id); await call(page, 'close', b.id);
        const ma = quantile(ms.a, 0.5), mb = quantile(ms.b, 0.5);
        const row = { case: specName(s), threads, a: ma, b: mb, ratio: mb / ma, sessionA: a.timings.session, sessionB: b.timings.session, load: `${l0} → ${load()}`, ms };
        rows.push(row);
        lines.push(`| ${row.case} | ${threads} | ${ma.toFixed(1)} | ${mb.toFixed(1)} | ${(mb / ma).toFixed(2)} | ${a.timings.session!.toFixed(0)} / ${b.timings.session!.toFixed(0)} | ${row.load} |`);
        console.log(lines.at(-1));
      }
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
  rmSync(work, { recursive: true, force: true });
}
writeFileSync(`${out}.json`, JSON.stringify({ levels, rows }, null, 1));
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
console.log(`wrote ${out}.json and .md`);
