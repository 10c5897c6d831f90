// Generates the README's settings table from the role schemas, between the markers
// <!-- settings:begin --> and <!-- settings:end -->. `--write FILE` updates it in place;
// `--check FILE` exits 1 if it is out of date (npm run check runs this).
import { readFileSync, writeFileSync } from "node:fs";
import { flagOf, type Schema } from "../shared/config.ts";
import { authorizerSettings } from "../services/authorizer/settings.ts";
import { milterSettings } from "../services/milter/settings.ts";
import { watcherSettings } from "../services/watcher/settings.ts";
import { setupSettings } from "../services/admin/admin-settings.ts";

const roles: readonly [string, Schema][] = [
  ["watcher", watcherSettings],
  ["authorizer", authorizerSettings],
  ["milter", milterSettings],
  ["setup", setupSettings],
];

export function settingsTable(): string {
  const rows = new Map<string, { doc: string; def: string; form: string; used: string[] }>();
  for (const [role, schema] of roles) {
    for (const s of Object.values(schema)) {
      const row = rows.get(s.env) ?? { doc: s.doc, def: s.default ?? "", form: s.form, used: [] };
      row.used.push(role);
      rows.set(s.env, row);
    }
  }
  const lines = ["| variable | flag | default | used by | meaning |", "|---|---|---|---|---|"];
  const all = roles.length;
  for (const [env, r] of rows) {
    const used = r.used.length === all ? "all" : r.used.join(", ");
    const def = r.def === "" ? "" : `\`${r.def}\``;
    lines.push(
      `| \`${env}\` | \`${flagOf(env)}\` | ${def} | ${used} | ${r.doc} Accepts ${r.form}. |`,
    );
  }
  return lines.join("\n");
}

const BEGIN = "<!-- settings:begin -->";
const END = "<!-- settings:end -->";

function main(args: readonly string[]): void {
  const [mode, file] = args;
  if ((mode !== "--write" && mode !== "--check") || file === undefined) {
    process.stdout.write(settingsTable() + "\n");
    return;
  }
  const text = readFileSync(file, "utf8");
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  if (start === -1 || end < start) throw new Error(`${file} has no ${BEGIN} ... ${END} section`);
  const updated = `${text.slice(0, start + BEGIN.length)}\n${settingsTable()}\n${text.slice(end)}`;
  if (mode === "--write") {
    writeFileSync(file, updated);
  } else if (updated !== text) {
    process.stderr.write(`${file}: settings table is out of date; run npm run docs\n`);
    process.exitCode = 1;
  }
}

main(process.argv.slice(2));
