// Accounted bytes (src/train/memory-accounting.ts) against measured memory, for the shipped CNN
// and ViT at batch 32 under three memory budgets (issue 14, part 4), in Node and in Chromium.
//
//   npx tsx bench/memory-budget.ts [--models cnn,vit] [--budgets 40e6,9e6,2e6] [--batch 32] [--where node,page] [--page-arena off|on] [--checkpoint] [--count saved|liveness]
//
// Each budget picks a rung (compileTrainStep({ memoryBudget })); then one AdamW Trainer step at a
// time is measured:
// - Node (one child process per configuration, onnxruntime-node, memory arena off, memory pattern
//   off as refit's default): peak RSS of the step above the RSS before it. Linux resets a process's
//   peak (VmHWM) to its current RSS on `echo 5 > /proc/PID/clear_refs`, so each step's own peak is
//   read from /proc/self/status after it; a GC runs before each (node --expose-gc).
// - Chromium (a fresh browser per configuration, refit/web on onnxruntime-web wasm): the renderer
//   process's peak RSS the same way (its pid found among the browser's children), onnxruntime-web's
//   wasm heap (WebAssembly.Memory sizes; the heap only grows, so its size after a step is its
//   peak), and performance.measureUserAgentSpecificMemory() after the step (Chromium started with
//   ForceEagerMeasureMemory so it answers at once).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1]! : d; };
const MB = 1e6;
// glibc's malloc keeps freed memory for reuse and raises its mmap threshold as blocks are freed, so
// RSS after a first step hides what later steps allocate again. A fixed 64 KiB threshold serves every
// larger block by mmap and returns it on free: RSS then follows the live large allocations.
const MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '65536' };
const STEPS = 5;

interface Job { model: 'cnn' | 'vit'; budget: number; batch: number; /** Page only: onnxruntime-web's CPU memory arena (Node runs with it off). */ arena?: boolean; /** memoryBudget.checkpoint */ checkpoint?: boolean; /** memoryBudget.count */ count?: 'saved' | 'liveness' }
interface Accounted { liveness?: number; livenessAt?: string; rung: string; trains: string; total: number; activations: number; input: number; trainable: number; gradients: number; optimizer: number; frozen: number }
interface Measured { before: number; stepPeaks: number[]; processPeak?: number; wasmHeap?: number[]; uaMemory?: number; jsHeap?: number }

const status = (pid: number | 'self', key: 'VmRSS' | 'VmHWM') => {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
};
const resetPeak = (pid: number | 'self') => writeFileSync(`/proc/${pid}/clear_refs`, '5');

function accounted(step: { budget: { rung: string; checkpoint?: boolean; trains: string; memory: { totalBytes: number; activationBytes: number; inputBytes: number; trainableBytes: number; gradientBytes: number; optimizerStateBytes: number; frozenBytes: number } } }): Accounted {
  const b = step.budget, m = b.memory;
  return { rung: b.checkpoint ? `${b.rung} (checkpointed)` : b.rung, trains: b.trains, total: m.totalBytes, activations: m.activationBytes, input: m.inputBytes, trainable: m.trainableBytes, gradients: m.gradientBytes, optimizer: m.optimizerStateBytes, frozen: m.frozenBytes };
}

// ------------------------------------------------------------------ Node child

async function nodeChild(job: Job): Promise<{ accounted: Accounted; measured: Measured }> {
  const refit = await import('../src/index.ts');
  const model = await refit.loadModel(join(root, `models/fmnist-${job.model}.onnx`), { memoryArena: false, threads: 2 });
  const step = await model.compileTrainStep({ loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', memoryBudget: { bytes: job.budget, batch: job.batch, checkpoint: !!job.checkpoint, ...(job.count ? { count: job.count } : {}) } });
  const { graph } = await step.compile({ x: { dtype: 'float32', dims: [job.batch, 1, 28, 28] } });
  const { livenessPeak } = await import('../src/train/memory-accounting.ts');
  const lp = await livenessPeak(graph);
  const trainer = new refit.Trainer(step, refit.optim.adamw({ lr: 1e-3 }));
  const rng = new refit.Rng(1);
  const batch = { x: refit.f32([job.batch, 1, 28, 28], Float32Array.from({ length: job.batch * 784 }, () => rng.uniform())), y: refit.i64([job.batch], Array.from({ length: job.batch }, () => rng.int(10))) };
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run the child with node --expose-gc');
  gc();
  const before = status('self', 'VmRSS');
  const stepPeaks: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    gc();
    const rss = status('self', 'VmRSS');
    resetPeak('self');
    await trainer.step(batch);
    stepPeaks.push(status('self', 'VmHWM') - rss);
  }
  return { accounted: { ...accounted(step), liveness: lp.peakBytes, livenessAt: `${lp.phase} ${lp.node}` }, measured: { before, stepPeaks, processPeak: process.resourceUsage().maxRSS * 1024 } };
}

// ------------------------------------------------------------------ page

function descendants(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      kids.set(ppid, [...(kids.get(ppid) ?? []), Number(d)]);
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const k of kids.get(p) ?? []) { out.push(k); walk(k); } };
  walk(pid);
  return out;
}

