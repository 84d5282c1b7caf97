// Shared by the tests that run the `refit` command as a user does, and write the NPY files it reads.
import { npyHeader, bytesOf } from '../../src/cli/data-files.ts';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../../', import.meta.url));

export interface Run { status: number | null; stdout: string; stderr: string }

/** Run `node bin/refit.js …` in the repository root without blocking the event loop, so independent runs overlap. */
export function refit(...args: string[]): Promise<Run> {
  return refitIn(root, args);
}

/** The same, in the working directory `cwd` (relative paths in `args` resolve there). */
export function refitIn(cwd: string, args: string[]): Promise<Run> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [join(root, 'bin/refit.js'), ...args], { cwd });
    let stdout = '', stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (status) => res({ status, stdout, stderr }));
  });
}

/** An NPY (version 1.0) file of `data` with dtype `descr` ('<f4', '<i8', …) and `shape`. */
export function npy(descr: string, shape: number[], data: ArrayBufferView): Uint8Array {
  return Buffer.concat([npyHeader(descr, shape), bytesOf(data)]);
}
