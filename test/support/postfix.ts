/**
 * A throwaway Postfix on loopback for end-to-end tests (shared/reference/mta-protocols.md §10.1):
 * its own config, queue and data directories in a temp dir, smtpd on 127.0.0.1:<free port>, and
 * the system's Postfix service and /etc/postfix/main.cf left alone. Needs root and Debian's postfix
 * package (scripts/install-postfix.sh); `postfixUnavailable()` says why a test must skip.
 *
 * What the instance is: myhostname and mydestination `mx.test.invalid` (plus `localhost`), so
 * `x@mx.test.invalid` is local and `x@remote.example` would be relayed; `mynetworks` 127.0.0.1/32
 * (Postfix's own address; use 127.0.0.2 and up as outside clients). The real transports `smtp` and
 * `local` are configured, so a milter sees real `{rcpt_mailer}` names, but `defer_transports`
 * holds them: nothing is ever delivered. Its log goes to `<dir>/maillog` (maillog_file), because
 * Postfix reports start-up errors only there; every failure message carries its tail.
 *
 * Use: `const pf = await createPostfix(); await pf.start({ smtpd_relay_restrictions: ... })`,
 * `await pf.reconfigure({...})` (postconf -e, then postfix reload, waiting until no smtpd of the
 * old configuration is left), and always `await pf.cleanup()` (or `await using`). A test process
 * that exits without cleanup still sends the master SIGTERM from an 'exit' hook.
 */
