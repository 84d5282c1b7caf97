// refit's TTA methods and continual controller on a classifier refit did not build, run as a user
// would: `refit adapt` on a torchvision ResNet-18 trained and exported by
// bench/train_foreign_fmnist.py (logits only, BatchNorm kept), over the continual Fashion-MNIST-C
// stream (15 corruptions at severity 5, the benchmark's order), written to .npy files first.
// Every method runs with the CLI's defaults; --source is the bundled 2000 training images.
//
//   /usr/bin/python3 bench/train_foreign_fmnist.py            # tmp/foreign-fmnist/resnet18-fmnist.onnx
//   npx tsx bench/foreign-continual.ts [--model PATH] [--samples 1000] [--methods source,bn-adapt,tent,rmt,continual,continual+align] [--tag T]
//   ('<method>+align' adds --input-align, '+noalign' --no-input-align, '+nodeep' --no-deep,
//   '+deepall' / '+deepnorm' --deep-params all / norm; the
//   controller with --source aligns by default since session 11, so 'continual' is 'continual+align')
//
// Writes bench/results/foreign-continual<T>.{json,md}: mean online error per method, the
// unadapted model's on the same batches, ms per batch (the CLI's), and the controller's levels.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { continualStream } from '../src/data/streams.ts';
import { loadSourceSet } from '../src/tta/source-data.ts';
import { npy } from '../test/helpers/cli.ts';

const { values: a } = parseArgs({ options: {
  model: { type: 'string', default: 'tmp/foreign-fmnist/resnet18-fmnist.onnx' },
  samples: { type: 'string', default: '1000' },
  methods: { type: 'string', default: 'source,bn-adapt,tent,eata,sar,cotta,rmt,lame,t3a,continual' },
  tag: { type: 'string', default: '' },
  work: { type: 'string', default: 'tmp/foreign-fmnist' },
} });
if (!existsSync(a.model!)) throw new Error(`${a.model} not found: run /usr/bin/python3 bench/train_foreign_fmnist.py first`);
const samples = Number(a.samples);
const work = a.work!;
mkdirSync(work, { recursive: true });
const bs = 64;

// The stream as files, as a user would hand it to the CLI.
const stream = continualStream(loadFashionMnist('test'), { severity: 5, batchSize: bs, seed: 0, batchesPerDomain: Math.ceil(samples / bs) });
const xs: Float32Array[] = [], ys: number[] = [];
for (const b of stream) { xs.push(b.x); ys.push(...b.y); }
const n = ys.length;
const x = new Float32Array(n * 784);
let off = 0;
for (const c of xs) { x.set(c, off); off += c.length; }
writeFileSync(join(work, 'stream.npy'), npy('<f4', [n, 1, 28, 28], x));
writeFileSync(join(work, 'stream-y.npy'), npy('<i8', [n], BigInt64Array.from(ys, BigInt)));
const src = loadSourceSet();
writeFileSync(join(work, 'source.npy'), npy('<f4', [src.n, 1, 28, 28], src.images.data as Float32Array));
writeFileSync(join(work, 'source-y.npy'), npy('<i8', [src.n], BigInt64Array.from(src.labels, BigInt)));

interface Row { method: string; error: number; sourceError: number; msPerBatch: number; seconds: number; levels?: Record<string, number>; deepLearner?: boolean; note: string }
const rows: Row[] = [];
for (const method of a.methods!.split(',')) {
  // '<method>+align': with --input-align (each batch aligned to the source set's statistics).
  const [name, ...flags] = method.split('+') as [string, ...string[]];
  const FLAGS: Record<string, string[]> = { align: ['--input-align'], noalign: ['--no-input-align'], nodeep: ['--no-deep'], deepall: ['--deep-params', 'all'], deepnorm: ['--deep-params', 'norm'] };
  const unknown = flags.find((f) => !FLAGS[f]);
  if (unknown) throw new Error(`${method}: unknown suffix '+${unknown}' (known: ${Object.keys(FLAGS).map((f) => `+${f}`).join(', ')})`);
  const args = ['bin/refit.js', 'adapt', a.model!, '--method', name, ...flags.flatMap((f) => FLAGS[f]!), '--stream', join(work, 'stream.npy'), '--labels', join(work, 'stream-y.npy'),
    '--source', join(work, 'source.npy'), '--source-labels', join(work, 'source-y.npy'), '--batch-size', String(bs), '--out', join(work, `${method}.csv`), '--json'];
  const t0 = performance.now();
  let out: string, note = '';
  try {
    out = execFileSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
  } catch (e) {
    const err = e as { stderr?: string };
    console.log(`${method}: failed: ${err.stderr?.trim()}`);
    rows.push({ method, error: NaN, sourceError: NaN, msPerBatch: NaN, seconds: (performance.now() - t0) / 1000, note: `failed: ${err.stderr?.trim().split('\n')[0]}` });
    continue;
  }
  const r = JSON.parse(out);
  rows.push({ method, error: 100 * r.error, sourceError: 100 * r.sourceError, msPerBatch: r.msPerBatch, seconds: r.seconds, ...(r.levels ? { levels: r.levels, deepLearner: r.deepLearner } : {}), note });
  console.log(`${method}: error ${(100 * r.error).toFixed(2)} % (unadapted ${(100 * r.sourceError).toFixed(2)}), ${r.msPerBatch.toFixed(1)} ms/batch, ${r.seconds.toFixed(0)} s${r.levels ? ` levels ${JSON.stringify(r.levels)}` : ''}`);
}

const meta = { model: a.model, samples: n, perDomain: Math.ceil(samples / bs) * bs, batchSize: bs, severity: 5, date: new Date().toISOString() };
writeFileSync(`bench/results/foreign-continual${a.tag}.json`, JSON.stringify({ ...meta, rows }, null, 1));
const md = [`# refit adapt on ${a.model} (continual Fashion-MNIST-C, severity 5, ${n} samples, batch ${bs})`, '',
  'Mean online error %, the CLI\'s defaults, --source the bundled 2000 training images; `npx tsx bench/foreign-continual.ts`.', '',
  '| method | error % | unadapted % | ms per batch | levels (continual) |', '|---|---:|---:|---:|---|',
  ...rows.map((r) => `| ${r.method} | ${r.error.toFixed(2)} | ${r.sourceError.toFixed(2)} | ${r.msPerBatch.toFixed(1)} | ${r.levels ? JSON.stringify(r.levels) : r.note} |`)];
writeFileSync(`bench/results/foreign-continual${a.tag}.md`, md.join('\n') + '\n');
console.log(readFileSync(`bench/results/foreign-continual${a.tag}.md`, 'utf8'));
