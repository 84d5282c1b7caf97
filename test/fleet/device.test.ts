// FleetDevice against an in-process CloudLink (no HTTP): uploads under the filter and the budget,
// atomic adapter apply (refusals keep the old version serving), health rollback, state round trip.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { continualStream, type StreamBatch } from '../../src/data/streams.ts';
import { PeftModel } from '../../src/peft/peft-model.ts';
import { normAffine } from '../../src/peft/selection/index.ts';
import { adapterFiles, type AdapterFiles } from '../../src/peft/files.ts';
import { parseSafetensors, serializeSafetensors } from '../../src/io/safetensors.ts';
import { FleetDevice, type FleetDeviceOptions } from '../../src/fleet/device.ts';
import { UploadFilter } from '../../src/fleet/upload-filter.ts';
import { encodeUploadAsync, decodeUpload } from '../../src/fleet/upload-codec.ts';
import { codecName } from '../../src/fleet/upload-images.ts';
import type { CloudLink, PushedAdapter, UploadPayload } from '../../src/fleet/types.ts';
import { Rng } from '../../src/util/rng.ts';
import { ContinualAdapter } from '../../src/continual/adapter.ts';
import type { Tensor } from '../../src/onnx/tensor.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
let base: RefitModel;
let batches: StreamBatch[];
const B = 32;

before(async () => {
  base = await loadModel(modelPath, { threads: 1 });
  const data = loadFashionMnist('test');
  batches = [...continualStream(data, { domains: ['gaussian_noise', 'fog', 'pixelate'], severity: 5, batchSize: B, batchesPerDomain: 6, seed: 3 })];
});
after(async () => { await base.release(); });

const xOf = (b: StreamBatch): Tensor => ({ dtype: 'float32', dims: [b.size, 1, 28, 28], data: b.x });

/** The cloud, in process: records uploads (with the device clock) and pushes whatever `next` holds. */
class FakeLink implements CloudLink {
  uploads: { p: UploadPayload; t: number; bytes: number; decoded: UploadPayload }[] = [];
  reports: ({ name: string; version: number } | null)[] = [];
  next: PushedAdapter | undefined;
  fetched: ({ name: string; version: number } | null)[] = [];
  constructor(private clock: () => number = () => 0) {}
  /** Uploads that came with their bytes already encoded (a JPEG device's), each checked equal to encoding the payload. */
  preEncoded = 0;
  async upload(p: UploadPayload, encoded?: Uint8Array) {
    // What the HTTP route does with it: encode, decode with the model's sample dims.
    const t = this.clock(); // when the device sent it (encoding below awaits)
    const bytes = await encodeUploadAsync(p);
    if (encoded) {
      assert.deepEqual(encoded, bytes, 'the bytes the device encoded are the payload\'s encoding');
      this.preEncoded++;
    }
    const decoded = decodeUpload(bytes, { sampleDims: [1, 28, 28], model: 'fmnist-cnn', device: 'cam-7' });
    this.uploads.push({ p, t, bytes: bytes.byteLength, decoded });
    return { accepted: true };
  }
  async fetchAdapter(current: { name: string; version: number } | null) {
    this.fetched.push(current);
    if (!this.next || (current && current.name === this.next.name && current.version === this.next.version)) return undefined;
    return this.next;
  }
  async reportApplied(a: { name: string; version: number } | null) { this.reports.push(a); }
}

/** A norm-affine adapter (the kind consolidate.ts publishes) with its values changed by `edit`. */
function adapter(edit: (name: string, v: Float32Array) => void = () => {}): AdapterFiles {
  const p = PeftModel.from(base).withAdapter('device', normAffine());
  for (const [k, t] of p.adapterValues('device')) edit(k, t.data as Float32Array);
  return adapterFiles(p, 'device');
}
const gentle = () => adapter((k, v) => { if (k.endsWith('.weight')) for (let i = 0; i < v.length; i++) v[i]! *= 1.001; });
/** Scrambles the last block's shifts: a confident, wrong model. */
const harmful = () => {
  const rng = new Rng(5);
  return adapter((k, v) => { if (k.startsWith('layer3') && k.endsWith('.bias')) for (let i = 0; i < v.length; i++) v[i] = rng.normal() * 3; });
};

