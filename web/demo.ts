// The in-page demo (npm run web): test-time adaptation on a corrupted Fashion-MNIST stream and LoRA
// personalization, both on refit/web. ?batches=N&steps=N shorten it; ?auto=1 runs both and leaves
// the results on window.demoResult (test/web/demo-page.test.ts drives it that way).
import * as refit from '../src/web.ts';
import { setupPersonal, type PersonalResult } from './personal.ts';

const $ = (id: string) => document.getElementById(id)!;
const params = new URLSearchParams(location.search);
const BATCHES = Number(params.get('batches') ?? 10);
const STEPS = Number(params.get('steps') ?? 20);
const BATCH = 64;

interface DemoResult {
  tta?: { source: number; adapted: number; batches: number; losses: number[] };
  lora?: { before: number; after: number; reloaded: number; losses: number[] };
  runtime?: refit.WebRuntimeInfo;
  /** The last finished personalization on the user's own samples (section 3). */
  personal?: PersonalResult;
}
const result: DemoResult = {};
(globalThis as unknown as { demoResult: DemoResult }).demoResult = result;
// For the tests: what IndexedDB holds (a failed personalization must leave no adapter there).
(globalThis as unknown as { demoApi: object }).demoApi = { listAdapters: refit.listAdaptersInIndexedDB };

function fail(e: unknown): never {
  $('error').textContent = `Error: ${(e as Error).message ?? e}`;
  throw e;
}

async function idx(name: string): Promise<Uint8Array> {
  return refit.gunzip(await refit.fetchBytes(`./data/${name}`));
}

let testSet: Promise<refit.data.LabelledImages> | undefined;
let trainSet: Promise<refit.data.LabelledImages> | undefined;
async function loadSet(prefix: string): Promise<refit.data.LabelledImages> {
  const img = refit.data.parseIdxImages(await idx(`${prefix}-images-idx3-ubyte.gz`), prefix);
  const lab = refit.data.parseIdxLabels(await idx(`${prefix}-labels-idx1-ubyte.gz`), prefix);
  return { images: refit.data.bytesToUnitFloats(img.pixels), labels: lab.labels, n: img.n, height: img.rows, width: img.cols };
}

function argmaxAcc(logits: refit.Tensor, y: Uint8Array, n: number): number {
  const d = logits.data as Float32Array, C = logits.dims[1]!;
  let ok = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < C; c++) if (d[i * C + c]! > d[i * C + best]!) best = c;
    if (best === y[i]) ok++;
  }
  return ok;
}

const pct = (ok: number, n: number) => `${((100 * ok) / n).toFixed(1)}%`;

async function runTta(): Promise<void> {
  const data = await (testSet ??= loadSet('t10k'));
  const model = await refit.loadModelFrom('./models/fmnist-cnn.onnx');
  const source = model.clone();
  const tent = refit.tta.createAdapter(model, 'tent');
  const stream = refit.data.singleDomainStream(data, { domain: 'gaussian_noise', severity: 5, batchSize: BATCH, batchesPerDomain: BATCHES });
  const body = $('tta-table').querySelector('tbody')!;
  const progress = $('tta-progress') as HTMLProgressElement;
  progress.max = BATCHES;
  let okS = 0, okA = 0, n = 0;
  const losses: number[] = [];
  for (const b of stream) {
    const x = refit.f32([b.size, 1, 28, 28], b.x);
    const s = (await source.run({ x })).logits!;
    const a = await tent.predict(x);
    const bs = argmaxAcc(s, b.y, b.size), ba = argmaxAcc(a.logits, b.y, b.size);
    okS += bs; okA += ba; n += b.size;
    if (a.info.loss !== undefined) losses.push(a.info.loss);
    $('tta-source').textContent = pct(okS, n);
    $('tta-adapted').textContent = pct(okA, n);
    const tr = document.createElement('tr');
    tr.innerHTML = `<td>${b.index + 1}</td><td>${pct(bs, b.size)}</td><td>${pct(ba, b.size)}</td><td>${a.info.loss?.toFixed(3) ?? '–'}</td><td>${a.info.ms.toFixed(0)}</td>`;
    body.appendChild(tr);
    progress.value = b.index + 1;
    $('tta-status').textContent = `batch ${b.index + 1} of ${BATCHES}`;
  }
  await tent.release();
  $('tta-status').textContent = `done: ${n} images`;
  result.tta = { source: okS / n, adapted: okA / n, batches: BATCHES, losses };
}

/** `count` images of `set` from `from`, with the user's look (contrast, severity 5). */
function userImages(set: refit.data.LabelledImages, from: number, count: number) {
  const px = 28 * 28;
  const x = refit.data.corrupt(set.images.slice(from * px, (from + count) * px), count, 28, 28, 'contrast', 5, 1);
  const y = set.labels.slice(from, from + count);
  return { x: refit.f32([count, 1, 28, 28], x), y, labels: refit.i64([count], BigInt64Array.from(y, (v) => BigInt(v))) };
}

