// The same compiled train step in Node (onnxruntime-node) and in headless Chromium (refit/web,
// onnxruntime-web wasm), timed alternately in one run (Node, page, Node, page, …) so machine load
// hits both alike; prints medians and the page/Node ratio per configuration.
//
//   npx tsx bench/web-step.ts --case cnn-full --batch 32 --threads 1,2 --opt all,extended --rounds 7
//
// Cases: cnn-full, cnn-lora, vit-full, vit-lora (test/web/cases.ts). --webgpu-build bundles
// onnxruntime-web's WebGPU-capable build (still run on wasm) instead of the wasm-only one. The page is served from
// 127.0.0.1 with COOP/COEP, so onnxruntime-web gets the threads asked for (one pool per page:
// each thread count gets its own page).
import { readFileSync } from 'node:fs';
import * as refit from '../src/index.ts';
import { prepare, batchOf, type CaseSpec } from '../test/web/cases.ts';
import { openTestPage } from '../test/web/browser.ts';
import { median } from './stats.ts';

const argOf = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1]! : d; };
const [model, adapter] = argOf('case', 'cnn-full').split('-') as [CaseSpec['model'], CaseSpec['adapter']];
const c: CaseSpec = { model, adapter, batch: Number(argOf('batch', '32')), seed: 0 };
const threadList = argOf('threads', '1,2').split(',').map(Number);
const opts = argOf('opt', 'all').split(',') as ('all' | 'extended' | 'basic')[];
const spinnings = argOf('spinning', 'false').split(',').map((v) => v === 'true');
const rounds = Number(argOf('rounds', '5'));
const warmup = Number(argOf('warmup', '6'));

const bytes = new Uint8Array(readFileSync(`models/fmnist-${c.model}.onnx`));
type T = { refitTest: { setup(o: unknown): Promise<{ threads: number }>; open(c: CaseSpec, s: unknown): Promise<{ id: number; firstMs: number; timings: Record<string, number> }>; time(id: number): Promise<number> } };
console.log(`${c.model}-${c.adapter} batch ${c.batch}, ${rounds} alternating rounds per configuration (ms per step, median)`);
for (const threads of threadList) {
  // One page per thread count: onnxruntime-web fixes its pool when the page's first session starts.
  const tp = await openTestPage(undefined, { webgpu: process.argv.includes('--webgpu-build') });
  const page = tp.page;
  try {
    const info = await page.evaluate((t) => (globalThis as unknown as T).refitTest.setup({ threads: t }), threads);
    // V8 first runs wasm from its baseline compiler and tiers up to optimized code in the
    // background: steps get faster over the first seconds. Warm up before timing anything.
    const warm = await page.evaluate(([cc]) => (globalThis as unknown as T).refitTest.open(cc as CaseSpec, {}), [c] as const);
    const warmMs: number[] = [];
    for (let i = 0; i < warmup; i++) warmMs.push(await page.evaluate((id) => (globalThis as unknown as T).refitTest.time(id), warm.id));
    console.log(`threads ${threads}: page warm-up steps ${warmMs.map((v) => v.toFixed(0)).join(' ')} ms (first step ${warm.firstMs.toFixed(0)} ms)`);
    for (const optimization of opts) for (const spinning of spinnings) {
      const session = { threads, optimization, spinning };
      const { step } = await prepare(refit, bytes, c, undefined, session);
      const batch = batchOf(refit, c);
      let t = performance.now();
      await step.run(batch);
      const nodeFirst = performance.now() - t;
      const nodeSession = (await step.compile({ x: { dtype: 'float32', dims: [...batch.x.dims] } })).graph.timings.session!;
      const web = await page.evaluate(([cc, s]) => (globalThis as unknown as T).refitTest.open(cc as CaseSpec, s), [c, session] as const);
      const n: number[] = [], w: number[] = [];
      for (let r = 0; r < rounds; r++) {
        t = performance.now();
        await step.run(batch);
        n.push(performance.now() - t);
        w.push(await page.evaluate((id) => (globalThis as unknown as T).refitTest.time(id), web.id));
      }
      await step.release();
      console.log(`threads ${threads} (page got ${info.threads}), optimization ${optimization}, spinning ${spinning}: Node ${median(n).toFixed(0)} ms, Chromium ${median(w).toFixed(0)} ms, ratio ${(median(w) / median(n)).toFixed(2)}; ` +
        `first step Node ${nodeFirst.toFixed(0)} / Chromium ${web.firstMs.toFixed(0)} ms, session creation Node ${nodeSession.toFixed(0)} / Chromium ${web.timings.session!.toFixed(0)} ms, shape probe Chromium ${web.timings.probe!.toFixed(0)} ms`);
      console.log(`  Node ${n.map((v) => v.toFixed(0)).join(' ')} | Chromium ${w.map((v) => v.toFixed(0)).join(' ')}`);
    }
  } finally {
    await tp.close();
  }
}
