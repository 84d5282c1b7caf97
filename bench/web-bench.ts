// Issue 14's browser benchmark in one run: refit's steps in headless Chromium (refit/web,
// onnxruntime-web wasm, 1 and 2 threads) against Node (onnxruntime-node, equal threads), and the
// shipped ViT's step in TensorFlow.js wasm (in the page, and in Node as a second row), all
// alternating step by step (Node ort, page ort, page tfjs, Node tfjs, Node ort, …) so machine load
// hits them alike; medians, ratios, peak memory and session creation, written to
// bench/results/web-bench.{json,md}.
//
//   nice -n 10 npx tsx bench/web-bench.ts [--cases vit-lora,cnn-tent] [--batches 32,64] [--extra vit-full-b32,cnn-full-b32] [--threads 1,2] [--rounds 7] [--warmup 4] [--tfjs on|off]
//
// tfjs: the ViT written in tfjs ops (bench/web/tfjs-vit.ts) on the same weights and LoRA factors,
// its logits checked against onnxruntime's (≤ 1e-4 absolute) before anything is timed. tfjs-wasm
// has no convolution backward, so there is no tfjs CNN row.
//
// Memory, after the timed rounds, one step per configuration: Node, the step's peak RSS above the
// RSS before it (gc first; `echo 5 > /proc/self/clear_refs` resets the peak, as
// bench/memory-budget.ts; the run re-executes itself with --expose-gc and glibc's mmap threshold at
// 64 KiB so RSS follows live blocks); the page, the renderer's peak RSS the same way, and each
// runtime's wasm heap (WebAssembly.Memory sizes by creator; a heap only grows, so its size is its
// peak so far in that page).
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { median } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
if (!(globalThis as { gc?: unknown }).gc) {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit', cwd: root, env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '65536' } });
  process.exit(r.status ?? 1);
}
const refit = await import('../src/index.ts');
const { prepareBench, vitWeights, specName } = await import('./web/cases.ts');
type BenchSpec = import('./web/cases.ts').BenchSpec;
const { tfjsVit } = await import('./web/tfjs-vit.ts');
const { loadTfjsNode, TFJS_WASM, TFJS_WASM_DIR } = await import('./web/tfjs-node.ts');
const { buildWeb } = await import('../scripts/build-web.ts');
const { serve } = await import('../web/server.ts');

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1]! : d; };
const cases = arg('cases', 'vit-lora,cnn-tent').split(',');
const batches = arg('batches', '32,64').split(',').map(Number);
// Further cases at one batch each, e.g. vit-full-b32,cnn-full-b32 (bench/web-step.ts's).
const extra = arg('extra', 'vit-full-b32,cnn-full-b32').split(',').filter(Boolean);
const threadList = arg('threads', '1,2').split(',').map(Number);
const rounds = Number(arg('rounds', '7'));
const warmup = Number(arg('warmup', '4'));
const outBase = arg('out', join(root, 'bench/results/web-bench'));
// --tfjs off: no tfjs in the page or in Node (to see whether its wasm module, loaded in the same page, slows onnxruntime-web).
const withTfjs = arg('tfjs', 'on') !== 'off';
// --start on: the page starts onnxruntime-web at setup (useWebRuntime({ start: true }), timed apart as
// startMs), so its first session no longer holds the wasm's compile; off: as before.
const startRuntime = arg('start', 'on') !== 'off';
// --warm on: after the start, warmUp() compiles and runs one step of two tiny models (src/web/warm.ts),
// timed apart as warmMs, so the first model session meets warm code.
const warmRuntime = arg('warm', 'off') === 'on';
const MB = 1e6;
const TOL = 1e-4;

