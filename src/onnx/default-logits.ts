/** The output holding class scores: the one named 'logits' if there is one, else the first. */
export function defaultLogits(outputs: readonly { name: string }[]): string {
  return outputs.find((o) => o.name === 'logits')?.name ?? outputs[0]!.name;
}
