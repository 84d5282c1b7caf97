// Markdown for bench/results/continual-<model>.md: one table per setting, then the summary of
// the issue's targets computed from the rows.
import type { Row, Sizes } from './lib.ts';

const pc = (v: number) => (100 * v).toFixed(1);
const SINGLE = ['bn-adapt', 'tent', 'eata', 'sar', 'cotta', 'rmt', 'lame', 't3a', 'rotta', 'roid', 'rdumb'];
// A method run with input alignment (bench/continual.ts --align, --align-classes) is a single method too; so is the
// source model with it, which changes no parameter but is an adaptation of the input.
const isSingle = (m: string) => {
  const base = m.replace(/\+align(-classes)?$/, '');
  return SINGLE.includes(base) || (base !== m && base !== 'controller' && base !== 'controller+labels');
};

/** Levels as runs: "1×4 2×3 3×113" (level × batches). */
export function runs(levels: string): string {
  const out: string[] = [];
  for (let i = 0; i < levels.length;) {
    let j = i;
    while (j < levels.length && levels[j] === levels[i]) j++;
    out.push(`${levels[i]}×${j - i}`);
    i = j;
  }
  return out.join(' ');
}

export function renderMarkdown(model: string, sizes: Sizes, rows: Row[], tuned: string | null): string {
  const settings = [...new Set(rows.map((r) => r.setting))];
  const L: string[] = [
    `# Continual benchmark, ${model.toUpperCase()}`, '',
    `\`nice -n 15 npx tsx bench/continual.ts --model ${model} --samples ${sizes.samples} --correlated-samples ${sizes.correlatedSamples} --round-samples ${sizes.roundSamples} --level-samples ${sizes.levelSamples} --clean ${sizes.cleanSamples}\``,
    `(rows added over several runs with \`--resume\`; 1 onnxruntime thread, on a 2-core machine shared with other jobs).`, '',
    `Sizes: ${sizes.samples} samples per corruption (continual, mixed, batch16), ${sizes.correlatedSamples} in correlated, ${sizes.roundSamples} per corruption per round (recurring, long: 10 rounds × 15), ${sizes.levelSamples} per severity level (gradual: 9 levels × 15), severity 5, batch 64 (16 in batch16); clean error on the first ${sizes.cleanSamples} clean test images right after the stream (the method keeps adapting). ` +
      `Hyperparameters: ${tuned ? `\`${tuned}\` (chosen on the validation stream from the training set)` : 'defaults'}. ` +
      `ms ratio: ms per batch / the source model's ms per batch in the same setting (plain inference; timings noisy under load).`, '',
  ];
  for (const s of settings) {
    const rs = rows.filter((r) => r.setting === s);
    const src = rs.find((r) => r.method === 'source');
    const multi = rs.some((r) => r.rounds.length > 1);
    L.push(`## ${s}`, '', `| method | mean error % | ${multi ? 'round 1 | round 10 | ' : ''}clean after % | ms/batch | × source |`, `|---|---:|${multi ? '---:|---:|' : ''}---:|---:|---:|`);
    for (const r of rs) {
      L.push(`| ${r.method} | **${pc(r.mean)}** | ${multi ? `${pc(r.rounds[0]!)} | ${pc(r.rounds.at(-1)!)} | ` : ''}${pc(r.clean)} | ${r.ms.toFixed(1)} | ${src ? (r.ms / src.ms).toFixed(1) : '–'} |`);
    }
    if (multi) {
      L.push('', 'Online error per round %:', '', '| method | ' + rs[0]!.rounds.map((_, i) => `r${i + 1}`).join(' | ') + ' |', '|---|' + rs[0]!.rounds.map(() => '---:').join('|') + '|');
      for (const r of rs) L.push(`| ${r.method} | ${r.rounds.map(pc).join(' | ')} |`);
    }
    for (const r of rs.filter((r) => r.levels)) L.push('', `${r.method} levels (level×batches): \`${runs(r.levels!)}\``);
    L.push('');
  }
  // Targets, from whatever rows exist.
  L.push('## Targets', '');
  for (const s of settings) {
    const rs = rows.filter((r) => r.setting === s);
    const singles = rs.filter((r) => isSingle(r.method));
    const best = singles.sort((a, b) => a.mean - b.mean)[0];
    const c = rs.find((r) => r.method === 'controller'), cl = rs.find((r) => r.method === 'controller+labels');
    const src = rs.find((r) => r.method === 'source'), tent = rs.find((r) => r.method === 'tent');
    const parts: string[] = [];
    if (c && best) parts.push(`controller ${pc(c.mean)} vs best single (${best.method}) ${pc(best.mean)}: ${c.mean < best.mean ? 'met' : 'missed'}`);
    if (c && src && s === 'continual') parts.push(`controller/source ${(c.mean / src.mean).toFixed(2)}×`);
    if (c && cl) parts.push(`1% labels: ${pc(cl.mean)} (${(100 * (1 - cl.mean / c.mean)).toFixed(1)}% relative cut: ${cl.mean <= 0.9 * c.mean ? 'met' : 'missed'})`);
    if (c && c.rounds.length > 1) parts.push(`last round ${pc(c.rounds.at(-1)!)} vs first ${pc(c.rounds[0]!)}: ${c.rounds.at(-1)! <= c.rounds[0]! ? 'met' : 'missed'}`);
    if (c && src && c.rounds.length > 1) parts.push(`clean after ${pc(c.clean)} vs source ${pc(src.clean)} (drop ${pc(c.clean - src.clean)} points: ${c.clean - src.clean <= 0.01 ? 'met' : 'missed'})`);
    if (c && tent) parts.push(`ms vs Tent ${(c.ms / tent.ms).toFixed(2)}×`);
    if (parts.length) L.push(`- ${s}: ${parts.join('; ')}`);
  }
  L.push('');
  return L.join('\n');
}

/** One line per setting: source, the best single method, Tent, RMT, the controller with and without labels (mean error %). */
export function summary(model: string, rows: Row[]): string {
  const settings = [...new Set(rows.map((r) => r.setting))];
  const L = [`| ${model} setting | source | best single | Tent | RMT | controller | controller, 1% labels | singles run |`, '|---|---:|---|---:|---:|---:|---:|---:|'];
  for (const s of settings) {
    const rs = rows.filter((r) => r.setting === s);
    const get = (m: string) => rs.find((r) => r.method === m);
    const f = (r?: Row) => (r ? pc(r.mean) : '–');
    const singles = rs.filter((r) => isSingle(r.method));
    const best = [...singles].sort((a, b) => a.mean - b.mean)[0];
    L.push(`| ${s} | ${f(get('source'))} | ${best ? `${best.method} ${pc(best.mean)}` : '–'} | ${f(get('tent'))} | ${f(get('rmt'))} | ${f(get('controller'))} | ${f(get('controller+labels'))} | ${singles.length} |`);
  }
  return L.join('\n');
}
