// Settings of the admin commands: how to reach NATS, and the shape `setup` provisions.
import {
  leaseTtlSetting,
  natsSettings,
  replicasSetting,
  serviceTtlsSetting,
} from "../../shared/settings.ts";
import { durationSetting, enumSetting } from "../../shared/config.ts";
import { DEFAULT_ACK_WAIT_MS } from "../../shared/provision.ts";

export const adminSettings = {
  ...natsSettings,
  leaseTtl: leaseTtlSetting,
  serviceTtls: serviceTtlsSetting,
  logLevel: enumSetting("LOG_LEVEL", "Log level.", "warn", ["error", "warn", "info", "debug"]),
};

export const setupSettings = {
  ...adminSettings,
  replicas: replicasSetting,
  ackWait: durationSetting(
    "RELAYLEASE_ACK_WAIT",
    "How long an authorizer may hold an event unacknowledged before another replica gets it.",
    `${DEFAULT_ACK_WAIT_MS / 1000}s`,
    1000,
  ),
};
