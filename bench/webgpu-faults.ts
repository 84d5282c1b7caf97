// Which single ops onnxruntime-web's WebGPU provider gets wrong or cannot run, in headless Chromium
// on SwiftShader's software adapter: the evidence behind src/onnx/webgpu-faults.ts. Each case is a
// one- or two-node model run in the page (WebGPU) and in Node (onnxruntime-node) on the same inputs;
// a case is 'wrong' past 1e-4 of the largest output, 'error' when the run throws, and 'invalid'
// when the page logged a WebGPU validation error. Not a timing.
//
//   npx tsx bench/webgpu-faults.ts        → bench/results/webgpu-faults.{json,md}
import { writeFileSync } from 'node:fs';
import * as refit from '../src/index.ts';
import { openTestPage, SOFTWARE_WEBGPU_ARGS } from '../test/web/browser.ts';
import type { Tensor } from '../src/onnx/tensor.ts';
import { floatAttr } from '../src/onnx/ir.ts';

interface Case { name: string; build(b: refit.ModelBuilder): void; feeds: Record<string, Tensor> }

const wave = (dims: number[], k: number) => refit.f32(dims, Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.37 + k)));
const cases: Case[] = [];

// Grouped Conv: G groups, one input channel each (as the one-hot im2col), `og` outputs per group, 3×3 pad 1 on 6×6.
for (const G of [1, 2, 3, 4, 5, 8, 16]) for (const og of [1, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 25]) {
  cases.push({
    name: `Conv group ${G}, ${og} outputs per group`,
    build: (b) => { b.initializer('w', wave([G * og, 1, 3, 3], 1)); b.node('Conv', ['x', 'w'], ['y'], { group: G, pads: [1, 1, 1, 1], kernel_shape: [3, 3] }); },
    feeds: { x: wave([2, G, 6, 6], 0) },
  });
}
// ConvTranspose 2×2 → 4×4, stride 2: the dX of a 3×3 stride-2 pad-1 conv on 4×4, with unequal pads or equal pads + output_padding.
for (const [c, o] of [[16, 16], [16, 4]] as const) {
  const variants: [string, Record<string, number[]>][] = [['pads [1,1,0,0]', { pads: [1, 1, 0, 0] }], ['pads [1,1,1,1], output_padding [1,1]', { pads: [1, 1, 1, 1], output_padding: [1, 1] }]];
  for (const [label, attrs] of variants) {
    cases.push({
      name: `ConvTranspose ${c}→${o}, ${label}`,
      build: (b) => { b.initializer('w', wave([c, o, 3, 3], 2)); b.node('ConvTranspose', ['x', 'w'], ['y'], { kernel_shape: [3, 3], strides: [2, 2], ...attrs }); },
      feeds: { x: wave([4, c, 2, 2], 0) },
    });
  }
}
// Concat of n inputs (n + 1 storage buffers).
for (const n of [7, 8, 9]) {
  cases.push({
    name: `Concat of ${n} inputs`,
    build: (b) => { for (let i = 0; i < n; i++) b.node('Relu', ['x'], [`r${i}`]); b.node('Concat', Array.from({ length: n }, (_, i) => `r${i}`), ['y'], { axis: 1 }); },
    feeds: { x: wave([2, 3, 4, 4], 0) },
  });
}
cases.push({
  name: 'BatchNormalization training_mode=1',
  build: (b) => {
    for (const [k, v] of [['s', 1], ['bb', 0], ['m', 0], ['v', 1]] as const) b.initializer(k, refit.f32([3], new Float32Array(3).fill(v)));
    b.node('BatchNormalization', ['x', 's', 'bb', 'm', 'v'], ['y', 'rm', 'rv'], { training_mode: 1, momentum: floatAttr(0) });
  },
  feeds: { x: wave([2, 3, 4, 4], 0) },
});
cases.push({
  name: 'MaxPool with Indices',
  build: (b) => { b.node('MaxPool', ['x'], ['m', 'i'], { kernel_shape: [2, 2], strides: [2, 2] }); b.node('Cast', ['i'], ['y'], { to: 1 }); },
  feeds: { x: wave([2, 3, 4, 4], 0) },
});

