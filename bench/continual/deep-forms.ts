// Two forms of the controller's deep learner (src/continual/deep-learner.ts) on the same batches,
// alternating call by call in one process: ms per batch of each (step batches and the batches
// between, separately) and how far their predictions drift apart. A form is a set of session options
// of the model (`--a` and `--b`, JSON) plus the graph-form switches in SWITCHES (key 'switches',
// read when each learner builds its graphs).
//
//   nice -n 5 npx tsx bench/continual/deep-forms.ts --model cnn --a '{}' --b '{"blockedConvs":false}' [--batches 24] [--every 4]
//   nice -n 5 npx tsx bench/continual/deep-forms.ts --model cnn --a '{"switches":{"dwTaps":false}}' --b '{}' --tag dwtaps
import { readFileSync, writeFileSync } from 'node:fs';
import { loadModel } from '../../src/model.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { DeepLearner, DEEP_UPDATE_EVERY } from '../../src/continual/deep-learner.ts';
import { continualStream } from '../../src/data/streams.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { testData } from './lib.ts';
import { dwTaps } from '../../src/autodiff/rules/conv.ts';

const SWITCHES: Record<string, { current: unknown }> = { dwTaps };

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const which = opt('model', 'cnn');
const nb = Number(opt('batches', '24'));
const every = Number(opt('every', which === 'vit' ? '2' : String(DEEP_UPDATE_EVERY)));
const forms = { a: JSON.parse(opt('a', '{}')) as Record<string, unknown>, b: JSON.parse(opt('b', '{}')) as Record<string, unknown> };
const tag = opt('tag', 'forms');
const src = loadSourceSet();
const batches = [...continualStream(testData(), { domains: ['gaussian_noise', 'fog'], batchSize: 64, batchesPerDomain: Math.ceil(nb / 2) + 1 })].map((b) => f32([b.size, 1, 28, 28], b.x));
const make = async ({ switches = {}, ...o }: Record<string, unknown>) => {
  const saved = Object.fromEntries(Object.keys(SWITCHES).map((k) => [k, SWITCHES[k]!.current]));
  for (const [k, v] of Object.entries(switches as Record<string, unknown>)) {
    if (!SWITCHES[k]) throw new Error(`unknown switch '${k}' (known: ${Object.keys(SWITCHES).join(', ')})`);
    SWITCHES[k].current = v;
  }
  try {
    const m = await loadModel(`models/fmnist-${which}.onnx`, { threads: 1, ...o });
    const d = new DeepLearner(m, { sourceData: src.images, sourceLabels: src.labels, updateEvery: every });
    await d.predict(batches[0]!); // prototypes, warm-up, compile: every graph is built here
    return d;
  } finally {
    for (const [k, v] of Object.entries(saved)) SWITCHES[k]!.current = v;
  }
};
const A = await make(forms.a), B = await make(forms.b);
const t = { a: { step: [] as number[], between: [] as number[] }, b: { step: [] as number[], between: [] as number[] } };
let maxLogit = 0;
for (let i = 1; i <= nb; i++) {
  const x = batches[i]!, kind = i % every === 0 ? 'step' : 'between';
  // Alternate which form goes first, so neither always runs on a cache the other warmed.
  const order = i % 2 ? (['a', 'b'] as const) : (['b', 'a'] as const);
  const out: Record<string, Float32Array> = {};
  for (const f of order) {
    const s = performance.now();
    out[f] = (await (f === 'a' ? A : B).predict(x)).data as Float32Array;
    t[f][kind].push(performance.now() - s);
  }
  let scale = 0; for (const v of out.a!) scale = Math.max(scale, Math.abs(v));
  for (let k = 0; k < out.a!.length; k++) maxLogit = Math.max(maxLogit, Math.abs(out.a![k]! - out.b![k]!) / scale);
}
const med = (v: number[]) => [...v].sort((p, q) => p - q)[v.length >> 1] ?? NaN;
const ratio = (k: 'step' | 'between') => med(t.b[k].map((v, i) => v / t.a[k][i]!));
const out = {
  model: which, every, batches: nb, a: forms.a, b: forms.b, loadavg: readFileSync('/proc/loadavg', 'utf8').trim(),
  medianMs: { a: { step: med(t.a.step), between: med(t.a.between) }, b: { step: med(t.b.step), between: med(t.b.between) } },
  medianRatioBOverA: { step: ratio('step'), between: ratio('between') },
  predictionsMaxRelToScale: maxLogit,
};
console.log(JSON.stringify(out, null, 1));
writeFileSync(`bench/results/deep-forms-${tag}-${which}.json`, JSON.stringify(out, null, 1));
await Promise.all([A.release(), B.release()]);
