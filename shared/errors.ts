// Error helpers shared by every role.

/** Renders any thrown value for a log line or a CLI message. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
