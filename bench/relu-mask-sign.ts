// ReLU's input gradient read off its output y ≥ 0: dY·Cast(y > 0) (refit's form: Greater, Cast,
// Mul) against dY·Sign(y) (Sign, Mul; y ≥ 0 so Sign(y) is the 0/1 mask) and Where(y > 0, dY, 0)
// (Greater, Where; session 36), alternating in one process, 2 threads; whether they agree exactly
// (Where writes +0 where the product writes −0: equal as numbers).
//
//   npx tsx bench/relu-mask-sign.ts [--shapes 64x32x28x28,64x64x32x32,16x64x112x112] [--rounds 30]
import { readFileSync } from 'node:fs';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const shapes = (argOf('--shapes') ?? '64x32x28x28,64x64x32x32,16x64x112x112').split(',').map((s) => s.split('x').map(Number));
const ROUNDS = Number(argOf('--rounds') ?? 30);
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

type Form = 'cast' | 'sign' | 'where';
const FORMS: Form[] = ['cast', 'sign', 'where'];
for (const dims of shapes) {
  const build = (form: Form) => {
    const b = new ModelBuilder({ opset: 13 });
    b.input('x', 'float32', dims); b.input('d', 'float32', dims);
    b.initializer('zero', f32([], [0]));
    b.node('Relu', ['x'], ['y']);
    if (form === 'sign') b.node('Sign', ['y'], ['m']);
    else b.node('Greater', ['y', 'zero'], ['p']);
    if (form === 'cast') b.node('Cast', ['p'], ['m'], { to: 1 });
    if (form === 'where') b.node('Where', ['p', 'd', 'zero'], ['dx']);
    else b.node('Mul', ['d', 'm'], ['dx']);
    b.output('dx');
    return b.build();
  };
  const sess = Object.fromEntries(await Promise.all(FORMS.map(async (k) => [k, await createSession(encodeModel(build(k)), { threads: 2 })] as const)));
  const n = dims.reduce((a, b) => a * b, 1), rng = new Rng(1);
  const feeds = { x: toOrt(f32(dims, rng.fill(new Float32Array(n), 1))), d: toOrt(f32(dims, rng.fill(new Float32Array(n), 1))) };
  const out = Object.fromEntries(await Promise.all(FORMS.map(async (k) => [k, (await sess[k]!.run(feeds)).dx!.data as Float32Array] as const)));
  const same = (k: Form) => out.cast!.every((v, i) => v === out[k]![i]);
  const ms: Record<string, number[]> = { cast: [], sign: [], where: [] };
  const l0 = load();
  for (let r = 0; r < ROUNDS; r++) for (const k of r % 2 ? [...FORMS].reverse() : FORMS) {
    const t = performance.now(); await sess[k]!.run(feeds); ms[k]!.push(performance.now() - t);
  }
  const [c, s, w] = FORMS.map((k) => quantile(ms[k]!, 0.5)) as [number, number, number];
  console.log(`[${dims}] Relu + mask: Greater/Cast/Mul ${c.toFixed(2)} ms, Sign/Mul ${s.toFixed(2)} ms (${(s / c).toFixed(2)}, identical ${same('sign')}), Greater/Where ${w.toFixed(2)} ms (${(w / c).toFixed(2)}, equal ${same('where')}), load ${l0} → ${load()}`);
}
