// Listening on a RELAYLEASE_*_LISTEN address: host:port, or a unix socket path (a stale socket
// file left by a crash is removed first, but never a file that is not a socket).
import { lstatSync, unlinkSync } from "node:fs";
import type { Server } from "node:net";
import type { AddressInfo } from "node:net";
import { parseListenAddress } from "./listen-address.ts";

export interface ListeningServer {
  /** host:port actually bound (the port resolved when 0 was asked for), or the socket path. */
  readonly address: string;
  close(): Promise<void>;
}

export async function listen(server: Server, address: string): Promise<ListeningServer> {
  const where = parseListenAddress(address);
  if ("path" in where) removeStaleSocket(where.path);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if ("path" in where) server.listen(where.path, resolve);
    else server.listen(where.port, where.host, resolve);
  });
  const bound = server.address();
  const text = typeof bound === "string" || bound === null ? address : formatAddressInfo(bound);
  return {
    address: text,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        if ("closeAllConnections" in server && typeof server.closeAllConnections === "function") {
          (server.closeAllConnections as () => void)();
        }
      }),
  };
}

function formatAddressInfo(a: AddressInfo): string {
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Absent: nothing to remove.
  }
}