function drawSamples(x: Float32Array): void {
  const ctx = ($('samples') as HTMLCanvasElement).getContext('2d')!;
  const img = ctx.createImageData(28 * 12, 28);
  for (let k = 0; k < 12; k++) for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = Math.round(255 * Math.min(1, Math.max(0, x[k * 784 + r * 28 + c]!)));
    const o = 4 * (r * 28 * 12 + k * 28 + c);
    img.data[o] = img.data[o + 1] = img.data[o + 2] = v;
    img.data[o + 3] = 255;
  }
  const tmp = document.createElement('canvas');
  tmp.width = 28 * 12; tmp.height = 28;
  tmp.getContext('2d')!.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, 336, 28, 0, 0, 672, 56);
}

async function accuracy(model: refit.RefitModel, set: ReturnType<typeof userImages>): Promise<number> {
  return argmaxAcc((await model.run({ x: set.x })).logits!, set.y, set.y.length) / set.y.length;
}

async function runLora(): Promise<void> {
  const train = userImages(await (trainSet ??= loadSet('train-2k')), 0, 128);
  const held = userImages(await (testSet ??= loadSet('t10k')), 5000, 256);
  drawSamples(held.x.data as Float32Array);
  const base = await refit.loadModelFrom('./models/fmnist-vit.onnx');
  const before = await accuracy(base, held);
  $('lora-before').textContent = pct(before * 256, 256);
  const p = refit.peft.withAdapter(base, 'personal', refit.peft.lora({ targets: /attn\.(q|v)$|^head$/, rank: 4, alpha: 8, seed: 0 }));
  const step = p.compileTrainStep({ trainable: p.trainableNames('personal'), loss: refit.losses.crossEntropy({ logits: 'logits' }) });
  const trainer = new refit.Trainer(step, refit.optim.adamw({ lr: 3e-3, weightDecay: 0 }));
  const progress = $('lora-progress') as HTMLProgressElement;
  progress.max = STEPS;
  const losses: number[] = [];
  const mb = 32;
  for (let s = 0; s < STEPS; s++) {
    const from = (s * mb) % 128;
    const x = refit.f32([mb, 1, 28, 28], (train.x.data as Float32Array).slice(from * 784, (from + mb) * 784));
    const y = refit.i64([mb], (train.labels.data as BigInt64Array).slice(from, from + mb));
    const r = await trainer.step({ x, y });
    losses.push(r.loss);
    progress.value = s + 1;
    $('lora-status').textContent = `step ${s + 1} of ${STEPS}, loss ${r.loss.toFixed(3)}`;
    $('lora-losses').textContent = losses.map((l) => l.toFixed(2)).join(' ');
  }
  const after = await accuracy(p, held);
  $('lora-after').textContent = pct(after * 256, 256);
  await refit.saveAdapterToIndexedDB(p, 'personal');
  const reloaded = await accuracy(await refit.loadAdapterFromIndexedDB(await refit.loadModelFrom('./models/fmnist-vit.onnx'), 'personal'), held);
  $('lora-reloaded').textContent = pct(reloaded * 256, 256);
  const dl = $('lora-download') as HTMLButtonElement;
  dl.disabled = false;
  dl.onclick = () => refit.downloadAdapter(p, 'personal');
  $('lora-status').textContent = `done; adapter saved to IndexedDB (${(await refit.listAdaptersInIndexedDB()).join(', ')})`;
  result.lora = { before, after, reloaded, losses };
}

async function main(): Promise<void> {
  // start: onnxruntime-web compiles its wasm now, not inside the first model's session.
  const info = await refit.useWebRuntime({ device: params.get('device') === 'webgpu' ? 'webgpu' : 'wasm', start: true });
  result.runtime = info;
  $('runtime').textContent = `Runtime: ${info.device}, ${info.threads} thread${info.threads > 1 ? 's' : ''}${info.crossOriginIsolated ? '' : ' (page not cross-origin isolated)'}`;
  // WebGPU asked for where there is none: the page runs on wasm and says why.
  $('warning').textContent = info.warnings.join('\n');
  setupPersonal({
    steps: Number(params.get('psteps') ?? 30),
    modelUrl: params.get('vit') ?? './models/fmnist-vit.onnx',
    onResult: (r) => { result.personal = r; },
  });
  const busy = (f: () => Promise<void>) => async () => {
    for (const id of ['tta-run', 'lora-run']) ($(id) as HTMLButtonElement).disabled = true;
    try { await f(); } catch (e) { fail(e); } finally { ($('tta-run') as HTMLButtonElement).disabled = ($('lora-run') as HTMLButtonElement).disabled = false; }
  };
  $('tta-run').onclick = busy(runTta);
  $('lora-run').onclick = busy(runLora);
  if (params.get('auto') === '1') {
    await busy(runTta)();
    await busy(runLora)();
    (globalThis as unknown as { demoDone: boolean }).demoDone = true;
  }
}

main().catch(fail);