function device(link: CloudLink, extra: Partial<FleetDeviceOptions> = {}) {
  return new FleetDevice({ base, link, model: 'fmnist-cnn', device: 'cam-7', uploadEvery: 3, ...extra });
}
const params = () => new Map(base.parameterNames().map((n) => [n, (base.param(n).data as Float32Array).slice()]));
function sameParams(a: Map<string, Float32Array>) {
  for (const [k, v] of a) assert.deepEqual(base.param(k).data, v, `base parameter '${k}' changed`);
}

test('uploads: only samples the filter kept, within the byte budget over every window, rounds 1, 2, 3, …', async () => {
  let t = 0;
  const link = new FakeLink(() => t);
  const kept = new Set<string>();
  const key = (x: ArrayLike<number>, off: number) => Array.from({ length: 16 }, (_, j) => x[off + j * 49]).join(',');
  class Spy extends UploadFilter {
    override screen(probs: ArrayLike<number>) {
      const r = super.screen(probs);
      spied.push(r.verdicts);
      return r;
    }
  }
  const spied: string[][] = [];
  const rate = 12_000, burst = 24_000;
  const filter = new Spy({ classes: 10, budget: { bytesPerSecond: rate, burstBytes: burst }, warmupSamples: 64 });
  const dev = device(link, { filter, now: () => t });
  for (const b of batches) {
    await dev.predict(xOf(b));
    const v = spied.at(-1)!;
    for (let i = 0; i < b.size; i++) if (v[i] === 'kept') kept.add(key(b.x, i * 784));
    t += 1000;
  }
  await dev.uploadNow();
  assert.ok(link.uploads.length >= 3, `${link.uploads.length} uploads`);
  assert.deepEqual(link.uploads.map((u) => u.p.round), link.uploads.map((_, i) => i + 1), 'rounds increase by one per upload');
  assert.equal(dev.lastRound, link.uploads.length);
  let total = 0;
  for (const { p } of link.uploads) {
    for (let i = 0; i < p.dims[0]!; i++) assert.ok(kept.has(key(p.data, i * 784)), `round ${p.round} sample ${i} was not kept by the filter`);
    for (const e of p.entropy!) assert.ok(e > filter.low!, `uploaded entropy ${e} ≤ E_min`);
    total += p.dims[0]!;
  }
  assert.ok(total < dev.stats.kept, 'the budget held some kept samples back');
  assert.equal(dev.stats.uploadedSamples, total);
  // Budget: bytes in any window [t_i, t_j] ≤ burst + rate · (t_j − t_i).
  const ups = link.uploads;
  for (let i = 0; i < ups.length; i++) {
    let sum = 0;
    for (let j = i; j < ups.length; j++) {
      sum += ups[j]!.bytes;
      assert.ok(sum <= burst + rate * (ups[j]!.t - ups[i]!.t) / 1000, `uploads ${i}..${j}: ${sum} bytes`);
    }
  }
  assert.equal(dev.stats.uploadedBytes, ups.reduce((s, u) => s + u.bytes, 0), 'counted bytes are the encoded bytes');
  assert.ok(dev.stats.everythingBytes > 4 * dev.stats.uploadedBytes, `uploaded ${dev.stats.uploadedBytes} of ${dev.stats.everythingBytes}`);
  await dev.release();
});

