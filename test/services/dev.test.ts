// `relaylease dev`, the quick start, through the real entry point: it starts its own nats-server,
// takes a login over HTTP, answers for it, and stops everything on Ctrl-C.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { connect as tcpConnect } from "node:net";
import { once } from "node:events";
import { describe, it } from "node:test";
import { CLI } from "../support/cli.ts";
import { PolicyClient } from "../support/policy-client.ts";
import { waitFor } from "../support/wait.ts";

function portOpen(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.split(":");
  return new Promise((resolve) => {
    const s = tcpConnect(Number(port), host);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => {
      resolve(false);
    });
  });
}

describe("relaylease dev", () => {
  it("runs a whole relaylease and stops it cleanly", { timeout: 60_000 }, async () => {
    const dev = spawn(
      process.execPath,
      [
        CLI,
        "dev",
        "--http-listen",
        "127.0.0.1:0",
        "--policy-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-level",
        "warn",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    dev.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    dev.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    try {
      await waitFor(
        () => stdout.includes("Ask the policy service"),
        30_000,
        `dev to start; stderr: ${stderr}`,
        50,
      );
      const field = (label: string) => new RegExp(`${label}\\s+(\\S+)`).exec(stdout)?.[1] ?? "";
      const nats = field("NATS");
      const loginApi = field("login API");
      const policyAddress = field("policy service");
      assert.match(nats, /^nats:\/\/127\.0\.0\.1:\d+$/);

      const res = await fetch(loginApi, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ip: "203.0.113.5", user: "alice", service: "imap" }),
      });
      assert.equal(res.status, 202);
      const policy = await PolicyClient.connect(policyAddress);
      await waitFor(
        async () => (await policy.query({ client_address: "203.0.113.5" })) === "OK",
        2000,
        "OK",
      );
      await policy.close();

      const check = await new Promise<{ code: number; out: string }>((resolve) => {
        execFile(
          process.execPath,
          [CLI, "check", "203.0.113.5"],
          { env: { ...process.env, RELAYLEASE_NATS_URL: nats } },
          (err, out) => {
            resolve({ code: err === null ? 0 : Number(err.code), out });
          },
        );
      });
      assert.equal(check.code, 0, check.out);
      assert.match(check.out, /leased until .*user alice, imap via http on dev/);

      dev.kill("SIGINT");
      const [code] = (await once(dev, "exit")) as [number | null];
      assert.equal(code, 0, stderr);
      assert.equal(await portOpen(nats.replace("nats://", "")), false, "dev's nats-server stopped");
    } finally {
      if (dev.exitCode === null) dev.kill("SIGKILL");
    }
  });
});
