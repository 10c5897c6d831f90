/**
 * Milter protocol constants under their spec names, so code and spec can be grepped against each
 * other. Sources: Sendmail 8.17 `include/libmilter/mfdef.h` and `mfapi.h` (Debian 12 source
 * package sendmail_8.17.1.9); shared/reference/mta-protocols.md section 1.
 */

// ---- Commands, MTA -> milter (mfdef.h "SMFIC_*"; mta-protocols.md 1.2) ------------------------
export const SMFIC_ABORT = 0x41; // 'A'
export const SMFIC_BODY = 0x42; // 'B'
export const SMFIC_CONNECT = 0x43; // 'C'
export const SMFIC_MACRO = 0x44; // 'D'
export const SMFIC_BODYEOB = 0x45; // 'E'
export const SMFIC_HELO = 0x48; // 'H'
export const SMFIC_QUIT_NC = 0x4b; // 'K' (v6)
export const SMFIC_HEADER = 0x4c; // 'L'
export const SMFIC_MAIL = 0x4d; // 'M'
export const SMFIC_EOH = 0x4e; // 'N'
export const SMFIC_OPTNEG = 0x4f; // 'O'
export const SMFIC_QUIT = 0x51; // 'Q'
export const SMFIC_RCPT = 0x52; // 'R'
export const SMFIC_DATA = 0x54; // 'T' (v4)
export const SMFIC_UNKNOWN = 0x55; // 'U' (v3)

// ---- Replies, milter -> MTA (mfdef.h "SMFIR_*"; mta-protocols.md 1.3) -------------------------
// Only the ones a gatekeeper sends or may receive; modification replies are never sent.
export const SMFIR_ACCEPT = 0x61; // 'a'
export const SMFIR_CONTINUE = 0x63; // 'c'
export const SMFIR_DISCARD = 0x64; // 'd'
export const SMFIR_PROGRESS = 0x70; // 'p'
export const SMFIR_REJECT = 0x72; // 'r'
export const SMFIR_SKIP = 0x73; // 's' (v6, only if SMFIP_SKIP was offered)
export const SMFIR_TEMPFAIL = 0x74; // 't'
export const SMFIR_REPLYCODE = 0x79; // 'y'
export const SMFIR_OPTNEG = 0x4f; // 'O'

// ---- CONNECT address families (mfdef.h "SMFIA_*"; mta-protocols.md 1.6) -----------------------
export const SMFIA_UNKNOWN = "U"; // no port, no address
export const SMFIA_UNIX = "L";
export const SMFIA_INET = "4";
export const SMFIA_INET6 = "6";

// ---- Macro stages for SETSYMLIST (mfapi.h "SMFIM_*"; mta-protocols.md 1.5) --------------------
export const SMFIM_CONNECT = 0;
export const SMFIM_HELO = 1;
export const SMFIM_ENVFROM = 2;
export const SMFIM_ENVRCPT = 3;
export const SMFIM_DATA = 4;
export const SMFIM_EOM = 5;
export const SMFIM_EOH = 6;

// ---- Actions (mfapi.h "SMFIF_*"; mta-protocols.md 1.4) -----------------------------------------
export const SMFIF_ADDHDRS = 0x01;
export const SMFIF_CHGBODY = 0x02;
export const SMFIF_ADDRCPT = 0x04;
export const SMFIF_DELRCPT = 0x08;
export const SMFIF_CHGHDRS = 0x10;
export const SMFIF_QUARANTINE = 0x20;
export const SMFIF_CHGFROM = 0x40;
export const SMFIF_ADDRCPT_PAR = 0x80;
export const SMFIF_SETSYMLIST = 0x100;
export const SMFI_V1_ACTS = 0x0f;
export const SMFI_V2_ACTS = 0x3f;
export const SMFI_CURR_ACTS = 0x1ff;

// ---- Protocol steps (mfdef.h "SMFIP_*"; mta-protocols.md 1.4) ----------------------------------
export const SMFIP_NOCONNECT = 0x1;
export const SMFIP_NOHELO = 0x2;
export const SMFIP_NOMAIL = 0x4;
export const SMFIP_NORCPT = 0x8;
export const SMFIP_NOBODY = 0x10;
export const SMFIP_NOHDRS = 0x20;
export const SMFIP_NOEOH = 0x40;
export const SMFIP_NR_HDR = 0x80; // also SMFIP_NOHREPL
export const SMFIP_NOUNKNOWN = 0x100;
export const SMFIP_NODATA = 0x200;
export const SMFIP_SKIP = 0x400;
export const SMFIP_RCPT_REJ = 0x800;
export const SMFIP_NR_CONN = 0x1000;
export const SMFIP_NR_HELO = 0x2000;
export const SMFIP_NR_MAIL = 0x4000;
export const SMFIP_NR_RCPT = 0x8000;
export const SMFIP_NR_DATA = 0x10000;
export const SMFIP_NR_UNKN = 0x20000;
export const SMFIP_NR_EOH = 0x40000;
export const SMFIP_NR_BODY = 0x80000;
export const SMFIP_HDR_LEADSPC = 0x100000;
export const SMFI_V1_PROT = 0x3f;
export const SMFI_V2_PROT = 0x7f;
export const SMFI_CURR_PROT = 0x1fffff;

/** The protocol version libmilter 8.14+ speaks (mfdef.h SMFI_PROT_VERSION). */
export const SMFI_PROT_VERSION = 6;
/** libmilter refuses MTAs below version 2 (engine.c st_optionneg). */
export const SMFI_PROT_VERSION_MIN = 2;
