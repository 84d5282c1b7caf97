// BN-adapt on a detector users deploy (YOLOv8n's layout at full width, 640×640, exported by
// bench/detector_bn_adapt.py as `yolo export dynamic=True opset=12` writes it) against PyTorch's
// BN-adapt on the same weights and batch, in one run: ms of plain inference and of BN-adapt on
// each side, BN-adapt over inference (issue 12's target: ≤ 1.3), and refit's adapted output
// against PyTorch's.
//
//   npx tsx bench/detector-bn-adapt.ts [--batch 4] [--size 640] [--reps 5] [--out bench/results/detector-bn-adapt]
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model.ts';
import { createAdapter } from '../src/tta/index.ts';
import { savedTensor } from './parity.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const dir = join(root, 'tmp', 'detector');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const batch = arg('batch', '4'), size = arg('size', '640'), reps = Number(arg('reps', '5'));
const out = arg('out', join(root, 'bench/results/detector-bn-adapt'));
const THREADS = 2;

const python = (...args: string[]) => {
  const r = spawnSync('/usr/bin/python3', [join(here, 'detector_bn_adapt.py'), '--out', dir, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`detector_bn_adapt.py failed (Debian: apt-get install python3-torch python3-onnx):\n${r.stderr}`);
  return r.stdout;
};
python('--export', '--batch', batch, '--size', size);
const py = { stdout: python('--threads', String(THREADS), '--reps', String(reps)) };
const torch = JSON.parse(py.stdout.trim().split('\n').pop()!) as { params: number; infer_ms: number; bn_adapt_ms: number; peak_rss_mb: number };

const median = async (f: () => Promise<unknown>) => {
  await f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) { const t = performance.now(); await f(); ts.push(performance.now() - t); }
  return ts.sort((a, b) => a - b)[ts.length >> 1]!;
};
const x = savedTensor(dir, 'x.npy');
const want = savedTensor(dir, 'bn_adapt.npy').data as Float32Array;
const model = await loadModel(join(dir, 'yolov8n.onnx'), { threads: THREADS });
const infer = await median(() => model.run({ images: x }));
const adapter = createAdapter(model, 'bn-adapt');
const t0 = performance.now();
const got = (await adapter.predict(x)).logits.data as Float32Array;
const first = performance.now() - t0;
const bn = await median(() => adapter.predict(x));
let d = 0, n = 0;
for (let i = 0; i < want.length; i++) { d += (got[i]! - want[i]!) ** 2; n += want[i]! ** 2; }
const rel = Math.sqrt(d / n);
const rss = process.resourceUsage().maxRSS / 1024;

const lines = [`# BN-adapt on a detector: YOLOv8n's layout, ${size}×${size}, batch ${batch} (${new Date().toISOString()})`, '',
  `\`npx tsx bench/detector-bn-adapt.ts ${process.argv.slice(2).join(' ')}\`: ${torch.params.toLocaleString('en-US')} parameters (random weights, calibrated BatchNorm statistics), ${THREADS} threads each, median of ${reps} after one warm-up; PyTorch ${(torch as unknown as { torch: string }).torch} (bench/detector_bn_adapt.py, same weights and batch) then refit, one after the other in one run.`, '',
  '| | plain inference ms | BN-adapt ms | BN-adapt / inference | peak RSS MB |', '|---|---:|---:|---:|---:|',
  `| PyTorch | ${torch.infer_ms.toFixed(1)} | ${torch.bn_adapt_ms.toFixed(1)} | ${(torch.bn_adapt_ms / torch.infer_ms).toFixed(2)} | ${torch.peak_rss_mb.toFixed(0)} |`,
  `| refit | ${infer.toFixed(1)} | ${bn.toFixed(1)} (first call ${first.toFixed(0)}) | ${(bn / infer).toFixed(2)} | ${rss.toFixed(0)} |`,
  `| refit / PyTorch | ${(infer / torch.infer_ms).toFixed(2)} | ${(bn / torch.bn_adapt_ms).toFixed(2)} | | ${(rss / torch.peak_rss_mb).toFixed(2)} |`, '',
  `refit's BN-adapted output against PyTorch's: relative error ${rel.toExponential(1)}.`];
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), batch: Number(batch), size: Number(size), torch, refit: { infer_ms: infer, bn_adapt_ms: bn, first_ms: first, peak_rss_mb: rss }, relativeError: rel }, null, 1));
console.log(lines.join('\n'));
