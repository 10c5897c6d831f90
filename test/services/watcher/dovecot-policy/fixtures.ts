// Request bodies shared by the Dovecot policy tests.

/** login-sources.md 2.3: the exact report body of Dovecot 2.3.19.1 for an IMAP login. */
export const DOVECOT_IMAP_REPORT =
  '{"device_id":"","login":"alice","protocol":"imap","pwhash":"016d","remote":"127.0.0.1","session_id":"RkamOl1hNJh/AAAB","success":true,"policy_reject":false,"tls":false}';
