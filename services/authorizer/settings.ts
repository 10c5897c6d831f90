// The authorizer's settings: the single source of truth for its env vars, flags and docs.
import { parseNetworkList, type Network } from "../../shared/address.ts";
import {
  booleanSetting,
  durationSetting,
  integerSetting,
  type Setting,
} from "../../shared/config.ts";
import {
  leaseTtlSetting,
  natsSettings,
  processSettings,
  serviceTtlsSetting,
} from "../../shared/settings.ts";

export const authorizerSettings = {
  ...natsSettings,
  ...processSettings,
  leaseTtl: leaseTtlSetting,
  serviceTtls: serviceTtlsSetting,
  neverLease: {
    env: "RELAYLEASE_NEVER_LEASE",
    doc: "Networks that may never hold a lease; when set, replaces the default list (loopback, unspecified, multicast, link-local, broadcast, 100.64.0.0/10). Add the POP proxy or a known NAT here.",
    default: undefined,
    form: "networks in CIDR form separated by commas or spaces (e.g. 10.9.0.0/16, 2001:db8::/48)",
    parse: (raw: string): Network[] | undefined => parseNetworkList(raw),
  } satisfies Setting<Network[] | undefined>,
  ipv6Prefix: {
    env: "RELAYLEASE_IPV6_PREFIX",
    doc: "Lease an IPv6 client's whole /64 (64) or only its address (128).",
    default: "128",
    form: "64 or 128",
    parse: (raw: string): 64 | 128 => {
      if (raw !== "64" && raw !== "128") throw new Error("neither 64 nor 128");
      return raw === "64" ? 64 : 128;
    },
  } satisfies Setting<64 | 128>,
  maxUsersPerIp: integerSetting(
    "RELAYLEASE_MAX_USERS_PER_IP",
    "Distinct users logging in from one address within RELAYLEASE_USERS_WINDOW above which the address is flagged as shared (0: no guard).",
    "0",
    0,
    100,
  ),
  usersWindow: durationSetting(
    "RELAYLEASE_USERS_WINDOW",
    "The window of the distinct-users guard.",
    "10m",
    1000,
  ),
  refuseShared: booleanSetting(
    "RELAYLEASE_REFUSE_SHARED",
    "Refuse a lease to an address over RELAYLEASE_MAX_USERS_PER_IP instead of only flagging it.",
    "false",
  ),
};