test('a pushed adapter is applied atomically; corrupt or mismatched ones are refused and the old version keeps serving', async () => {
  const link = new FakeLink();
  const dev = device(link);
  const snapshot = params();
  const x = xOf(batches[0]!);
  const basePred = (await dev.predict(x)).logits.data.slice();

  link.next = { name: 'fmnist-cnn.cam-7', version: 1, files: gentle() };
  assert.deepEqual(await dev.sync(), { applied: true, version: { name: 'fmnist-cnn.cam-7', version: 1 } });
  assert.deepEqual(dev.version, { name: 'fmnist-cnn.cam-7', version: 1 });
  assert.deepEqual(link.reports.at(-1), { name: 'fmnist-cnn.cam-7', version: 1 });
  const v1 = await dev.predict(x);
  assert.deepEqual(v1.version, { name: 'fmnist-cnn.cam-7', version: 1 });
  assert.notDeepEqual(v1.logits.data, basePred, 'the adapter changes the output');
  const v1Pred = v1.logits.data.slice();
  for (let i = 0; i < 8; i++) await dev.predict(xOf(batches[i]!)); // probation passes (same stream, same health)
  assert.equal(dev.onProbation, false);
  assert.ok(dev.events.some((e) => e.kind === 'confirmed'));

  const good = gentle();
  const { tensors } = parseSafetensors(good.weights);
  const wrongShape = new Map(tensors);
  wrongShape.set('base_model.model.layer2.0.bn1.weight', { dtype: 'float32', dims: [32], data: new Float32Array(32).fill(1) });
  const withNaN = new Map([...tensors].map(([k, t]) => [k, { ...t, data: (t.data as Float32Array).slice() }]));
  (withNaN.get('base_model.model.stem.bn.bias')!.data as Float32Array)[3] = NaN;
  const unknown = new Map(tensors);
  unknown.set('base_model.model.head.weight', { dtype: 'float32', dims: [10], data: new Float32Array(10) });
  const meta = parseSafetensors(good.weights).metadata;
  const bad: [string, AdapterFiles, RegExp][] = [
    ['truncated weights', { ...good, weights: good.weights.subarray(0, good.weights.length - 100) }, /truncated|outside/],
    ['shape mismatch', { ...good, weights: serializeSafetensors(wrongShape, meta) }, /layer2\.0\.bn1\.weight.*shape \[32\], expected \[64\]/],
    ['NaN value', { ...good, weights: serializeSafetensors(withNaN, meta) }, /non-finite/],
    ['tensor for a module the model lacks', { ...good, weights: serializeSafetensors(unknown, meta) }, /head/],
    ['config not JSON', { ...good, config: '{peft_type' }, /not valid JSON/],
    ['unknown adapter type', { ...good, config: JSON.stringify({ peft_type: 'PROMPT_TUNING' }) }, /PROMPT_TUNING/],
    ['no files', { weights: 'abc', config: 3 } as unknown as AdapterFiles, /missing/],
  ];
  let version = 2;
  for (const [what, files, re] of bad) {
    link.next = { name: 'fmnist-cnn.cam-7', version: version++, files };
    const r = await dev.sync();
    assert.equal(r.applied, false, what);
    assert.match(r.reason!, re, what);
    assert.deepEqual(dev.version, { name: 'fmnist-cnn.cam-7', version: 1 }, `${what}: still serving v1`);
    assert.deepEqual((await dev.predict(x)).logits.data, v1Pred, `${what}: predictions unchanged`);
    assert.equal(dev.events.at(-1)?.kind === 'refused' || dev.events.some((e) => e.kind === 'refused' && e.version?.version === version - 1), true);
  }
  // A refused version is not fetched-and-retried forever.
  link.next = { name: 'fmnist-cnn.cam-7', version: 3, files: gentle() };
  assert.match((await dev.sync()).reason!, /refused before|rolled back/);
  assert.deepEqual(link.reports, [{ name: 'fmnist-cnn.cam-7', version: 1 }], 'only the good apply was reported');
  sameParams(snapshot);
  await dev.release();
});

