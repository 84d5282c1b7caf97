// Blob keys are '/'-separated names that every store maps to a path or an object key as they
// are, so each segment must be a safe name (the registry's NAME_PATTERN, which a sha256 in hex
// also matches): no empty segment, no '.' or '..', no leading '/', nothing a file system or an
// object store would read as a path step.
import { FleetError } from '../fleet/types.ts';
import { isSafeName } from './types.ts';

const MAX_KEY = 1024;

/** Throws FleetError('invalid') unless `key` is a safe blob key. */
export function checkBlobKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY || !key.split('/').every(isSafeName)) {
    throw new FleetError(`blob key ${JSON.stringify(key)} is not allowed: use '/'-separated segments of 1-128 letters, digits, '.', '_' or '-', each starting with a letter or digit, without '..', at most ${MAX_KEY} characters`, 'invalid');
  }
}

/** A list prefix: '' (everything), or a key's first segments with an optional trailing '/' and a partial last segment. */
export function checkBlobPrefix(prefix: string): void {
  if (typeof prefix !== 'string' || prefix.length > MAX_KEY) throw new FleetError(`blob prefix ${JSON.stringify(prefix)} is not allowed`, 'invalid');
  if (prefix === '') return;
  const segs = prefix.split('/');
  const last = segs.pop()!;
  if (!segs.every(isSafeName) || (last !== '' && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(last)) || last.includes('..')) {
    throw new FleetError(`blob prefix ${JSON.stringify(prefix)} is not allowed: it must be the start of a valid key (see checkBlobKey)`, 'invalid');
  }
}
