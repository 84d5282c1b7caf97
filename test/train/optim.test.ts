import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import * as optim from '../../src/train/optim/index.ts';
import type { Optimizer, ParamGroup, AdamHyper } from '../../src/train/optim/index.ts';

// Reference trajectories from PyTorch: test/fixtures/optim/make_optim_fixtures.py.
interface Case {
  name: string;
  kind: 'sgd' | 'adam' | 'adamw';
  options: Record<string, unknown>;
  schedule?: { warmupSteps: number; totalSteps: number; minLrRatio: number };
  clipMaxNorm?: number;
  groups?: { params: string[]; lr?: number; weightDecay?: number }[];
  trajectory: Record<string, number[]>[];
  lrs: number[];
  clipNorms?: number[];
}
interface Fixture {
  names: string[];
  init: Record<string, number[]>;
  grads: Record<string, number[]>[];
  cases: Case[];
}
const fx: Fixture = JSON.parse(readFileSync(new URL('../fixtures/optim/trajectories.json', import.meta.url), 'utf8'));

const REL = 1e-5;

function initParams(): Map<string, Float32Array> {
  return new Map(fx.names.map((n) => [n, Float32Array.from(fx.init[n]!)]));
}
function gradSet(t: number): Map<string, Float32Array> {
  return new Map(fx.names.map((n) => [n, Float32Array.from(fx.grads[t]![n]!)]));
}
function snapshot(m: Map<string, Float32Array>): Map<string, Float32Array> {
  return new Map([...m].map(([k, v]) => [k, v.slice()]));
}

/** Max over elements of |a − b| / max(|b|, 1e-3): relative, with a floor so values near zero don't blow up. */
function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), 1e-3));
  return worst;
}

function build(c: Case): Optimizer {
  const o = c.options;
  const schedule = c.schedule ? optim.warmupCosine(c.schedule) : undefined;
  if (c.kind === 'sgd') {
    return optim.sgd({
      lr: o.lr as number,
      momentum: o.momentum as number,
      dampening: o.dampening as number,
      nesterov: o.nesterov as boolean,
      weightDecay: o.weight_decay as number,
      schedule,
    });
  }
  const opts = {
    lr: o.lr as number,
    betas: o.betas as [number, number],
    eps: o.eps as number,
    weightDecay: o.weight_decay as number,
    groups: c.groups as ParamGroup<AdamHyper>[] | undefined,
    schedule,
  };
  return c.kind === 'adam' ? optim.adam(opts) : optim.adamw(opts);
}

describe('optimizers match PyTorch reference trajectories', () => {
  for (const c of fx.cases) {
    it(c.name, () => {
      const opt = build(c);
      const params = initParams();
      let worst = 0;
      for (let t = 0; t < c.trajectory.length; t++) {
        const grads = gradSet(t);
        if (c.clipMaxNorm !== undefined) {
          const norm = optim.clipGradNorm(grads, c.clipMaxNorm);
          assert.ok(maxRelErr([norm], [c.clipNorms![t]!]) <= REL, `step ${t}: clip norm ${norm} vs torch ${c.clipNorms![t]}`);
        }
        assert.ok(Math.abs(opt.currentLr(fx.names[0]) - c.lrs[t]!) <= 1e-12, `step ${t}: lr ${opt.currentLr()} vs torch ${c.lrs[t]}`);
        opt.step(params, grads);
        for (const n of fx.names) {
          const err = maxRelErr(params.get(n)!, c.trajectory[t]![n]!);
          worst = Math.max(worst, err);
          assert.ok(err <= REL, `step ${t}, param '${n}': max relative error ${err.toExponential(2)} > ${REL}`);
        }
      }
      assert.equal(opt.stepCount, c.trajectory.length);
    });
  }
});

