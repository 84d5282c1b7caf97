// The README's runnable example keeps running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

test('examples/quickstart.ts fine-tunes the shipped CNN and saves a model', () => {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const out = join(mkdtempSync(join(tmpdir(), 'refit-example-')), 'tuned.onnx');
  const log = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'examples/quickstart.ts'), out], { encoding: 'utf8', cwd: root });
  const losses = [...log.matchAll(/loss (\d+\.\d+)/g)].map((m) => Number(m[1]));
  assert.equal(losses.length, 10, log);
  assert.ok(existsSync(out));
});
