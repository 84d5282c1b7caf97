// Train-step benchmark (issue "refit core"): refit vs plain onnxruntime inference vs PyTorch,
// same model, same batch, same threads, in one run. Each configuration runs in its own child
// process so its peak RSS is its own.
//
//   npx tsx bench/train-step.ts            # all configurations, writes bench/results/train-step.{json,md}
//   npx tsx bench/train-step.ts --quick    # batch 64 only, fewer iterations
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { loadavg } from 'node:os';
import { loadModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { median } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const THREADS = 2;

interface Config { model: 'cnn' | 'transformer'; batch: number; iters: number }
interface ChildResult { infer_ms: number; step_all_ms: number; step_norm_ms: number; compile_ms: number; peak_rss_mb: number }

function batchFor(model: string, n: number): Record<string, Tensor> {
  const rng = new Rng(1);
  const y = i64([n], Array.from({ length: n }, () => rng.int(10)));
  if (model === 'cnn') return { x: f32([n, 1, 28, 28], rng.fill(new Float32Array(n * 784))), y };
  return { tokens: i64([n, 32], Array.from({ length: n * 32 }, () => rng.int(1000))), y };
}

async function time(fn: () => Promise<unknown>, iters: number): Promise<number> {
  for (let i = 0; i < 3; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

/** Child: time one model at one batch size. */
async function child(c: Config): Promise<ChildResult> {
  const path = join(here, 'models', `${c.model}.onnx`);
  const model = await loadModel(path, { threads: THREADS });
  const batch = batchFor(c.model, c.batch);
  const { y, ...inputs } = batch;
  const infer_ms = await time(() => model.run(inputs), c.iters);
  const bn = c.model === 'cnn' ? 'train' : 'eval';
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  const t0 = performance.now();
  const all = new Trainer(model.compileTrainStep({ trainable: 'all', loss, batchNorm: bn }), optim.sgd({ lr: 1e-3 }));
  await all.step(batch);
  const compile_ms = performance.now() - t0;
  const step_all_ms = await time(() => all.step(batch), c.iters);
  const norm = new Trainer(model.compileTrainStep({ trainable: (n) => /(bn|norm|ln)[^.]*\.(weight|bias)$/.test(n), loss, batchNorm: bn }), optim.sgd({ lr: 1e-3 }));
  const step_norm_ms = await time(() => norm.step(batch), c.iters);
  return { infer_ms, step_all_ms, step_norm_ms, compile_ms, peak_rss_mb: process.resourceUsage().maxRSS / 1024 };
}

function torchTime(c: Config, params: 'all' | 'norm'): { step_ms: number; infer_ms: number; peak_rss_mb?: number } | null {
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return null;
  try {
    const out = execFileSync(py, [join(here, 'torch_step.py'), '--model', c.model, '--batch', String(c.batch), '--threads', String(THREADS), '--params', params, '--iters', String(c.iters), '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return JSON.parse(out.trim().split('\n').pop()!);
  } catch {
    return null;
  }
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    console.log(JSON.stringify(await child(JSON.parse(args[1]!))));
    return;
  }
  const quick = args.includes('--quick');
  const rows: Record<string, unknown>[] = [];
  for (const model of ['cnn', 'transformer'] as const) {
    for (const batch of quick ? [64] : [64, 128]) {
      const c: Config = { model, batch, iters: quick ? 10 : 30 };
      const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(c)], { encoding: 'utf8' });
      const r = JSON.parse(out.trim().split('\n').pop()!) as ChildResult;
      const ta = torchTime(c, 'all'), tn = torchTime(c, 'norm');
      const row = {
        model, batch, threads: THREADS, ...r,
        torch_step_all_ms: ta?.step_ms ?? null, torch_step_norm_ms: tn?.step_ms ?? null, torch_infer_ms: ta?.infer_ms ?? null,
        torch_peak_rss_mb: ta?.peak_rss_mb ?? null,
        step_over_infer: r.step_all_ms / r.infer_ms,
        refit_over_torch: ta ? r.step_all_ms / ta.step_ms : null,
        norm_over_full: r.step_norm_ms / r.step_all_ms,
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'train-step.json'), JSON.stringify({ date: new Date().toISOString(), threads: THREADS, rows }, null, 2));
  const f = (v: unknown, d = 1) => (typeof v === 'number' ? v.toFixed(d) : '–');
  const md = [
    '# Train-step benchmark', '',
    `Run: \`npx tsx bench/train-step.ts\` on ${new Date().toISOString().slice(0, 10)}, ${THREADS} threads for every engine, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')} (other jobs shared the 2 cores when it is above ~2). Times are medians in ms.`,
    'Targets: step ≤ 3× inference; refit step ≤ PyTorch step; norm-affine step cheaper than the full step.', '',
    '| model | batch | ORT inference | refit step (all) | refit step (norm) | PyTorch step (all) | PyTorch step (norm) | step / inference | refit / PyTorch | norm / full | peak RSS refit (MB) | peak RSS torch (MB) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.model} | ${r.batch} | ${f(r.infer_ms)} | ${f(r.step_all_ms)} | ${f(r.step_norm_ms)} | ${f(r.torch_step_all_ms)} | ${f(r.torch_step_norm_ms)} | ${f(r.step_over_infer, 2)} | ${f(r.refit_over_torch, 2)} | ${f(r.norm_over_full, 2)} | ${f(r.peak_rss_mb, 0)} | ${f(r.torch_peak_rss_mb, 0)} |`),
  ].join('\n');
  writeFileSync(join(here, 'results', 'train-step.md'), md + '\n');
  console.log(md);
}

await main();
