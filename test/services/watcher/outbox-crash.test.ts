// A real crash: a child process appends and publishes as fast as it can and is killed with
// SIGKILL mid-stream; the next open (taking over its lock) publishes every event the child had
// acknowledged and had not published, and at most maxInFlight the child had published.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../../../shared/log.ts";
import type { LoginEvent } from "../../../shared/login-event.ts";
import { Outbox } from "../../../services/watcher/outbox.ts";
import { waitFor } from "../../support/wait.ts";

const MAX_IN_FLIGHT = 16;

// Prints "A <id>" once an append resolved and "P <id>" once the stand-in stream stored an event
// (stdout to a pipe is synchronous on Linux: a printed line survives the kill).
const CHILD = `
import { Outbox } from ${JSON.stringify(new URL("../../../services/watcher/outbox.ts", import.meta.url).href)};
import { createLogger } from ${JSON.stringify(new URL("../../../shared/log.ts", import.meta.url).href)};
const publish = (e) => new Promise((resolve) => setTimeout(() => {
  process.stdout.write("P " + e.id + "\\n");
  resolve();
}, 1));
const outbox = await Outbox.open(process.env.OUTBOX_DIR, {
  publish, log: createLogger("silent"), maxInFlight: ${MAX_IN_FLIGHT}, segmentBytes: 16384,
});
let i = 0;
async function writer() {
  for (;;) {
    const id = "k" + i++;
    await outbox.append({ id, ip: "192.0.2." + (i % 250), service: "imap", source: "drac",
      watcher: "w1", loginAt: Date.now() });
    process.stdout.write("A " + id + "\\n");
  }
}
for (let w = 0; w < 16; w++) void writer();
`;

describe("Outbox after SIGKILL", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "relaylease-outbox-crash-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("publishes every acknowledged event, and at most maxInFlight again", async () => {
    const acked: string[] = [];
    const childStored = new Set<string>();
    const child = spawn(process.execPath, ["--input-type=module", "-e", CHILD], {
      env: { ...process.env, OUTBOX_DIR: dir },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      if (line.startsWith("A ")) acked.push(line.slice(2));
      else if (line.startsWith("P ")) childStored.add(line.slice(2));
      if (acked.length >= 3000 && !child.killed) child.kill("SIGKILL");
    });
    await waitFor(() => child.killed, 30_000, "3000 acknowledged appends in the child");
    await exited;
    lines.close();
    assert.ok(childStored.size > 0, "the child published nothing");

    const stored: string[] = [];
    const publish = (e: LoginEvent) =>
      new Promise<void>((resolve) =>
        setImmediate(() => {
          stored.push(e.id);
          resolve();
        }),
      );
    const outbox = await Outbox.open(dir, {
      publish,
      log: createLogger("silent"),
      maxInFlight: MAX_IN_FLIGHT,
    });
    try {
      await waitFor(() => outbox.stats().depth === 0, 10_000, "the outbox to drain");
    } finally {
      await outbox.close();
    }
    const published = new Set([...childStored, ...stored]);
    const lost = acked.filter((id) => !published.has(id));
    assert.deepEqual(lost, [], "acknowledged events lost");
    const again = stored.filter((id) => childStored.has(id));
    assert.ok(again.length <= MAX_IN_FLIGHT, `${again.length} published again`);
    const numbers = stored.map((id) => Number(id.slice(1)));
    assert.deepEqual(
      numbers,
      [...numbers].sort((a, b) => a - b),
      "published in append order",
    );
  });
});
