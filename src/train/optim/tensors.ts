import type { TensorMap } from './types.ts';

/** Looks `name` up in a Map or a record. */
export function getTensor(map: TensorMap, name: string): Float32Array | undefined {
  if (map instanceof Map) return map.get(name);
  const rec = map as Readonly<Record<string, Float32Array>>;
  return Object.prototype.hasOwnProperty.call(rec, name) ? rec[name] : undefined;
}

/** Iterates the [name, tensor] pairs of a Map or a record. */
export function tensorEntries(map: TensorMap): Iterable<readonly [string, Float32Array]> {
  if (map instanceof Map) return map as ReadonlyMap<string, Float32Array>;
  return Object.entries(map as Readonly<Record<string, Float32Array>>);
}

/**
 * Index of the first NaN or ±Inf in `a`, or -1. The fast path is one branch-free
 * pass (x·0 is NaN exactly when x is not finite); only a hit pays for a search.
 */
export function firstNonFinite(a: Float32Array): number {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc += a[i]! * 0;
  if (acc === 0) return -1;
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}
