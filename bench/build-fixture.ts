// The benches' C fixtures (bench/reference-milter/: drac-milter, floor-tables), built by build.sh
// into a cache outside the repository, or found there.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const BUILD = fileURLToPath(new URL("reference-milter/build.sh", import.meta.url));

/** The fixture's executable path. @throws Error when it cannot be built. */
export function buildFixture(name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const b = spawn("bash", [BUILD, name], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    b.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    b.on("error", reject);
    b.on("exit", (code) => {
      if (code === 0) resolve(out.trim());
      else reject(new Error(`${BUILD} ${name} exited ${String(code)}`));
    });
  });
}
