// Dynamic evaluation (src/tta/dynamic-eval.ts) on a language model refit did not build, reading
// text whose topic shifts: bench/text/make_fortunes_lm.py's Llama-structured decoder, trained on
// twenty fortune categories and exported with past_key_values inputs, then streamed four unseen
// categories in turn. Next-token log-loss per token (nats) of each batch before its update: the
// online measure of Krause et al. Static = the model as exported.
//
//   npx tsx bench/text/dynamic-eval.ts --grid                 # choose lr and decay on the validation stream
//   npx tsx bench/text/dynamic-eval.ts --split test [--lr 1e-3] [--decay 0]
//   npx tsx bench/text/dynamic-eval.ts --split source          # the held-out source fortunes (no shift)
//   --tag <name>: write bench/results/text-dynamic-eval-<name>.* instead
//   --lora <rank>: adapt a LoRA of that rank on every linear layer (peft.lora) instead of every parameter
//   --q4: first quantize every weight MatMul to 4 bits (peft.quantizeNBits, blocks of 32: a model_q4.onnx)
//
// Batches of --batch (16) rows in stream order; 2 onnxruntime threads. Writes
// bench/results/text-dynamic-eval-<split|grid>.{json,md}.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, RefitModel } from '../../src/model.ts';
import { withTokenInputs } from '../../src/onnx/token-companions.ts';
import { DynamicEval, DYNAMIC_EVAL_DEFAULTS } from '../../src/tta/dynamic-eval.ts';
import { parseNpy } from '../../src/cli/data-files.ts';
import { scoreLogits } from '../../src/cli/common.ts';
import * as peft from '../../src/peft/index.ts';
import { tensor, type Tensor } from '../../src/onnx/tensor.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dir = join(root, 'bench/models/text');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : d; };
const grid = process.argv.includes('--grid');
const split = grid ? 'val' : arg('split', 'test');
const batch = Number(arg('batch', '16'));
const PAD = 0;
if (!existsSync(join(dir, 'fortunes-llama.onnx'))) throw new Error('run /usr/bin/python3 bench/text/make_fortunes_lm.py first (needs apt-get install fortunes)');

const file = split === 'source' ? 'lm-source-val.npy' : `lm-${split}-stream.npy`;
const a = parseNpy(new Uint8Array(readFileSync(join(dir, file))), file);
const [rows, T] = a.shape as [number, number];
const segments: { category: string; start: number; rows: number }[] = split === 'source'
  ? [{ category: 'source (held out)', start: 0, rows }]
  : JSON.parse(readFileSync(join(dir, `lm-${split}-stream-segments.json`), 'utf8'));

function batchAt(s: number): Tensor {
  const n = Math.min(batch, rows - s);
  return tensor('int64', [n, T], BigInt64Array.from({ length: n * T }, (_, i) => BigInt(a.values[s * T + i]!)));
}
/** Labelled positions of a batch: a next token that is not padding. */
function labelled(x: Tensor): number {
  let k = 0;
  const d = x.data as BigInt64Array;
  for (let i = 0; i < d.length; i++) if (i % T !== T - 1 && d[i + 1] !== BigInt(PAD)) k++;
  return k;
}
/** Mean next-token log-loss of `x` under logits [n, T, V]. */
function nll(z: Float32Array, x: Tensor): number {
  const d = x.data as BigInt64Array;
  const V = z.length / d.length;
  let sum = 0, k = 0;
  for (let i = 0; i < d.length; i++) {
    if (i % T === T - 1 || d[i + 1] === BigInt(PAD)) continue;
    sum += scoreLogits(z.subarray(i * V, (i + 1) * V), V, [Number(d[i + 1])]).lossSum;
    k++;
  }
  return sum / Math.max(1, k);
}

interface Run { label: string; lr?: number; decay?: number; perSegment: Record<string, number>; mean: number; msPerBatch: number }