/** The renderer holding the page: among this process's Chromium descendants, the --type=renderer one with the largest RSS. */
function rendererPid(): number {
  const renderers = descendants(process.pid).filter((p) => { try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('--type=renderer'); } catch { return false; } });
  if (!renderers.length) throw new Error('no Chromium renderer process found among this process\'s descendants');
  return renderers.reduce((a, p) => (status(p, 'VmRSS') > status(a, 'VmRSS') ? p : a));
}

const PAGE_INIT = `(() => {
  // Record every WebAssembly.Memory onnxruntime-web creates (JS-created shared memory with threads; exported otherwise).
  const mems = (globalThis.__wasmMemories = []);
  const M = WebAssembly.Memory;
  WebAssembly.Memory = function (d) { const m = new M(d); mems.push(m); return m; };
  WebAssembly.Memory.prototype = M.prototype;
  const scan = (r) => { const inst = r && (r.instance || r); try { for (const v of Object.values(inst.exports || {})) if (v instanceof M && !mems.includes(v)) mems.push(v); } catch {} return r; };
  for (const k of ['instantiate', 'instantiateStreaming']) { const f = WebAssembly[k]; if (f) WebAssembly[k] = (...a) => f.apply(WebAssembly, a).then(scan); }
})();`;

async function pageRuns(jobs: Job[]): Promise<{ job: Job; accounted: Accounted; measured: Measured }[]> {
  const { buildWeb } = await import('../scripts/build-web.ts');
  const { serve } = await import('../web/server.ts');
  const { chromium } = await import('playwright-core');
  const out = mkdtempSync(join(tmpdir(), 'refit-mem-'));
  await buildWeb({ entry: join(root, 'test/web/page-entry.ts'), outDir: out });
  writeFileSync(join(out, 'index.html'), '<!doctype html><meta charset=utf-8><link rel=icon href="data:,"><title>memory</title><script type=module src="/refit-web.js"></script>\n');
  const server = await serve({ mounts: { '/': out, '/models/': join(root, 'models') } });
  const rows = [];
  try {
    for (const job of jobs) {
      const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--enable-blink-features=ForceEagerMeasureMemory', '--disable-background-networking', '--disable-component-update', '--no-first-run'] });
      try {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(String(e)));
        await page.addInitScript(PAGE_INIT);
        await page.goto(server.url);
        await page.waitForFunction(() => 'refitTest' in globalThis);
        const acc = await page.evaluate(`(async () => {
          const refit = globalThis.refitTest.refit, job = ${JSON.stringify(job)};
          await refit.useWebRuntime({ threads: 2 });
          const m = await refit.loadModelFrom('/models/fmnist-' + job.model + '.onnx', { memoryArena: !!job.arena });
          const step = await m.compileTrainStep({ loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', memoryBudget: { bytes: job.budget, batch: job.batch, checkpoint: !!job.checkpoint, ...(job.count ? { count: job.count } : {}) } });
          await step.compile({ x: { dtype: 'float32', dims: [job.batch, 1, 28, 28] } });
          const rng = new refit.Rng(1);
          const x = refit.f32([job.batch, 1, 28, 28], Float32Array.from({ length: job.batch * 784 }, () => rng.uniform()));
          const y = refit.i64([job.batch], Array.from({ length: job.batch }, () => rng.int(10)));
          const trainer = new refit.Trainer(step, refit.optim.adamw({ lr: 1e-3 }));
          globalThis.__w14 = async () => { await trainer.step({ x, y }); return globalThis.__wasmMemories.reduce((a, mm) => a + mm.buffer.byteLength, 0); };
          const b = step.budget, mm = b.memory;
          return { rung: b.checkpoint ? b.rung + ' (checkpointed)' : b.rung, trains: b.trains, total: mm.totalBytes, activations: mm.activationBytes, input: mm.inputBytes, trainable: mm.trainableBytes, gradients: mm.gradientBytes, optimizer: mm.optimizerStateBytes, frozen: mm.frozenBytes,
                   wasmBefore: globalThis.__wasmMemories.reduce((a, mm) => a + mm.buffer.byteLength, 0) };
        })()`) as Accounted & { wasmBefore: number };
        const pid = rendererPid();
        const before = status(pid, 'VmRSS');
        const stepPeaks: number[] = [];
        const wasmHeap = [acc.wasmBefore];
        for (let i = 0; i < STEPS; i++) {
          const rss = status(pid, 'VmRSS');
          resetPeak(pid);
          wasmHeap.push(await page.evaluate('globalThis.__w14()') as number);
          stepPeaks.push(status(pid, 'VmHWM') - rss);
        }
        const mem = await page.evaluate(`(async () => ({ ua: (await performance.measureUserAgentSpecificMemory()).bytes, js: performance.memory ? performance.memory.usedJSHeapSize : null }))()`) as { ua: number; js: number | null };
        if (errors.length) throw new Error(errors.join('\n'));
        const { wasmBefore: _, ...accounted } = acc;
        rows.push({ job, accounted, measured: { before, stepPeaks, wasmHeap, uaMemory: mem.ua, ...(mem.js !== null ? { jsHeap: mem.js } : {}) } });
        console.log(line(job.arena ? 'page (arena on)' : 'page', job, accounted, rows.at(-1)!.measured));
      } finally {
        await browser.close();
      }
    }
  } finally {
    await server.close();
    rmSync(out, { recursive: true, force: true });
  }
  return rows;
}

