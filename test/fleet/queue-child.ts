// A NATS queue worker in its own process, for the kill-mid-job fault test: it commits a job's
// effect idempotently (a file created once per job id, like FleetStore.commitJob) and then, or
// before that, hangs until the parent SIGKILLs it. Args: <nats url> <prefix> <commit dir> <ackWaitMs>.
import { NatsJobQueue } from '../../src/fleet/queue-nats.ts';
import { commitOnce } from './queue-commit.ts';

const [url, prefix, dir, ackWait] = process.argv.slice(2);
const q = await NatsJobQueue.connect({ servers: url, prefix, ackWaitMs: Number(ackWait), maxAttempts: 3, backoffMs: { base: 100, cap: 1000 } });
await q.consume(
  async (job, ctx) => {
    if (job.payload?.die === 'after-commit') {
      const created = commitOnce(dir, job.id);
      process.stdout.write(`committed ${job.id} ${created} ${ctx.attempt}\n`);
    } else {
      process.stdout.write(`started ${job.id} ${ctx.attempt}\n`);
    }
    await new Promise(() => {}); // hangs: the parent kills this process mid-job
  },
  { concurrency: 4 },
);
process.stdout.write('ready\n');
