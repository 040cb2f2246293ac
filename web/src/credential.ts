// The bearer token the page sends with every call, from one of two places:
//
// 1. The URL fragment: /builds/<id>#token=<token>. Browsers never send a
//    fragment to a server (not in the request, so in no access log, and not in
//    a Referer). The page keeps the token in sessionStorage (this tab only; a
//    reload still has it) and removes the fragment from the address bar, so it
//    is neither in the browser's history nor in a copied link.
// 2. The embedding page, when this page runs in an iframe: it asks its parent
//    with postMessage({ type: "buildplatform:token-request" }) (no secret in
//    it), and takes { type: "buildplatform:token", token } from the parent
//    window only. The parent may send a new token whenever it has one (a Clerk
//    session JWT lives about a minute); when the server refuses the token held,
//    the page asks again and resumes once one comes.

const STORAGE_KEY = "buildplatform-token";
export const REQUEST = "buildplatform:token-request";
export const ANSWER = "buildplatform:token";

export type Source = "fragment" | "embedding page";

/** `use(sessionStorage)`, or null where the browser denies storage (a third-party iframe may be). */
function session<T>(use: (storage: Storage) => T): T | null {
  try {
    return use(window.sessionStorage);
  } catch {
    return null;
  }
}

export class Credential {
  private token: string | null = null;
  private waiting: Array<() => void> = [];
  readonly source: Source | null;

  constructor() {
    const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fragment) {
      session((storage) => storage.setItem(STORAGE_KEY, fragment));
      history.replaceState(history.state, "", location.pathname + location.search);
    }
    this.token = fragment || session((storage) => storage.getItem(STORAGE_KEY));
    const embedded = window.parent !== window;
    this.source = this.token !== null ? "fragment" : embedded ? "embedding page" : null;
    if (embedded) {
      window.addEventListener("message", (event) => {
        if (event.source !== window.parent) return;
        const data: unknown = event.data;
        if (typeof data !== "object" || data === null) return;
        const { type, token } = data as { type?: unknown; token?: unknown };
        if (type === ANSWER && typeof token === "string" && token !== "") this.set(token);
      });
      if (this.token === null) this.ask();
    }
  }

  /** The token to send now (the bearerToken interceptor asks before every call). */
  readonly current = (): string => this.token ?? "";

  /** Resolves once there is a token. */
  ready(): Promise<void> {
    return this.token !== null ? Promise.resolve() : new Promise((resolve) => this.waiting.push(resolve));
  }

  /** After the server refused the token: from the embedding page, wait for a new one (true); a fragment's cannot change (false). */
  renew(): Promise<boolean> {
    if (this.source !== "embedding page") return Promise.resolve(false);
    this.token = null;
    this.ask();
    return this.ready().then(() => true);
  }

  private ask(): void {
    window.parent.postMessage({ type: REQUEST }, "*");
  }

  private set(token: string): void {
    this.token = token;
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }
}