// ------------------------------------------------------------------ parent

const f = (b: number) => (b / MB).toFixed(2);
function line(where: string, job: Job, a: Accounted, m: Measured): string {
  return `${where} ${job.model} budget ${f(job.budget)} MB → ${a.rung}: accounted total ${f(a.total)} (activations ${f(a.activations)}, grads ${f(a.gradients)}, optimizer ${f(a.optimizer)}, trainable ${f(a.trainable)}, frozen ${f(a.frozen)}, input ${f(a.input)}) MB${a.liveness ? `, liveness peak ${f(a.liveness)} MB (${a.livenessAt})` : ''}; ` +
    `measured: RSS before ${f(m.before)} MB, step peak above RSS ${m.stepPeaks.map(f).join(' / ')} MB` +
    (m.wasmHeap ? `, wasm heap ${m.wasmHeap.map(f).join(' → ')} MB` : '') + (m.uaMemory !== undefined ? `, UA memory ${f(m.uaMemory)} MB` : '') + (m.processPeak ? `, process peak ${f(m.processPeak)} MB` : '');
}

async function main(): Promise<void> {
  if (process.argv.includes('--child')) {
    console.log('RESULT ' + JSON.stringify(await nodeChild(JSON.parse(arg('child', '{}')))));
    return;
  }
  const models = arg('models', 'cnn,vit').split(',') as Job['model'][];
  const budgets = arg('budgets', '40e6,9e6,2e6').split(',').map(Number);
  const batch = Number(arg('batch', '32'));
  const where = arg('where', 'node,page').split(',');
  // --checkpoint: memoryBudget.checkpoint (a rung that does not fit is tried checkpointed); results under *Checkpoint keys.
  const checkpoint = process.argv.includes('--checkpoint');
  const count = process.argv.includes('--count') ? arg('count', 'saved') as 'saved' | 'liveness' : undefined;
  const jobs = models.flatMap((model) => budgets.map((budget) => ({ model, budget, batch, checkpoint, ...(count ? { count } : {}) })));
  const suffix = checkpoint ? 'Checkpoint' : '';
  const outPath = arg('out', join(root, 'bench/results/memory-budget.json'));
  const prior = existsSync(outPath) ? JSON.parse(readFileSync(outPath, 'utf8')) : {};
  const result: Record<string, unknown> = { ...prior, date: new Date().toISOString(), batch, steps: STEPS };
  if (where.includes('node')) {
    const rows = [];
    for (const job of jobs) {
      const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(job)], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, ...MALLOC_ENV } });
      const l = r.stdout.split('\n').find((x) => x.startsWith('RESULT '));
      if (!l) throw new Error(`child ${JSON.stringify(job)} failed:\n${(r.stderr || r.stdout).slice(-1500)}`);
      const row = { job, ...JSON.parse(l.slice(7)) };
      rows.push(row);
      console.log(line('node', job, row.accounted, row.measured));
    }
    result[`node${suffix}`] = rows;
  }
  // --page-arena on: onnxruntime-web's memory arena on (its default); off by default, as in Node.
  const arenaOn = arg('page-arena', 'off') === 'on';
  if (where.includes('page')) result[`${arenaOn ? 'pageArenaOn' : 'page'}${suffix}`] = await pageRuns(jobs.map((j) => ({ ...j, arena: arenaOn })));
  writeFileSync(outPath, JSON.stringify(result, null, 1));
  console.log(`wrote ${outPath}`);
}

await main();
