// nats-server as a child process, for `relaylease dev` and the real-server test kit.
//
// Writes a config file next to the store dir, spawns the binary found by scripts/nats-server.sh,
// and resolves only once the server is usable: its log says "Server is ready", its client port
// accepts a TCP connection and, when it has a monitoring port, /healthz reports JetStream enabled.
// That wait has a deadline (readyTimeoutMs) and is raced against the child's exit, and both
// failures carry the tail of the server's log, because "did not start" alone is undiagnosable.
//
// Accepts options only from our own code. Limits: the log tail keeps the last LOG_TAIL_LINES lines
// and at most LOG_TAIL_BYTES (older output is dropped); a start that loses a race for an
// auto-chosen port is retried START_ATTEMPTS times; stop() waits STOP_GRACE_MS for a graceful
// exit, then SIGKILLs.
//
// A server must never outlive us: a crashed test or a killed `relaylease dev` would leave it
// holding ports and files. Each server runs in its own process group (so the terminal's Ctrl-C
// reaches only us and we can stop things in order) and is guarded twice: a process 'exit' hook
// SIGTERMs live servers, and a tiny shell watchdog, which reads a pipe from us, SIGTERMs and
// then SIGKILLs its server when that pipe closes, which also covers our death by SIGKILL.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const LOG_TAIL_LINES = 64;
const LOG_TAIL_BYTES = 16 * 1024;
const START_ATTEMPTS = 3;
const STOP_GRACE_MS = 10_000;
const POLL_MS = 25;
/** NATS's own defaults (client, route, monitor): never auto-chosen, a shared server may own them. */
const RESERVED_PORTS = new Set([4222, 6222, 8222]);
const SCRIPT = path.join(import.meta.dirname, "..", "..", "scripts", "nats-server.sh");

export class NatsServerError extends Error {
  override name = "NatsServerError";
  /** The server's last log lines at the time of failure ("" if it never wrote any). */
  readonly tail: string;
  constructor(message: string, tail: string, options?: ErrorOptions) {
    super(tail === "" ? message : `${message}\n--- nats-server log tail ---\n${tail}`, options);
    this.tail = tail;
  }
}

let binaryPromise: Promise<string> | undefined;

/** Path of a nats-server >= 2.11.2, as chosen by scripts/nats-server.sh; asked once per process. */
export function resolveNatsServerBinary(): Promise<string> {
  binaryPromise ??= new Promise<string>((resolve, reject) => {
    execFile("bash", [SCRIPT], { timeout: 10 * 60_000 }, (err, stdout, stderr) => {
      const bin = stdout.trim();
      if (err !== null || bin === "") {
        binaryPromise = undefined; // let a later call retry, e.g. after NATS_SERVER_BIN is fixed
        reject(
          new NatsServerError(`${SCRIPT} found no usable nats-server`, stderr.trim(), {
            cause: err,
          }),
        );
      } else resolve(bin);
    });
  });
  return binaryPromise;
}

export interface NatsServerOptions {
  /** Default: resolveNatsServerBinary(). */
  binary?: string;
  /** Listen host for client, cluster and monitoring ports. Default 127.0.0.1. */
  host?: string;
  /** Client port; 0 or omitted = a free port chosen here. */
  port?: number;
  /** JetStream store dir; the config file is written beside it as `<storeDir>.conf`. */
  storeDir: string;
  /** Default true. */
  jetstream?: boolean;
  /** Required with `cluster`: a JetStream peer's identity must survive restarts. */
  serverName?: string;
  cluster?: { name: string; port: number; routes: string[] };
  /** HTTP monitoring port; 0 = a free port. Default: 0 with `cluster`, otherwise none. */
  monitorPort?: number;
  /** Appended verbatim to the config (quote `$` subjects yourself: `$NAME` is variable syntax). */
  extraConfig?: string;
  /** Default 10000. */
  readyTimeoutMs?: number;
  /** Every log line, e.g. to forward the server's log in `relaylease dev`. */
  onLog?: (line: string) => void;
  /** Keep Node's event loop alive while the server runs. Default false: a forgotten server must
   * not hang a test run; the exit hook stops it instead. */
  ref?: boolean;
}

