// The README's fenced code blocks, for the tests that run them as written.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

export interface ReadmeBlock {
  /** The heading line the block sits under ('# refit' before the first section). */
  heading: string;
  /** The fence's language ('bash', 'ts', '' for none). */
  lang: string;
  /** 1 for the first block of this language under this heading, 2 for the next, … */
  n: number;
  body: string;
  /** The README text after the closing fence, up to the next heading. */
  after: string;
}

export function readReadme(): string {
  return readFileSync(join(root, 'README.md'), 'utf8');
}

/** Every fenced block of the README, in order, with the heading it sits under. */
export function readmeBlocks(readme = readReadme()): ReadmeBlock[] {
  const lines = readme.split('\n');
  const blocks: ReadmeBlock[] = [];
  let heading = '';
  const count = new Map<string, number>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^#{1,6} /.test(line)) { heading = line.trim(); continue; }
    const open = /^```(\S*)\s*$/.exec(line);
    if (!open) continue;
    const lang = open[1]!;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^```\s*$/.test(lines[end]!)) end++;
    assert.ok(end < lines.length, `README: the code block opened on line ${i + 1} (under '${heading}') is never closed`);
    let next = end + 1;
    while (next < lines.length && !/^#{1,6} /.test(lines[next]!) && !/^```/.test(lines[next]!)) next++;
    const key = `${heading}\n${lang}`;
    count.set(key, (count.get(key) ?? 0) + 1);
    blocks.push({ heading, lang, n: count.get(key)!, body: lines.slice(start, end).join('\n'), after: lines.slice(end + 1, next).join('\n') });
    i = end;
  }
  return blocks;
}

/** The commands of a bash block: continuation lines joined, `  # comments` dropped, blank lines skipped. */
export function commandLines(body: string): string[] {
  return body.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.replace(/\s+#\s.*$/, '').trim()).filter(Boolean);
}

/** The commands of the n-th bash block (default the first) of the README section whose heading starts with `heading`. */
export function readmeBlock(heading: string, n = 1): string[] {
  const blocks = readmeBlocks().filter((b) => b.heading.startsWith(heading) && b.lang === 'bash');
  assert.ok(blocks.length > 0, `no bash block in a README section '${heading}'`);
  assert.ok(blocks[n - 1], `README section '${heading}' has ${blocks.length} bash blocks, not ${n}`);
  return commandLines(blocks[n - 1]!.body);
}
