// The last lines of a log file, for the MTA kits' failure messages and log waits.
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

export const LOG_TAIL_LINES = 40;

function lastLines(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** The file's last `lines` lines; "" while there is no file. */
export async function logTail(file: string, lines = LOG_TAIL_LINES): Promise<string> {
  try {
    return lastLines(await readFile(file, "utf8"), lines);
  } catch {
    return "";
  }
}

/** logTail for error paths, which must not need an await to be useful; `missing` if no file. */
export function logTailSync(file: string, missing: string): string {
  try {
    return lastLines(readFileSync(file, "utf8"), LOG_TAIL_LINES);
  } catch {
    return missing;
  }
}