export interface NatsServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running nats-server child. Create with startNatsServer(). */
export class NatsServerProcess {
  readonly url: string;
  readonly port: number;
  /** `http://host:port` of the monitoring endpoint, if it has one. */
  readonly monitorUrl: string | undefined;
  readonly configFile: string;
  /** Resolves when the child has exited and its output is drained; never rejects. */
  readonly exited: Promise<NatsServerExit>;
  readonly #child: ChildProcess;
  readonly #watchdog: ChildProcess | undefined;
  readonly #tail: LogTail;
  #exit: NatsServerExit | undefined;
  #stopping: Promise<void> | undefined;

  constructor(child: ChildProcess, tail: LogTail, where: Ports & { configFile: string }) {
    this.#child = child;
    this.#tail = tail;
    this.port = where.port;
    this.url = `nats://${hostPort(connectHost(where.host), where.port)}`;
    this.monitorUrl =
      where.monitorPort === undefined
        ? undefined
        : `http://${hostPort(connectHost(where.host), where.monitorPort)}`;
    this.configFile = where.configFile;
    this.exited = childExit(child).then((exit) => {
      this.#exit = exit;
      live.delete(child);
      this.#watchdog?.kill("SIGKILL");
      return exit;
    });
    this.#watchdog = startWatchdog(child, "relaylease-nats-watchdog");
    if (child.pid !== undefined) live.add(child);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Undefined while running. */
  get exit(): NatsServerExit | undefined {
    return this.#exit;
  }

  stderrTail(): string {
    return this.#tail.text();
  }

  /** SIGTERM, then SIGKILL after STOP_GRACE_MS; safe to call repeatedly and concurrently. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    // Disarm the watchdog first, or it would take our closing its pipe as our death.
    this.#watchdog?.kill("SIGKILL");
    if (this.#exit !== undefined) return;
    this.#child.kill("SIGTERM");
    // Cancel the grace timer once the child is gone, or it holds the event loop for its full term.
    const ac = new AbortController();
    const grace = sleep(STOP_GRACE_MS, false, { signal: ac.signal }).catch(() => true);
    const graceful = await Promise.race([this.exited.then(() => true), grace]);
    ac.abort();
    if (!graceful) this.#child.kill("SIGKILL");
    await this.exited;
  }
}

interface Ports {
  host: string;
  port: number;
  monitorPort: number | undefined;
}

/** Starts nats-server and waits until it is usable; see the module header. */
export async function startNatsServer(opts: NatsServerOptions): Promise<NatsServerProcess> {
  if (opts.cluster !== undefined && opts.serverName === undefined) {
    throw new Error(
      "startNatsServer: serverName is required with cluster (JetStream peer identity)",
    );
  }
  const binary = opts.binary ?? (await resolveNatsServerBinary());
  const host = opts.host ?? "127.0.0.1";
  const autoPort = (opts.port ?? 0) === 0;
  const wantMonitor = opts.monitorPort ?? (opts.cluster !== undefined ? 0 : undefined);
  const autoMonitor = wantMonitor === 0;
  for (let attempt = 1; ; attempt++) {
    const ports: Ports = {
      host,
      port: autoPort ? await freePort(host) : (opts.port ?? 0),
      monitorPort: autoMonitor ? await freePort(host) : wantMonitor,
    };
    try {
      return await startOnce(binary, opts, ports);
    } catch (err) {
      // Between choosing a free port and the server binding it, someone else may take it.
      const lostRace = err instanceof NatsServerError && /address already in use/.test(err.tail);
      if (!lostRace || !(autoPort || autoMonitor) || attempt >= START_ATTEMPTS) throw err;
    }
  }
}

async function startOnce(
  binary: string,
  opts: NatsServerOptions,
  ports: Ports,
): Promise<NatsServerProcess> {
  const storeDir = path.resolve(opts.storeDir);
  const configFile = `${storeDir}.conf`;
  await mkdir(path.dirname(storeDir), { recursive: true });
  await writeFile(configFile, renderConfig(opts, ports, storeDir), { mode: 0o600 });
  const tail = new LogTail(opts.onLog);
  const child = spawn(binary, ["-c", configFile], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding("utf8").on("data", (s: string) => {
      tail.push(s);
    });
  }
  if (opts.ref !== true) unrefChild(child);
  const server = new NatsServerProcess(child, tail, { ...ports, configFile });
  const jetstream = opts.jetstream ?? true;
  const timeoutMs = opts.readyTimeoutMs ?? 10_000;
  try {
    await waitReady(server, tail, ports, jetstream, timeoutMs);
    return server;
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** nats-server config. Strings are JSON-quoted: the parser reads `$X` in bare values as a variable. */
function renderConfig(opts: NatsServerOptions, ports: Ports, storeDir: string): string {
  const q = (s: string) => JSON.stringify(s);
  const lines: string[] = [];
  if (opts.serverName !== undefined) lines.push(`server_name: ${q(opts.serverName)}`);
  // Always explicit: an omitted port means 4222, which may belong to someone else.
  lines.push(`listen: ${q(hostPort(ports.host, ports.port))}`);
  if (ports.monitorPort !== undefined)
    lines.push(`http: ${q(hostPort(ports.host, ports.monitorPort))}`);
  if (opts.jetstream ?? true) lines.push(`jetstream { store_dir: ${q(storeDir)} }`);
  const c = opts.cluster;
  if (c !== undefined) {
    lines.push(
      "cluster {",
      `  name: ${q(c.name)}`,
      `  listen: ${q(hostPort(ports.host, c.port))}`,
      `  routes: [${c.routes.map(q).join(", ")}]`,
      "}",
    );
  }
  if (opts.extraConfig !== undefined) lines.push(opts.extraConfig);
  return lines.join("\n") + "\n";
}

async function waitReady(
  server: NatsServerProcess,
  tail: LogTail,
  ports: Ports,
  jetstream: boolean,
  timeoutMs: number,
): Promise<void> {
  const ac = new AbortController();
  let stage = 'the log line "Server is ready"';
  const probe = async (): Promise<void> => {
    await until(() => tail.sawReady, ac.signal);
    stage = `a TCP connection to ${server.url}`;
    await until(() => canConnect(connectHost(ports.host), ports.port), ac.signal);
    if (jetstream && server.monitorUrl !== undefined) {
      const healthz = `${server.monitorUrl}/healthz?js-enabled-only=true`;
      stage = `${healthz} to answer 200`;
      await until(() => isOk(healthz, ac.signal), ac.signal);
    }
  };
  const exited = server.exited.then(({ code, signal }) => {
    throw new NatsServerError(
      `nats-server exited before becoming ready (code ${String(code)}, signal ${String(signal)})`,
      tail.text(),
    );
  });
  const timedOut = sleep(timeoutMs, undefined, { signal: ac.signal }).then(() => {
    throw new NatsServerError(
      `nats-server did not become ready within ${timeoutMs} ms (waiting for ${stage})`,
      tail.text(),
    );
  });
  const probing = probe();
  try {
    await Promise.race([probing, exited, timedOut]);
  } finally {
    ac.abort();
    // The losers settle later (an AbortError, or the server's eventual exit): no longer news.
    for (const p of [probing, exited, timedOut]) p.catch(() => undefined);
  }
}

/** Polls check() until it is true; rejects with AbortError when signal aborts. */
async function until(check: () => boolean | Promise<boolean>, signal: AbortSignal): Promise<void> {
  while (!(await check())) await sleep(POLL_MS, undefined, { signal });
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      resolve(false);
    });
  });
}

