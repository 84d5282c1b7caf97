// bin/refit.js decides between the built CLI (dist/) and the TypeScript source (src/, through tsx).
// An installed package must always run dist/: it has no tsx (a devDependency), and npm's extraction
// can leave src/ newer than dist/, which once sent every `npx refit` of a packed refit to tsx and
// failed with ERR_MODULE_NOT_FOUND. Each case lays out a package by hand with stand-in entry points.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-bin-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A package folder with the real launcher, a dist/ and a src/ entry that print which ran, and src/ `srcAge` seconds newer than dist/. */
function layout(name: string, o: { checkout: boolean; dist: boolean; srcAge: number }): string {
  const pkg = join(dir, name);
  mkdirSync(join(pkg, 'bin'), { recursive: true });
  mkdirSync(join(pkg, 'src/cli'), { recursive: true });
  copyFileSync(join(root, 'bin/refit.js'), join(pkg, 'bin/refit.js'));
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ type: 'module' }));
  const t = Date.now() / 1000 - 100;
  if (o.dist) {
    mkdirSync(join(pkg, 'dist/cli'), { recursive: true });
    writeFileSync(join(pkg, 'dist/cli/main.js'), "console.log('ran dist');\n");
    utimesSync(join(pkg, 'dist/cli/main.js'), t, t);
  }
  writeFileSync(join(pkg, 'src/cli/main.ts'), "const from: string = 'src'; console.log(`ran ${from}`);\n");
  utimesSync(join(pkg, 'src/cli/main.ts'), t + o.srcAge, t + o.srcAge);
  if (o.checkout) {
    writeFileSync(join(pkg, 'tsconfig.json'), '{}');
    mkdirSync(join(pkg, 'node_modules'));
    symlinkSync(join(root, 'node_modules/tsx'), join(pkg, 'node_modules/tsx'));
  }
  return pkg;
}

const run = (pkg: string) => spawnSync(process.execPath, [join(pkg, 'bin/refit.js')], { encoding: 'utf8' });

test('an installed package runs dist/ even where src/ is newer, and needs no tsx', () => {
  const r = run(layout('installed', { checkout: false, dist: true, srcAge: 10 }));
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'ran dist');
});

test('a checkout runs dist/ while it is up to date, and the source once src/ has changed', () => {
  const fresh = run(layout('checkout-fresh', { checkout: true, dist: true, srcAge: -10 }));
  assert.equal(fresh.status, 0, fresh.stderr);
  assert.equal(fresh.stdout.trim(), 'ran dist');
  const stale = run(layout('checkout-stale', { checkout: true, dist: true, srcAge: 10 }));
  assert.equal(stale.status, 0, stale.stderr);
  assert.equal(stale.stdout.trim(), 'ran src');
});

test('an installed package without dist/ says so in one line, exit status 1', () => {
  const r = run(layout('broken', { checkout: false, dist: false, srcAge: 0 }));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^refit: this package has no built CLI \(.*dist\/cli\/main\.js\); reinstall it/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
});

test("the package's files leave tsconfig.json out (the launcher's sign of a checkout) and ship the built CLI", () => {
  const files: string[] = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).files;
  assert.ok(!files.some((f) => f === 'tsconfig.json' || f === '*' || f.startsWith('tsconfig')), files.join(', '));
  assert.ok(files.includes('dist') && files.includes('bin'), files.join(', '));
});
