// The milter role's settings: the single source of truth for its env vars, flags and docs.
import { listenSetting, natsSettings, processSettings } from "../../shared/settings.ts";

export const milterSettings = {
  ...natsSettings,
  ...processSettings,
  policyListen: listenSetting(
    "RELAYLEASE_POLICY_LISTEN",
    "Where the Postfix policy service listens (check_policy_service inet:host:port or unix:path).",
    "127.0.0.1:10040",
  ),
};
