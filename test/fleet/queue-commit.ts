// The fault tests' stand-in for FleetStore.commitJob: a job's effect is a file created at most
// once per job id (O_EXCL), shared by processes; true when this call created it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function commitOnce(dir: string, jobId: string): boolean {
  try {
    writeFileSync(join(dir, jobId), `${process.pid}\n`, { flag: 'wx' });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}