test('a pushed adapter that hurts health is rolled back to the previous version and reported', async () => {
  const link = new FakeLink();
  const dev = device(link, { health: { window: 4 } });
  const snapshot = params();
  const stream = batches.slice(0, 12); // one corruption throughout: before and after see the same shift
  for (let i = 0; i < 4; i++) await dev.predict(xOf(stream[i]!), stream[i]!.y);
  const x = xOf(stream[4]!);
  const basePred = (await dev.predict(x, stream[4]!.y)).logits.data.slice();

  link.next = { name: 'fmnist-cnn.cam-7', version: 4, files: harmful() };
  assert.equal((await dev.sync()).applied, true);
  assert.equal(dev.onProbation, true);
  assert.equal((await dev.sync()).reason, 'the last applied version is still on probation');
  for (let i = 5; i < 9; i++) {
    const r = await dev.predict(xOf(stream[i]!), stream[i]!.y);
    if (i < 8) assert.deepEqual(r.version, { name: 'fmnist-cnn.cam-7', version: 4 });
  }
  assert.equal(dev.version, null, 'back on the base model');
  const rb = dev.events.find((e) => e.kind === 'rollback')!;
  assert.ok(rb, 'a rollback event');
  assert.match(rb.reason!, /fmnist-cnn\.cam-7@4: accuracy fell from/);
  assert.ok((rb.detail!.accuracyBefore as number) - (rb.detail!.accuracyAfter as number) > 0.03);
  assert.deepEqual(link.reports, [{ name: 'fmnist-cnn.cam-7', version: 4 }, null], 'the apply, then the rollback to the base');
  assert.deepEqual((await dev.predict(x)).logits.data, basePred, 'the base serves exactly as before');
  assert.match((await dev.sync()).reason!, /rolled back or refused before/);
  assert.equal(dev.version, null);
  // The next version is watched against the same baseline (the window before the bad apply).
  link.next = { name: 'fmnist-cnn.cam-7', version: 5, files: gentle() };
  assert.equal((await dev.sync()).applied, true);
  assert.equal(dev.onProbation, true, 'a version applied right after a rollback is on probation too');
  assert.equal(dev.state().probation!.before.length, 4, 'against a full window of baseline batches');
  sameParams(snapshot);
  await dev.release();
});

test('without labels, a rise in entropy rolls back too', async () => {
  const link = new FakeLink();
  const dev = device(link, { health: { window: 3, minAgreement: null } });
  for (let i = 0; i < 3; i++) await dev.predict(xOf(batches[i]!));
  // All shifts of the last block to -50: the features collapse and the head sees the same input for every sample.
  link.next = { name: 'fleet', version: 1, files: adapter((k, v) => { if (k.startsWith('layer3') && k.endsWith('.weight')) v.fill(0); }) };
  assert.equal((await dev.sync()).applied, true);
  for (let i = 3; i < 6; i++) await dev.predict(xOf(batches[i]!));
  const rb = dev.events.find((e) => e.kind === 'rollback');
  assert.ok(rb, `no rollback; events: ${JSON.stringify(dev.events.filter((e) => e.kind !== 'upload'))}`);
  assert.match(rb.reason!, /entropy rose|confidence fell/);
  assert.equal(dev.version, null);
  await dev.release();
});

test('state round-trips: a restored device serves the same version, continues its rounds and predicts the same', async () => {
  let t = 0;
  const link = new FakeLink(() => t);
  const dev = device(link, { now: () => t, filter: { budget: { bytesPerSecond: 20_000 }, seed: 4 }, health: { window: 3 } });
  for (let i = 0; i < 3; i++) { await dev.predict(xOf(batches[i]!)); t += 1000; }
  link.next = { name: 'fmnist-cnn.cam-7', version: 7, files: gentle() };
  assert.equal((await dev.sync()).applied, true);
  for (let i = 3; i < 7; i++) { await dev.predict(xOf(batches[i]!)); t += 1000; }
  await dev.flush();
  const state = JSON.parse(JSON.stringify(dev.state()));
  const rounds = link.uploads.length;
  assert.ok(rounds >= 2);
  assert.equal(dev.onProbation, false);
  assert.ok(dev.events.some((e) => e.kind === 'confirmed'));

  const link2 = new FakeLink(() => t);
  link2.next = link.next;
  const dev2 = device(link2, { now: () => t, filter: { budget: { bytesPerSecond: 20_000 }, seed: 4 }, health: { window: 3 } });
  await dev2.restore(state);
  assert.deepEqual(dev2.version, { name: 'fmnist-cnn.cam-7', version: 7 });
  assert.equal(dev2.lastRound, rounds);
  assert.equal(dev2.onProbation, dev.onProbation);
  assert.deepEqual(dev2.stats, dev.stats);
  const x = xOf(batches[8]!);
  assert.deepEqual((await dev2.predict(x)).logits.data, (await dev.predict(x)).logits.data);
  assert.deepEqual(dev2.filter.state(), dev.filter.state(), 'filters evolve identically after the restore');
  assert.equal((await dev2.sync()).applied, false, 'the restored version is current: nothing to fetch');
  assert.deepEqual(link2.fetched.at(-1), { name: 'fmnist-cnn.cam-7', version: 7 });
  for (let i = 9; i < 12; i++) { await dev2.predict(xOf(batches[i]!)); t += 1000; }
  await dev2.uploadNow();
  assert.ok(link2.uploads.length >= 1);
  assert.equal(link2.uploads[0]!.p.round, rounds + 1, 'rounds continue after the restore');
  // A state for another device is refused.
  await assert.rejects(device(new FakeLink(), { device: 'cam-8' }).restore(state), /cam-7/);
  await dev.release();
  await dev2.release();
});

