// The environment variables that size a benchmark run (BENCH_MTA_MESSAGES=3000 and the like).

/**
 * The whole number in `env`, or `def` when it is unset.
 * @throws Error naming the variable when its value is not a whole number of at least `least`.
 */
export function countKnob(env: string, def: number, least = 1): number {
  const raw = process.env[env];
  const n = raw === undefined ? def : Number(raw);
  if (!Number.isInteger(n) || n < least) {
    throw new Error(`${env}: ${raw ?? ""} is not a count (a whole number of at least ${least})`);
  }
  return n;
}
