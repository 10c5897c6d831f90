// The environment variables that size a benchmark run (BENCH_MTA_MESSAGES=3000 and the like).

/**
 * The whole number in `env`, or `def` when it is unset.
 * @throws Error naming the variable when its value is not a whole number of at least 1.
 */
export function countKnob(env: string, def: number): number {
  const raw = process.env[env];
  const n = raw === undefined ? def : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${env}: ${raw ?? ""} is not a count`);
  return n;
}