// ------------------------------------------------------------------ memory helpers
const status = (pid: number | 'self', key: 'VmRSS' | 'VmHWM') => {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
};
const resetPeak = (pid: number | 'self') => writeFileSync(`/proc/${pid}/clear_refs`, '5');
const gc = (globalThis as unknown as { gc: () => void }).gc;
/** Peak RSS of `pid` while fn runs, above its RSS just before. */
async function peakAbove(pid: number | 'self', fn: () => Promise<unknown>): Promise<number> {
  if (pid === 'self') gc();
  const rss = status(pid, 'VmRSS');
  resetPeak(pid);
  await fn();
  return status(pid, 'VmHWM') - rss;
}
function descendants(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try { const st = readFileSync(`/proc/${d}/stat`, 'utf8'); const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]); kids.set(ppid, [...(kids.get(ppid) ?? []), Number(d)]); } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const k of kids.get(p) ?? []) { out.push(k); walk(k); } };
  walk(pid);
  return out;
}
const rendererPid = () => {
  const r = descendants(process.pid).filter((p) => { try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('--type=renderer'); } catch { return false; } });
  if (!r.length) throw new Error('no Chromium renderer among this process\'s descendants');
  return r.reduce((a, p) => (status(p, 'VmRSS') > status(a, 'VmRSS') ? p : a));
};

// Tags every WebAssembly.Memory with the runtime that was starting when it appeared (globalThis.__memTag).
const PAGE_INIT = `(() => {
  const mems = (globalThis.__wasmMemories = []);
  const M = WebAssembly.Memory;
  const add = (m) => { if (!mems.some((e) => e.m === m)) mems.push({ m, tag: globalThis.__memTag || 'other' }); };
  WebAssembly.Memory = function (d) { const m = new M(d); add(m); return m; };
  WebAssembly.Memory.prototype = M.prototype;
  const scan = (r) => { const inst = r && (r.instance || r); try { for (const v of Object.values(inst.exports || {})) if (v instanceof M) add(v); } catch {} return r; };
  for (const k of ['instantiate', 'instantiateStreaming']) { const f = WebAssembly[k]; if (f) WebAssembly[k] = (...a) => f.apply(WebAssembly, a).then(scan); }
})();`;

// ------------------------------------------------------------------ tfjs in Node
const work = mkdtempSync(join(tmpdir(), 'refit-web-bench-'));
const tfn = await loadTfjsNode(join(work, 'node'));
const nodeTfThreads = tfn.getThreadsCount();
mkdirSync(join(work, 'page/tfjs'), { recursive: true });
for (const f of TFJS_WASM) copyFileSync(join(TFJS_WASM_DIR, f), join(work, 'page/tfjs', f));

// ------------------------------------------------------------------ page
await buildWeb({ entry: join(root, 'test/web/page-entry.ts'), outDir: join(work, 'page') });
await esbuild.build({ entryPoints: [join(here, 'web/page-entry.ts')], bundle: true, platform: 'browser', format: 'esm', outfile: join(work, 'page/web-bench.js'), logLevel: 'error', target: 'es2022' });
writeFileSync(join(work, 'page/index.html'), '<!doctype html><meta charset=utf-8><link rel=icon href="data:,"><title>web bench</title><script type=module src="/refit-web.js"></script><script type=module src="/web-bench.js"></script>\n');
const server = await serve({ mounts: { '/': join(work, 'page'), '/models/': join(root, 'models') } });
const { chromium } = await import('playwright-core');
type WB = { webBench: Record<string, (...a: unknown[]) => Promise<unknown>> };
async function openPage(extraArgs: string[] = []): Promise<{ browser: Browser; page: Page; errors: string[] }> {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', ...extraArgs] });
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.addInitScript(PAGE_INIT);
  await page.goto(server.url);
  await page.waitForFunction(() => 'refitTest' in globalThis && 'webBench' in globalThis);
  return { browser, page, errors };
}
const call = <R>(page: Page, fn: string, ...a: unknown[]) => page.evaluate(([f, args]) => (globalThis as unknown as WB).webBench[f as string]!(...(args as unknown[])), [fn, a] as const) as Promise<R>;