test('adapt: a factory (e.g. the continual controller) adapts whichever model serves, base or pushed', async () => {
  const built: RefitModel[] = [];
  let calls = 0;
  const link = new FakeLink();
  const dev = device(link, {
    adapt: (m) => {
      built.push(m);
      return { name: 'spy', async predict(x: Tensor) { calls++; const o = await m.run({ x }, { outputs: ['logits'] }); return { logits: o.logits!, info: { used: 0, skipped: 0, resets: 0, ms: 0 } }; }, reset() {}, async release() {} };
    },
  });
  await dev.predict(xOf(batches[0]!));
  assert.equal(built.length, 1);
  assert.equal(built[0], base);
  link.next = { name: 'fleet', version: 2, files: gentle() };
  assert.equal((await dev.sync()).applied, true);
  assert.equal(built.length, 2);
  assert.notEqual(built[1], base, 'the pushed adapter gets its own model and adaptation');
  assert.equal(calls, 2, 'one probe batch ran through the new entry before the switch');
  await dev.release();
});

test('a batch with a NaN sample is served (that sample unpredicted), and nothing non-finite is uploaded', async () => {
  const link = new FakeLink();
  const dev = device(link, { adapt: 'none', uploadEvery: 1, filter: { warmupSamples: null } });
  const b = batches[12]!;
  const x = xOf(b);
  const data = (x.data as Float32Array).slice();
  data[5 * 784 + 100] = NaN;
  const r = await dev.predict({ ...x, data });
  assert.equal(r.predicted[5], -1);
  assert.ok(r.predicted.filter((p) => p >= 0).length === b.size - 1, 'the other samples are predicted (no BN statistics shared)');
  await dev.flush();
  for (const { p } of link.uploads) assert.ok(p.data.every(Number.isFinite));
  await assert.rejects(dev.predict({ dtype: 'float32', dims: [2, 1, 28, 27], data: new Float32Array(2 * 28 * 27) }), /expected \[n, 1, 28, 28\]/);
  await dev.release();
});

test('the continual controller as the device adaptation: serves, uploads, and never writes the base', async () => {
  const link = new FakeLink();
  const snapshot = params();
  const dev = device(link, { adapt: (m) => new ContinualAdapter(m, { maxLevel: 2, patience: 1, warmupBatches: 2 }) });
  for (let i = 0; i < 6; i++) {
    const r = await dev.predict(xOf(batches[i]!));
    assert.equal(r.predicted.length, B);
    assert.ok(r.predicted.every((p) => p >= 0 && p < 10));
  }
  await dev.flush();
  assert.ok(link.uploads.length >= 1);
  sameParams(snapshot);
  await dev.release();
});

