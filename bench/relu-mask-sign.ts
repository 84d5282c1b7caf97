// ReLU's input gradient read off its output y ≥ 0: dY·Cast(y > 0) (refit's form: Greater, Cast,
// Mul) against dY·Sign(y) (Sign, Mul; y ≥ 0 so Sign(y) is the 0/1 mask), alternating in one
// process, 2 threads; whether they agree exactly.
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

for (const dims of shapes) {
  const build = (sign: boolean) => {
    const b = new ModelBuilder({ opset: 13 });
    b.input('x', 'float32', dims); b.input('d', 'float32', dims);
    b.initializer('zero', f32([], [0]));
    b.node('Relu', ['x'], ['y']);
    if (sign) { b.node('Sign', ['y'], ['m']); } else { b.node('Greater', ['y', 'zero'], ['p']); b.node('Cast', ['p'], ['m'], { to: 1 }); }
    b.node('Mul', ['d', 'm'], ['dx']);
    b.output('dx');
    return b.build();
  };
  const sess = { cast: await createSession(encodeModel(build(false)), { threads: 2 }), sign: await createSession(encodeModel(build(true)), { threads: 2 }) };
  const n = dims.reduce((a, b) => a * b, 1), rng = new Rng(1);
  const feeds = { x: toOrt(f32(dims, rng.fill(new Float32Array(n), 1))), d: toOrt(f32(dims, rng.fill(new Float32Array(n), 1))) };
  const a = (await sess.cast.run(feeds)).dx!.data as Float32Array, b = (await sess.sign.run(feeds)).dx!.data as Float32Array;
  const same = a.every((v, i) => v === b[i]);
  const ms: Record<string, number[]> = { cast: [], sign: [] };
  const l0 = load();
  for (let r = 0; r < ROUNDS; r++) for (const k of (r % 2 ? ['sign', 'cast'] : ['cast', 'sign']) as ('cast' | 'sign')[]) {
    const t = performance.now(); await sess[k].run(feeds); ms[k]!.push(performance.now() - t);
  }
  const c = quantile(ms.cast!, 0.5), s = quantile(ms.sign!, 0.5);
  console.log(`[${dims}] Relu + mask: Greater/Cast/Mul ${c.toFixed(2)} ms, Sign/Mul ${s.toFixed(2)} ms, sign / cast ${(s / c).toFixed(2)}, identical ${same}, load ${l0} → ${load()}`);
}
