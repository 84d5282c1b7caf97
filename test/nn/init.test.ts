import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetBuilder, TRUNC_NORMAL_STD, type InitKind, type Value } from '../../src/nn/index.ts';

/** Finish a net with `v` as its output and return its initializers. */
function params(net: NetBuilder, v: Value) {
  net.output(v, 'y');
  return net.build().graph.initializers;
}

function stats(a: Float32Array) {
  let s = 0, s2 = 0, max = 0;
  for (const v of a) { s += v; s2 += v * v; max = Math.max(max, Math.abs(v)); }
  const mean = s / a.length;
  return { mean, std: Math.sqrt(s2 / a.length - mean * mean), max };
}

function linearWeight(init: InitKind, inF: number, out: number, seed = 0): Float32Array {
  const net = new NetBuilder({ seed });
  return params(net, net.linear(net.input('x', ['N', inF]), { name: 'fc', out, init })).get('fc.weight')!.data as Float32Array;
}

const within = (actual: number, want: number, rel: number, what: string) =>
  assert.ok(Math.abs(actual - want) <= rel * want, `${what}: ${actual} is not within ${rel * 100}% of ${want}`);

test('Kaiming normal and uniform: std √(2/fan_in) for linear and conv', () => {
  within(stats(linearWeight('kaiming_normal', 1024, 256)).std, Math.sqrt(2 / 1024), 0.1, 'kaiming_normal linear');
  const u = stats(linearWeight('kaiming_uniform', 1024, 256));
  within(u.std, Math.sqrt(2 / 1024), 0.1, 'kaiming_uniform linear');
  assert.ok(u.max <= Math.sqrt(6 / 1024));
  const net = new NetBuilder({ seed: 3 });
  const conv = net.conv2d(net.input('x', ['N', 64, 8, 8]), { name: 'conv', out: 128, kernel: 3 }); // default init: kaiming_normal
  const w = stats(params(net, conv).get('conv.weight')!.data as Float32Array);
  within(w.std, Math.sqrt(2 / (64 * 9)), 0.1, 'conv fan_in = in·kh·kw');
  assert.ok(Math.abs(w.mean) < 0.05 * w.std);
});

test('Xavier uniform (the linear default) and truncated normal 0.02', () => {
  const x = stats(linearWeight('xavier_uniform', 512, 256));
  within(x.std, Math.sqrt(2 / (512 + 256)), 0.1, 'xavier_uniform');
  assert.ok(x.max <= Math.sqrt(6 / (512 + 256)));
  assert.deepEqual(linearWeight('xavier_uniform', 8, 4), linearWeight(undefined as unknown as InitKind, 8, 4), 'linear default is xavier_uniform');
  const t = stats(linearWeight('trunc_normal', 512, 256));
  assert.ok(t.max <= 2 * TRUNC_NORMAL_STD);
  within(t.std, TRUNC_NORMAL_STD * 0.8796, 0.05, 'trunc_normal (std of N(0,1) truncated at ±2 is 0.8796)');
});

test('biases zeros, norm scale ones and shift zeros, running stats 0 and 1', () => {
  const net = new NetBuilder({ seed: 0 });
  const x = net.input('x', ['N', 4, 2, 2]);
  const init = params(net, net.layerNorm(net.batchNorm(net.conv2d(x, { name: 'c', out: 4, kernel: 1 }), { name: 'bn' }), { name: 'ln' }));
  const all = (name: string, v: number) => assert.ok([...(init.get(name)!.data as Float32Array)].every((e) => e === v), name);
  all('c.bias', 0); all('bn.weight', 1); all('bn.bias', 0); all('bn.running_mean', 0); all('bn.running_var', 1); all('ln.weight', 1); all('ln.bias', 0);
});

test('same seed → identical weights; another seed or name → different; layer order does not matter', () => {
  assert.deepEqual(linearWeight('kaiming_normal', 32, 16, 5), linearWeight('kaiming_normal', 32, 16, 5));
  assert.notDeepEqual(linearWeight('kaiming_normal', 32, 16, 5), linearWeight('kaiming_normal', 32, 16, 6));
  const build = (order: string[]) => {
    const net = new NetBuilder({ seed: 1 });
    const x = net.input('x', ['N', 8]);
    const ys = order.map((n) => net.linear(x, { name: n, out: 8 }));
    return params(net, net.add(ys[0]!, ys[1]!));
  };
  const ab = build(['a', 'b']), ba = build(['b', 'a']);
  assert.deepEqual(ab.get('a.weight')!.data, ba.get('a.weight')!.data);
  assert.notDeepEqual(ab.get('a.weight')!.data, ab.get('b.weight')!.data);
});
