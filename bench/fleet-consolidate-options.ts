// Choosing consolidation options on VALIDATION images (Fashion-MNIST training images 10000..19999):
// one corruption at severity 5, 256 uploads, 192 held-out samples, BN-adapt error of the device model
// before and after consolidating with each option set (docs/fleet.md, "Choosing the consolidation options").
//   nice -n 10 npx tsx bench/fleet-consolidate-options.ts glass_blur,fog,snow,spatter '[{"lr":0.01,"T":0.5,"epochs":16,"aug":0}]'
// aug: augmented copies for the CNN teacher; -1: the ViT teacher; -2: the ViT + CNN ensemble.
import { loadModel } from '../src/model.ts';
import { validationData } from './continual/lib.ts';
import { singleDomainStream } from '../src/data/streams.ts';
import { consolidate } from '../src/fleet/consolidate.ts';
import { modelTeacher, ensembleTeacher } from '../src/fleet/teacher.ts';
import { withAdapterFiles } from '../src/peft/files.ts';
import { batchStatModel } from '../src/tta/bn-adapt.ts';
import { argmaxRows } from '../src/data/evaluate.ts';
import { f32 } from '../src/onnx/tensor.ts';
import type { RefitModel } from '../src/model.ts';
const data = validationData();
const cnn = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
const vit = await loadModel('models/fmnist-vit.onnx', { threads: 1 });
const mk = (a: number) => a === -1 ? modelTeacher(vit) : a === -2 ? ensembleTeacher([modelTeacher(vit), modelTeacher(cnn)]) : modelTeacher(cnn, { augment: a });
async function err(m: RefitModel, x: Float32Array, y: Uint8Array, b = 64) {
  let w = 0; const n = y.length;
  for (let s = 0; s < n; s += b) { const k = Math.min(b, n - s); const t = f32([k,1,28,28], x.slice(s*784,(s+k)*784)); const v = await batchStatModel(m, { x: t }); const o = await v.run({ x: t }, { outputs: ['logits'] }); const p = argmaxRows(o.logits!.data as Float32Array, 10); for (let i=0;i<k;i++) if (p[i]!==y[s+i]) w++; await v.release(); }
  return w / n;
}
const doms = process.argv[2]!.split(',');
const grid = JSON.parse(process.argv[3]!) as { lr: number; T: number; epochs: number; aug: number }[];
const N = 256, H = 192;
for (const domain of doms) {
  const st = [...singleDomainStream(data, { domain: domain as any, samplesPerDomain: N + H, batchSize: 64, seed: 1 })];
  const X = new Float32Array((N+H)*784), Y = new Uint8Array(N+H); st.forEach((b, i) => { X.set(b.x, i*64*784); Y.set(b.y, i*64); });
  const up = X.slice(0, N*784), ho = X.slice(N*784), hoy = Y.slice(N);
  const line = [`${domain}: bn-adapt ${(100*await err(cnn, ho, hoy)).toFixed(1)}`];
  for (const g of grid) {
    const t0 = performance.now();
    const r = await consolidate({ base: cnn, uploads: [{ dims: [N,1,28,28], data: up }], teacher: mk(g.aug), options: { epochs: g.epochs, lr: g.lr, temperature: g.T } });
    const e = await err(withAdapterFiles(cnn, 'device', r.files), ho, hoy);
    line.push(`lr${g.lr} T${g.T} e${g.epochs} a${g.aug}: ${(100*e).toFixed(1)} (kl ${r.metrics.klBefore.toFixed(3)}->${r.metrics.klAfter.toFixed(3)}, ${(performance.now()-t0).toFixed(0)}ms)`);
  }
  console.log(line.join(' | '));
}
