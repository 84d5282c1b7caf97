// The `refit` command.
import { Command } from 'commander';
import { runDemo, formatTable } from './demo.ts';

const program = new Command();
program.name('refit').description('Keep deployed ONNX models fitted: training, PEFT and test-time adaptation on onnxruntime');

program
  .command('demo')
  .description('score the shipped CNN, unadapted and with every adaptation method, on the continual Fashion-MNIST-C stream')
  .option('--quick', 'a short run: 3 batches per corruption (default 6)')
  .option('--full', 'one pass over the 10k test set per corruption (slow: the benchmark stream)')
  .option('--json', 'print machine-readable JSON instead of the table')
  .option('--model <path>', 'ONNX model with input [N,1,28,28] and logits output (default: the shipped CNN)')
  .option('--methods <list>', 'comma-separated methods (default: all)')
  .option('--batch-size <n>', 'batch size', (v) => parseInt(v, 10))
  .option('--severity <n>', 'corruption severity 1-5', (v) => parseInt(v, 10))
  .option('--out <file>', 'HTML report path', 'refit-demo-report.html')
  .action(async (o) => {
    const r = await runDemo({ ...o, methods: o.methods?.split(',').map((s: string) => s.trim()) });
    if (o.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    } else {
      console.log(formatTable(r));
      console.log(`\nReport: ${r.report}  (${r.seconds.toFixed(1)} s)`);
    }
  });

program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`refit: ${e.message}`);
  process.exit(1);
});
