// Where the sources that must answer before a login is stored (DRAC, Dovecot's auth policy) hand
// their logins: fire and forget, never blocking the reply (the watcher wires it to the intake).
export interface LoginSink {
  login(report: { ip: string; user?: string; service: string; source: string }): void;
}
