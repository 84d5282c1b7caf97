// Continual benchmark (issue 11): the source model, every single TTA method, RoTTA, ROID, RDumb
// and refit's controller (label-free, and with 1% of labels revealed 5 batches late) on the
// shipped CNN or ViT, over the bundled Fashion-MNIST-C settings (bench/continual/lib.ts):
// continual, 10-round recurring, mixed, correlated labels (Dirichlet 0.1), gradual 1→5→1,
// batch 16 and long (15 corruptions × 10 rounds, order reshuffled per round), severity 5.
// Reports online error per segment, per round and mean, clean error right after the stream,
// ms per batch against the source model's (plain inference) in the same run, and the
// controller's level timeline. Hyperparameters: bench/results/continual-tuned-<model>.json
// when present (chosen on the validation stream by bench/continual/tune.ts), else defaults.
//
//   nice -n 15 npx tsx bench/continual.ts --model cnn --samples 256 [--settings continual,mixed]
//     [--methods source,tent,controller] [--resume] [--tag -smoke] [--round-samples 32] [--level-samples 64] [--clean 512]
//     [--overwrite]  start the tag's results again (without it, or --resume, an existing file is refused)
//     [--align]   every method with input alignment to the source set (inputAlign, src/tta/input-align.ts);
//                 its rows are named '<method>+align' (the controller's tuned options may hold it already)
//     [--align-classes]  the same with the class-mix gate (the source set's per-class statistics);
//                 rows '<method>+align-classes'
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { SETTINGS, METHODS, streamFor, testData, runMethod, runController, type Row, type Setting, type Sizes } from './continual/lib.ts';
import { loadSourceSet } from '../src/tta/index.ts';
import { renderMarkdown } from './continual/report.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
if (args.includes('--help')) { console.log(readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n')); process.exit(0); }
const which = opt('model', 'cnn') as 'cnn' | 'vit';
const samples = Number(opt('samples', '256'));
const sizes: Sizes = {
  samples,
  correlatedSamples: Number(opt('correlated-samples', String(samples * 4))),
  roundSamples: Number(opt('round-samples', String(Math.max(16, samples / 8)))),
  levelSamples: Number(opt('level-samples', String(Math.max(16, samples / 4)))),
  cleanSamples: Number(opt('clean', '512')),
};
const settings = opt('settings', SETTINGS.join(',')).split(',') as Setting[];
for (const s of settings) if (!(SETTINGS as readonly string[]).includes(s)) throw new Error(`unknown setting '${s}'; known: ${SETTINGS.join(', ')}`);
const methods = opt('methods', METHODS.join(',')).split(',');
for (const m of methods) if (!(METHODS as readonly string[]).includes(m)) throw new Error(`unknown method '${m}'; known: ${METHODS.join(', ')}`);
const modelPath = `models/fmnist-${which}.onnx`;
const tag = opt('tag', '');
const alignAs = args.includes('--align-classes') ? 'source-classes' : args.includes('--align') ? 'source' : null;
const rowName = (m: string) => (alignAs === 'source-classes' ? `${m}+align-classes` : alignAs ? `${m}+align` : m);
const jsonPath = `bench/results/continual-${which}${tag}.json`;
const tunedPath = `bench/results/continual-tuned-${which}.json`;
const tuned: Record<string, Record<string, unknown>> = existsSync(tunedPath) ? JSON.parse(readFileSync(tunedPath, 'utf8')).chosen : {};

interface Results { model: string; sizes: Sizes; rows: Row[]; tuned: string | null }
let results: Results = { model: which, sizes, rows: [], tuned: existsSync(tunedPath) ? tunedPath : null };
// A finished run's rows are not thrown away by the next run under the same tag: add to them with
// --resume, or start afresh with --overwrite (two session-8 part files were lost this way).
if (existsSync(jsonPath) && !args.includes('--resume') && !args.includes('--overwrite')) {
  throw new Error(`${jsonPath} exists: give --resume to add rows to it, --overwrite to start it again, or another --tag`);
}
if (args.includes('--resume') && existsSync(jsonPath)) {
  const old = JSON.parse(readFileSync(jsonPath, 'utf8')) as Results;
  if (JSON.stringify(old.sizes) !== JSON.stringify(sizes)) throw new Error(`--resume: ${jsonPath} was made with sizes ${JSON.stringify(old.sizes)}, not ${JSON.stringify(sizes)}`);
  results = old;
}
const save = () => {
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(jsonPath, JSON.stringify(results, null, 1));
  writeFileSync(`bench/results/continual-${which}${tag}.md`, renderMarkdown(results.model, results.sizes, results.rows, results.tuned));
};

const data = testData();
const source = loadSourceSet();
for (const setting of settings) {
  const stream = streamFor(setting, data, sizes);
  for (const method of methods) {
    if (results.rows.some((r) => r.setting === setting && r.method === rowName(method))) continue;
    const batchScale = stream.batchSize / 64;
    let row: Row;
    try {
    if (method.startsWith('controller')) {
      const o = { ...(tuned[method] ?? tuned.controller ?? {}), ...(alignAs ? { inputAlign: alignAs } : {}) } as Record<string, unknown>;
      // The controller's lr is given at batch 64 and scaled linearly with the batch (as Tent's).
      if (typeof o.lr === 'number') o.lr *= batchScale;
      row = await runController(modelPath, stream, data, sizes, o, source, method === 'controller+labels' ? 0.01 : 0, 5);
    } else {
      const o = { ...(tuned[method] ?? {}), ...(alignAs ? { inputAlign: alignAs } : {}) } as Record<string, unknown>;
      if (typeof o.lr === 'number') o.lr *= batchScale;
      row = await runMethod(modelPath, method, stream, data, sizes, o, source);
    }
    } catch (e) {
      console.log(`${which} ${setting} ${method}: not run: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    row.setting = setting;
    row.method = rowName(row.method);
    results.rows.push(row);
    console.log(`${which} ${setting} ${method}: mean ${(100 * row.mean).toFixed(1)} clean ${(100 * row.clean).toFixed(1)} ${row.ms.toFixed(1)} ms/batch ${row.seconds.toFixed(0)} s${row.levels ? ' levels ' + row.levels.slice(0, 80) : ''}`);
    save();
  }
}
save();
