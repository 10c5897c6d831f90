// Settings of the admin commands (setup, check): how to reach NATS and the shape to provision.
import { leaseTtlSetting, natsSettings, replicasSetting } from "../../shared/settings.ts";
import { enumSetting } from "../../shared/config.ts";

export const adminSettings = {
  ...natsSettings,
  leaseTtl: leaseTtlSetting,
  replicas: replicasSetting,
  logLevel: enumSetting("LOG_LEVEL", "Log level.", "warn", ["error", "warn", "info", "debug"]),
};
