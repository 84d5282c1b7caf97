// Combining LoRA adapters into one new LoRA adapter.
// - 'linear': Σ wᵢ·ΔWᵢ exactly, by stacking the factors (rank Σ rᵢ; HF PEFT calls this 'cat')
// - 'svd': Σ wᵢ·ΔWᵢ re-factorised to rank r by truncated SVD (the best rank-r approximation)
// - 'ties': trim each wᵢ·ΔWᵢ to its top-density entries by magnitude, elect a sign per entry by
//   the summed mass, average the entries that agree (Yadav et al. 2023, https://arxiv.org/abs/2306.01708), then SVD to rank r
// - 'dare': drop each entry with probability 1 − density and rescale the rest by 1/density
//   (seeded; Yu et al. 2024, https://arxiv.org/abs/2311.03099), sum, then SVD to rank r
import type { PeftModel } from './peft-model.ts';
import { lora, loraNames } from './lora/index.ts';
import { deltaW, fanIn } from './lora/layer.ts';
import { loraScale } from './lora/config.ts';
import { type Mat, mat, lowRank } from './linalg.ts';
import { Rng } from '../util/rng.ts';
import { PeftError } from './errors.ts';

export interface CombineOptions {
  /** Source adapters and their weights. */
  adapters: Record<string, number>;
  method: 'linear' | 'svd' | 'ties' | 'dare';
  /** Rank of the result for 'svd', 'ties' and 'dare'. @default the largest source rank */
  rank?: number;
  /** Fraction of entries kept by 'ties' and 'dare'. @default 0.5 */
  density?: number;
  /** Seed of DARE's drop mask. @default 0 */
  seed?: number;
}

interface Source { name: string; weight: number; scale: number; rank: number; modules: Set<string> }

/** A new model with the combination added as LoRA adapter `name` (alpha = rank, so scale 1). */
export function combineAdapters(model: PeftModel, name: string, o: CombineOptions): PeftModel {
  const density = o.density ?? 0.5;
  if (!(density > 0 && density <= 1)) throw new PeftError(`combine: density must be in (0, 1], got ${density}`);
  const sources: Source[] = Object.entries(o.adapters).map(([n, weight]) => {
    const info = model.adapter(n);
    const cfg = model.planOf(n).fileConfig;
    if (info.method !== 'lora' || info.merged) throw new PeftError(`combine: '${n}' is a ${info.merged ? 'merged ' : ''}${info.method} adapter; only active LoRA adapters can be combined`);
    if (cfg.init_lora_weights === 'pissa') throw new PeftError(`combine: '${n}' is a PiSSA adapter, whose base weights differ; merge it first`);
    const c = { rank: cfg.r as number, alpha: cfg.lora_alpha as number, rsLora: cfg.use_rslora as boolean };
    return { name: n, weight, scale: loraScale(c), rank: c.rank, modules: new Set(cfg.target_modules as string[]) };
  });
  if (sources.length === 0) throw new PeftError('combine: no source adapters given');
  const siteOf = new Map(model.sites().map((s) => [s.module, s]));
  const modules = [...new Set(sources.flatMap((s) => [...s.modules]))];
  const sites = modules.map((m) => siteOf.get(m)!);
  const value = (s: Source) => model.adapterValues(s.name);
  const rng = new Rng(o.seed ?? 0);

  const factors = new Map<string, { A: Float32Array; B: Float32Array }>();
  let rank: number;
  if (o.method === 'linear') {
    rank = sources.reduce((a, s) => a + s.rank, 0);
    for (const site of sites) {
      const fin = fanIn(site), A = new Float32Array(rank * fin), B = new Float32Array(site.dOut * rank);
      let off = 0;
      for (const s of sources) {
        if (s.modules.has(site.module)) {
          const n = loraNames(s.name, site.module), v = value(s);
          A.set(v.get(n.a)!.data as Float32Array, off * fin);
          const b = v.get(n.b)!.data as Float32Array;
          for (let i = 0; i < site.dOut; i++) for (let j = 0; j < s.rank; j++) B[i * rank + off + j] = b[i * s.rank + j]! * s.weight * s.scale;
        }
        off += s.rank;
      }
      factors.set(site.module, { A, B });
    }
  } else {
    rank = o.rank ?? Math.max(...sources.map((s) => s.rank));
    for (const site of sites) {
      const deltas = sources.filter((s) => s.modules.has(site.module)).map((s) => {
        const n = loraNames(s.name, site.module), v = value(s);
        const d = deltaW(site, v.get(n.a)!, v.get(n.b)!, s.scale * s.weight);
        if (o.method === 'dare') for (let i = 0; i < d.data.length; i++) d.data[i] = rng.uniform() < density ? d.data[i]! / density : 0;
        return d;
      });
      const merged = o.method === 'ties' ? ties(deltas, density) : sum(deltas);
      const { A, B } = lowRank(merged, Math.min(rank, merged.rows, merged.cols));
      factors.set(site.module, { A: padRows(A, rank), B: padCols(B, rank) });
    }
  }
  const next = model.withAdapter(name, lora({ targets: modules, rank, alpha: rank }));
  const values = next.adapterValues(name);
  for (const [m, f] of factors) {
    const n = loraNames(name, m);
    (values.get(n.a)!.data as Float32Array).set(f.A);
    (values.get(n.b)!.data as Float32Array).set(f.B);
  }
  next.touch(values.keys());
  return next;
}

function sum(ds: Mat[]): Mat {
  const out = mat(ds[0]!.rows, ds[0]!.cols);
  for (const d of ds) for (let i = 0; i < d.data.length; i++) out.data[i]! += d.data[i]!;
  return out;
}

/** TIES on task vectors already scaled by their weights (exported for the fleet aggregation of norm-affine adapters). */
export function ties(ds: Mat[], density: number): Mat {
  const trimmed = ds.map((d) => {
    const k = Math.max(1, Math.round(density * d.data.length));
    const thr = Float64Array.from(d.data, Math.abs).sort()[d.data.length - k]!;
    return Float64Array.from(d.data, (v) => (Math.abs(v) >= thr ? v : 0));
  });
  const out = mat(ds[0]!.rows, ds[0]!.cols);
  for (let i = 0; i < out.data.length; i++) {
    let mass = 0;
    for (const t of trimmed) mass += t[i]!;
    const sign = Math.sign(mass);
    let s = 0, n = 0;
    for (const t of trimmed) if (t[i] !== 0 && Math.sign(t[i]!) === sign) { s += t[i]!; n++; }
    out.data[i] = n ? s / n : 0;
  }
  return out;
}

const padRows = (a: Mat, r: number) => { const o = new Float32Array(r * a.cols); o.set(a.data); return o; };
function padCols(b: Mat, r: number): Float32Array {
  const o = new Float32Array(b.rows * r);
  for (let i = 0; i < b.rows; i++) for (let j = 0; j < b.cols; j++) o[i * r + j] = b.data[i * b.cols + j]!;
  return o;
}

