// Adapters in the page's IndexedDB, in HF PEFT's layout (the same two files saveAdapter writes in
// Node), and as downloads. One record per adapter, written in one transaction after the files are
// fully serialised: a failure leaves the previous record (or none), never half an adapter.
import type { RefitModel } from '../model.ts';
import type { PeftModel } from '../peft/peft-model.ts';
import { adapterFiles, withAdapterFiles, WEIGHTS_FILE, CONFIG_FILE, type AdapterFiles } from '../peft/files.ts';
import { downloadBytes } from './io.ts';

const DB = 'refit';
const STORE = 'adapters';

interface Stored extends AdapterFiles {
  name: string;
  savedAt: string;
}

function openDb(): Promise<IDBDatabase> {
  if (typeof indexedDB === 'undefined') return Promise.reject(new Error('this page has no IndexedDB (private mode or a worker without it?)'));
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: 'name' });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new Error(`opening IndexedDB '${DB}' failed: ${req.error?.message}`));
  });
}

async function inStore<T>(mode: IDBTransactionMode, what: string, f: (s: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = f(tx.objectStore(STORE));
      let result: T;
      req.onsuccess = () => { result = req.result as T; };
      tx.oncomplete = () => resolve(result);
      tx.onabort = tx.onerror = () => reject(new Error(`${what} failed: ${(tx.error ?? req.error)?.message ?? 'transaction aborted'}`));
    });
  } finally {
    db.close();
  }
}

/** Save adapter `name` of `model` under `key` (default: its name). Resolves once the write is committed. */
export async function saveAdapterToIndexedDB(model: PeftModel, name: string, key = name): Promise<void> {
  const files = adapterFiles(model, name); // serialise first: an error here writes nothing
  const record: Stored = { name: key, weights: files.weights, config: files.config, savedAt: new Date().toISOString() };
  await inStore<IDBValidKey>('readwrite', `saving adapter '${key}' to IndexedDB`, (s) => s.put(record));
}

/** The stored files of adapter `key`, or undefined. */
export async function readAdapterFromIndexedDB(key: string): Promise<AdapterFiles | undefined> {
  const r = await inStore<Stored | undefined>('readonly', `reading adapter '${key}' from IndexedDB`, (s) => s.get(key));
  return r ? { weights: r.weights, config: r.config } : undefined;
}

/** Apply stored adapter `key` to `model` (as adapter `name`, default the key); checked as loadAdapter checks files. */
export async function loadAdapterFromIndexedDB(model: RefitModel, key: string, name = key): Promise<PeftModel> {
  const files = await readAdapterFromIndexedDB(key);
  if (!files) throw new Error(`no adapter '${key}' in IndexedDB; stored: ${(await listAdaptersInIndexedDB()).join(', ') || 'none'}`);
  return withAdapterFiles(model, name, files);
}

export async function listAdaptersInIndexedDB(): Promise<string[]> {
  return (await inStore<IDBValidKey[]>('readonly', 'listing adapters in IndexedDB', (s) => s.getAllKeys())).map(String);
}

export async function deleteAdapterFromIndexedDB(key: string): Promise<void> {
  await inStore<undefined>('readwrite', `deleting adapter '${key}' from IndexedDB`, (s) => s.delete(key));
}

/** Offer adapter `name` as HF PEFT's two files (`<prefix>adapter_config.json`, `<prefix>adapter_model.safetensors`). */
export function downloadAdapter(model: PeftModel, name: string, prefix = `${name}-`): AdapterFiles {
  const files = adapterFiles(model, name);
  downloadBytes(files.config, `${prefix}${CONFIG_FILE}`, 'application/json');
  downloadBytes(files.weights, `${prefix}${WEIGHTS_FILE}`);
  return files;
}
