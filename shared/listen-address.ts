/**
 * Listen addresses of every relaylease server (DESIGN.md: "A listen address is `host:port`, or a
 * path for a unix socket where the protocol allows one"), and the unix socket chores around them.
 *
 * Accepted forms: `127.0.0.1:10040`, `localhost:10040`, `[::1]:10040` (IPv6 in brackets, as in
 * URLs), and any string containing "/" as a unix socket path (`/run/relaylease/policy.sock`,
 * `./policy.sock`). Port 0 asks the kernel for a free port (tests).
 */
import { lstat, unlink } from "node:fs/promises";
import net from "node:net";
import type { AddressInfo } from "node:net";

export type ListenAddress = { host: string; port: number } | { path: string };

/** sun_path is 108 bytes on Linux, NUL included (unix(7)); a longer path cannot be bound. */
const MAX_UNIX_PATH_BYTES = 107;

const FORMS = 'expected "host:port", "[ipv6]:port" or a unix socket path containing "/"';

/** @throws Error naming the bad value and the accepted forms. */
export function parseListenAddress(s: string): ListenAddress {
  const bad = (why: string) => new Error(`invalid listen address ${JSON.stringify(s)}: ${why}`);
  if (s.includes("/")) {
    if (Buffer.byteLength(s) > MAX_UNIX_PATH_BYTES) {
      throw bad(`a unix socket path is at most ${MAX_UNIX_PATH_BYTES} bytes`);
    }
    if (/^(unix|local|inet):/.test(s)) throw bad(`drop the "${s.split(":")[0]}:" prefix`);
    return { path: s };
  }
  const m = /^(?:\[([^\]]+)\]|([-.\w]+)):([0-9]{1,5})$/.exec(s);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (host === undefined || !(port <= 65535)) throw bad(FORMS);
  if (m?.[1] !== undefined && !net.isIPv6(host)) throw bad(`"${host}" is not IPv6`);
  return { host, port };
}

/** "host:port" ("[v6]:port") or the socket path of a listening server, for logs and clients. */
export function formatListenAddress(address: AddressInfo | string | null): string {
  if (address === null) throw new Error("server is not listening");
  if (typeof address === "string") return address;
  return address.family === "IPv6"
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}

/**
 * Makes `path` free to bind: removes a socket file left by a process that died without closing
 * it. Refuses a path that is not a socket (never delete someone's file) and a socket some live
 * process still holds (never steal another instance's socket, stream or datagram).
 */
export async function removeStaleSocket(path: string): Promise<void> {
  const stats = await lstat(path).catch((err: unknown) => {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  });
  if (stats === undefined) return;
  if (!stats.isSocket())
    throw new Error(`${path} exists and is not a unix socket; not removing it`);
  if (await isLive(path)) throw new Error(`${path} is in use by another process`);
  await unlink(path);
}

/**
 * Whether a process has a socket bound to the file, by a stream connect: Linux answers
 * ECONNREFUSED when none is, and EPROTOTYPE when a datagram socket is (the syslog source's), so
 * anything but ECONNREFUSED counts as live.
 */
function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", (err) => {
      resolve(!isErrno(err, "ECONNREFUSED"));
    });
  });
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}
