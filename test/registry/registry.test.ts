// The SQLite adapter registry through the shared registry suite (conformance.ts): versions,
// rollback, good marks, retention, sha256 checks, a write that fails inside its transaction, and
// a file reopened after close; plus what only SQLite has (integrity check, schema version).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteRegistry, SCHEMA_VERSION } from '../../src/registry/index.ts';
import { registryConformance, files } from './conformance.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-registry-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const file = (key: string) => join(dir, `${key}.db`);

registryConformance('sqlite', {
  async open(key, opts) {
    return new SqliteRegistry(file(key), opts);
  },
  async corruptWeights(key, model, name, version) {
    const raw = new Database(file(key));
    const w = (raw.prepare('SELECT weights FROM adapter_versions WHERE model = ? AND name = ? AND version = ?').get(model, name, version) as { weights: Buffer }).weights;
    w[10] ^= 0xff;
    raw.prepare('UPDATE adapter_versions SET weights = ? WHERE model = ? AND name = ? AND version = ?').run(w, model, name, version);
    raw.close();
  },
  async failPointerMove(key) {
    const raw = new Database(file(key));
    raw.exec(`CREATE TRIGGER crash BEFORE UPDATE OF current ON adapters BEGIN SELECT RAISE(ABORT, 'simulated crash mid-write'); END`);
    return async () => {
      raw.exec('DROP TRIGGER crash');
      raw.close();
    };
  },
  async bumpSchema(key) {
    const raw = new Database(file(key));
    raw.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(SCHEMA_VERSION + 1, 'later');
    raw.close();
  },
  async afterReopen(_key, reg) {
    const r = reg as SqliteRegistry;
    assert.equal(r.schemaVersion(), SCHEMA_VERSION);
    assert.equal(r.integrityCheck(), 'ok');
  },
});

test('sqlite: an in-memory registry works, and a file from a newer refit is refused synchronously by the constructor', async () => {
  const reg = new SqliteRegistry(':memory:');
  await reg.put('m', 'a', files(1));
  assert.equal(await reg.current('m', 'a'), 1);
  await reg.close();
  const path = file('newer');
  await new SqliteRegistry(path).close();
  const raw = new Database(path);
  raw.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(SCHEMA_VERSION + 1, 'later');
  raw.close();
  assert.throws(() => new SqliteRegistry(path), new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this refit understands`));
});
