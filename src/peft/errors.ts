// One error type for every PEFT failure: it names the adapter, target or tensor, and says
// what was expected versus found.
export class PeftError extends Error {
  override name = 'PeftError';
}

export { closest } from '../util/closest.ts';

export const fmt = (dims: readonly number[]) => `[${dims.join(', ')}]`;