async function run(model: RefitModel, opts: { lr: number; decay: number } | null): Promise<Run> {
  const ad = opts ? new DynamicEval(model, { ...opts, padToken: PAD, ...(params ? { params } : {}) }) : null;
  const sums = new Map<string, [number, number]>();
  let ms = 0, batches = 0;
  for (const seg of segments) {
    for (let s = seg.start; s < seg.start + seg.rows; s += batch) {
      const x = batchAt(s);
      const k = labelled(x);
      const t0 = performance.now();
      const loss = ad ? (await ad.predict(x)).info.loss! : nll((await model.run({ input_ids: x }, { outputs: ['logits'] }))['logits']!.data as Float32Array, x);
      ms += performance.now() - t0; batches++;
      const acc = sums.get(seg.category) ?? [0, 0];
      sums.set(seg.category, [acc[0] + loss * k, acc[1] + k]);
    }
  }
  await ad?.release();
  const perSegment = Object.fromEntries([...sums].map(([c, [s, k]]) => [c, s / k]));
  const total = [...sums.values()].reduce((acc, [s, k]) => [acc[0] + s, acc[1] + k], [0, 0]);
  return { label: `${q4 ? '4-bit: ' : ''}${opts ? `dynamic-eval${rank ? ` LoRA r${rank}` : ''} lr ${opts.lr} decay ${opts.decay}` : 'static'}`, ...(opts ?? {}), perSegment, mean: total[0] / total[1], msPerBatch: ms / batches };
}

const q4 = process.argv.includes('--q4');
const loaded = await loadModel(join(dir, 'fortunes-llama.onnx'), { threads: 2 });
const base = withTokenInputs(q4 ? new RefitModel(peft.quantizeNBits(loaded.ir, { blockSize: 32 }), { threads: 2 }) : loaded, { padToken: PAD });
const rank = Number(arg('lora', '0'));
// LoRA (B = 0 at the start: the same predictions as the base until it adapts), on every linear layer.
const model: RefitModel = rank ? peft.withAdapter(base, 'dynamic', peft.lora({ targets: (s) => Math.min(s.dIn, s.dOut) >= rank, rank, alpha: rank })) : base;
const params = rank ? (model as peft.PeftModel).trainableNames('dynamic') : undefined;
if (params) console.log(`LoRA rank ${rank}: ${params.reduce((a, p) => a + model.param(p).data.length, 0)} trainable values`);
const results: Run[] = [await run(model, null)];
const show = (r: Run) => console.log(`${r.label.padEnd(36)} mean ${r.mean.toFixed(4)} nats/token (${((r.mean / results[0]!.mean - 1) * 100).toFixed(2)} %) | ${Object.entries(r.perSegment).map(([c, v]) => `${c} ${v.toFixed(3)}`).join(', ')} | ${r.msPerBatch.toFixed(1)} ms/batch`);
show(results[0]!);
const settings = grid
  ? (rank ? [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1] : [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]).flatMap((lr) => (rank ? [0] : [0, 0.02, 0.1]).map((decay) => ({ lr, decay })))
  : [{ lr: Number(arg('lr', String(DYNAMIC_EVAL_DEFAULTS.lr))), decay: Number(arg('decay', String(DYNAMIC_EVAL_DEFAULTS.decay))) }];
for (const o of settings) { const r = await run(model, o); results.push(r); show(r); }
await model.release();
if (model !== base) await base.release();

const tag = arg('tag', grid ? 'grid' : split);
const cats = Object.keys(results[0]!.perSegment);
const lines = [
  `# Dynamic evaluation on fortunes text that shifts (${new Date().toISOString()})`, '',
  `\`npx tsx bench/text/dynamic-eval.ts ${process.argv.slice(2).join(' ')}\`: stream ${file} (${rows} fortunes, ${segments.length} segment${segments.length > 1 ? 's' : ''}), batches of ${batch}, 2 threads. Next-token log-loss in nats per token, each batch scored before its update; the change against the static model in brackets.`, '',
  `| run | ${cats.join(' | ')} | mean | change | ms / batch |`, `|---|${cats.map(() => '---:').join('|')}|---:|---:|---:|`,
  ...results.map((r) => `| ${r.label} | ${cats.map((c) => r.perSegment[c]!.toFixed(3)).join(' | ')} | ${r.mean.toFixed(4)} | ${((r.mean / results[0]!.mean - 1) * 100).toFixed(2)} % | ${r.msPerBatch.toFixed(1)} |`),
];
writeFileSync(join(root, `bench/results/text-dynamic-eval-${tag}.md`), lines.join('\n') + '\n');
writeFileSync(join(root, `bench/results/text-dynamic-eval-${tag}.json`), JSON.stringify({ date: new Date().toISOString(), file, batch, segments, results }, null, 1));
console.log(`wrote bench/results/text-dynamic-eval-${tag}.{md,json}`);
