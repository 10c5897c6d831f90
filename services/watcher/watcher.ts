// The watcher role: login sources in, login events out.
import { hostname } from "node:os";
import { jetstream } from "@nats-io/jetstream";
import type { ConfigOf } from "../../shared/config.ts";
import { connectForRole } from "../../shared/nats.ts";
import type { RoleContext } from "../../shared/process.ts";
import { startHttpSource } from "./http-source.ts";
import { LoginPublisher } from "./publisher.ts";
import type { watcherSettings } from "./settings.ts";

export type WatcherConfig = ConfigOf<typeof watcherSettings>;

export interface Watcher {
  readonly httpAddress: string;
}

export async function startWatcher(config: WatcherConfig, ctx: RoleContext): Promise<Watcher> {
  const watcherId = config.watcherId ?? defaultWatcherId();
  const { nc } = await connectForRole(config, `watcher-${watcherId}`, ctx);
  const publisher = new LoginPublisher(jetstream(nc), watcherId);
  const http = await startHttpSource(config.httpListen, publisher, ctx.log);
  ctx.add({ name: "http-source", stop: () => http.close() });
  return { httpAddress: http.address };
}

/** The pod (host) name, made into a subject token. */
export function defaultWatcherId(): string {
  return (
    hostname()
      .replace(/[^-\w]/g, "_")
      .slice(0, 64) || "watcher"
  );
}
