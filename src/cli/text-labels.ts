// Class labels as text data writes them: integers, or names ("positive", "entailment") turned into
// class indices by the model's config.json `label2id` (a Hugging Face export keeps it beside the
// model or one folder up), else by sorted order, said in the report so the user knows which is which.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface ClassIds {
  ids: Int32Array;
  /** How names became indices, for the report; null when the cells were indices already. */
  mapping: string | null;
}

export function classIds(cells: readonly string[], where: string, modelPath: string): ClassIds {
  if (cells.every((c) => /^\d+$/.test(c))) return { ids: Int32Array.from(cells, Number), mapping: null };
  const config = [join(dirname(modelPath), 'config.json'), join(dirname(dirname(modelPath)), 'config.json')].find((f) => existsSync(f));
  const label2id = config ? labelMap(config) : null;
  if (label2id) {
    const missing = [...new Set(cells.filter((c) => !(c in label2id)))];
    if (missing.length) throw new Error(`${where}: label${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).map((m) => `'${m}'`).join(', ')} not in ${config}'s label2id (${Object.keys(label2id).join(', ')})`);
    return { ids: Int32Array.from(cells, (c) => label2id[c]!), mapping: `label2id of ${config}` };
  }
  const names = [...new Set(cells)].sort();
  const index = new Map(names.map((n, i) => [n, i]));
  return { ids: Int32Array.from(cells, (c) => index.get(c)!), mapping: `sorted names: ${names.map((n, i) => `${i} ${n}`).join(', ')}` };
}

function labelMap(file: string): Record<string, number> | null {
  let v: unknown;
  try { v = JSON.parse(readFileSync(file, 'utf8')); } catch { return null; }
  const m = (v as { label2id?: unknown } | null)?.label2id;
  if (typeof m !== 'object' || m === null) return null;
  const entries = Object.entries(m as Record<string, unknown>);
  // Hugging Face's placeholder names (LABEL_0, LABEL_1, …) name nothing
  if (entries.every(([k]) => /^LABEL_\d+$/.test(k))) return null;
  return entries.length && entries.every(([, id]) => Number.isInteger(id) && (id as number) >= 0) ? Object.fromEntries(entries) as Record<string, number> : null;
}
