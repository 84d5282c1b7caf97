// Device side of the fleet (issue 15): what CEMA's upload filter keeps and what the budget lets
// through, on the shipped CNN over shifted Fashion-MNIST-C streams, against uploading every
// sample; and the error of the device alone (BN-adapt) against the source model.
//
//   nice -n 10 npx tsx bench/fleet-device.ts [--batches-per-domain 8] [--batch 64] [--domains a,b,…] [--json out.json]
//   nice -n 10 npx tsx bench/fleet-device.ts --overhead     (FleetDevice's cost over plain BN-adapt)
//   nice -n 10 npx tsx bench/fleet-device.ts --agreement    (how far consolidated adapters move predictions: the health check's agreement bar)
//
// Stream time: one batch per second of device clock (a camera at `batch` frames per second), so
// a budget in bytes per second compares directly with the stream's own rate.
import { loadModel } from '../src/model.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { continualStream, mixedStream, type Stream } from '../src/data/streams.ts';
import { FleetDevice, type FleetDeviceOptions } from '../src/fleet/device.ts';
import type { CloudLink, UploadPayload } from '../src/fleet/types.ts';
import type { UploadFilterOptions } from '../src/fleet/upload-filter.ts';
import { writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const perDomain = Number(arg('batches-per-domain', '8'));
const batch = Number(arg('batch', '64'));
const domains = arg('domains', 'gaussian_noise,motion_blur,snow,fog,contrast,pixelate,elastic_transform,spatter').split(',') as never[];

const model = await loadModel(new URL('../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 2 });
const data = loadFashionMnist('test');
const streams: Record<string, Stream> = {
  continual: continualStream(data, { domains, severity: 5, batchSize: batch, batchesPerDomain: perDomain, seed: 1 }),
  mixed: mixedStream(data, { domains, severity: 5, batchSize: batch, batchesPerDomain: perDomain, seed: 2 }),
};

class CountingLink implements CloudLink {
  uploads: UploadPayload[] = [];
  async upload(p: UploadPayload) { this.uploads.push(p); return { accepted: true }; }
  async fetchAdapter() { return undefined; }
  async reportApplied() {}
}

interface Row { stream: string; adapt: string; filter: string; budget: string; error: number; samples: number; kept: number; uploaded: number; keptPct: number; uploadedPct: number; bytes: number; everything: number; reduction: number; uploadedError: number | null; ms: number }
const rows: Row[] = [];

async function run(stream: string, adapt: 'bn' | 'none', filterName: string, filter: Omit<UploadFilterOptions, 'classes'>, budgetName: string, bytesPerSecond?: number) {
  let t = 0;
  const link = new CountingLink();
  const opts: FleetDeviceOptions = {
    base: model, link, model: 'fmnist-cnn', device: 'bench', adapt, uploadEvery: 10, now: () => t,
    filter: { ...filter, ...(bytesPerSecond ? { budget: { bytesPerSecond, burstBytes: bytesPerSecond * 10 } } : {}) },
  };
  const dev = new FleetDevice(opts);
  let wrong = 0, n = 0;
  const labelOf = new Map<string, number>();
  const t0 = performance.now();
  for (const b of streams[stream]!) {
    const r = await dev.predict({ dtype: 'float32', dims: [b.size, 1, 28, 28], data: b.x });
    for (let i = 0; i < b.size; i++) {
      if (r.predicted[i] !== b.y[i]) wrong++;
      labelOf.set(hashRow(b.x, i), b.y[i]!);
    }
    n += b.size;
    t += 1000;
  }
  await dev.uploadNow();
  const ms = performance.now() - t0;
  // Error of the device's own predictions on the samples it chose to upload (how hard they are).
  let upWrong = 0, upN = 0;
  for (const p of link.uploads) for (let i = 0; i < p.dims[0]!; i++) {
    const y = labelOf.get(hashRow(p.data, i));
    if (y === undefined) continue;
    upN++;
    if (p.predicted![i] !== y) upWrong++;
  }
  const s = dev.stats;
  rows.push({
    stream, adapt, filter: filterName, budget: budgetName, error: wrong / n, samples: s.samples, kept: s.kept, uploaded: s.uploadedSamples,
    keptPct: s.kept / s.samples, uploadedPct: s.uploadedSamples / s.samples, bytes: s.uploadedBytes, everything: s.everythingBytes,
    reduction: s.uploadedBytes ? s.everythingBytes / s.uploadedBytes : Infinity, uploadedError: upN ? upWrong / upN : null, ms,
  });
  await dev.release();
}

function hashRow(x: Float32Array, i: number): string {
  let h = 2166136261;
  for (let j = i * 784; j < (i + 1) * 784; j += 7) h = Math.imul(h ^ Math.round(x[j]! * 1e6), 16777619);
  return h.toString(36);
}

if (args.includes('--overhead')) {
  // The device's own cost over plain BN-adapt: the two alternate batch by batch in this process.
  const { BNAdapt } = await import('../src/tta/bn-adapt.ts');
  const dev = new FleetDevice({ base: model, link: new CountingLink(), model: 'fmnist-cnn', device: 'bench' });
  const bn = new BNAdapt(model);
  const A: number[] = [], B: number[] = [];
  const bs = [...continualStream(data, { domains: ['gaussian_noise', 'fog'], severity: 5, batchSize: batch, batchesPerDomain: 10, seed: 3 })];
  for (let r = 0; r < 3; r++) for (const b of bs) {
    const x = { dtype: 'float32' as const, dims: [b.size, 1, 28, 28], data: b.x };
    let t0 = performance.now(); await bn.predict(x); A.push(performance.now() - t0);
    t0 = performance.now(); await dev.predict(x); B.push(performance.now() - t0);
  }
  await dev.flush();
  const med = (a: number[]) => { const s = a.slice(10).sort((p, q) => p - q); return s[Math.floor(s.length / 2)]!; };
  console.log(`median ms per batch of ${batch}: bn-adapt ${med(A).toFixed(1)}, FleetDevice ${med(B).toFixed(1)}, ratio ${(med(B) / med(A)).toFixed(3)} (${A.length} batches each, first 10 dropped)`);
  process.exit(0);
}

if (args.includes('--agreement')) {
  // Calibrating the health check's agreement bar: how far do real cloud adapters (consolidated by
  // src/fleet/consolidate.ts from this device's CEMA uploads, ViT teacher) move the device's
  // predictions? Per corruption: upload a segment, consolidate, then on the next, unseen segment
  // compare the base (BN-adapt) with the adapter (BN-adapt): argmax agreement and both errors.
  const { consolidate } = await import('../src/fleet/consolidate.ts');
  const { modelTeacher } = await import('../src/fleet/teacher.ts');
  const { withAdapterFiles } = await import('../src/peft/files.ts');
  const { BNAdapt } = await import('../src/tta/bn-adapt.ts');
  const vit = await loadModel(new URL('../models/fmnist-vit.onnx', import.meta.url).pathname, { threads: 2 });
  const teacher = modelTeacher(vit, { name: 'vit' });
  console.log('| corruption | uploaded | base error % | adapter error % | agreement % | samples |');
  console.log('|---|---|---|---|---|---|');
  for (const d of domains) {
    const all = [...continualStream(data, { domains: [d], severity: 5, batchSize: batch, batchesPerDomain: 2 * perDomain, seed: 5 })];
    const link = new CountingLink();
    const dev = new FleetDevice({ base: model, link, model: 'fmnist-cnn', device: 'bench', uploadEvery: perDomain });
    for (const b of all.slice(0, perDomain)) await dev.predict({ dtype: 'float32', dims: [b.size, 1, 28, 28], data: b.x });
    await dev.uploadNow();
    await dev.release();
    const uploads = link.uploads.map((u) => ({ dims: u.dims, data: u.data }));
    const up = uploads.reduce((a, u) => a + u.dims[0]!, 0);
    const { files } = await consolidate({ base: model, uploads, teacher, options: { epochs: 16, lr: 0.01, temperature: 0.5 } });
    const adapted = new BNAdapt(withAdapterFiles(model, 'fleet', files));
    const plain = new BNAdapt(model);
    let agree = 0, wrongBase = 0, wrongAd = 0, n = 0;
    for (const b of all.slice(perDomain)) {
      const x = { dtype: 'float32' as const, dims: [b.size, 1, 28, 28], data: b.x };
      const pb = argmax((await plain.predict(x)).logits.data as Float32Array);
      const pa = argmax((await adapted.predict(x)).logits.data as Float32Array);
      for (let i = 0; i < b.size; i++) { n++; if (pa[i] === pb[i]) agree++; if (pb[i] !== b.y[i]) wrongBase++; if (pa[i] !== b.y[i]) wrongAd++; }
    }
    console.log(`| ${d} | ${up} | ${(100 * wrongBase / n).toFixed(1)} | ${(100 * wrongAd / n).toFixed(1)} | ${(100 * agree / n).toFixed(1)} | ${n} |`);
    await adapted.release();
    await plain.release();
  }
  process.exit(0);
}
function argmax(l: Float32Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < l.length / 10; i++) { let b = 0; for (let c = 1; c < 10; c++) if (l[i * 10 + c]! > l[i * 10 + b]!) b = c; out.push(b); }
  return out;
}

const everything = { highMargin: null, lowMargin: null, warmupSamples: null, poolCapacity: 1 << 20 };
const cema = {};
const perSecond = batch * (784 * 4 + 8); // the stream's own rate, bytes per second
for (const stream of Object.keys(streams)) {
  await run(stream, 'none', 'everything', everything, 'none');
  await run(stream, 'bn', 'everything', everything, 'none');
  await run(stream, 'bn', 'cema', cema, 'none');
  await run(stream, 'bn', 'cema, fixed E_max', { warmupSamples: null }, 'none');
  await run(stream, 'bn', 'cema + redundancy ε=0.9', { redundancy: 0.9 }, 'none');
  for (const frac of [0.2, 0.1, 0.05]) await run(stream, 'bn', 'cema', cema, `${Math.round(perSecond * frac / 1000)} kB/s (${frac * 100}% of stream)`, perSecond * frac);
}

const f = (v: number) => (100 * v).toFixed(1);
console.log(`streams: ${domains.length} corruptions at severity 5, ${perDomain} batches of ${batch} each; device clock 1 s per batch (stream rate ${(perSecond / 1000).toFixed(0)} kB/s)`);
console.log('| stream | device adapt | filter | budget | error % | kept % | uploaded % | uploaded bytes | all-samples bytes | reduction | device error on uploaded % |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.stream} | ${r.adapt} | ${r.filter} | ${r.budget} | ${f(r.error)} | ${f(r.keptPct)} | ${f(r.uploadedPct)} | ${r.bytes} | ${r.everything} | ${r.reduction.toFixed(1)}× | ${r.uploadedError === null ? '—' : f(r.uploadedError)} |`);
}
const out = arg('json', '');
if (out) writeFileSync(out, JSON.stringify(rows, null, 2));
