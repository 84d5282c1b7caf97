// The `refit` command.
import { Command } from 'commander';
import { runDemo, formatTable } from './demo.ts';
import { adapterInfo, formatInfo, mergeAdapters } from './adapter.ts';
import { loadModel } from '../model.ts';

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

const adapter = program.command('adapter').description('inspect adapter folders (HF PEFT layout) and merge them into a model');
adapter
  .command('info')
  .description('what an adapter folder holds: method, rank, target modules, size; with --model, its share of that model')
  .argument('<dirs...>', 'adapter folders (adapter_model.safetensors + adapter_config.json)')
  .option('--model <path>', 'check each adapter against this ONNX model and account for it')
  .option('--json', 'print machine-readable JSON')
  .action(async (dirs: string[], o) => {
    const base = o.model ? await loadModel(o.model) : undefined; // loaded once for every folder
    const infos = dirs.map((d) => adapterInfo(d, base));
    console.log(o.json ? JSON.stringify(infos, null, 2) : infos.map(formatInfo).join('\n'));
    await base?.release();
  });
adapter
  .command('merge')
  .description('fold adapters into a model\'s weights and save a plain ONNX model (no extra latency)')
  .argument('<model>', 'the base ONNX model')
  .argument('<dirs...>', 'adapter folders, applied in order')
  .requiredOption('-o, --out <path>', 'where to write the merged model')
  .action(async (model: string, dirs: string[], o) => {
    const r = await mergeAdapters(model, dirs, o.out);
    console.log(`merged ${r.adapters.join(', ')} into ${model}: wrote ${r.out}`);
  });

program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`refit: ${e.message}`);
  process.exit(1);
});
