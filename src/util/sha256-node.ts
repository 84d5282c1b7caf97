// sha256 as lowercase hex, the form every stored record (registry versions, tenant state, fleet
// uploads) keeps beside its bytes. Node-only (node:crypto); the browser-safe device link hashes
// with WebCrypto instead (src/fleet/link-http.ts).
import { createHash } from 'node:crypto';

export const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
