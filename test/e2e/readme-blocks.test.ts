// Every code example in the README is executed by a test. This file holds the list: each ```bash
// and ```ts block, by the heading it sits under, with the test that runs it. A block that is not
// listed (a new one, or one moved to another section) fails here until a test runs it and the
// list says which. TypeScript blocks are excerpts of runnable files in examples/: every line of
// the block appears, in order, in the example file the README names right after the block
// (test/e2e/example.test.ts runs those files).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readmeBlocks, readReadme, type ReadmeBlock } from '../helpers/readme.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (f: string) => readFileSync(join(root, f), 'utf8');

interface Runner {
  /** The file that runs the block. */
  file: string;
  /** Text that file must contain: how it finds the block (a heading, a command) or runs the example. */
  proof: string[];
  /** A TypeScript block: the example file it is an excerpt of. */
  example?: string;
}

const EXAMPLES = 'test/e2e/example.test.ts';

/** `heading › lang n` → what runs it. */
const RUNNERS: Record<string, Runner> = {
  // CI runs `npm ci` and `npm test` (.ci/run); `npm run demo` is the plain `refit demo` (13 methods,
  // minutes), whose short forms test/e2e/demo.test.ts runs (see the demo section's block).
  '# refit › bash 1': { file: '.ci/run', proof: ['npm ci', 'npm test'] },
  '## Train any ONNX model › ts 1': { file: EXAMPLES, proof: ['examples/quickstart.ts'], example: 'examples/quickstart.ts' },
  '## `refit demo`: the main job › bash 1': { file: 'test/e2e/demo.test.ts', proof: ["readmeBlock('## `refit demo`"] },
  '## Test-time adaptation (`src/tta/`) › ts 1': { file: EXAMPLES, proof: ['examples/tta-stream.ts'], example: 'examples/tta-stream.ts' },
  '## Drift detectors and keeping a model fitted (`src/drift/`, `src/continual/`) › ts 1': { file: EXAMPLES, proof: ['examples/continual.ts'], example: 'examples/continual.ts' },
  '## Parameter-efficient fine-tuning (`src/peft/`) › ts 1': { file: EXAMPLES, proof: ['examples/peft-lora.ts'], example: 'examples/peft-lora.ts' },
  '### Language models: LoRA with a next-token loss › ts 1': { file: EXAMPLES, proof: ['examples/lora-language-model.ts'], example: 'examples/lora-language-model.ts' },
  '## Parameter-efficient fine-tuning (`src/peft/`) › bash 1': { file: EXAMPLES, proof: ["readmeBlock('## Parameter-efficient fine-tuning"] },
  '## The `refit` command › bash 1': { file: 'test/e2e/cli-commands.test.ts', proof: ["readme.indexOf('## The `refit` command')"] },
  '## The `refit` command › bash 2': { file: 'test/e2e/cli-bench.test.ts', proof: ['npx refit bench'] },
  '## Running the service (`refit serve`) › bash 1': { file: 'test/e2e/readme-serve.test.ts', proof: ["readmeBlock('## Running the service')"] },
};

const key = (b: ReadmeBlock) => `${b.heading} › ${b.lang} ${b.n}`;
const runnable = (readme?: string) => readmeBlocks(readme).filter((b) => b.lang === 'bash' || b.lang === 'ts');
/** The README's bash and ts blocks that RUNNERS does not list. */
const unlisted = (readme?: string) => runnable(readme).map(key).filter((k) => !RUNNERS[k]);

test('every ```bash and ```ts block in the README is listed with the test that runs it', () => {
  const blocks = runnable();
  assert.deepEqual(unlisted(), [], 'README blocks that no test runs: add a test that runs each as written and list it in RUNNERS');
  const gone = Object.keys(RUNNERS).filter((k) => !blocks.some((b) => key(b) === k));
  assert.deepEqual(gone, [], 'RUNNERS lists blocks the README no longer has');
  for (const [k, r] of Object.entries(RUNNERS)) {
    assert.ok(existsSync(join(root, r.file)), `${k}: ${r.file} does not exist`);
    const text = read(r.file);
    for (const p of r.proof) assert.ok(text.includes(p), `${k}: ${r.file} does not contain ${JSON.stringify(p)}`);
  }
  // The `npm run demo` in the first block is the plain demo the demo section describes.
  assert.equal(JSON.parse(read('package.json')).scripts.demo, 'node bin/refit.js demo');
});

