// Test-time adaptation and the continual controller on a text classifier under shift: the
// fortunes BERT of make_fortunes.py (real sentences, six categories) on a stream of its split,
// clean, then typos, leetspeak, dropped words and shuffled word order at severity 5, each segment
// the whole split in a seeded order. Every method runs on the same stream from the same model:
//
//   npx tsx bench/text/fortunes-tta.ts [--split val|test] [--methods source,tent,…] [--options '{"tent":{"lr":0.001}}'] [--calibrate] [--tag=-x]
//
// --calibrate: in-distribution fortunes (1000 of the training split) set the controller's entropy
// reference (calibrate) and EATA's Fisher (fisherData), as refit adapt's --source does for images.
//
// Methods: source, tent, eata, sar, lame, t3a (the token methods), continual (the controller with
// the options refit adapt runs, recommendedControllerOptions, label-free), continual+labels (the
// same, told 1 % of the labels 5 batches late, as issue 11's label regime). Choose options on
// `--split val` (the validation split, corrupted with other seeds); report `--split test`.
// Results: bench/results/text-fortunes-<split><tag>.{md,json}.
import { writeFileSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadModel } from '../../src/model.ts';
import { withTokenInputs, vocabularySize } from '../../src/onnx/token-companions.ts';
import { tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { readTokenIds } from '../../src/cli/token-inputs.ts';
import { readLabels } from '../../src/cli/data-files.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { recommendedControllerOptions } from '../../src/continual/recommended.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';
import { Rng } from '../../src/util/rng.ts';

const { values: args } = parseArgs({ options: { split: { type: 'string', default: 'test' }, methods: { type: 'string' }, options: { type: 'string', default: '{}' }, tag: { type: 'string', default: '' }, batch: { type: 'string', default: '64' }, calibrate: { type: 'boolean', default: false } } });
const dir = new URL('../models/text/', import.meta.url).pathname;
if (!existsSync(`${dir}fortunes-bert.onnx`)) throw new Error(`${dir}fortunes-bert.onnx is missing: run /usr/bin/python3 bench/text/make_fortunes.py first`);
const split = args.split!;
const SEGMENTS = ['clean', 'typo', 'leet', 'drop', 'shuffle'];
const B = Number(args.batch);
const PAD = 0;
const methods = (args.methods ?? 'source,tent,eata,sar,lame,t3a,continual,continual+labels').split(',');
const perMethod = JSON.parse(args.options!) as Record<string, Record<string, unknown>>;

const base = await loadModel(`${dir}fortunes-bert.onnx`, { threads: 2 });
const ids = withTokenInputs(base, { padToken: PAD });
const withFeatures = ids.withFeatures({ logits: 'logits' });
const vocab = vocabularySize(ids, 'input_ids');
const stream = readTokenIds(`${dir}${split}-stream.npy`, vocab);
const labels = readLabels(`${dir}${split}-stream-labels.npy`);
const perSegment = stream.n / SEGMENTS.length;
const C = 6;

// --calibrate: the first 1000 training fortunes (make_fortunes.py's train-clean.npy), in batches of B.
const train = readTokenIds(`${dir}train-clean.npy`, vocab);
const calibrationIds = tensor('int64', [train.n, train.length], BigInt64Array.from(Array.from(train.values, (v) => BigInt(v))));
const calibration = args.calibrate
  ? Array.from({ length: Math.ceil(train.n / B) }, (_, b) => {
    const n = Math.min(B, train.n - b * B), L = train.length;
    return tensor('int64', [n, L], (calibrationIds.data as BigInt64Array).slice(b * B * L, (b * B + n) * L));
  })
  : null;

function batchAt(start: number, end: number): Tensor {
  const L = stream.length;
  return tensor('int64', [end - start, L], BigInt64Array.from({ length: (end - start) * L }, (_, k) => BigInt(stream.values[start * L + k]!)));
}

interface Row { method: string; options: Record<string, unknown>; mean: number; segments: number[]; msPerBatch: number; levels?: Record<number, number> }

async function run(method: string): Promise<Row> {
  const opts = perMethod[method] ?? {};
  const wrong = new Uint8Array(stream.n);
  const levels: Record<number, number> = {};
  let ms = 0, batches = 0;
  const record = (start: number, probsOrLogits: Float32Array) => {
    const pred = argmaxRows(probsOrLogits, C);
    pred.forEach((p, i) => { wrong[start + i] = p === labels[start + i] ? 0 : 1; });
  };
  if (method.startsWith('continual')) {
    // An option given as null is left out (e.g. '{"continual":{"debias":null}}').
    const merged: Record<string, unknown> = { ...recommendedControllerOptions({ logits: 'logits', embedding: 'features' }), padToken: PAD, ...opts };
    for (const k of Object.keys(merged)) if (merged[k] === null) delete merged[k];
    const c = new ContinualController(withFeatures, merged);
    // --calibrate: the entropy reference from in-distribution fortunes instead of the stream's first batches.
    if (calibration) await c.calibrate(calibration);
    // 1 % of the labels, 5 batches late (bench/continual/lib.ts's regime): seeded choice of samples.
    const reveal = method === 'continual+labels' ? new Rng(5) : null;
    const waiting: { due: number; ids: string[]; labels: number[] }[] = [];
    for (let s = 0, b = 0; s < stream.n; s += B, b++) {
      const e = Math.min(s + B, stream.n);
      const t0 = performance.now();
      const r = await c.predict(batchAt(s, e));
      ms += performance.now() - t0; batches++;
      record(s, r.probs);
      levels[r.level] = (levels[r.level] ?? 0) + 1;
      if (reveal) {
        const picked = r.ids.map((id, i) => [id, labels[s + i]!] as const).filter(() => reveal.next() < 0.01);
        if (picked.length) waiting.push({ due: b + 5, ids: picked.map((p) => p[0]), labels: picked.map((p) => p[1]) });
        while (waiting.length && waiting[0]!.due <= b) { const w = waiting.shift()!; await c.feedback(w.ids, w.labels); }
      }
    }
    await c.release();
  } else {
    const model = method === 'lame' || method === 't3a' ? withFeatures : ids;
    const a = createAdapter(model, method, { ...(calibration && method === 'eata' ? { fisherData: calibrationIds } : {}), ...opts });
    for (let s = 0; s < stream.n; s += B) {
      const e = Math.min(s + B, stream.n);
      const t0 = performance.now();
      const r = await a.predict(batchAt(s, e));
      ms += performance.now() - t0; batches++;
      record(s, r.logits.data as Float32Array);
    }
    await a.release();
  }
  const segments = SEGMENTS.map((_, k) => wrong.subarray(k * perSegment, (k + 1) * perSegment).reduce((x, y) => x + y, 0) / perSegment);
  return { method, options: opts, mean: wrong.reduce((x, y) => x + y, 0) / stream.n, segments, msPerBatch: ms / batches, ...(method.startsWith('continual') ? { levels } : {}) };
}

const rows: Row[] = [];
for (const m of methods) {
  const row = await run(m);
  rows.push(row);
  console.log(`${m.padEnd(17)} mean ${(100 * row.mean).toFixed(2)}  ${SEGMENTS.map((s, k) => `${s} ${(100 * row.segments[k]!).toFixed(1)}`).join('  ')}  ${row.msPerBatch.toFixed(1)} ms/batch${row.levels ? `  levels ${JSON.stringify(row.levels)}` : ''}`);
}
const pct = (v: number) => (100 * v).toFixed(2);
const md = [
  `# Text that shifts: the fortunes BERT (${split} split)`,
  '',
  `Made by \`npx tsx bench/text/fortunes-tta.ts --split ${split}${args.methods ? ` --methods ${args.methods}` : ''}${args.options !== '{}' ? ` --options '${args.options}'` : ''}${args.calibrate ? ' --calibrate' : ''}\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (2 onnxruntime threads, batch ${B}).`,
  `Stream: the ${split} split (${perSegment} fortunes) clean, then under each corruption at severity 5, in that order (bench/text/make_fortunes.py). Online error %, per segment and mean.`,
  '',
  `| method | options | mean | ${SEGMENTS.join(' | ')} | ms per batch |`,
  `|---|---|---:|${SEGMENTS.map(() => '---:').join('|')}|---:|`,
  ...rows.map((r) => `| ${r.method} | ${Object.keys(r.options).length ? `\`${JSON.stringify(r.options)}\`` : 'defaults'} | ${pct(r.mean)} | ${r.segments.map(pct).join(' | ')} | ${r.msPerBatch.toFixed(1)} |`),
  '',
  ...rows.filter((r) => r.levels).map((r) => `- ${r.method}: batches per controller level ${JSON.stringify(r.levels)}`),
].join('\n');
const out = `bench/results/text-fortunes-${split}${args.tag}`;
writeFileSync(`${out}.md`, md + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ split, batch: B, segments: SEGMENTS, rows }, null, 1) + '\n');
console.log(`wrote ${out}.md`);
await Promise.all([withFeatures.release(), ids.release(), base.release()]);
