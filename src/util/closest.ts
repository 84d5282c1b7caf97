// "Did you mean" lists for error messages.

/** Up to `n` candidates closest to `name` by edit distance. */
export function closest(name: string, candidates: readonly string[], n = 5): string[] {
  return candidates.map((c) => [c, editDistance(name, c)] as const).sort((a, b) => a[1] - b[1]).slice(0, n).map((s) => s[0]);
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}
