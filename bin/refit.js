#!/usr/bin/env node
// Runs the built CLI in an installed package, and in a checkout whose dist/ is up to date; else the
// TypeScript source via tsx (a devDependency, present only in a checkout). A checkout is told by
// its tsconfig.json, which the package's `files` leave out: an installed package's file times say
// nothing (npm's extraction may write src/ after dist/), so only a checkout compares them, where a
// stale dist/ would otherwise run old code silently.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const built = new URL('../dist/cli/main.js', import.meta.url);
const src = fileURLToPath(new URL('../src', import.meta.url));
const checkout = existsSync(new URL('../tsconfig.json', import.meta.url));

/** The newest modification time of any file under `dir`. */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

if (existsSync(built) && !(checkout && existsSync(src) && newest(src) > statSync(built).mtimeMs)) {
  await import(built.href);
} else if (!checkout) {
  console.error(`refit: this package has no built CLI (${fileURLToPath(built)}); reinstall it, or run \`npm run build\` in its checkout`);
  process.exit(1);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL('../src/cli/main.ts', import.meta.url).href);
}
