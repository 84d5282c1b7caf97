// refit turns off onnxruntime-node's telemetry unless the user set ORT_DISABLE_TELEMETRY: a child
// process that imports refit and makes a session leaves no /tmp/mat-debug-<pid>.log (the 1DS
// SDK's log, written when the telemetry starts), while one run with ORT_DISABLE_TELEMETRY=0 does.
// onnxruntime also keeps its telemetry off on CI machines (it reads CI and the variables below), so
// the children run without them: otherwise the control writes nothing under CI and checks nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';

const root = new URL('../../', import.meta.url).pathname;
const script = `import { loadModel } from './src/index.ts';
const m = await loadModel('models/fmnist-cnn.onnx');
await m.run({ x: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784) } });
console.log(process.env.ORT_DISABLE_TELEMETRY ?? 'unset');`;

// The CI markers onnxruntime 1.30's libonnxruntime.so reads (its strings, next to ORT_DISABLE_TELEMETRY).
const ciMarkers = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID', 'BUILDKITE', 'TEAMCITY_VERSION'];
const notCi = Object.fromEntries(ciMarkers.map((name) => [name, undefined]));

/** Run the script in a child: what it printed, and whether it left a telemetry log. */
function child(env: Record<string, string | undefined>): Promise<{ printed: string; log: boolean }> {
  return new Promise((done, fail) => {
    const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env: { ...process.env, ...notCi, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
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

test("onnxruntime-node's telemetry is off unless ORT_DISABLE_TELEMETRY says otherwise", { skip: process.platform !== 'linux' && 'the 1DS log is Linux-only' }, async (t) => {
  // An undefined value leaves the variable out of the child's environment.
  const [off, on] = await Promise.all([child({ ORT_DISABLE_TELEMETRY: undefined }), child({ ORT_DISABLE_TELEMETRY: '0' })]);
  assert.equal(off.printed, '1', 'refit sets ORT_DISABLE_TELEMETRY=1 when it is unset');
  assert.equal(off.log, false, 'a telemetry log was written with the telemetry off');
  assert.equal(on.printed, '0', "the user's setting is kept");
  // Should a machine still keep the telemetry off, say so rather than pass on a check that saw nothing.
  if (!on.log) t.skip('onnxruntime-node wrote no telemetry log here even with ORT_DISABLE_TELEMETRY=0, so the check above saw nothing');
});