import { execFile } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import {
  access,
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { LOG_TAIL_LINES, logTail, logTailSync } from "./log-tail.ts";
import { freePort } from "../../services/dev/nats-server.ts";
import { SmtpClient } from "./smtp-client.ts";

const POSTFIX = "/usr/sbin/postfix";
const POSTCONF = "/usr/sbin/postconf";
const DAEMON_DIRECTORY = "/usr/lib/postfix/sbin";
const COMMAND_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const RELOAD_TIMEOUT_MS = 10_000;
/** Starts that lose the race for the chosen port (freePort cannot reserve it) are retried. */
const START_ATTEMPTS = 3;

export const POSTFIX_HOST = "127.0.0.1";
export const LOCAL_DOMAIN = "mx.test.invalid";
export const REMOTE_DOMAIN = "remote.example";

/** main.cf settings a test passes: restrictions, milters, policy and socketmap endpoints. */
export type PostfixSettings = Readonly<Record<string, string>>;

export class PostfixError extends Error {
  override name = "PostfixError";
}

/** Why a throwaway Postfix cannot run here, or undefined when it can. */
export async function postfixUnavailable(): Promise<string | undefined> {
  if (process.platform !== "linux") return "the throwaway Postfix kit runs on Linux only";
  if (userInfo().uid !== 0) return "a throwaway Postfix must be started as root";
  for (const file of [POSTFIX, POSTCONF, path.join(DAEMON_DIRECTORY, "master")]) {
    try {
      await access(file, fsConstants.X_OK);
    } catch {
      return `Postfix is not installed (no ${file}); run scripts/install-postfix.sh`;
    }
  }
  return undefined;
}

/** The installed Postfix's version, e.g. "3.7.11". */
export async function postfixVersion(): Promise<string> {
  return (await run(POSTCONF, ["-d", "-h", "mail_version"])).trim();
}

/** A fresh instance directory and port; nothing runs until start(). */
export async function createPostfix(
  options: { mynetworks?: string } = {},
): Promise<ThrowawayPostfix> {
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-postfix-"));
  try {
    return new ThrowawayPostfix(dir, await freePort(POSTFIX_HOST), options.mynetworks);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

const running = new Set<ThrowawayPostfix>();
process.once("exit", () => {
  for (const pf of running) pf.killNow();
});

export class ThrowawayPostfix {
  readonly dir: string;
  readonly host = POSTFIX_HOST;
  readonly #mynetworks: string;
  #port: number;
  /** The settings last given to start() or reconfigure(). */
  #settings: PostfixSettings = {};
  #masterPid: number | undefined;

  constructor(dir: string, port: number, mynetworks = "127.0.0.1/32") {
    this.dir = dir;
    this.#port = port;
    this.#mynetworks = mynetworks;
  }

  /** smtpd's port on 127.0.0.1; fixed once start() has resolved. */
  get port(): number {
    return this.#port;
  }
  get configDir(): string {
    return path.join(this.dir, "conf");
  }
  get maillog(): string {
    return path.join(this.dir, "maillog");
  }
  /** The settings in effect beyond the base configuration. */
  get settings(): PostfixSettings {
    return this.#settings;
  }

  /** Writes main.cf and master.cf, starts the master, and waits for the SMTP greeting. */
  async start(settings: PostfixSettings = {}): Promise<void> {
    if (this.#masterPid !== undefined) throw new PostfixError("this Postfix is already running");
    const data = path.join(this.dir, "data");
    // mkdtemp made it 0700; Postfix's unprivileged daemons must reach the queue and data dirs.
    await chmod(this.dir, 0o755);
    await mkdir(this.configDir, { recursive: true });
    await mkdir(path.join(this.dir, "queue"), { recursive: true });
    await mkdir(data, { recursive: true });
    const ids = await postfixIds();
    await chown(data, ids.uid, ids.gid);
    await writeFile(path.join(this.configDir, "main.cf"), this.#mainCf(settings));
    this.#settings = { ...settings };
    for (let attempt = 1; ; attempt++) {
      await writeFile(path.join(this.configDir, "master.cf"), this.#masterCf());
      const logged = (await this.maillogTail(Infinity)).split("\n").length;
      try {
        await this.#postfix(["start"]);
        break;
      } catch (err) {
        const since = (await this.maillogTail(Infinity)).split("\n").slice(logged).join("\n");
        const lostRace = /Address already in use/.test(since);
        if (!lostRace || attempt >= START_ATTEMPTS) throw await this.#withCheck(err);
        this.#port = await freePort(POSTFIX_HOST);
      }
    }
    this.#masterPid = await this.#readMasterPid();
    running.add(this);
    await this.#waitForGreeting();
  }

  /**
   * Replaces the test settings: keys given are set (postconf -e), keys of the previous settings
   * not given are removed (postconf -X), then postfix reload. Resolves once every smtpd of the old
   * configuration has exited, so the next connection is served with the new one.
   */
  async reconfigure(settings: PostfixSettings): Promise<void> {
    const removed = Object.keys(this.#settings).filter((k) => !(k in settings));
    if (removed.length > 0) await this.#postconf(["-X", ...removed]);
    const set = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
    if (set.length > 0) await this.#postconf(["-e", ...set]);
    this.#settings = { ...settings };
    const before = await this.#smtpdPids();
    await this.#postfix(["reload"]);
    const deadline = Date.now() + RELOAD_TIMEOUT_MS;
    for (;;) {
      const now = await this.#smtpdPids();
      if (!before.some((pid) => now.includes(pid))) return;
      if (Date.now() > deadline) {
        throw this.#error(`smtpd processes ${before.join(", ")} outlived postfix reload`);
      }
      await sleep(20);
    }
  }

  /** postfix stop; after STOP_TIMEOUT_MS the master is killed. */
  async stop(): Promise<void> {
    const pid = this.#masterPid;
    if (pid === undefined) return;
    try {
      await this.#postfix(["stop"]);
    } catch {
      // Still make sure the master goes; its log is in the temp dir for whoever looks.
    }
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (alive(pid) && Date.now() < deadline) await sleep(25);
    if (alive(pid)) process.kill(pid, "SIGKILL");
    this.#masterPid = undefined;
    running.delete(this);
  }

  /** stop() and remove the temp dir. */
  async cleanup(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }

  /** Last lines of the instance's maillog ("" before it has one). */
  maillogTail(lines = LOG_TAIL_LINES): Promise<string> {
    return logTail(this.maillog, lines);
  }

  /** For the process 'exit' hook only: synchronous, best effort. */
  killNow(): void {
    if (this.#masterPid !== undefined && alive(this.#masterPid)) {
      process.kill(this.#masterPid, "SIGTERM");
    }
  }

  #mainCf(settings: PostfixSettings): string {
    const d = this.dir;
    const base: Record<string, string> = {
      compatibility_level: "3.6",
      queue_directory: path.join(d, "queue"),
      data_directory: path.join(d, "data"),
      command_directory: "/usr/sbin",
      daemon_directory: DAEMON_DIRECTORY,
      meta_directory: "/etc/postfix",
      shlib_directory: "/usr/lib/postfix",
      mail_owner: "postfix",
      setgid_group: "postdrop",
      // Without a matching prefix, postlogd refuses maillog_file and `postfix start` exits 1
      // without a word.
      maillog_file: this.maillog,
      maillog_file_prefixes: d,
      myhostname: LOCAL_DOMAIN,
      mydomain: LOCAL_DOMAIN,
      myorigin: LOCAL_DOMAIN,
      mydestination: `${LOCAL_DOMAIN}, localhost`,
      relay_domains: "",
      inet_interfaces: POSTFIX_HOST,
      inet_protocols: "ipv4",
      mynetworks: this.#mynetworks,
      alias_maps: "",
      alias_database: "",
      local_recipient_maps: "",
      // Real transport names, so {rcpt_mailer} is `smtp` for remote and `local` for local
      // recipients, as on a real MX; deferred, so nothing leaves or lands anywhere.
      default_transport: "smtp",
      local_transport: "local",
      defer_transports: "smtp, local",
      smtpd_peername_lookup: "no",
      smtpd_banner: "$myhostname ESMTP relaylease-e2e",
      biff: "no",
      smtputf8_enable: "no",
      ...settings,
    };
    return Object.entries(base)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join("");
  }

  /** Debian's master.cf.proto for the services used, smtpd on our port, nothing chrooted. */
  #masterCf(): string {
    // name, type, private, unpriv, chroot, wakeup, maxproc, command
    const services: readonly string[] = [
      `${this.host}:${this.port} inet n - n - - smtpd`,
      "pickup unix n - n 60 1 pickup",
      "cleanup unix n - n - 0 cleanup",
      "qmgr unix n - n 300 1 qmgr",
      "rewrite unix - - n - - trivial-rewrite",
      "bounce unix - - n - 0 bounce",
      "defer unix - - n - 0 bounce",
      "trace unix - - n - 0 bounce",
      "verify unix - - n - 1 verify",
      "flush unix n - n 1000? 0 flush",
      "proxymap unix - - n - - proxymap",
      "smtp unix - - n - - smtp",
      "showq unix n - n - - showq",
      "error unix - - n - - error",
      "retry unix - - n - - error",
      "discard unix - - n - - discard",
      "local unix - n n - - local",
      "anvil unix - - n - 1 anvil",
      "scache unix - - n - 1 scache",
      "postlog unix-dgram n - n - 1 postlogd",
    ];
    return services.map((line) => `${line}\n`).join("");
  }

  async #postfix(args: string[]): Promise<void> {
    try {
      await run(POSTFIX, ["-c", this.configDir, ...args]);
    } catch (err) {
      throw this.#error(`postfix ${args.join(" ")} failed: ${(err as Error).message}`, err);
    }
  }

  async #postconf(args: string[]): Promise<void> {
    try {
      await run(POSTCONF, ["-c", this.configDir, ...args]);
    } catch (err) {
      throw this.#error(`postconf ${args.join(" ")} failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * postfix(1) reports a bad main.cf on stderr only when that is a terminal (else to syslog, and
   * maillog_file is not in use yet), so a failed start says nothing: rerun `postfix check` on a
   * pseudo-terminal (script(1), util-linux) for its fatal line.
   */
  async #withCheck(err: unknown): Promise<unknown> {
    if (!(err instanceof PostfixError)) return err;
    const check = await output("script", [
      "-qec",
      `${POSTFIX} -c '${this.configDir}' check`,
      "/dev/null",
    ]);
    return new PostfixError(`${err.message}\n--- postfix check ---\n${check.trim()}`, {
      cause: err.cause,
    });
  }

  async #readMasterPid(): Promise<number> {
    const file = path.join(this.dir, "queue", "pid", "master.pid");
    const pid = Number((await readFile(file, "utf8")).trim());
    if (!Number.isInteger(pid) || pid <= 0) throw this.#error(`no master pid in ${file}`);
    return pid;
  }

  /** The master's smtpd children: they exit on reload once they are idle. */
  async #smtpdPids(): Promise<number[]> {
    const master = this.#masterPid;
    if (master === undefined) return [];
    const out: number[] = [];
    for (const entry of await readdir("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
      // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      if (comm === "smtpd" && ppid === master) out.push(Number(entry));
    }
    return out;
  }

  async #waitForGreeting(): Promise<void> {
    const { client, greeting } = await SmtpClient.connect({ host: this.host, port: this.port });
    await client.quit();
    if (greeting.code !== 220) throw this.#error(`smtpd greeted with ${greeting.raw}`);
  }

  #error(message: string, cause?: unknown): PostfixError {
    // Synchronous tail: error paths must not need another await to be useful.
    return new PostfixError(
      `${message}\n--- ${this.maillog} (tail) ---\n${logTailSync(this.maillog, "(no maillog)")}`,
      {
        cause,
      },
    );
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function postfixIds(): Promise<{ uid: number; gid: number }> {
  const id = (flag: string) => run("id", [flag, "postfix"]).then((s) => Number(s.trim()));
  return { uid: await id("-u"), gid: await id("-g") };
}

/** stdout and stderr of a command, whatever its exit status. */
function output(file: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      resolve(`${stdout}${stderr}` || (err?.message ?? ""));
    });
  });
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err === null) resolve(stdout);
      else reject(new Error(`${err.message.trim()}${stderr === "" ? "" : `\n${stderr.trim()}`}`));
    });
  });
}