describe('state save and load', () => {
  const makers: [string, () => Optimizer][] = [
    ['sgd nesterov', () => optim.sgd({ lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-2 })],
    ['adam', () => optim.adam({ lr: 0.05, weightDecay: 1e-2 })],
    [
      'adamw with groups and schedule',
      () =>
        optim.adamw({
          lr: 0.05,
          groups: [{ params: /^b$/, weightDecay: 0, lrScale: 4 }],
          schedule: optim.warmupCosine({ warmupSteps: 2, totalSteps: 5, minLrRatio: 0.1 }),
        }),
    ],
  ];
  for (const [label, make] of makers) {
    it(`${label}: state → binary file → new optimizer → loadState gives identical next steps`, () => {
      const a = make();
      const pa = initParams();
      a.step(pa, gradSet(0));
      a.step(pa, gradSet(1));
      const saved = a.state();
      assert.equal(saved.kind, a.kind);
      assert.equal(saved.step, 2);
      JSON.stringify({ ...saved, buffers: null }); // the non-buffer part is plain JSON

      const dir = mkdtempSync(join(tmpdir(), 'refit-optim-'));
      try {
        const file = join(dir, 'opt.bin');
        writeFileSync(file, optim.encodeOptimizerState(saved));
        const loaded = optim.decodeOptimizerState(readFileSync(file));
        assert.deepEqual(loaded, saved);

        const pb = snapshot(pa);
        const b = make();
        b.loadState(loaded, pb);
        assert.equal(b.stepCount, 2);
        for (let t = 2; t < 5; t++) {
          a.step(pa, gradSet(t));
          b.step(pb, gradSet(t));
          for (const n of fx.names) assert.deepEqual(pb.get(n), pa.get(n), `step ${t}, '${n}' differs after loadState`);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('the snapshot is a copy: later steps do not change it, and loading copies too', () => {
    const opt = optim.adam({ lr: 0.1 });
    const p = initParams();
    opt.step(p, gradSet(0));
    const s = opt.state();
    const before = s.buffers.w!.expAvg!.slice();
    opt.step(p, gradSet(1));
    assert.deepEqual(s.buffers.w!.expAvg, before);
    const o2 = optim.adam({ lr: 0.1 });
    o2.loadState(s);
    s.buffers.w!.expAvg!.fill(123);
    assert.notEqual(o2.state().buffers.w!.expAvg![0], 123);
  });

  it('loadState refuses a wrong buffer shape, naming parameter, slot and sizes, and changes nothing', () => {
    const a = optim.adam({ lr: 0.1 });
    const p = initParams();
    a.step(p, gradSet(0));
    const s = a.state();
    s.buffers.w!.expAvgSq = new Float32Array(7);
    const b = optim.adam({ lr: 0.1 });
    assert.throws(() => b.loadState(s, p), /shape mismatch: buffer 'w'\.expAvg(Sq)? has \d+ elements, parameter 'w' has 12/);
    assert.throws(() => b.loadState(s), /shape mismatch: buffer 'w'\.expAvgSq has 7 elements, other slots of 'w' have 12/);
    assert.equal(b.stepCount, 0);
    assert.deepEqual(b.state().buffers, {});

    // Consistent but wrong for the params: caught at load with params, or at step before any update.
    const s2 = a.state();
    s2.buffers.b = { expAvg: new Float32Array(3), expAvgSq: new Float32Array(3) };
    assert.throws(() => b.loadState(s2, p), /buffer 'b'\.expAvg has 3 elements, parameter 'b' has 5/);
    b.loadState(s2);
    const before = snapshot(p);
    assert.throws(() => b.step(p, gradSet(1)), /adam\.step: shape mismatch: optimizer buffer 'b'\.expAvg has 3 elements, parameter has 5/);
    assert.deepEqual(p, before);
  });

  it('loadState refuses another kind, missing or unknown slots, and unknown params', () => {
    const sgd = optim.sgd({ lr: 0.1, momentum: 0.9 });
    const p = initParams();
    sgd.step(p, gradSet(0));
    const s = sgd.state();
    assert.throws(() => optim.adam().loadState(s), /state is for optimizer kind 'sgd', this optimizer is 'adam'/);
    assert.throws(() => optim.adamw().loadState(optim.adam().state()), /kind 'adam', this optimizer is 'adamw'/);
    const missing = { ...s, buffers: { w: {} } };
    assert.throws(() => optim.sgd({ momentum: 0.9 }).loadState(missing), /parameter 'w' is missing slot 'momentumBuffer'/);
    const unknown = { ...s, buffers: { w: { momentumBuffer: new Float32Array(12), foo: new Float32Array(12) } } };
    assert.throws(() => optim.sgd({ momentum: 0.9 }).loadState(unknown), /parameter 'w' has unknown slot 'foo'/);
    const extra = { ...s, buffers: { ...s.buffers, ghost: { momentumBuffer: new Float32Array(2) } }, paramSteps: { ...s.paramSteps, ghost: 1 } };
    assert.throws(() => optim.sgd({ momentum: 0.9 }).loadState(extra, p), /'ghost', which is not among the parameters/);
  });

  it('decodeOptimizerState rejects files that are not optimizer states or are truncated', () => {
    const bytes = optim.encodeOptimizerState(optim.adam().state());
    assert.throws(() => optim.decodeOptimizerState(new Uint8Array(4)), /too short/);
    const bad = bytes.slice();
    bad[0] = 0;
    assert.throws(() => optim.decodeOptimizerState(bad), /bad magic/);
    const a = optim.adam();
    a.step(initParams(), gradSet(0));
    const full = optim.encodeOptimizerState(a.state());
    assert.throws(() => optim.decodeOptimizerState(full.subarray(0, full.length - 4)), /lies outside/);
  });
});

describe('param groups', () => {
  it('apply their lr, weightDecay and lrScale; first matching group wins; unmatched use defaults', () => {
    const names = ['enc.weight', 'enc.bias', 'norm.weight', 'head.weight', 'lora_B'];
    const opt = optim.sgd({
      lr: 0.1,
      weightDecay: 0.5,
      groups: [
        { params: /bias|norm/, weightDecay: 0 },
        { params: ['head.weight', 'enc.bias'], lr: 1 }, // enc.bias already taken by group 0
        { params: (n) => n.startsWith('lora_'), lrScale: 16 },
      ],
    });
    const params = new Map(names.map((n) => [n, Float32Array.of(1)]));
    const grads = new Map(names.map((n) => [n, Float32Array.of(1)]));
    opt.step(params, grads);
    // plain SGD: p − lr·(g + wd·p), with p = g = 1
    const expected: Record<string, number> = {
      'enc.weight': 1 - 0.1 * 1.5,
      'enc.bias': 1 - 0.1 * 1,
      'norm.weight': 1 - 0.1 * 1,
      'head.weight': 1 - 1 * 1.5,
      lora_B: 1 - 0.1 * 16 * 1.5,
    };
    for (const n of names) assert.ok(Math.abs(params.get(n)![0]! - expected[n]!) < 1e-6, `${n}: ${params.get(n)![0]} vs ${expected[n]}`);
    assert.ok(Math.abs(opt.currentLr('lora_B') - 1.6) < 1e-12);
    assert.equal(opt.currentLr('head.weight'), 1);
    assert.equal(opt.currentLr(), 0.1);
  });

  it('AdamW groups: weightDecay 0 means no decoupled decay (zero grad leaves the param unchanged)', () => {
    const opt = optim.adamw({ lr: 0.1, weightDecay: 0.5, groups: [{ params: /bias/, weightDecay: 0 }] });
    const params = new Map([
      ['w', Float32Array.of(2)],
      ['bias', Float32Array.of(2)],
    ]);
    const zero = new Map([
      ['w', Float32Array.of(0)],
      ['bias', Float32Array.of(0)],
    ]);
    opt.step(params, zero);
    assert.equal(params.get('bias')![0], 2);
    assert.ok(Math.abs(params.get('w')![0]! - 2 * (1 - 0.1 * 0.5)) < 1e-6);
  });

  it('setting opt.lr changes the default and groups without their own lr, not groups that set lr', () => {
    const opt = optim.adam({ lr: 0.1, groups: [{ params: ['a'], lr: 0.5 }, { params: ['b'], lrScale: 2 }] });
    opt.lr = 0.01;
    assert.equal(opt.lr, 0.01);
    assert.equal(opt.currentLr('a'), 0.5);
    assert.equal(opt.currentLr('b'), 0.02);
    assert.equal(opt.currentLr('c'), 0.01);
  });

  it('invalid hyperparameters are refused with the group named', () => {
    assert.throws(() => optim.sgd({ nesterov: true }), /nesterov momentum requires momentum > 0 and dampening 0/);
    assert.throws(() => optim.adam({ groups: [{ params: /x/, name: 'heads', betas: [0.9, 1] }] }), /adam \(param group 0 'heads'\): betas\[1\] must be in \[0, 1\)/);
    assert.throws(() => optim.adamw({ lr: -1 }), /adamw \(defaults\): lr must be a finite number ≥ 0/);
  });
});

describe('step safety', () => {
  for (const [label, make] of [
    ['sgd', () => optim.sgd({ lr: 0.1, momentum: 0.9 })],
    ['adamw', () => optim.adamw({ lr: 0.1 })],
  ] as [string, () => Optimizer][]) {
    it(`${label}: a NaN or Inf gradient is refused before any parameter or state changes`, () => {
      const opt = make();
      const params = initParams();
      opt.step(params, gradSet(0));
      const p0 = snapshot(params);
      const s0 = opt.state();
      for (const bad of [NaN, Infinity, -Infinity]) {
        const grads = gradSet(1);
        grads.get('b')![3] = bad; // 'w' comes first and is fine: it must not be updated either
        assert.throws(() => opt.step(params, grads), new RegExp(`gradient of 'b' is not finite \\(element 3 is ${bad}\\)`));
        assert.deepEqual(params, p0);
        assert.deepEqual(opt.state(), s0);
        assert.equal(opt.stepCount, 1);
      }
    });
  }

  it('skips params without a grad (their state does not advance) and ignores grads without a param', () => {
    const opt = optim.adam({ lr: 0.1 });
    const params = initParams();
    const before = params.get('b')!.slice();
    const grads = new Map([
      ['w', Float32Array.from(fx.grads[0]!.w!)],
      ['other', new Float32Array(3)],
    ]);
    opt.step(params, grads);
    assert.deepEqual(params.get('b'), before);
    const s = opt.state();
    assert.deepEqual(Object.keys(s.buffers), ['w']);
    assert.deepEqual(s.paramSteps, { w: 1 });
  });

  it('accepts plain records as well as Maps', () => {
    const a = optim.sgd({ lr: 0.1, momentum: 0.9 });
    const b = optim.sgd({ lr: 0.1, momentum: 0.9 });
    const pm = initParams();
    const pr = Object.fromEntries(snapshot(pm));
    a.step(pm, gradSet(0));
    b.step(pr, Object.fromEntries(gradSet(0)));
    assert.deepEqual(pr.w, pm.get('w'));
  });

  it('refuses a gradient of the wrong length', () => {
    const opt = optim.sgd();
    const params = initParams();
    const grads = gradSet(0);
    grads.set('w', new Float32Array(11));
    assert.throws(() => opt.step(params, grads), /gradient of 'w' has 11 elements, parameter has 12/);
    assert.throws(() => opt.step(params, grads, { gradsFinite: true }), /gradient of 'w' has 11 elements, parameter has 12/);
  });

  it('gradsFinite (the caller checked them): the same updates, without the scan', () => {
    const a = optim.adam({ lr: 0.1 });
    const b = optim.adam({ lr: 0.1 });
    const pa = initParams(), pb = initParams();
    for (let s = 0; s < 3; s++) {
      a.step(pa, gradSet(s));
      b.step(pb, gradSet(s), { gradsFinite: true });
    }
    assert.deepEqual(pb, pa);
    assert.deepEqual(b.state(), a.state());
    // The option means what it says: a NaN it vouched for is not looked for.
    const grads = gradSet(0);
    grads.get('b')![0] = NaN;
    b.step(pb, grads, { gradsFinite: true });
    assert.ok(Number.isNaN(pb.get('b')![0]));
  });
});

describe('clipGradNorm', () => {
  it('returns the pre-clip norm, scales by maxNorm/(norm+1e-6) only when over', () => {
    const g = new Map([
      ['a', Float32Array.of(3, 0)],
      ['b', Float32Array.of(4)],
    ]);
    assert.equal(optim.clipGradNorm(g, 10), 5);
    assert.deepEqual([...g.get('a')!, ...g.get('b')!], [3, 0, 4]);
    assert.equal(optim.clipGradNorm(g, 1), 5);
    const c = Math.fround(1 / (5 + 1e-6));
    assert.deepEqual([...g.get('a')!, ...g.get('b')!], [Math.fround(3 * c), 0, Math.fround(4 * c)]);
  });
  it('leaves non-finite grads alone (or throws when asked)', () => {
    const g = new Map([['a', Float32Array.of(1, NaN)]]);
    assert.ok(Number.isNaN(optim.clipGradNorm(g, 1)));
    assert.equal(g.get('a')![0], 1);
    assert.throws(() => optim.clipGradNorm(g, 1, { errorIfNonfinite: true }), /total gradient norm is NaN/);
  });
});

describe('schedules', () => {
  it('constant', () => {
    assert.equal(optim.constant()(1000), 1);
    assert.equal(optim.constant(0.5)(3), 0.5);
  });
  it('warmupCosine: linear warmup from 1/W to 1, cosine to minLrRatio at totalSteps, flat after', () => {
    const s = optim.warmupCosine({ warmupSteps: 4, totalSteps: 14, minLrRatio: 0.1 });
    assert.deepEqual([0, 1, 2, 3].map(s), [0.25, 0.5, 0.75, 1]);
    assert.equal(s(4), 1);
    assert.ok(Math.abs(s(9) - 0.55) < 1e-12); // halfway: r + (1 − r)/2
    assert.ok(Math.abs(s(14) - 0.1) < 1e-12);
    assert.ok(Math.abs(s(100) - 0.1) < 1e-12);
    for (let t = 4; t < 14; t++) assert.ok(s(t + 1) <= s(t));
    assert.equal(optim.warmupCosine({ warmupSteps: 0, totalSteps: 10 })(0), 1);
    assert.throws(() => optim.warmupCosine({ warmupSteps: 5, totalSteps: 3 }), /warmupSteps \(5\) must not exceed totalSteps \(3\)/);
  });
  it('stepDecay as torch StepLR', () => {
    const s = optim.stepDecay({ stepSize: 3, gamma: 0.5 });
    assert.deepEqual([0, 1, 2, 3, 5, 6, 9].map(s), [1, 1, 1, 0.5, 0.5, 0.25, 0.125]);
  });
  it('optimizer.step advances the schedule; the multiplier scales the update', () => {
    const opt = optim.sgd({ lr: 1, schedule: optim.stepDecay({ stepSize: 1, gamma: 0.5 }) });
    const p = new Map([['x', Float32Array.of(0)]]);
    const g = new Map([['x', Float32Array.of(1)]]);
    const seen: number[] = [];
    for (let t = 0; t < 3; t++) {
      seen.push(opt.lrMultiplier());
      opt.step(p, g);
    }
    assert.deepEqual(seen, [1, 0.5, 0.25]);
    assert.equal(p.get('x')![0], -1.75);
    assert.throws(() => optim.sgd({ schedule: () => NaN }).lrMultiplier(), /schedule returned NaN at step 0/);
  });
});

describe('performance shape', () => {
  it('a steady-state step over 1M params allocates no per-element memory and is quick', () => {
    const n = 1 << 20;
    const params = new Map([['big', new Float32Array(n).fill(0.5)]]);
    const grads = new Map([['big', new Float32Array(n).fill(0.01)]]);
    const opt = optim.adamw({ lr: 1e-3 });
    opt.step(params, grads);
    const heap0 = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) opt.step(params, grads);
    const ms = (performance.now() - t0) / 5;
    const grew = process.memoryUsage().arrayBuffers - heap0;
    assert.ok(grew < n, `array buffers grew by ${grew} bytes over 5 steps`);
    assert.ok(Number.isFinite(ms));
    // Informational, not asserted as a timing: see bench/ for timings.
    console.log(`# adamw step over ${n} params: ${ms.toFixed(2)} ms`);
  });
});

describe('firstNonFinite', () => {
  it('finds the first NaN, +Inf or -Inf at every position of short and odd lengths (the 4-way sums and their tail)', () => {
    for (let n = 0; n <= 9; n++) {
      const a = new Float32Array(n).map((_, i) => (i % 2 ? -3e38 : 3e38)); // large, finite: x·0 is 0
      assert.equal(optim.firstNonFinite(a), -1, `all finite, n ${n}`);
      for (let at = 0; at < n; at++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const b = a.slice();
          b[at] = bad;
          if (at + 2 < n) b[at + 2] = NaN; // a later one too: the first is reported
          assert.equal(optim.firstNonFinite(b), at, `n ${n}, ${bad} at ${at}`);
        }
      }
    }
  });
});
