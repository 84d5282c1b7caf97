// refit turns off onnxruntime-node's telemetry unless the user set ORT_DISABLE_TELEMETRY: a child
// process that imports refit and makes a session leaves no /tmp/mat-debug-<pid>.log (the 1DS
// SDK's log, written when the telemetry starts), while one run with ORT_DISABLE_TELEMETRY=0 does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';

const root = new URL('../../', import.meta.url).pathname;
const script = `import { loadModel } from './src/index.ts';
const m = await loadModel('models/fmnist-cnn.onnx');
await m.run({ x: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784) } });
console.log(process.env.ORT_DISABLE_TELEMETRY ?? 'unset');`;

/** Run the script in a child: what it printed, and whether it left a telemetry log. */
function child(env: Record<string, string | undefined>): Promise<{ printed: string; log: boolean }> {
  return new Promise((done, fail) => {
    const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('error', fail);
    c.on('close', (code) => {
      const file = `/tmp/mat-debug-${c.pid}.log`;
      const log = existsSync(file);
      rmSync(file, { force: true });
      if (code !== 0) fail(new Error(`child exited ${code}`));
      else done({ printed: out.trim(), log });
    });
  });
}

test("onnxruntime-node's telemetry is off unless ORT_DISABLE_TELEMETRY says otherwise", { skip: process.platform !== 'linux' && 'the 1DS log is Linux-only' }, async () => {
  // An undefined value leaves the variable out of the child's environment.
  const [off, on] = await Promise.all([child({ ORT_DISABLE_TELEMETRY: undefined }), child({ ORT_DISABLE_TELEMETRY: '0' })]);
  assert.equal(off.printed, '1', 'refit sets ORT_DISABLE_TELEMETRY=1 when it is unset');
  assert.equal(off.log, false, 'a telemetry log was written with the telemetry off');
  assert.equal(on.printed, '0', "the user's setting is kept");
  assert.equal(on.log, true, 'with ORT_DISABLE_TELEMETRY=0 onnxruntime-node writes its telemetry log (if it no longer does, this test checks nothing)');
});
