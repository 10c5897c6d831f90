// The log follower against real files in a temp dir: appends, rotation by rename and by
// copy-truncate, restarts from the state file, over-long lines.
import assert from "node:assert/strict";
import {
  appendFile,
  copyFile,
  mkdtemp,
  open,
  readFile,
  rename,
  rm,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, it } from "node:test";
import { createLogger } from "../../../../shared/log.ts";
import {
  followLog,
  type FollowOptions,
  type LogFollower,
} from "../../../../services/watcher/log/follow.ts";
import { waitFor } from "../../../support/wait.ts";

const log = createLogger("silent");

describe("followLog", () => {
  let dir: string;
  let path: string;
  let statePath: string;
  let lines: string[];
  const running: LogFollower[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "relaylease-follow-"));
    path = join(dir, "mail.log");
    statePath = join(dir, "follow.state");
    lines = [];
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((f) => f.stop()));
    await rm(dir, { recursive: true, force: true });
  });

  async function start(options: Partial<FollowOptions> = {}): Promise<LogFollower> {
    const f = await followLog({
      path,
      statePath,
      log,
      onLine: (text, from, to) => {
        lines.push(text.slice(from, to));
      },
      pollIntervalMs: 60_000, // the tests drive poll() themselves unless they say otherwise
      saveIntervalMs: 0,
      ...options,
    });
    running.push(f);
    await f.poll();
    return f;
  }

  async function stop(f: LogFollower): Promise<void> {
    running.splice(running.indexOf(f), 1);
    await f.stop();
  }

  it("starts at the end of an existing file and delivers what is appended", async () => {
    await writeFile(path, "old 1\nold 2\n");
    const f = await start();
    await appendFile(path, "new 1\nnew 2\n");
    await f.poll();
    assert.deepEqual(lines, ["new 1", "new 2"]);
  });

  it("reads the whole file with startAtEnd: false", async () => {
    await writeFile(path, "old 1\nold 2\n");
    await start({ startAtEnd: false });
    assert.deepEqual(lines, ["old 1", "old 2"]);
  });

  it("starting in the middle of a line skips the rest of it", async () => {
    await writeFile(path, "old\npart");
    const f = await start();
    await appendFile(path, "ial\nnext\n");
    await f.poll();
    assert.deepEqual(lines, ["next"]);
  });

  it("reads a file that appears after the start from its beginning", async () => {
    const f = await start();
    await writeFile(path, "first\nsecond\n");
    await f.poll();
    assert.deepEqual(lines, ["first", "second"]);
  });

  it("holds an unfinished line until its LF arrives", async () => {
    await writeFile(path, "");
    const f = await start();
    await appendFile(path, "abc");
    await f.poll();
    assert.deepEqual(lines, []);
    await appendFile(path, "def\n");
    await f.poll();
    assert.deepEqual(lines, ["abcdef"]);
  });

  it("notices appends on its own (fs.watch, poll timer)", async () => {
    await writeFile(path, "");
    await start({ pollIntervalMs: 50 });
    await appendFile(path, "by itself\n");
    await waitFor(() => lines.length === 1, 5000, "the appended line");
    assert.deepEqual(lines, ["by itself"]);
  });

  it("follows a rotation by rename, finishing the old file first", async () => {
    await writeFile(path, "");
    const f = await start({ rotationGraceMs: 0 });
    await appendFile(path, "a\n");
    await f.poll();
    await rename(path, `${path}.1`);
    await f.poll(); // the path is missing: keep reading the old file
    await appendFile(`${path}.1`, "b\nunfinished");
    await f.poll();
    await writeFile(path, "c\n");
    await f.poll();
    await appendFile(path, "d\n");
    await f.poll();
    assert.deepEqual(lines, ["a", "b", "unfinished", "c", "d"]);
    assert.equal(f.stats.rotations, 1);
  });

  it("after a rename, stays on the old file while its writer has not reopened", async () => {
    await writeFile(path, "");
    const f = await start({ rotationGraceMs: 300 });
    const writer = await open(path, "a"); // a daemon's descriptor: it writes on after the rename
    await writer.write("a\n");
    await f.poll();
    await rename(path, `${path}.1`);
    await writeFile(path, "new 1\n"); // logrotate's `create`, before the daemon's HUP
    await writer.write("b\n");
    await f.poll();
    await writer.write("c\n");
    await f.poll();
    assert.deepEqual(lines, ["a", "b", "c"], "still on the old file");
    await writer.close(); // the daemon reopened: the old file goes quiet
    await appendFile(path, "new 2\n");
    await sleep(350);
    await f.poll();
    assert.deepEqual(lines, ["a", "b", "c", "new 1", "new 2"]);
    assert.equal(f.stats.rotations, 1);
  });

  it("follows a copy-truncate rotation", async () => {
    await writeFile(path, "");
    const f = await start();
    await appendFile(path, "one\ntwo\nthree\n");
    await f.poll();
    await copyFile(path, `${path}.1`);
    await truncate(path, 0);
    await appendFile(path, "four\n");
    await f.poll();
    assert.deepEqual(lines, ["one", "two", "three", "four"]);
    assert.equal(f.stats.truncations, 1);
  });

  it("notices a file truncated and grown past the offset between two looks", async () => {
    await writeFile(path, "");
    const f = await start();
    await appendFile(path, "aa\n");
    await f.poll();
    await truncate(path, 0);
    await appendFile(path, "bbbbbbbb\ncc\n");
    await f.poll();
    assert.deepEqual(lines, ["aa", "bbbbbbbb", "cc"]);
    assert.equal(f.stats.truncations, 1);
  });

  it("restarts from the state file: no replay, no skip", async () => {
    await writeFile(path, "before\n");
    const first = await start();
    await appendFile(path, "1\n2\n3\n");
    await first.poll();
    await stop(first);
    const state = JSON.parse(await readFile(statePath, "utf8")) as { offset: number };
    assert.equal(state.offset, Buffer.byteLength("before\n1\n2\n3\n"));
    await appendFile(path, "4\n5\n");
    await start();
    assert.deepEqual(lines, ["1", "2", "3", "4", "5"]);
  });

  it("restarts after a rotation while stopped: finishes <path>.1, then the new file", async () => {
    await writeFile(path, "");
    const first = await start();
    await appendFile(path, "1\n");
    await first.poll();
    await stop(first);
    await appendFile(path, "2\n");
    await rename(path, `${path}.1`);
    await appendFile(`${path}.1`, "3\n");
    await writeFile(path, "4\n");
    const second = await start({ rotationGraceMs: 0 });
    await second.poll();
    assert.deepEqual(lines, ["1", "2", "3", "4"]);
  });

  it("restarts after a truncation while stopped: reads from the start", async () => {
    await writeFile(path, "");
    const first = await start();
    await appendFile(path, "a long first line\n");
    await first.poll();
    await stop(first);
    await truncate(path, 0);
    await appendFile(path, "new\n");
    const second = await start();
    assert.deepEqual(lines, ["a long first line", "new"]);
    assert.equal(second.stats.truncations, 1);
  });

  it("restarts after a truncation that regrew past the offset: reads from the start", async () => {
    await writeFile(path, "");
    const first = await start();
    await appendFile(path, "short\n");
    await first.poll();
    await stop(first);
    await writeFile(path, "replaced with longer\nlines\n");
    const second = await start();
    assert.deepEqual(lines, ["short", "replaced with longer", "lines"]);
    assert.equal(second.stats.truncations, 1);
  });

  it("ignores a corrupt state file, counting it", async () => {
    await writeFile(path, "old\n");
    await writeFile(statePath, "{not json");
    const f = await start();
    await appendFile(path, "new\n");
    await f.poll();
    assert.deepEqual(lines, ["new"]);
    assert.equal(f.stats.stateErrors, 1);
  });

  it("refuses to start when it cannot write its state", async () => {
    await assert.rejects(
      start({ statePath: join(dir, "missing", "follow.state") }),
      /cannot write its state in .*missing/,
    );
  });

  it("skips and counts an over-long line, holding at most one line", async () => {
    await writeFile(path, "");
    const f = await start({ maxLineBytes: 64, chunkBytes: 16 });
    await appendFile(path, `a\n${"x".repeat(1000)}\nb\n`);
    await f.poll();
    assert.deepEqual(lines, ["a", "b"]);
    assert.equal(f.stats.overlong, 1);
    await appendFile(path, "y".repeat(10_000)); // still unfinished
    await f.poll();
    assert.equal(f.stats.overlong, 2);
    await appendFile(path, "y\nc\n");
    await f.poll();
    assert.deepEqual(lines, ["a", "b", "c"]);
    assert.equal(f.stats.overlong, 2);
  });

  it("waits for an asynchronous consumer, in order", async () => {
    await writeFile(path, "");
    const f = await start({
      onLine: async (text, from, to) => {
        const line = text.slice(from, to);
        await new Promise((r) => setTimeout(r, line === "slow" ? 30 : 0));
        lines.push(line);
      },
    });
    await appendFile(path, "slow\nfast\n");
    await f.poll();
    assert.deepEqual(lines, ["slow", "fast"]);
  });

  const failing: [string, (line: string) => void | Promise<void>][] = [
    [
      "throws",
      (line) => {
        if (line === "bad") throw new Error("consumer bug");
        lines.push(line);
      },
    ],
    [
      "whose promise rejects (waited for, in order)",
      async (line) => {
        await new Promise((r) => setTimeout(r, 10));
        if (line === "bad") throw new Error("consumer bug");
        lines.push(line);
      },
    ],
  ];
  for (const [name, consume] of failing) {
    it(`counts a consumer that ${name}, and goes on`, async () => {
      await writeFile(path, "");
      const f = await start({ onLine: (text, from, to) => consume(text.slice(from, to)) });
      await appendFile(path, "bad\ngood\n");
      await f.poll();
      assert.deepEqual(lines, ["good"]);
      assert.equal(f.stats.callbackErrors, 1);
    });
  }
});
