// A stream that survives its network: every attempt resumes from the
// caller's cursor, after a growing, jittered pause, until the stream ends by
// itself (the build ended) or the server refuses for good.

import { Code, ConnectError } from "@buildplatform/api/web";

export type Health =
  | { readonly state: "connecting" }
  | { readonly state: "live" }
  | { readonly state: "reconnecting"; readonly attempt: number; readonly at: number; readonly reason: string }
  | { readonly state: "done" }
  | { readonly state: "failed"; readonly reason: string; readonly error?: ConnectError };

const FIRST_PAUSE_MS = 500;
const LONGEST_PAUSE_MS = 10_000;
// The server sends a heartbeat on an idle stream every STREAM_HEARTBEAT_SECONDS
// (15 s by default, within 1.5 times that): a stream silent for longer than
// this is taken as dead (a network that dropped without a reset) and reopened.
const SILENT_MS = 45_000;

// Errors no retry can fix. (A body cut off mid-stream surfaces as a Connect
// "protocol error", code INVALID_ARGUMENT: that one is retried.)
// FAILED_PRECONDITION: the build's logs expired (LOGS_EXPIRED; expired.ts).
const FINAL = new Set([
  Code.PermissionDenied,
  Code.NotFound,
  Code.Unimplemented,
  Code.InvalidArgument,
  Code.FailedPrecondition,
]);

function isFinal(error: ConnectError): boolean {
  return FINAL.has(error.code) && !error.rawMessage.startsWith("protocol error");
}

export interface Resumable {
  /** Open the stream once with `signal` and read it to its end; call `alive` on every message. */
  attempt(signal: AbortSignal, alive: () => void): Promise<void>;
  /** Called whenever the stream's health changes. */
  health(health: Health): void;
  /** After UNAUTHENTICATED: resolves true once a new credential is there to try. */
  renewCredential(): Promise<boolean>;
}

/** The pause before attempt `failures + 1`: doubling from FIRST_PAUSE_MS up to LONGEST_PAUSE_MS, with jitter. */
export function pause(failures: number): number {
  const ceiling = Math.min(LONGEST_PAUSE_MS, FIRST_PAUSE_MS * 2 ** (failures - 1));
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

/** Sleep `ms`, or less when the browser says it is back online. */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    window.addEventListener("online", done);
  });
}

export async function keepStreaming(stream: Resumable): Promise<void> {
  let failures = 0;
  stream.health({ state: "connecting" });
  for (;;) {
    const controller = new AbortController();
    let silence = setTimeout(() => controller.abort("silent"), SILENT_MS);
    let live = false;
    const alive = () => {
      failures = 0;
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort("silent"), SILENT_MS);
      if (!live) {
        live = true;
        stream.health({ state: "live" });
      }
    };
    try {
      await stream.attempt(controller.signal, alive);
      stream.health({ state: "done" });
      return;
    } catch (caught) {
      const error = ConnectError.from(caught);
      if (error.code === Code.Unauthenticated) {
        stream.health({ state: "failed", reason: `the token was refused: ${error.rawMessage}` });
        if (await stream.renewCredential()) continue;
        return;
      }
      if (isFinal(error)) {
        stream.health({ state: "failed", reason: error.rawMessage || Code[error.code], error });
        return;
      }
      failures++;
      const wait = pause(failures);
      const reason = controller.signal.aborted ? "no message for 45 s" : error.rawMessage || Code[error.code];
      stream.health({ state: "reconnecting", attempt: failures, at: Date.now() + wait, reason });
      await sleep(wait);
      stream.health({ state: "connecting" });
    } finally {
      clearTimeout(silence);
    }
  }
}
