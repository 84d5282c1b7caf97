// The embedded BlobStore: one file per key under a root directory. A write goes to a temporary
// file in the target's own directory, is fsynced, renamed over the target (atomic on POSIX) and
// the directory is fsynced, so a reader or a crash sees the whole old blob or the whole new one.
// Temporary names start with '.', which no valid key segment does, so `list` never returns them.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { BlobStore } from '../fleet/types.ts';
import { FleetError } from '../fleet/types.ts';
import { checkBlobKey, checkBlobPrefix } from './blob-key.ts';

const isMissing = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR';

async function fsyncPath(path: string): Promise<void> {
  const h = await fs.open(path, 'r');
  try { await h.sync(); } finally { await h.close(); }
}

export class FsBlobStore implements BlobStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  private path(key: string): string {
    checkBlobKey(key);
    const p = join(this.root, ...key.split('/'));
    // Belt and braces: checkBlobKey already refuses every way out of the root.
    if (!p.startsWith(this.root + sep)) throw new FleetError(`blob key ${JSON.stringify(key)} leaves the store`, 'invalid');
    return p;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const path = this.path(key);
    if (!(bytes instanceof Uint8Array)) throw new FleetError(`blob ${key}: bytes must be a Uint8Array`, 'invalid');
    const old = await this.get(key);
    if (old && Buffer.compare(Buffer.from(old.buffer, old.byteOffset, old.byteLength), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) === 0) return;
    const dir = dirname(path);
    await fs.mkdir(dir, { recursive: true });
    const tmp = join(dir, `.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const h = await fs.open(tmp, 'wx');
      try {
        await h.writeFile(bytes);
        await h.sync();
      } finally {
        await h.close();
      }
      await fs.rename(tmp, path);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    await fsyncPath(dir);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const path = this.path(key);
    try {
      const b = await fs.readFile(path);
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch (e) {
      if (isMissing(e)) return undefined;
      if ((e as NodeJS.ErrnoException).code === 'EISDIR') throw new FleetError(`blob key ${JSON.stringify(key)} names a directory of keys, not a blob`, 'invalid');
      throw e;
    }
  }

  async delete(key: string): Promise<boolean> {
    const path = this.path(key);
    try {
      await fs.unlink(path);
      return true;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  async list(prefix: string): Promise<string[]> {
    checkBlobPrefix(prefix);
    // Walk only the directory the prefix fully names; filter its keys by the rest.
    const cut = prefix.lastIndexOf('/');
    const start = cut < 0 ? this.root : join(this.root, ...prefix.slice(0, cut).split('/'));
    const out: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (e) {
        if (isMissing(e)) return;
        throw e;
      }
      for (const ent of entries) {
        if (ent.name.startsWith('.')) continue; // temporary files of writes in flight
        const p = join(dir, ent.name);
        if (ent.isDirectory()) await walk(p);
        else if (ent.isFile()) {
          const key = relative(this.root, p).split(sep).join('/');
          if (key.startsWith(prefix)) out.push(key);
        }
      }
    };
    await walk(start);
    return out.sort();
  }

  async close(): Promise<void> {}
}
