// Merge result files of bench/continual.ts runs made in parallel (--tag) with the same sizes into
// bench/results/continual-<model>.{json,md}; a later file's row replaces an earlier one's.
//
//   npx tsx bench/continual/merge.ts --model cnn bench/results/continual-cnn-base.json bench/results/continual-cnn-c1.json …
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { renderMarkdown, summary } from './report.ts';
import { SETTINGS, METHODS, type Row } from './lib.ts';

const args = process.argv.slice(2);
const mi = args.indexOf('--model');
const which = args[mi + 1]!;
const files = args.filter((_, i) => i !== mi && i !== mi + 1);
let sizes: unknown = null, tuned: string | null = null;
const rows = new Map<string, Row>();
for (const f of files) {
  if (!existsSync(f)) { console.log(`skipped (missing): ${f}`); continue; }
  const j = JSON.parse(readFileSync(f, 'utf8'));
  if (sizes && JSON.stringify(sizes) !== JSON.stringify(j.sizes)) throw new Error(`${f}: sizes ${JSON.stringify(j.sizes)} differ from ${JSON.stringify(sizes)}`);
  sizes = j.sizes;
  tuned = j.tuned ?? tuned;
  for (const r of j.rows as Row[]) rows.set(`${r.setting}|${r.method}`, r);
}
const order = (r: Row) => SETTINGS.indexOf(r.setting) * 100 + (METHODS as readonly string[]).indexOf(r.method);
const all = [...rows.values()].sort((a, b) => order(a) - order(b));
writeFileSync(`bench/results/continual-${which}.json`, JSON.stringify({ model: which, sizes, rows: all, tuned }, null, 1));
writeFileSync(`bench/results/continual-${which}.md`, renderMarkdown(which, sizes as never, all, tuned));
console.log(summary(which, all));
console.log(`${all.length} rows → bench/results/continual-${which}.{json,md}`);