// ------------------------------------------------------------------ run
interface Row {
  case: string; threads: number; rounds: number;
  ms: Record<string, number[]>; median: Record<string, number>;
  sessionMs: { node: number; page: number; pageFirstInPage: boolean };
  firstStepMs: Record<string, number>;
  memory: {
    /** Session creation + first step: peak RSS above the RSS before (Node process / renderer), and wasm heap growth by runtime. */
    createPeak: Record<string, number>; wasmHeapGrowth: Record<string, number>;
    /** One step after the timed rounds: peak RSS above the RSS just before. */
    nodeStepPeak: Record<string, number>; rendererStepPeak: Record<string, number>; wasmHeapAfter: Record<string, number>;
  };
  tfjsCheck?: { page?: { maxAbs: number; maxRef: number }; node?: { maxAbs: number; maxRef: number }; trainable: number };
}
const rows: Row[] = [];
const pageInfo: Record<number, unknown> = {};
const bytes = (m: string) => new Uint8Array(readFileSync(join(root, `models/fmnist-${m}.onnx`)));
const specOf = (c: string, b: number): BenchSpec => { const [model, adapter] = c.split('-') as [BenchSpec['model'], BenchSpec['adapter']]; return { model, adapter, batch: b, seed: 0 }; };
const specs: BenchSpec[] = [...cases.flatMap((c) => batches.map((b) => specOf(c, b))), ...extra.map((e) => { const m = /^(.+)-b(\d+)$/.exec(e); if (!m) throw new Error(`--extra ${e}: expected model-adapter-bN`); return specOf(m[1]!, Number(m[2])); })];

