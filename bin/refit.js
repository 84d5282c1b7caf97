#!/usr/bin/env node
// Runs the built CLI when present (an installed package), else the TypeScript source via tsx.
// In a checkout where src/ has changed since the last build, a stale dist/ would run old code
// silently, so the source runs then (npm pack gives every file one mtime: a package uses dist/).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const built = new URL('../dist/cli/main.js', import.meta.url);
const src = fileURLToPath(new URL('../src', import.meta.url));

/** The newest modification time of any file under `dir`. */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

if (existsSync(built) && !(existsSync(src) && newest(src) > statSync(built).mtimeMs)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL('../src/cli/main.ts', import.meta.url).href);
}
