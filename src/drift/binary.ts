// Input check shared by the detectors that watch a 0/1 error stream.

export function checkBit(kind: string, x: number | boolean): void {
  if (x !== 0 && x !== 1 && x !== true && x !== false) throw new Error(`${kind} watches a 0/1 error stream (1 = error); got ${x}`);
}
