// A throwaway S3-compatible server for tests: s3rver, a mock S3 server from npm (a dev
// dependency). Debian 12 packages no standalone S3-compatible server: minio, seaweedfs and
// garage are not in its archive (checked with apt-cache); its only one, Ceph's radosgw, needs a
// running Ceph cluster (monitor, manager, OSDs), too much to start per test file. So the S3 blob
// store is tested against this mock, on a free local port, storing into a temporary directory removed after.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { track, release } from './throwaway.ts';

export interface S3Server {
  endpoint: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
}

export async function startS3(bucket = 'refit-test'): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), 'refit-s3-'));
  const state = track(dir);
  const server = new S3rver({ port: 0, address: '127.0.0.1', directory: dir, silent: true, configureBuckets: [{ name: bucket, configs: [] }] });
  try {
    const addr = await server.run();
    return {
      endpoint: `http://127.0.0.1:${addr.port}`,
      bucket,
      // s3rver's fixed development credentials.
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      async stop() {
        await server.close();
        release(state);
      },
    };
  } catch (e) {
    release(state);
    throw e;
  }
}