try {
  for (const threads of threadList) {
    const { browser, page, errors } = await openPage(['--disable-gpu']);
    try {
      const ortInfo = await page.evaluate((t) => (globalThis as unknown as { refitTest: { setup(o: unknown): Promise<unknown> } }).refitTest.setup({ threads: t.threads, start: t.start, warm: t.warm }), { threads, start: startRuntime, warm: warmRuntime });
      const tfInfo = withTfjs ? await call(page, 'tfSetup', threads) : 'off';
      pageInfo[threads] = { ort: ortInfo, tfjs: tfInfo };
      console.log(`threads ${threads}: page ort ${JSON.stringify(ortInfo)}, tfjs ${JSON.stringify(tfInfo)}; Node tfjs-wasm threads ${nodeTfThreads}`);
      let firstInPage = true;
      for (const s of specs) {
        const name = specName(s);
        const pid = rendererPid();
        const createPeak: Record<string, number> = {}, wasmHeapGrowth: Record<string, number> = {};
        const heaps = () => call<Record<string, number>>(page, 'heaps');
        // Node onnxruntime
        gc();
        let base = status('self', 'VmRSS');
        resetPeak('self');
        const nb = await prepareBench(refit, bytes(s.model), s, { threads });
        let t = performance.now();
        await nb.step.run(nb.batch);
        const nodeFirst = performance.now() - t;
        createPeak.node = status('self', 'VmHWM') - base;
        const nodeSession = (await nb.step.compile({ x: { dtype: 'float32', dims: [...nb.batch.x!.dims] } })).graph.timings.session!;
        // page onnxruntime-web
        let h0 = await heaps();
        base = status(pid, 'VmRSS'); resetPeak(pid);
        const po = await call<{ id: number; firstMs: number; timings: Record<string, number> }>(page, 'ortOpen', s, { threads });
        createPeak.page = status(pid, 'VmHWM') - base;
        let h1 = await heaps();
        wasmHeapGrowth.page = (h1.ort ?? 0) - (h0.ort ?? 0);
        const runners: Record<string, () => Promise<number>> = {
          node: async () => { const t0 = performance.now(); await nb.step.run(nb.batch); return performance.now() - t0; },
          page: () => call<number>(page, 'time', po.id),
        };
        const firstStepMs: Record<string, number> = { node: nodeFirst, page: po.firstMs };
        const row: Partial<Row> = {};
        let tfPageId: number | undefined;
        let tfNode: ReturnType<typeof tfjsVit> | undefined, tfx: import('@tensorflow/tfjs-core').Tensor | undefined, tfy: import('@tensorflow/tfjs-core').Tensor1D | undefined;
        if (s.model === 'vit' && withTfjs) {
          h0 = h1; base = status(pid, 'VmRSS'); resetPeak(pid);
          const pt = await call<{ id: number; firstMs: number; check: { maxAbs: number; maxRef: number }; trainable: number }>(page, 'tfOpen', s);
          createPeak.pageTfjs = status(pid, 'VmHWM') - base;   // includes the onnxruntime-web forward of the logits check
          h1 = await heaps();
          wasmHeapGrowth.pageTfjs = (h1.tfjs ?? 0) - (h0.tfjs ?? 0);
          if (!(pt.check.maxAbs <= TOL)) throw new Error(`${name}: tfjs-wasm logits in the page differ from onnxruntime-web's by ${pt.check.maxAbs} (> ${TOL}); not timing a different computation`);
          tfPageId = pt.id;
          runners.pageTfjs = () => call<number>(page, 'time', pt.id);
          firstStepMs.pageTfjs = pt.firstMs;
          row.tfjsCheck = { page: pt.check, trainable: pt.trainable };
          if (threads === nodeTfThreads) {
            // tfjs in Node (tfjs-backend-wasm, one thread there): the same check against onnxruntime-node.
            const ref = (await nb.model.run({ x: nb.batch.x! }, { outputs: ['logits'] })).logits!.data as Float32Array;
            gc(); base = status('self', 'VmRSS'); resetPeak('self');
            const w = vitWeights(nb.model, s.adapter === 'lora' ? 'lora' : 'full');
            tfNode = tfjsVit(tfn.tf, w.weights, { train: s.adapter === 'lora' ? 'lora' : 'all', lora: w.lora, loraScale: w.loraScale });
            tfx = tfn.tf.tensor(nb.batch.x!.data as Float32Array, [s.batch, 1, 28, 28]);
            tfy = tfn.tf.tensor1d(Int32Array.from(nb.batch.y!.data as BigInt64Array, Number), 'int32');
            const lg = tfNode.forward(tfx); const got = lg.dataSync(); lg.dispose();
            let d = 0, m = 0; for (let i = 0; i < ref.length; i++) { d = Math.max(d, Math.abs(got[i]! - ref[i]!)); m = Math.max(m, Math.abs(ref[i]!)); }
            if (!(d <= TOL)) throw new Error(`${name}: tfjs-wasm logits in Node differ from onnxruntime-node's by ${d}`);
            row.tfjsCheck.node = { maxAbs: d, maxRef: m };
            const v = tfNode, x = tfx, y = tfy;
            t = performance.now(); await v.step(x, y); firstStepMs.nodeTfjs = performance.now() - t;
            createPeak.nodeTfjs = status('self', 'VmHWM') - base;
            runners.nodeTfjs = async () => { const t0 = performance.now(); await v.step(x, y); return performance.now() - t0; };
          }
        }
        // Warm-up (V8 tiers the page's wasm up over the first steps), then alternating rounds.
        for (let i = 0; i < warmup; i++) for (const r of Object.values(runners)) await r();
        const ms: Record<string, number[]> = Object.fromEntries(Object.keys(runners).map((k) => [k, []]));
        for (let r = 0; r < rounds; r++) for (const [k, fn] of Object.entries(runners)) ms[k]!.push(await fn());
        const med = Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, median(v)]));
        // Memory: one more step each, alone.
        const nodeStepPeak: Record<string, number> = {}, rendererStepPeak: Record<string, number> = {};
        nodeStepPeak.node = await peakAbove('self', runners.node!);
        rendererStepPeak.page = await peakAbove(pid, runners.page!);
        if (runners.pageTfjs) rendererStepPeak.pageTfjs = await peakAbove(pid, runners.pageTfjs);
        if (runners.nodeTfjs) nodeStepPeak.nodeTfjs = await peakAbove('self', runners.nodeTfjs);
        const wasmHeapAfter = await call<Record<string, number>>(page, 'heaps');
        Object.assign(row, { case: name, threads, rounds, ms, median: med, sessionMs: { node: nodeSession, page: po.timings.session!, pageFirstInPage: firstInPage }, firstStepMs, memory: { createPeak, wasmHeapGrowth, nodeStepPeak, rendererStepPeak, wasmHeapAfter } });
        rows.push(row as Row);
        firstInPage = false;
        const ratio = (a: string, b: string) => (med[a] && med[b] ? (med[a]! / med[b]!).toFixed(2) : '–');
        console.log(`${name} threads ${threads}: ${Object.entries(med).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')} ms; page/node ${ratio('page', 'node')}` +
          (med.pageTfjs ? `, pageTfjs/page ${ratio('pageTfjs', 'page')}` : '') + (med.nodeTfjs ? `, nodeTfjs/node ${ratio('nodeTfjs', 'node')}` : '') +
          `; session node ${nodeSession.toFixed(0)} / page ${po.timings.session!.toFixed(0)} ms${firstInPage ? '' : ''}; tfjs check ${JSON.stringify(row.tfjsCheck ?? null)}`);
        console.log(`  rounds ${Object.entries(ms).map(([k, v]) => `${k} ${v.map((x) => x.toFixed(0)).join(' ')}`).join(' | ')}`);
        const mbs = (o: Record<string, number>) => JSON.stringify(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, +(v / MB).toFixed(1)])));
        console.log(`  memory MB: creation + first step peak ${mbs(createPeak)}, wasm heap growth ${mbs(wasmHeapGrowth)}`);
        console.log(`  memory MB: node step peak ${JSON.stringify(Object.fromEntries(Object.entries(nodeStepPeak).map(([k, v]) => [k, +(v / MB).toFixed(1)])))}, renderer step peak ${JSON.stringify(Object.fromEntries(Object.entries(rendererStepPeak).map(([k, v]) => [k, +(v / MB).toFixed(1)])))}, wasm heaps ${JSON.stringify(Object.fromEntries(Object.entries(wasmHeapAfter).map(([k, v]) => [k, +(v / MB).toFixed(1)])))}`);
        await nb.step.release();
        await call(page, 'close', po.id);
        if (tfPageId !== undefined) await call(page, 'close', tfPageId);
        tfNode?.dispose(); tfx?.dispose(); tfy?.dispose();
      }
      if (errors.length) console.log(`page errors: ${errors.join('\n')}`);
    } finally {
      await browser.close();
    }
  }
  // WebGPU: what the browser offers here.
  let webgpu: Record<string, unknown>;
  {
    const { browser, page } = await openPage(['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader']);
    try {
      webgpu = await call<Record<string, unknown>>(page, 'webgpu');
      if (webgpu.available && (webgpu.isFallbackAdapter || /swiftshader/i.test(JSON.stringify(webgpu.info ?? {}))))
        webgpu.skipped = 'the only adapter is SwiftShader\'s software fallback (about 16 s per CNN step in the first try, and wrong grouped-convolution outputs, docs/web.md): not timed';
      else if (!webgpu.available) webgpu.skipped = `no WebGPU adapter: ${webgpu.reason}`;
      console.log(`WebGPU: ${JSON.stringify(webgpu)}`);
    } finally { await browser.close(); }
  }
  const date = new Date().toISOString();
  writeFileSync(`${outBase}.json`, JSON.stringify({ date, command: `npx tsx bench/web-bench.ts ${process.argv.slice(2).join(' ')}`.trim(), warmup, rounds, pageInfo, nodeTfjsThreads: nodeTfThreads, webgpu, rows }, null, 1));
  writeFileSync(`${outBase}.md`, markdown(rows, webgpu, date));
  console.log(`wrote ${outBase}.json and .md`);
} finally {
  await server.close();
  rmSync(work, { recursive: true, force: true });
}

