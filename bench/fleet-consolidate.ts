// Cloud consolidation on a small simulated fleet (issue 15, targets "5× fewer bytes for ≤ 1 point
// more error" and "fleet error below the best single-device method"). Each device streams its
// own mix of Fashion-MNIST-C corruptions (severity 5, mixed within batches, batch 64) and runs
// the shipped CNN with BN-adapt. The stream is cut into segments of --round samples; after each
// segment the device uploads and the cloud consolidates (src/fleet/consolidate.ts: distil the
// teacher into the device's norm-affine adapter, replaying its earlier uploads); the device runs
// the next segment with the new adapter. Chains, each with its own adapters and uploads:
//   all       every sample uploaded
//   filtered  CEMA's filter (src/fleet/upload-filter.ts) on the chain's own predictions, then
//             the --keep fraction most informative of the kept samples (the byte budget)
//   fleet     filtered uploads, consolidated from the fleet adapter, which is the FedAvg (by
//             samples) of the devices' new adapters; every device runs the fleet adapter
//   fleet-ties  evaluation only: TIES of the same device adapters
// plus the source model, BN-adapt alone and --single methods (src/tta) on the same streams.
// Errors are online: each segment after the first is scored with the adapter of the round before.
//
//   nice -n 10 npx tsx bench/fleet-consolidate.ts [--split test|val] [--devices 6] [--domains 3]
//     [--round 192] [--rounds 2] [--keep 0.2] [--teacher cnn|cnn-aug|vit|ensemble|model|model+cnn]
//     [--teacher-model tmp/foreign-fmnist/resnet18-fmnist.onnx] [--epochs 16]
//     [--sim] [--high-margin 0.4|none] [--select cema|random|hybrid] [--codec f32|u8|png|jpeg:Q|browser:Q] [--lr 0.01] [--temperature 0.5] [--targets teacher|mix|agree] [--single tent] [--tag -x]
// --split val scores on validation images (training images 10000..19999): that is where the
// teacher and the options were chosen; report on --split test.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import sharp from 'sharp';
import jpeg from 'jpeg-js';
import { loadModel } from '../src/model.ts';
import { mixedStream, type LabelledImages } from '../src/data/streams.ts';
import { CORRUPTIONS } from '../src/data/corruptions/index.ts';
import { Rng } from '../src/data/random.ts';
import { argmaxRows } from '../src/data/evaluate.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { BatchStatRunner } from '../src/tta/mean-teacher.ts';
import { softmaxRows } from '../src/tta/common.ts';
import { createAdapter, loadSourceSet, sourceDataOptions } from '../src/tta/index.ts';
import { withAdapterFiles, type AdapterFiles } from '../src/peft/files.ts';
import { consolidate, type Samples, type ConsolidateMetrics } from '../src/fleet/consolidate.ts';
import { aggregate } from '../src/fleet/aggregate.ts';
import type { Teacher } from '../src/fleet/teacher.ts';
import { makeTeacher, type TeacherChoice } from '../src/fleet/consolidator.ts';
import { UploadFilter, type PoolItem } from '../src/fleet/upload-filter.ts';
import { encodedUploadSize } from '../src/fleet/upload-codec.ts';
import { tile, untile } from '../src/fleet/upload-images.ts';
import { testData, validationData } from './continual/lib.ts';
import { demoAdapter } from '../src/cli/demo.ts';
import { withFeaturesFor } from '../src/cli/common.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
if (args.includes('--help')) { console.log(readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n')); process.exit(0); }
const split = opt('split', 'test') as 'test' | 'val';
const D = Number(opt('devices', '6')), K = Number(opt('domains', '3')), ROUND = Number(opt('round', '192')), ROUNDS = Number(opt('rounds', '2'));
// --sim: the fleet simulation's protocol (bench/fleet-simulation.ts): batches of 32, 2–3
// corruptions at severity 3–5 per device (the same draw, on this split's images), and its
// consolidation sizing (batch 32, replay 64).
const SIM = args.includes('--sim');
const KEEP = Number(opt('keep', '0.2')), BATCH = SIM ? 32 : 64;
// --high-margin: CEMA's unreliable-sample bar (E_max(0) = margin·ln C); 'none' uploads uncertain samples too.
// --select random: upload a seeded uniform draw of KEEP·round samples instead (no filter);
// hybrid: half the filter's ranking, half a uniform draw from the rest.
const HIGH = opt('high-margin', ''), SELECT = opt('select', 'cema'), filterOptions = HIGH === '' ? {} : { highMargin: HIGH === 'none' ? null : Number(HIGH) };
const teacherName = opt('teacher', 'vit');
const copts = { epochs: Number(opt('epochs', '16')), lr: Number(opt('lr', '0.01')), temperature: Number(opt('temperature', '0.5')), targets: opt('targets', 'teacher') as 'teacher' | 'mix' | 'agree', ...(SIM ? { batch: 32, replay: 64 } : {}) };
const singles = opt('single', 'tent').split(',').filter(Boolean);
// --codec: how an upload's images travel. f32 (upload-codec's float32, the default), u8 (8 bits a
// pixel, rounded), png (u8 tiled into one lossless PNG per upload), jpeg:Q (u8 tiled into one JPEG
// of quality Q per upload by sharp's mozjpeg; the cloud trains on the decoded, lossy images),
// jpegjs:Q (the same by jpeg-js, pure JavaScript), webp:Q and avif:Q (sharp's WebP and AVIF),
// webpll (lossless WebP), browser:Q (headless Chromium's own JPEG encoder, as a device in a web
// page encodes: src/fleet/upload-images.ts). Bytes count the images
// so encoded plus upload-codec's header and 8 bytes a sample of entropy and prediction.
const CODEC = opt('codec', 'f32');
const tag = opt('tag', '');
if (ROUND % BATCH) throw new Error(`--round must be a multiple of ${BATCH}`);
const command = `nice -n 10 npx tsx bench/fleet-consolidate.ts ${args.join(' ')}`.trim();

const data: LabelledImages = split === 'val' ? validationData() : testData();
const cnn = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
const teacher: Teacher = await makeTeacher(teacherName as TeacherChoice, cnn, { teacherModel: opt('teacher-model', 'tmp/foreign-fmnist/resnet18-fmnist.onnx') });
const SAMPLE = [1, 28, 28], PX = 784, C = 10;

interface Device { id: string; domains: string[]; severity: number; x: Float32Array; y: Uint8Array }
const devices: Device[] = [];
for (let d = 0; d < D; d++) {
  const rng = new Rng((SIM ? 7000 : 1000) + d);
  const doms = [...CORRUPTIONS];
  for (let i = doms.length - 1; i > 0; i--) { const j = rng.int(i + 1); [doms[i], doms[j]] = [doms[j]!, doms[i]!]; }
  const domains = doms.slice(0, SIM ? 2 + rng.int(2) : K);
  const severity = SIM ? 3 + rng.int(3) : 5;
  const total = ROUND * (ROUNDS + 1);
  const x = new Float32Array(total * PX), y = new Uint8Array(total);
  let off = 0;
  for (const b of mixedStream(data, { domains, severity, samplesPerDomain: Math.ceil(total / domains.length), batchSize: BATCH, seed: 100 + d })) {
    const take = Math.min(b.size, total - off);
    if (take <= 0) break;
    x.set(b.x.subarray(0, take * PX), off * PX); y.set(b.y.subarray(0, take), off); off += take;
  }
  devices.push({ id: `dev${d}`, domains, severity, x, y });
}

type Chain = 'all' | 'filtered' | 'fleet';
const CHAINS: Chain[] = ['all', 'filtered', 'fleet'];
const ROWS = ['source', 'bn-adapt', ...singles, 'all', 'filtered', 'fleet', 'fleet-ties'];
// wrong[row][device][segment]
const wrong: Record<string, number[][]> = Object.fromEntries(ROWS.map((r) => [r, devices.map(() => new Array(ROUNDS + 1).fill(0))]));
const state = new Map<string, { adapter: AdapterFiles | null; history: Samples[]; filter: UploadFilter; bytes: number; samples: number }>();
for (const dev of devices) for (const ch of CHAINS) state.set(`${dev.id}/${ch}`, { adapter: null, history: [], filter: new UploadFilter({ classes: C, ...filterOptions }), bytes: 0, samples: 0 });
let fleet: AdapterFiles | null = null, fleetTies: AdapterFiles | null = null;
// 'continual': the controller as `refit demo` runs it (recommended options, deep learner on the bundled set).
const single = (m: string) => m === 'continual' ? demoAdapter(withFeaturesFor(m, cnn, 'logits', { quiet: true }), m, loadSourceSet())
  : createAdapter(cnn, m, { ...sourceDataOptions(m, loadSourceSet(), { quick: true }) });
const singleAdapters = new Map(devices.map((dev) => [dev.id, singles.map(single)]));
const metrics: (ConsolidateMetrics & { device: string; chain: Chain; round: number })[] = [];

const segment = (dev: Device, s: number) => ({ x: dev.x.subarray(s * ROUND * PX, (s + 1) * ROUND * PX), y: dev.y.subarray(s * ROUND, (s + 1) * ROUND) });
const models = new Map<AdapterFiles, BatchStatRunner>();
const runnerFor = (files: AdapterFiles | null): BatchStatRunner => {
  const key = files ?? (null as unknown as AdapterFiles);
  let r = models.get(key);
  if (!r) { r = new BatchStatRunner(files ? withAdapterFiles(cnn, 'device', files) : cnn); models.set(key, r); }
  return r;
};
/** Online predictions of a device model (BN-adapt, batches of 64) on a segment: probabilities and wrong count. */
async function runSegment(model: (x: Float32Array, n: number) => Promise<Float32Array>, seg: { x: Float32Array; y: Uint8Array }) {
  const probs = new Float32Array(ROUND * C);
  let w = 0;
  for (let s = 0; s < ROUND; s += BATCH) {
    const logits = await model(seg.x.subarray(s * PX, (s + BATCH) * PX), BATCH);
    const p = softmaxRows(logits, C);
    probs.set(Float32Array.from(p), s * C);
    const pred = argmaxRows(logits, C);
    for (let i = 0; i < BATCH; i++) if (pred[i] !== seg.y[s + i]) w++;
  }
  return { probs, wrong: w };
}
const bnRun = (files: AdapterFiles | null) => async (x: Float32Array, n: number) => (await runnerFor(files).run(f32([n, ...SAMPLE], x.slice()), ['logits'])).logits!.data as Float32Array;

/** One headless Chromium page for --codec browser:Q, started on first use. */
let browserPage: Promise<import('playwright-core').Page> | undefined;
async function browserJpeg(grey: Uint8Array, width: number, height: number, quality: number): Promise<Uint8Array> {
  browserPage ??= (async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
    return browser.newPage();
  })();
  const page = await browserPage;
  const b64 = await page.evaluate(async ([g, w, h, qq]) => {
    const px = Uint8Array.from(atob(g as string), (c) => c.charCodeAt(0));
    const rgba = new Uint8ClampedArray(px.length * 4);
    for (let i = 0; i < px.length; i++) { rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = px[i]!; rgba[4 * i + 3] = 255; }
    const canvas = new OffscreenCanvas(w as number, h as number);
    canvas.getContext('2d')!.putImageData(new ImageData(rgba, w as number, h as number), 0, 0);
    const bytes = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/jpeg', quality: (qq as number) / 100 })).arrayBuffer());
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }, [Buffer.from(grey).toString('base64'), width, height, quality] as const);
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/** The images of one upload through --codec: what the cloud gets, and the bytes they took. */
async function encodeImages(x: Float32Array, n: number): Promise<{ data: Float32Array; bytes: number }> {
  if (CODEC === 'f32') return { data: x, bytes: 4 * x.length };
  const u8 = Uint8Array.from(x, (v) => Math.round(Math.min(1, Math.max(0, v)) * 255));
  if (CODEC === 'u8') return { data: Float32Array.from(u8, (v) => v / 255), bytes: u8.length };
  // Tiled into one grey image, as the device's codec tiles (src/fleet/upload-images.ts).
  const t = tile(u8, n, SAMPLE);
  const back = (pixels: ArrayLike<number>, stride: number) => Float32Array.from(untile(pixels, stride, n, SAMPLE), (v) => v / 255);
  const [kind, q] = CODEC.split(':');
  if (kind === 'browser') {
    // Chromium's own JPEG encoder, as a device in a web page encodes (upload-images.ts,
    // encodeJpegCanvas: R = G = B, alpha 255, quality Q/100); the cloud decodes with jpeg-js.
    const enc = await browserJpeg(t.pixels, t.width, t.height, Number(q));
    return { data: back(jpeg.decode(enc, { useTArray: true, formatAsRGBA: true }).data, 4), bytes: enc.byteLength };
  }
  if (kind === 'jpegjs') {
    // jpeg-js (pure JavaScript, as a browser or any device can run it), RGB with R = G = B.
    const rgba = new Uint8Array(t.pixels.length * 4);
    t.pixels.forEach((v, i) => rgba.set([v, v, v, 255], 4 * i));
    const enc = jpeg.encode({ data: rgba, width: t.width, height: t.height }, Number(q)).data;
    return { data: back(jpeg.decode(enc, { useTArray: true, formatAsRGBA: true }).data, 4), bytes: enc.byteLength };
  }
  const img = sharp(t.pixels, { raw: { width: t.width, height: t.height, channels: 1 } });
  const enc = kind === 'png' ? await img.png({ compressionLevel: 9 }).toBuffer()
    : kind === 'jpeg' ? await img.jpeg({ quality: Number(q), mozjpeg: true }).toBuffer()
      : kind === 'webp' ? await img.webp({ quality: Number(q), effort: 6 }).toBuffer()
        : kind === 'avif' ? await img.avif({ quality: Number(q), effort: 4 }).toBuffer()
          : kind === 'webpll' ? await img.webp({ lossless: true, effort: 6 }).toBuffer() : null;
  if (!enc) throw new Error(`--codec ${CODEC}: expected f32, u8, png, jpeg:Q, jpegjs:Q, browser:Q, webp:Q, avif:Q or webpll`);
  return { data: back(await sharp(enc).greyscale().raw().toBuffer(), 1), bytes: enc.byteLength };
}

const t0 = performance.now();
for (let s = 0; s <= ROUNDS; s++) {
  const newAdapters: { files: AdapterFiles; samples: number }[] = [];
  for (const dev of devices) {
    const seg = segment(dev, s);
    wrong.source![devices.indexOf(dev)]![s] = (await runSegment(async (x, n) => (await cnn.run({ x: f32([n, ...SAMPLE], x.slice()) }, { outputs: ['logits'] })).logits!.data as Float32Array, seg)).wrong;
    wrong['bn-adapt']![devices.indexOf(dev)]![s] = (await runSegment(bnRun(null), seg)).wrong;
    for (const [k, a] of singleAdapters.get(dev.id)!.entries()) {
      wrong[singles[k]!]![devices.indexOf(dev)]![s] = (await runSegment(async (x, n) => (await a.predict(f32([n, ...SAMPLE], x.slice()))).logits.data as Float32Array, seg)).wrong;
    }
    if (fleetTies) wrong['fleet-ties']![devices.indexOf(dev)]![s] = (await runSegment(bnRun(fleetTies), seg)).wrong;
    for (const ch of CHAINS) {
      const st = state.get(`${dev.id}/${ch}`)!;
      const adapter = ch === 'fleet' ? fleet : st.adapter;
      const r = await runSegment(bnRun(adapter), seg);
      wrong[ch]![devices.indexOf(dev)]![s] = r.wrong;
      if (s === ROUNDS) continue;
      // Device side: what this chain uploads from the segment.
      let idx: number[];
      if (ch === 'all') idx = [...Array(ROUND).keys()];
      else if (SELECT === 'random') {
        const rng = new Rng(31 * s + devices.indexOf(dev)), order = [...Array(ROUND).keys()];
        for (let i = order.length - 1; i > 0; i--) { const j = rng.int(i + 1); [order[i], order[j]] = [order[j]!, order[i]!]; }
        idx = order.slice(0, Math.floor(KEEP * ROUND)).sort((a, b) => a - b);
      } else {
        const pool: PoolItem<number>[] = [];
        for (let b = 0; b < ROUND; b += BATCH) {
          const v = st.filter.screen(r.probs.subarray(b * C, (b + BATCH) * C));
          v.verdicts.forEach((verdict, i) => { if (verdict === 'kept') pool.push({ x: b + i, entropy: v.entropy[i]!, predicted: v.predicted[i]!, seq: b + i }); });
        }
        idx = st.filter.rank(pool).slice(0, Math.floor((SELECT === 'hybrid' ? KEEP / 2 : KEEP) * ROUND)).map((p) => p.x);
        if (SELECT === 'hybrid') {
          // The other half a uniform draw from the rest, so the uploads' statistics stay closer to the stream's.
          const rng = new Rng(31 * s + devices.indexOf(dev)), taken = new Set(idx), rest = [...Array(ROUND).keys()].filter((j) => !taken.has(j));
          for (let i = rest.length - 1; i > 0; i--) { const j = rng.int(i + 1); [rest[i], rest[j]] = [rest[j]!, rest[i]!]; }
          idx.push(...rest.slice(0, Math.floor(KEEP * ROUND) - idx.length));
        }
        idx.sort((a, b) => a - b);
      }
      if (idx.length === 0) continue;
      let up: Float32Array = new Float32Array(idx.length * PX);
      idx.forEach((j, i) => up.set(seg.x.subarray(j * PX, (j + 1) * PX), i * PX));
      const coded = await encodeImages(up, idx.length);
      up = coded.data;
      const upload: Samples = { dims: [idx.length, ...SAMPLE], data: up };
      st.bytes += encodedUploadSize({ model: 'fmnist-cnn', device: dev.id, round: s + 1 }, idx.length, SAMPLE) - 4 * PX * idx.length + coded.bytes;
      st.samples += idx.length;
      // Cloud side.
      const res = await consolidate({ base: cnn, adapter: adapter, uploads: [upload], replay: st.history, teacher, options: { ...copts, seed: s } });
      st.history.push(upload);
      metrics.push({ ...res.metrics, device: dev.id, chain: ch, round: s + 1 });
      if (ch === 'fleet') newAdapters.push({ files: res.files, samples: st.samples });
      else st.adapter = res.files;
    }
    console.log(`segment ${s} ${dev.id} [${dev.domains.join(', ')}]: ${ROWS.map((r) => `${r} ${(100 * wrong[r]![devices.indexOf(dev)]![s]! / ROUND).toFixed(1)}`).join(' ')} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  if (newAdapters.length) {
    fleet = aggregate(newAdapters, { method: 'fedavg', name: 'fleet' });
    fleetTies = aggregate(newAdapters, { method: 'ties', base: cnn, name: 'fleet' });
  }
}

// Online error over segments 1..ROUNDS (every chain has had at least one consolidation).
const err = (r: string, devs = devices.map((_, i) => i)) => {
  let w = 0, n = 0;
  for (const d of devs) for (let s = 1; s <= ROUNDS; s++) { w += wrong[r]![d]![s]!; n += ROUND; }
  return w / n;
};
const bytes = (ch: Chain) => devices.reduce((a, dev) => a + state.get(`${dev.id}/${ch}`)!.bytes, 0);
const samplesUp = (ch: Chain) => devices.reduce((a, dev) => a + state.get(`${dev.id}/${ch}`)!.samples, 0);
const summary = {
  command, split, devices: devices.map((d) => ({ id: d.id, domains: d.domains, severity: d.severity })), sim: SIM, round: ROUND, rounds: ROUNDS, keep: KEEP, highMargin: HIGH || undefined, select: SELECT,
  teacher: teacher.name, consolidate: copts, seconds: (performance.now() - t0) / 1000,
  error: Object.fromEntries(ROWS.map((r) => [r, err(r)])),
  segment0: Object.fromEntries(ROWS.map((r) => [r, devices.reduce((a, _, d) => a + wrong[r]![d]![0]!, 0) / (ROUND * D)])),
  perDevice: devices.map((dev, d) => ({ id: dev.id, ...Object.fromEntries(ROWS.map((r) => [r, err(r, [d])])) })),
  bytes: { all: bytes('all'), filtered: bytes('filtered'), fleet: bytes('fleet') },
  samples: { all: samplesUp('all'), filtered: samplesUp('filtered'), fleet: samplesUp('fleet') },
  consolidation: {
    meanMs: metrics.reduce((a, m) => a + m.ms, 0) / Math.max(1, metrics.length),
    klBefore: metrics.reduce((a, m) => a + m.klBefore, 0) / Math.max(1, metrics.length),
    klAfter: metrics.reduce((a, m) => a + m.klAfter, 0) / Math.max(1, metrics.length),
  },
  metrics,
};
const pct = (v: number) => (100 * v).toFixed(1);
const md = [
  `# Fleet consolidation (${split} split)`, '', `\`${command}\``, '',
  `${D} devices × ${SIM ? '2–3 corruptions each (severity 3–5 per device, the fleet simulation\'s draw' : `${K} corruptions each (severity 5`}, mixed in batches of ${BATCH}), ${ROUNDS + 1} segments of ${ROUND} samples; teacher: ${teacher.name}; consolidation ${JSON.stringify(copts)}; keep ${KEEP} of each segment ${SELECT === 'random' ? 'drawn uniformly at random' : `${SELECT === 'hybrid' ? 'half ' : ''}after CEMA's filter${HIGH ? ` (highMargin ${HIGH})` : ''}${SELECT === 'hybrid' ? ', half drawn uniformly from the rest' : ''}`}. Error: online, segments 2..${ROUNDS + 1} (each with the adapter consolidated from the segments before); ${summary.seconds.toFixed(0)} s.`, '',
  '| method | error % | uploaded samples | uploaded bytes | bytes vs all |', '|---|---:|---:|---:|---:|',
  ...ROWS.map((r) => {
    const ch = (r === 'fleet-ties' ? 'fleet' : r) as Chain;
    const up = CHAINS.includes(ch) ? [samplesUp(ch), bytes(ch), (bytes('all') / Math.max(1, bytes(ch))).toFixed(2) + '× fewer'] : ['', '', ''];
    return `| ${r} | ${pct(err(r))} | ${up.join(' | ')} |`;
  }),
  '', '| device | corruptions | ' + ROWS.join(' | ') + ' |', '|---|---|' + ROWS.map(() => '---:').join('|') + '|',
  ...devices.map((dev, d) => `| ${dev.id} | ${dev.domains.join(', ')}${SIM ? ` @${dev.severity}` : ''} | ${ROWS.map((r) => pct(err(r, [d]))).join(' | ')} |`),
  '', `Consolidation: ${metrics.length} runs, mean ${(summary.consolidation.meanMs / 1000).toFixed(1)} s, mean KL(teacher‖student) on the uploads ${summary.consolidation.klBefore.toFixed(3)} → ${summary.consolidation.klAfter.toFixed(3)}.`, '',
];
mkdirSync('bench/results', { recursive: true });
const base = `bench/results/fleet-consolidate-${split}${tag}`;
writeFileSync(`${base}.json`, JSON.stringify(summary, null, 1));
writeFileSync(`${base}.md`, md.join('\n'));
console.log(md.join('\n'));
for (const r of models.values()) await r.release();
await teacher.release();
if (browserPage) await (await browserPage).context().browser()?.close();