test('paired health: a harder domain arriving with a good adapter is not blamed on it (unpaired windows are)', async () => {
  const run = async (paired: boolean) => {
    const link = new FakeLink();
    const dev = device(link, { health: { window: 4, paired } });
    for (const b of batches.slice(12, 16)) await dev.predict(xOf(b), b.y); // pixelate: easy
    link.next = { name: 'fleet', version: 1, files: gentle() };
    assert.equal((await dev.sync()).applied, true);
    for (const b of batches.slice(6, 10)) await dev.predict(xOf(b), b.y); // fog: hard, from the same moment
    const kinds = dev.events.filter((e) => e.kind === 'confirmed' || e.kind === 'rollback');
    await dev.release();
    return kinds;
  };
  const paired = await run(true);
  assert.deepEqual(paired.map((e) => e.kind), ['confirmed'], JSON.stringify(paired));
  assert.equal(paired[0]!.detail!.paired, true);
  assert.ok(Math.abs((paired[0]!.detail!.accuracyBefore as number) - (paired[0]!.detail!.accuracyAfter as number)) < 0.03, 'same batches, nearly the same model');
  const unpaired = await run(false);
  assert.deepEqual(unpaired.map((e) => e.kind), ['rollback'], 'windows before and after differ by the shift');
  assert.match(unpaired[0]!.reason!, /accuracy fell/);
});

test('a restart during probation resumes it: the previous version is rebuilt and the judgement completes', async () => {
  const link = new FakeLink();
  const dev = device(link, { health: { window: 3 } });
  for (let i = 0; i < 3; i++) await dev.predict(xOf(batches[i]!), batches[i]!.y);
  link.next = { name: 'fleet', version: 2, files: harmful() };
  assert.equal((await dev.sync()).applied, true);
  await dev.predict(xOf(batches[3]!), batches[3]!.y);
  const state = JSON.parse(JSON.stringify(dev.state()));
  await dev.release();
  assert.equal(state.probation.after.length, 1);
  const dev2 = device(new FakeLink(), { health: { window: 3 } });
  await dev2.restore(state);
  assert.equal(dev2.onProbation, true);
  assert.deepEqual(dev2.version, { name: 'fleet', version: 2 });
  for (let i = 4; i < 6; i++) await dev2.predict(xOf(batches[i]!), batches[i]!.y); // labels: this adapter is confidently wrong
  assert.equal(dev2.onProbation, false);
  assert.equal(dev2.version, null, 'rolled back to the base after the restart');
  assert.ok(dev2.events.some((e) => e.kind === 'rollback'));
  await dev2.release();
});