interface Row { name: string; result: 'right' | 'wrong' | 'error' | 'invalid'; relErr?: number; message?: string }

// Runs in the page as source text.
async function pageRun(a: { model: string; feeds: Record<string, { dtype: string; dims: number[]; data: number[] }> }) {
  const r = (globalThis as unknown as { refitTest: { refit: typeof refit } }).refitTest.refit;
  try {
    const m = await r.loadModel(Uint8Array.from(atob(a.model), (c) => c.charCodeAt(0)));
    const feeds = Object.fromEntries(Object.entries(a.feeds).map(([k, t]) => [k, r.f32(t.dims, Float32Array.from(t.data))]));
    const y = await m.run(feeds, { outputs: ['y'] });
    return Array.from(y.y!.data as Float32Array);
  } catch (e) {
    return String((e as Error).message ?? e).slice(0, 200);
  }
}

const tp = await openTestPage(undefined, { webgpu: true }, SOFTWARE_WEBGPU_ARGS);
try {
  const info = await tp.page.evaluate((o) => (globalThis as unknown as { refitTest: { setup(o: unknown): Promise<{ device: string; adapter?: string }> } }).refitTest.setup(o), { device: 'webgpu', allowSoftwareAdapter: true });
  if (info.device !== 'webgpu') throw new Error(`no WebGPU adapter in this Chromium: ${JSON.stringify(info)}`);
  const rows: Row[] = [];
  for (const c of cases) {
    const b = new refit.ModelBuilder({ opset: 17 });
    for (const [k, t] of Object.entries(c.feeds)) b.input(k, 'float32', [...t.dims]);
    c.build(b);
    b.output('y');
    const bytes = refit.encodeModel(b.build());
    const ref = Array.from((await (await refit.loadModel(bytes)).run(c.feeds, { outputs: ['y'] })).y!.data as Float32Array);
    tp.errors.length = 0;
    const feeds = Object.fromEntries(Object.entries(c.feeds).map(([k, t]) => [k, { dtype: t.dtype, dims: [...t.dims], data: Array.from(t.data as Float32Array) }]));
    const got = await (tp.page.evaluate(`(() => { const __name = (fn) => fn; return (${pageRun.toString()})(${JSON.stringify({ model: Buffer.from(bytes).toString('base64'), feeds })}); })()`) as Promise<number[] | string>);
    const invalid = tp.errors.find((e) => /WebGPU validation error/.test(e));
    let row: Row;
    if (typeof got === 'string') row = { name: c.name, result: 'error', message: got };
    else {
      const scale = Math.max(...ref.map(Math.abs), 1e-30);
      const err = Math.max(...ref.map((v, i) => Math.abs(v - (got[i] ?? NaN)))) / scale;
      row = { name: c.name, result: invalid ? 'invalid' : err <= 1e-4 ? 'right' : 'wrong', relErr: err };
      if (invalid) row.message = invalid.split('\n')[0]!.slice(0, 200);
    }
    rows.push(row);
    console.log(`${row.result.padEnd(7)} ${c.name}${row.relErr !== undefined ? ` (${row.relErr.toExponential(1)})` : ''}${row.message ? `: ${row.message}` : ''}`);
  }
  const date = new Date().toISOString();
  writeFileSync('bench/results/webgpu-faults.json', JSON.stringify({ date, command: 'npx tsx bench/webgpu-faults.ts', adapter: info.adapter, rows }, null, 1));
  const md = [`# WebGPU single-op checks (${date})`, '', `\`npx tsx bench/webgpu-faults.ts\`: onnxruntime-web's WebGPU provider on ${info.adapter} (headless Chromium) against onnxruntime-node, max |difference| over max |output|. The faults refit avoids on WebGPU: src/onnx/webgpu-faults.ts.`, '',
    '| case | result | rel. error | message |', '| --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.name} | ${r.result} | ${r.relErr === undefined ? '–' : r.relErr.toExponential(1)} | ${(r.message ?? '').replace(/\|/g, '/')} |`)].join('\n');
  writeFileSync('bench/results/webgpu-faults.md', md + '\n');
  console.log('wrote bench/results/webgpu-faults.{json,md}');
} finally {
  await tp.close();
}