/** Whitespace runs are one space: column alignment of trailing comments may differ. */
const norm = (l: string) => l.trim().replace(/\s+/g, ' ');
const importRe = (from: string) => new RegExp(`^import \\{([^}]*)\\} from '${from.replace(/[.\/]/g, '\\$&')}';$`);
const names = (list: string) => list.split(',').map((s) => s.trim()).filter(Boolean);

/**
 * Where each line of `snippet` is in `file` (in order; other lines may come between). A `// …`
 * line in the snippet stands for omitted code; `import { … } from 'refit'` matches the file's
 * import from '../src/index.ts' naming at least those names.
 */
export function excerptLines(snippet: string, file: string): { line: string; at: number }[] {
  const want = snippet.split('\n').map(norm).filter((l) => l && !l.startsWith('// …'));
  const have = file.split('\n').map(norm);
  const out: { line: string; at: number }[] = [];
  let from = 0;
  for (const line of want) {
    const imp = importRe('refit').exec(line);
    const matches = (h: string) => {
      if (!imp) return h === line;
      const m = importRe('../src/index.ts').exec(h);
      return !!m && names(imp[1]!).every((n) => names(m[1]!).includes(n));
    };
    let at = from;
    while (at < have.length && !matches(have[at]!)) at++;
    if (at === have.length) {
      const anywhere = have.findIndex(matches);
      throw new Error(anywhere < 0 ? `not in the file: ${line}` : `out of order (it is on line ${anywhere + 1}, before the previous match on line ${from}): ${line}`);
    }
    out.push({ line, at: at + 1 });
    from = at + 1;
  }
  return out;
}

test('every ```ts block in the README is an excerpt of the example file named after it', () => {
  const ts = runnable().filter((b) => b.lang === 'ts');
  assert.ok(ts.length >= 4, `expected the README's TypeScript blocks, found ${ts.length}`);
  for (const b of ts) {
    const named = /`(?:npx tsx )?(examples\/[\w.-]+\.ts)/.exec(b.after.trim().split(/\n\s*\n/)[0] ?? '')?.[1];
    assert.ok(named, `${key(b)}: the paragraph after the block names no examples/*.ts file`);
    assert.equal(named, RUNNERS[key(b)]?.example, `${key(b)}: names ${named}`);
    assert.ok(existsSync(join(root, named)), `${key(b)}: ${named} does not exist`);
    try {
      const at = excerptLines(b.body, read(named));
      assert.ok(at.length >= 3, `${key(b)}: a block of ${at.length} lines`);
    } catch (e) {
      assert.fail(`${key(b)}: the block is not an excerpt of ${named}: ${(e as Error).message}`);
    }
  }
});

test('a block added to the README, in a listed section or a new one, is reported', () => {
  const readme = readReadme();
  const service = readme.indexOf('\n## Running the service');
  assert.ok(service > 0);
  const added = readme.slice(0, service) + '\n```ts\nawait somethingNew();\n```\n' + readme.slice(service) + '\n## Later\n\n```bash\nnpx refit new\n```\n';
  const before = readme.slice(0, service).match(/^#{1,6} .*$/gm)!.at(-1)!; // the section the ts block lands in
  const n = runnable().filter((b) => b.heading === before && b.lang === 'ts').length + 1;
  assert.deepEqual(unlisted(added), [`${before} › ts ${n}`, '## Later › bash 1']);
  // A changed line in a real block is no longer an excerpt.
  const quick = runnable().find((b) => b.lang === 'ts')!;
  assert.ok(quick.body.includes('lr: 1e-3'));
  assert.throws(() => excerptLines(quick.body.replace('lr: 1e-3', 'lr: 2e-3'), read('examples/quickstart.ts')), /not in the file: .*lr: 2e-3/);
});

test('the excerpt check rejects a changed, a missing and a reordered line', () => {
  const file = "import { a, b, c } from '../src/index.ts';\nconst x = a(1);   // one\nsetup();\nconst y = b(x);\n";
  assert.deepEqual(excerptLines("import { a, b } from 'refit';\nconst x = a(1); // one\n// … more\nconst y = b(x);", file).map((m) => m.at), [1, 2, 4]);
  assert.throws(() => excerptLines("import { a, d } from 'refit';", file), /not in the file/);
  assert.throws(() => excerptLines('const x = a(2);', file), /not in the file: const x = a\(2\);/);
  assert.throws(() => excerptLines('const y = b(x);\nconst x = a(1); // one', file), /out of order/);
});