test('without labels, a confidently wrong adapter is caught by agreement with the previous version', async () => {
  const run = async (minAgreement: number | null) => {
    const dev = device(new FakeLink(), { health: { window: 3, minAgreement } });
    for (let i = 0; i < 3; i++) await dev.predict(xOf(batches[i]!));
    assert.equal((await dev.apply({ name: 'fleet', version: 3, files: harmful() })).applied, true);
    for (let i = 3; i < 6; i++) await dev.predict(xOf(batches[i]!));
    const e = dev.events.find((x) => x.kind === 'rollback' || x.kind === 'confirmed')!;
    await dev.release();
    return e;
  };
  const on = await run(0.5);
  assert.equal(on.kind, 'rollback');
  assert.match(on.reason!, /agree with the previous version's on \d+\.\d% of samples \(minimum 50\.0%\)/);
  assert.ok((on.detail!.entropyAfter as number) < (on.detail!.entropyBefore as number), 'entropy alone would have passed it');
  const off = await run(null);
  assert.equal(off.kind, 'confirmed', 'entropy and confidence alone do not see it');
});

test('a state whose adapter files are damaged restores onto the base model, saying why', async () => {
  const dev = device(new FakeLink());
  await dev.apply({ name: 'fleet', version: 9, files: gentle() });
  const state = JSON.parse(JSON.stringify(dev.state()));
  await dev.release();
  state.serving.weights = state.serving.weights.slice(0, 200);
  const link2 = new FakeLink();
  const dev2 = device(link2);
  await dev2.restore(state);
  assert.equal(dev2.version, null);
  assert.deepEqual(link2.reports, [null], 'the cloud is told the base serves');
  const ev = dev2.events.at(-1)!;
  assert.equal(ev.kind, 'restore-failed');
  assert.match(ev.reason!, /adapter_model\.safetensors/);
  assert.equal((await dev2.predict(xOf(batches[0]!))).version, null);
  await dev2.release();
});

test('uniformShare: uploads also carry samples the bars dropped, half of each upload', async () => {
  const link = new FakeLink();
  const filter = new UploadFilter({ classes: 10, uniformShare: 0.5, highMargin: null, lowMargin: 0.3, warmupSamples: null });
  const dev = device(link, { filter });
  for (const b of batches.slice(0, 3)) await dev.predict(xOf(b));
  await dev.flush();
  assert.equal(link.uploads.length, 1);
  const p = link.uploads[0]!.p, low = 0.3 * Math.log(10);
  const dropped = Array.from(p.entropy!).filter((e) => e <= low).length;
  assert.equal(p.dims[0], dev.stats.kept, 'as many samples as the filter kept (no budget)');
  assert.ok(dropped > 0 && dropped <= Math.round(p.dims[0]! / 2), `${dropped} of ${p.dims[0]} uploaded samples were below E_min`);
  await dev.release();
});

test('codecs: 8-bit and JPEG uploads keep the budget over every window and carry more samples under it', async () => {
  const rate = 6_000, burst = 12_000;
  const run = async (codec: FleetDeviceOptions['codec']) => {
    let t = 0;
    const link = new FakeLink(() => t);
    const dev = device(link, { codec, now: () => t, filter: { budget: { bytesPerSecond: rate, burstBytes: burst }, warmupSamples: 64, seed: 2 } });
    for (const b of batches) {
      await dev.predict(xOf(b));
      await dev.flush(); // each upload at its batch's time: a JPEG's encoding would otherwise queue them to the end
      t += 1000;
    }
    await dev.uploadNow();
    const ups = link.uploads;
    for (let i = 0; i < ups.length; i++) {
      let sum = 0;
      for (let j = i; j < ups.length; j++) {
        sum += ups[j]!.bytes;
        assert.ok(sum <= burst + rate * (ups[j]!.t - ups[i]!.t) / 1000, `${JSON.stringify(codec)}: uploads ${i}..${j}: ${sum} bytes`);
      }
    }
    assert.equal(dev.stats.uploadedBytes, ups.reduce((a, u) => a + u.bytes, 0), 'counted bytes are the encoded bytes');
    let err = 0, n = 0;
    for (const u of ups) for (let i = 0; i < u.p.data.length; i++) { err += Math.abs(u.decoded.data[i]! - u.p.data[i]!); n++; }
    const stats = { ...dev.stats };
    await dev.release();
    // A JPEG upload is encoded once, to fit the budget, and those bytes are what the link sends.
    assert.equal(link.preEncoded, codecName(codec) === 'jpeg' ? ups.length : 0);
    return { samples: stats.uploadedSamples, kept: stats.kept, meanError: err / Math.max(1, n), stats };
  };
  const f32 = await run('f32'), u8 = await run('u8'), jpeg = await run({ jpeg: 50 });
  assert.equal(f32.meanError, 0);
  assert.ok(u8.meanError < 1 / 255, `8 bits: mean error ${u8.meanError}`);
  assert.ok(jpeg.meanError < 0.06, `JPEG: mean error ${jpeg.meanError}`);
  assert.ok(u8.samples > 2 * f32.samples, `8 bits: ${u8.samples} samples against float32's ${f32.samples}`);
  assert.ok(jpeg.samples > u8.samples || jpeg.samples === jpeg.kept, `JPEG: ${jpeg.samples} samples against 8 bits' ${u8.samples} (kept ${jpeg.kept})`);
  assert.ok(Math.abs(u8.stats.everythingBytes / u8.stats.everythingU8Bytes - 4) < 0.1, 'the 8-bit reference is a quarter of float32');
  await assert.rejects(async () => device(new FakeLink(), { codec: { jpeg: 0 } }), /upload codec must be 'f32', 'u8' or \{ jpeg: quality 1–100 \}/);
});
