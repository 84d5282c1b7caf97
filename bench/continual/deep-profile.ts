// Where the controller's deep learner (RMT over every parameter, src/continual/deep-learner.ts)
// spends a batch: both batch kinds (a step batch and the batches between, predicted by student and
// teacher forwards), split into onnxruntime session runs (by session: the step, the forwards) and
// the JS around them (Adam, the EMA update, augmentation, feeds and copies). Sessions are wrapped
// at creation, so src/ is not changed for it. With --ort-profile, onnxruntime's own profile of each
// session (kernel time by op type) is summarised too, and the profiles stay in tmp/deep-profile/
// for bench/continual/profile-flops.py (FLOP rate of the matrix products by op type).
//
//   nice -n 5 npx tsx bench/continual/deep-profile.ts --model cnn [--batches 24] [--batch 64] [--ort-profile]
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../../src/model.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { DeepLearner, DEEP_UPDATE_EVERY } from '../../src/continual/deep-learner.ts';
import { continualStream } from '../../src/data/streams.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { ort } from '../../src/onnx/runtime.ts';
import { Adam } from '../../src/train/optim/adam.ts';
import { EmaTeacher } from '../../src/tta/mean-teacher.ts';
import { augmentBatch } from '../../src/tta/augment.ts';
import { Rng } from '../../src/data/random.ts';
import { testData } from './lib.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const which = opt('model', 'cnn');
const nb = Number(opt('batches', '24')), batch = Number(opt('batch', '64'));
const every = Number(opt('every', which === 'vit' ? '2' : String(DEEP_UPDATE_EVERY)));
const ortProfile = args.includes('--ort-profile');
const profDir = join(process.cwd(), 'tmp', 'deep-profile');
if (ortProfile) { mkdirSync(profDir, { recursive: true }); for (const f of readdirSync(profDir)) rmSync(join(profDir, f)); }

// Session runs, timed per session (tagged by inputs/outputs at creation).
const spent = new Map<string, number>();
const add = (k: string, ms: number) => spent.set(k, (spent.get(k) ?? 0) + ms);
const sessions: { id: number; tag: string; s: ort.InferenceSession }[] = [];
const IS = ort.InferenceSession as unknown as { create: (...a: unknown[]) => Promise<ort.InferenceSession> };
const create = IS.create.bind(ort.InferenceSession);
let made = 0;
IS.create = async (...a: unknown[]) => {
  const [bytes, o = {}] = a as [unknown, Record<string, unknown>?];
  const id = made++;
  const s = await create(bytes, ortProfile ? { ...o, enableProfiling: true, profileFilePrefix: join(profDir, `s${id}`) } : o);
  const tag = `session ${id} (${s.inputNames.length} in, ${s.outputNames.length} out)`;
  sessions.push({ id, tag, s });
  const run = s.run.bind(s);
  (s as { run: unknown }).run = async (...r: unknown[]) => { const t = performance.now(); const out = await (run as (...x: unknown[]) => Promise<unknown>)(...r); add(tag, performance.now() - t); return out; };
  return s;
};
// JS parts, wrapped on the prototypes.
const wrap = (proto: object, name: string, label: string) => {
  const p = proto as Record<string, (...a: unknown[]) => unknown>;
  const f = p[name]!;
  p[name] = function (this: unknown, ...a: unknown[]) { const t = performance.now(); const r = f.apply(this, a); add(label, performance.now() - t); return r; };
};
wrap(Adam.prototype, 'step', 'js: Adam step');
wrap(EmaTeacher.prototype, 'update', 'js: EMA teacher update');

const model = await loadModel(`models/fmnist-${which}.onnx`, { threads: 1 });
const src = loadSourceSet();
const batches = [...continualStream(testData(), { domains: ['gaussian_noise', 'fog'], batchSize: batch, batchesPerDomain: Math.ceil(nb / 2) + 1 })].map((b) => f32([b.size, 1, 28, 28], b.x));
const deep = new DeepLearner(model, { sourceData: src.images, sourceLabels: src.labels, updateEvery: every });
let t = performance.now();
await deep.predict(batches[0]!); // prepare: prototypes, warm-up, compile (not timed below)
const prepMs = performance.now() - t;
spent.clear();
const kinds: { step: number[]; between: number[] } = { step: [], between: [] };
const byKind: Record<'step' | 'between', Map<string, number>> = { step: new Map(), between: new Map() };
for (let i = 1; i <= nb; i++) {
  const kind = (i % every === 0) ? 'step' : 'between';
  const before = new Map(spent);
  t = performance.now();
  await deep.predict(batches[i]!);
  kinds[kind].push(performance.now() - t);
  for (const [k, v] of spent) byKind[kind].set(k, (byKind[kind].get(k) ?? 0) + v - (before.get(k) ?? 0));
}
// Augmentation alone (the step's only other JS of size), timed directly.
const rng = Rng.xoshiro(1);
const aug: number[] = [];
for (let i = 0; i < 10; i++) { t = performance.now(); augmentBatch(batches[1]!.data as Float32Array, batches[1]!.dims, rng); aug.push(performance.now() - t); }
const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);
const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? NaN;
const parts = (k: 'step' | 'between') => {
  const n = kinds[k].length;
  const o: Record<string, number> = {};
  let sum = 0;
  for (const [name, v] of byKind[k]) if (v > 0) { o[name] = v / n; sum += v / n; }
  o['other (JS: feeds, copies, softmax, source batch, augmentation)'] = mean(kinds[k]) - sum;
  return o;
};
let ortOps: Record<string, unknown> | undefined;
if (ortProfile) {
  ortOps = {};
  for (const { id, tag, s } of sessions) {
    try { (s as unknown as { endProfiling(): void }).endProfiling(); } catch { continue; }
    const f = readdirSync(profDir).find((n) => n.startsWith(`s${id}_`));
    if (!f) continue;
    const ev = JSON.parse(readFileSync(join(profDir, f), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
    const runs = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run').length;
    if (runs < 2) continue;
    const byOp = new Map<string, number>();
    for (const e of ev) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur / 1000 / runs);
    const total = [...byOp.values()].reduce((a, b) => a + b, 0);
    ortOps[tag] = { runs, kernelMsPerRun: total, ops: [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 14).map(([op, ms]) => `${op} ${ms.toFixed(2)}`) };
  }
}
const out = {
  model: which, batch, every, loadavg: readFileSync('/proc/loadavg', 'utf8').trim(), prepareMs: prepMs,
  stepBatch: { n: kinds.step.length, meanMs: mean(kinds.step), medianMs: med(kinds.step), parts: parts('step') },
  betweenBatch: { n: kinds.between.length, meanMs: mean(kinds.between), medianMs: med(kinds.between), parts: parts('between') },
  augmentMs: med(aug),
  ...(ortOps ? { ortOps } : {}),
};
console.log(JSON.stringify(out, null, 1));
writeFileSync(`bench/results/deep-profile-${which}${ortProfile ? '-ort' : ''}.json`, JSON.stringify(out, null, 1));
await deep.release();