function markdown(rs: Row[], webgpu: Record<string, unknown>, date: string): string {
  const f = (v: number | undefined, d = 1) => (v === undefined ? '–' : v.toFixed(d));
  const mb = (v: number | undefined) => (v === undefined ? '–' : (v / MB).toFixed(1));
  const r2 = (a?: number, b?: number) => (a && b ? (a / b).toFixed(2) : '–');
  const lines = [`# Browser benchmark (${date})`, '', `\`npx tsx bench/web-bench.ts ${process.argv.slice(2).join(' ')}\`; ${warmup} warm-up steps each, then ${rounds} alternating rounds (Node ort, Chromium ort, Chromium tfjs, Node tfjs); ms per step (loss + gradients read back), median. MB = 10⁶ bytes.`, '',
    '| case | threads | Node ort | Chromium ort | Chromium / Node (target ≤ 1.5) | Chromium tfjs-wasm | tfjs / refit, Chromium (target ≥ 2) | Node tfjs-wasm (1 thread) | Node tfjs / Node ort | session creation Node / Chromium ms (target < 300) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|'];
  for (const r of rs) {
    const m = r.median;
    lines.push(`| ${r.case} | ${r.threads} | ${f(m.node)} | ${f(m.page)} | ${r2(m.page, m.node)} | ${f(m.pageTfjs)} | ${r2(m.pageTfjs, m.page)} | ${f(m.nodeTfjs)} | ${r2(m.nodeTfjs, m.node)} | ${f(r.sessionMs.node, 0)} / ${f(r.sessionMs.page, 0)}${r.sessionMs.pageFirstInPage ? ' (first in page)' : ''} |`);
  }
  const starts = Object.entries(pageInfo).map(([t, i]) => [t, (i as { ort?: { startMs?: number } }).ort?.startMs] as const).filter(([, ms]) => ms !== undefined);
  if (starts.length) lines.push('', `onnxruntime-web started at page setup (useWebRuntime({ start: true }), once per page, before any model): ${starts.map(([t, ms]) => `${t} thread${t === '1' ? '' : 's'} ${f(ms, 0)} ms`).join(', ')}; the sessions above exclude it.`);
  const warms = Object.entries(pageInfo).map(([t, i]) => [t, (i as { ort?: { warmMs?: number } }).ort?.warmMs] as const).filter(([, ms]) => ms !== undefined);
  if (warms.length) lines.push('', `warmUp() after the start (one step of two tiny models, src/web/warm.ts, once per page, before any model): ${warms.map(([t, ms]) => `${t} thread${t === '1' ? '' : 's'} ${f(ms, 0)} ms`).join(', ')}; the sessions above exclude it.`);
  lines.push('', 'Memory (MB): creation = peak RSS above the RSS before, from loading the model to the end of the first step (renderer for Chromium); heap growth = that runtime\'s wasm heap over the same span; step = one step after the timed rounds, peak RSS above the RSS before it; heap after = the runtime\'s wasm heap after it (a heap only grows: the largest configuration so far in that page).', '',
    '| case | threads | Node ort: creation / step | Chromium ort: creation / heap growth / step / heap after | Chromium tfjs: creation / heap growth / step / heap after | Node tfjs: creation / step |',
    '|---|---:|---|---|---|---|');
  for (const r of rs) {
    const c = r.memory.createPeak, g = r.memory.wasmHeapGrowth, n = r.memory.nodeStepPeak, p = r.memory.rendererStepPeak, h = r.memory.wasmHeapAfter;
    lines.push(`| ${r.case} | ${r.threads} | ${mb(c.node)} / ${mb(n.node)} | ${mb(c.page)} / ${mb(g.page)} / ${mb(p.page)} / ${mb(h.ort)} | ${c.pageTfjs === undefined ? '–' : `${mb(c.pageTfjs)} / ${mb(g.pageTfjs)} / ${mb(p.pageTfjs)} / ${mb(h.tfjs)}`} | ${c.nodeTfjs === undefined ? '–' : `${mb(c.nodeTfjs)} / ${mb(n.nodeTfjs)}`} |`);
  }
  lines.push('', `tfjs logits against onnxruntime's (max abs difference): ${rs.filter((r) => r.tfjsCheck).map((r) => `${r.case} t${r.threads} page ${r.tfjsCheck!.page?.maxAbs.toExponential(1)}${r.tfjsCheck!.node ? `, Node ${r.tfjsCheck!.node.maxAbs.toExponential(1)}` : ''}`).join('; ')}.`, '', `WebGPU: ${JSON.stringify(webgpu)}`, '');
  return lines.join('\n');
}
