// The watcher's settings: the single source of truth for its env vars, flags and docs.
import { processSettings, listenSetting, natsSettings } from "../../shared/settings.ts";
import type { Setting } from "../../shared/config.ts";
import { WATCHER_ID } from "../../shared/contract.ts";

export const watcherSettings = {
  ...natsSettings,
  ...processSettings,
  watcherId: {
    env: "RELAYLEASE_WATCHER_ID",
    doc: "This watcher's id: the last token of the subject it publishes on (default: the host name).",
    default: undefined,
    form: "letters, digits, '-' and '_' (at most 64)",
    parse: (raw: string): string | undefined => {
      if (!WATCHER_ID.test(raw)) throw new Error("not a single subject token");
      return raw;
    },
  } satisfies Setting<string | undefined>,
  httpListen: listenSetting(
    "RELAYLEASE_HTTP_LISTEN",
    "Where the HTTP login API (POST /v1/logins) listens.",
    "127.0.0.1:8391",
  ),
};
