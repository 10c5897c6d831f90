/**
 * Throwaway Sendmail daemons for the end-to-end tests (shared/reference/mta-protocols.md §3, §5.3,
 * §10.2): a .cf built with m4 from a generated .mc, and `sendmail -bD` (the daemon, in the
 * foreground) listening on 127.0.0.1:<free port>, so a test client connecting from any 127.0.0.x
 * is seen by Sendmail, its `{client_addr}` and its milter as exactly that address.
 *
 * Why the daemon and not `-bs`: `-bs` speaks SMTP on stdin, and a pipe has no peer address
 * (`{client_addr}` empty, milter CONNECT family `U`), so no lease could ever match. The daemon is
 * also how Sendmail runs in production: one forked child per SMTP session, each with its own
 * socketmap and milter connections.
 *
 * What it needs: root (the daemon binds, forks children that would setuid for delivery, and the
 * namespaces below), m4, and the binary and .cf sources from scripts/install-sendmail.sh. No
 * smmta/smmsp users and no /etc/mail: every path the .cf names (queue, pid file, hosts, service
 * switch, aliases) is in a temp dir, and no mail is delivered (tests stop after RCPT).
 *
 * The host name: every sendmail invocation on a host whose name is not fully qualified first
 * sleeps 60 s ("My unqualified host name (vm) unknown; sleeping for retry"). Each daemon runs in
 * private UTS and mount namespaces (`unshare -m -u`) with the host name mx.test.invalid and a
 * hosts file bind-mounted over /etc/hosts; the host's own name and /etc/hosts are untouched.
 *
 * Limits: a daemon that does not greet within READY_TIMEOUT_MS fails the start with its output
 * tail; stop() waits STOP_GRACE_MS after SIGTERM, then SIGKILLs. A test process that exits
 * without stop() still SIGTERMs its daemons (process 'exit' hook); one killed by SIGKILL leaves
 * them running.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { access, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../../services/dev/nats-server.ts";
import { SmtpClient } from "./smtp-client.ts";

/** $j, the name the daemon greets with; local recipients are root@HOSTNAME. */
export const SENDMAIL_HOSTNAME = "mx.test.invalid";

const SCRIPT = path.join(import.meta.dirname, "..", "..", "scripts", "install-sendmail.sh");
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_TAIL_BYTES = 8 * 1024;
/** Paths inside an unpacked (or installed) sendmail-bin and sendmail-cf. */
const BINARY_SUFFIX = "/usr/libexec/sendmail/sendmail";
const CF_DIR_SUFFIX = "/usr/share/sendmail/cf";

export interface SendmailInstall {
  readonly binary: string;
  /** Sendmail's cf/ tree: cf/m4/cf.m4, ostype/, feature/, mailer/ (sendmail-cf). */
  readonly cfDir: string;
}

export type SendmailAvailability =
  | { readonly ok: true; readonly install: SendmailInstall }
  | { readonly ok: false; readonly reason: string };

/**
 * The sendmail binary and .cf sources (from scripts/install-sendmail.sh, which fetches them if
 * missing), or why the end-to-end tests cannot run here.
 */
export async function findSendmail(): Promise<SendmailAvailability> {
  if (process.getuid?.() !== 0) {
    return { ok: false, reason: "needs root (Sendmail daemon, unshare -m -u)" };
  }
  let binary: string;
  try {
    binary = (await run("bash", [SCRIPT], 5 * 60_000)).trim();
  } catch (err) {
    return { ok: false, reason: `${SCRIPT} found no sendmail: ${(err as Error).message}` };
  }
  const prefix = binary.endsWith(BINARY_SUFFIX) ? binary.slice(0, -BINARY_SUFFIX.length) : "";
  const cfDir = process.env.SENDMAIL_CF_DIR ?? prefix + CF_DIR_SUFFIX;
  try {
    await access(path.join(cfDir, "m4", "cf.m4"));
  } catch {
    return { ok: false, reason: `no Sendmail .cf sources at ${cfDir} (set SENDMAIL_CF_DIR)` };
  }
  try {
    await run("unshare", ["-m", "-u", "true"], 10_000);
  } catch (err) {
    return {
      ok: false,
      reason: `unshare -m -u fails (${(err as Error).message.trim()}): no private host name for Sendmail`,
    };
  }
  return { ok: true, install: { binary, cfDir } };
}

