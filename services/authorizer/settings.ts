// The authorizer's settings: the single source of truth for its env vars, flags and docs.
import { leaseTtlSetting, natsSettings, processSettings } from "../../shared/settings.ts";

export const authorizerSettings = {
  ...natsSettings,
  ...processSettings,
  leaseTtl: leaseTtlSetting,
};
