// Real nats-server processes for tests, in the spirit of nats.js's `nst` kit: each server gets a
// temp dir under os.tmpdir() and free loopback ports (never 4222, where a shared server may
// listen), JetStream on, and a log tail for failure messages. restart() keeps port and store dir,
// so tests can take a server away and bring it back with its data; the cluster helper returns only
// once every node agrees on a JetStream meta leader, so R3 streams can be created immediately.
//
// Always release what you start: `await using srv = await startTestNatsServer()`, or
// `t.after(() => srv.cleanup())`. A test process that dies anyway still stops its servers (see
// services/dev/nats-server.ts), but leaves the temp dir behind.
import { execFile } from "node:child_process";
import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createServer, type Server } from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  NatsServerError,
  NatsServerProcess,
  freePort,
  startNatsServer,
  type NatsServerOptions,
} from "../../services/dev/nats-server.ts";

export interface TestNatsServer {
  readonly url: string;
  readonly port: number;
  /** Set when the server has a monitoring port (cluster nodes always do). */
  readonly monitorUrl: string | undefined;
  stderrTail(): string;
  stop(): Promise<void>;
  /** Stops (if running) and starts again on the same port with the same store dir. */
  restart(): Promise<void>;
  /** stop() and remove the temp dir. */
  cleanup(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface TestNatsCluster {
  readonly servers: TestNatsServer[];
  readonly urls: string[];
  cleanup(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const CLUSTER_READY_MS = 30_000;

/** Listens on a loopback port and drops every connection at once; undefined if it is taken. */
function holdPort(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer((socket) => socket.destroy());
    server.once("error", () => {
      resolve(undefined);
    });
    server.listen(port, "127.0.0.1", () => {
      server.unref(); // never what keeps a test process alive
      resolve(server);
    });
  });
}

/** One server whose options, ports included, are fixed at first start and reused by restart(). */
class KitServer implements TestNatsServer {
  readonly #opts: NatsServerOptions;
  readonly #dir: string | undefined;
  #proc: NatsServerProcess;
  #placeholder: Server | undefined;

  /** dir: removed by cleanup(); undefined when a cluster owns the dir. */
  constructor(proc: NatsServerProcess, opts: NatsServerOptions, dir: string | undefined) {
    this.#proc = proc;
    this.#opts = { ...opts, port: proc.port, monitorPort: portOf(proc.monitorUrl) };
    this.#dir = dir;
  }

  get url(): string {
    return this.#proc.url;
  }
  get port(): number {
    return this.#proc.port;
  }
  get monitorUrl(): string | undefined {
    return this.#proc.monitorUrl;
  }
  stderrTail(): string {
    return this.#proc.stderrTail();
  }
  /**
   * Stops the server and keeps its client port taken by a placeholder that drops every
   * connection: clients see an outage, and no other test's server can start on the port and
   * answer in its place (test files run in parallel) before restart().
   */
  async stop(): Promise<void> {
    await this.#proc.stop();
    this.#placeholder ??= await holdPort(this.#proc.port);
  }
  async restart(): Promise<void> {
    await this.#proc.stop();
    await this.#release();
    this.#proc = await startNatsServer(this.#opts);
  }
  async cleanup(): Promise<void> {
    await this.#proc.stop();
    await this.#release();
    if (this.#dir !== undefined) await removeDir(this.#dir);
  }
  async #release(): Promise<void> {
    const p = this.#placeholder;
    this.#placeholder = undefined;
    if (p !== undefined)
      await new Promise<void>((resolve) =>
        p.close(() => {
          resolve();
        }),
      );
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }
}

/** A single JetStream-enabled server on a free loopback port, store in a fresh temp dir. */
export async function startTestNatsServer(
  opts: { binary?: string; extraConfig?: string } = {},
): Promise<TestNatsServer> {
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-nats-"));
  const serverOpts: NatsServerOptions = { ...opts, storeDir: path.join(dir, "store") };
  try {
    return new KitServer(await startNatsServer(serverOpts), serverOpts, dir);
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
}

/** `size` routed JetStream servers (n1..nN, cluster "relaylease-test") on loopback. */
export async function startTestNatsCluster(size = 3): Promise<TestNatsCluster> {
  for (let attempt = 1; ; attempt++) {
    const dir = await mkdtemp(path.join(tmpdir(), "relaylease-nats-cluster-"));
    const servers: KitServer[] = [];
    try {
      await startNodes(dir, size, servers);
      await waitForMetaLeader(servers);
      return clusterOf(servers, dir);
    } catch (err) {
      await Promise.all(servers.map((s) => s.stop()));
      await removeDir(dir);
      // Route ports are fixed before any node starts, so a port taken meanwhile means a retry.
      const lostRace = err instanceof NatsServerError && /address already in use/.test(err.tail);
      if (!lostRace || attempt >= 3) throw err;
    }
  }
}

async function startNodes(dir: string, size: number, out: KitServer[]): Promise<void> {
  // Every node must know every route before the first starts: choose all ports up front.
  const ports = await distinctFreePorts(size * 3);
  const routePorts = ports.slice(size, 2 * size);
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`);
  const starts = routePorts.map(async (routePort, i) => {
    const opts: NatsServerOptions = {
      serverName: `n${i + 1}`,
      port: ports[i] ?? 0,
      monitorPort: ports[2 * size + i] ?? 0,
      storeDir: path.join(dir, `n${i + 1}`),
      cluster: { name: "relaylease-test", port: routePort, routes },
    };
    const server = new KitServer(await startNatsServer(opts), opts, undefined);
    out.push(server);
    return server;
  });
  // Started together: a lone node cannot elect a meta leader, and parallel is faster anyway.
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((r) => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
  // Keep node order n1..nN regardless of which came up first.
  out.splice(0, out.length, ...settled.map((r) => (r as PromiseFulfilledResult<KitServer>).value));
}

/** Full /healthz is 200 only once a node is current with an elected JetStream meta leader. */
async function waitForMetaLeader(servers: KitServer[]): Promise<void> {
  const deadline = Date.now() + CLUSTER_READY_MS;
  for (const server of servers) {
    for (;;) {
      const status = await healthz(`${server.monitorUrl ?? ""}/healthz`);
      if (status === "ok") break;
      if (Date.now() > deadline) {
        const tails = servers.map((s, i) => `--- n${i + 1} ---\n${s.stderrTail()}`).join("\n");
        throw new NatsServerError(
          `nats cluster had no JetStream meta leader within ${CLUSTER_READY_MS} ms (${server.url}: ${status})`,
          tails,
        );
      }
      await sleep(50);
    }
  }
}

async function healthz(url: string): Promise<string> {
  try {
    const res = await fetch(url);
    const body = await res.text();
    return res.ok ? "ok" : `${res.status} ${body.trim()}`;
  } catch (err) {
    return String(err);
  }
}

function clusterOf(servers: KitServer[], dir: string): TestNatsCluster {
  const cleanup = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
    await removeDir(dir);
  };
  return {
    servers,
    urls: servers.map((s) => s.url),
    cleanup,
    [Symbol.asyncDispose]: cleanup,
  };
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function portOf(url: string | undefined): number | undefined {
  return url === undefined ? undefined : Number(new URL(url).port);
}

async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

const DEBIAN_NATS_SERVER = "/usr/sbin/nats-server";

/** Debian 12's nats-server (2.9.x: silently ignores per-message TTL), for degraded-mode tests. */
export async function debianNatsServerBinary(): Promise<string | undefined> {
  try {
    await access(DEBIAN_NATS_SERVER);
  } catch {
    return undefined;
  }
  const version = await new Promise<string>((resolve) => {
    execFile(DEBIAN_NATS_SERVER, ["--version"], (_err, stdout) => {
      resolve(stdout);
    });
  });
  return /\bv2\.9\./.test(version) ? DEBIAN_NATS_SERVER : undefined;
}