/** What goes into the .cf beyond the fixed test setup. Each part is optional. */
export interface SendmailOptions {
  /**
   * relaylease's socketmap, "host:port": declares `Kdrac socket inet:PORT@HOST` and adds the
   * classic DRAC Local_check_rcpt rule (drac-rpc.md §5.1, mta-protocols.md §5.3).
   */
  readonly dracSocketmap?: string;
  /**
   * Flags for the K line before the address. Only for controls: `-T<TMPF>` turns a temporary
   * failure into a relay grant under the classic rule.
   */
  readonly dracMapFlags?: string;
  /**
   * Adds proto.m4's guard for access maps before the hit rule, so that with `-T<TMPF>` a
   * temporary failure answers 451 4.3.0 instead of relaying.
   */
  readonly dracTempfailGuard?: boolean;
  /** relaylease's milter, "host:port": `INPUT_MAIL_FILTER` with F=T (tempfail if unreachable). */
  readonly milter?: string;
  /**
   * FEATURE(promiscuous_relay): Sendmail's own check_rcpt relays for anyone, so the milter alone
   * decides (the counterpart of Postfix's `check_client_access static:OK` milter gate).
   */
  readonly promiscuousRelay?: boolean;
}

/** `inet:PORT@HOST`, Sendmail's form of a TCP socket, from relaylease's "host:port". */
export function sendmailSocket(hostPort: string): string {
  const colon = hostPort.lastIndexOf(":");
  const host = hostPort.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = hostPort.slice(colon + 1);
  if (colon <= 0 || !/^\d+$/.test(port)) throw new Error(`not host:port: ${hostPort}`);
  return `${host.includes(":") ? "inet6" : "inet"}:${port}@${host}`;
}

/** m4 quoting: `text'. */
function q(text: string): string {
  return `\`${text}'`;
}

/** The .mc for a daemon on 127.0.0.1:`port` whose files all live in `dir`. */
export function sendmailMc(options: SendmailOptions & { port: number; dir: string }): string {
  const d = (name: string, value: string) => `define(${q(name)}, ${q(value)})dnl`;
  const lines = [
    "divert(-1)",
    "# relaylease end-to-end test MTA, generated by test/support/sendmail.ts",
    "divert(0)dnl",
    `OSTYPE(${q("linux")})dnl`,
    d("confDOMAIN_NAME", SENDMAIL_HOSTNAME),
    d("QUEUE_DIR", path.join(options.dir, "queue")),
    d("confPID_FILE", path.join(options.dir, "sendmail.pid")),
    d("STATUS_FILE", path.join(options.dir, "statistics")),
    d("ALIAS_FILE", ""),
    // Host lookups from the hosts file only: no DNS, so no resolver timeouts on a machine
    // without one. The sender's domain need not resolve either.
    d("confSERVICE_SWITCH_FILE", path.join(options.dir, "service.switch")),
    d("confHOSTS_FILE", path.join(options.dir, "hosts")),
    d("confDONT_PROBE_INTERFACES", "True"),
    d("confTO_IDENT", "0s"),
    // A busy CI machine must not make the daemon refuse or queue connections.
    d("confREFUSE_LA", "999"),
    d("confQUEUE_LA", "999"),
    `FEATURE(${q("nocanonify")})dnl`,
    `FEATURE(${q("accept_unresolvable_domains")})dnl`,
    `FEATURE(${q("no_default_msa")})dnl`,
    ...(options.promiscuousRelay === true ? [`FEATURE(${q("promiscuous_relay")})dnl`] : []),
    `DAEMON_OPTIONS(${q(`Family=inet, Port=${options.port}, Addr=127.0.0.1, Name=MTA`)})dnl`,
    ...(options.milter === undefined
      ? []
      : [
          `INPUT_MAIL_FILTER(${q("relaylease")}, ${q(
            `S=${sendmailSocket(options.milter)}, F=T, T=C:5s;S:5s;R:5s;E:10s`,
          )})dnl`,
        ]),
    `MAILER(${q("local")})dnl`,
    `MAILER(${q("smtp")})dnl`,
  ];
  if (options.dracSocketmap !== undefined) {
    const flags = options.dracMapFlags === undefined ? "" : `${options.dracMapFlags} `;
    lines.push(
      "LOCAL_CONFIG",
      `Kdrac socket ${flags}${sendmailSocket(options.dracSocketmap)}`,
      "LOCAL_RULESETS",
      ...dracRules(options.dracTempfailGuard === true),
    );
  }
  return `${lines.join("\n")}\n`;
}