async function isOk(url: string, signal: AbortSignal): Promise<boolean> {
  try {
    const res = await fetch(url, { signal });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/** A free TCP port on host, by binding port 0. Racy by nature; startNatsServer retries. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.once("error", reject);
      srv.listen({ host, port: 0, exclusive: true }, () => {
        const addr = srv.address();
        srv.close(() => {
          if (addr !== null && typeof addr === "object") resolve(addr.port);
          else reject(new Error(`freePort: no port from ${String(addr)}`));
        });
      });
    });
    if (!RESERVED_PORTS.has(port)) return port;
  }
}

/** Where a client connects when the server listens on a wildcard address. */
function connectHost(host: string): string {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::") return "::1";
  return host;
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Bounded tail of the server's output, split into lines; also notices the readiness line. */
class LogTail {
  sawReady = false;
  readonly #lines: string[] = [];
  #bytes = 0;
  #partial = "";
  readonly #onLog: ((line: string) => void) | undefined;

  constructor(onLog?: (line: string) => void) {
    this.#onLog = onLog;
  }

  push(chunk: string): void {
    const parts = (this.#partial + chunk).split("\n");
    // A line longer than the whole budget is cut, not buffered without bound.
    this.#partial = (parts.pop() ?? "").slice(-LOG_TAIL_BYTES);
    for (const line of parts) this.#add(line);
  }

  text(): string {
    return [...this.#lines, ...(this.#partial === "" ? [] : [this.#partial])].join("\n");
  }

  #add(line: string): void {
    if (line.includes("Server is ready")) this.sawReady = true;
    try {
      this.#onLog?.(line);
    } catch {
      // A log sink's failure must not take the server's supervision down with it.
    }
    this.#lines.push(line);
    this.#bytes += line.length + 1;
    while (this.#lines.length > LOG_TAIL_LINES || this.#bytes > LOG_TAIL_BYTES) {
      this.#bytes -= (this.#lines.shift()?.length ?? 0) + 1;
    }
  }
}

function childExit(child: ChildProcess): Promise<NatsServerExit> {
  return new Promise((resolve) => {
    // 'close' (not 'exit') so the log tail holds everything the server wrote before dying.
    child.once("close", (code: number | null, signal: NodeJS.Signals | null) => {
      resolve({ code, signal });
    });
    // A spawn failure (ENOENT, EACCES) may never produce 'close'.
    child.once("error", () => {
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
  });
}

function unrefChild(child: ChildProcess): void {
  child.unref();
  for (const s of [child.stdout, child.stderr]) if (s instanceof net.Socket) s.unref();
}

// Waits for EOF on stdin (we exited or died), then TERM, up to 5 s grace, then KILL.
const WATCHDOG_SH = [
  "read -r _ignored",
  'kill -TERM "$1" 2>/dev/null || exit 0',
  "i=0",
  'while [ "$i" -lt 50 ] && kill -0 "$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done',
  'kill -KILL "$1" 2>/dev/null',
].join("\n");

/**
 * Stops `child` should this process die without cleanup (a SIGKILLed run): a detached shell
 * waits for its stdin, our end of a pipe, to close. `name` is the shell's process name.
 */
export function startWatchdog(child: ChildProcess, name: string): ChildProcess | undefined {
  if (child.pid === undefined) return undefined;
  const dog = spawn("/bin/sh", ["-c", WATCHDOG_SH, name, String(child.pid)], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  dog.on("error", () => undefined); // no /bin/sh: the exit hook still covers a normal exit
  dog.stdin.on("error", () => undefined);
  dog.unref();
  if (dog.stdin instanceof net.Socket) dog.stdin.unref();
  return dog;
}

/** Children not yet exited, for the 'exit' hook, which must be synchronous. */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGTERM");
});