/**
 * The classic DRAC rule (DRAC's INSTALL; mta-protocols.md §5.3): the client address looked up in
 * `drac`, `?` when not found (continue with Sendmail's own relay checks), `$#OK` (relay) for any
 * other value. With `guard`, proto.m4's temporary-failure rule for access maps comes before the
 * grant.
 */
export function dracRules(guard = false): string[] {
  return [
    "SLocal_check_rcpt",
    "R$*\t$: $&{client_addr}",
    "R$+\t$: $(drac $1 $: ? $)",
    "R?\t$@ ?",
    ...(guard ? ['R$* <TMPF>\t$#error $@ 4.3.0 $: "451 Temporary lookup failure"'] : []),
    "R$+\t$@ $#OK",
  ];
}

export interface SendmailDaemon {
  readonly host: string;
  readonly port: number;
  /** The generated .mc and the .cf built from it, for failure messages and reports. */
  readonly mc: string;
  readonly cf: string;
  /** The daemon's stdout and stderr so far (the last few KiB). */
  outputTail(): string;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGTERM");
});

/** Builds the .cf, starts `sendmail -bD` and resolves once it greets with 220. */
export async function startSendmail(
  install: SendmailInstall,
  options: SendmailOptions = {},
): Promise<SendmailDaemon> {
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-sendmail-"));
  try {
    const port = await freePort();
    await mkdir(path.join(dir, "queue"), { mode: 0o700 });
    await writeFile(path.join(dir, "hosts"), `127.0.0.1\t${SENDMAIL_HOSTNAME} mx localhost\n`);
    await writeFile(path.join(dir, "service.switch"), "hosts\tfiles\naliases\tfiles\n");
    const mc = sendmailMc({ ...options, port, dir });
    await writeFile(path.join(dir, "test.mc"), mc);
    const cf = await run(
      "m4",
      [`-D_CF_DIR_=${install.cfDir}/`, path.join(install.cfDir, "m4", "cf.m4"), "test.mc"],
      30_000,
      dir,
    );
    const cfPath = path.join(dir, "test.cf");
    await writeFile(cfPath, cf);
    const daemon = await spawnDaemon(install.binary, cfPath, dir, port);
    return { ...daemon, mc, cf };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function spawnDaemon(binary: string, cfPath: string, dir: string, port: number) {
  const script = 'mount --bind "$1" /etc/hosts && hostname "$2" && exec "$3" -bD -C "$4"';
  const child = spawn(
    "unshare",
    [
      "-m",
      "-u",
      "sh",
      "-c",
      script,
      "sh",
      path.join(dir, "hosts"),
      SENDMAIL_HOSTNAME,
      binary,
      cfPath,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  live.add(child);
  let tail = "";
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString("latin1")).slice(-OUTPUT_TAIL_BYTES);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      live.delete(child);
      resolve();
    });
  });
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(killer);
      }
      await rm(dir, { recursive: true, force: true });
    })());
  try {
    await Promise.race([
      waitForGreeting(port),
      exited.then(() => {
        throw new Error(`sendmail exited with ${child.exitCode ?? child.signalCode} at start`);
      }),
    ]);
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n--- sendmail output ---\n${tail}`, { cause: err });
  }
  return {
    host: "127.0.0.1",
    port,
    outputTail: () => tail,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

async function waitForGreeting(port: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    try {
      const { client, greeting } = await SmtpClient.connect({ host: "127.0.0.1", port });
      await client.quit();
      if (greeting.code === 220) return;
      throw new Error(`sendmail greeted with ${greeting.raw}`);
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(
          `sendmail did not greet on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms`,
          {
            cause: err,
          },
        );
      }
      await sleep(50);
    }
  }
}

function run(file: string, args: string[], timeout: number, cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout, maxBuffer: 16 * 1024 * 1024, ...(cwd === undefined ? {} : { cwd }) },
      (err, stdout, stderr) => {
        if (err === null) resolve(stdout);
        else reject(new Error(`${file} ${args.join(" ")}: ${stderr.trim() || err.message}`));
      },
    );
  });
}
