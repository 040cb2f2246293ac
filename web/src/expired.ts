// LOGS_EXPIRED: a build's logs passed their project's retention and were
// deleted (docs/lifecycle.md#retention). The streams answer
// FAILED_PRECONDITION with a google.rpc.ErrorInfo whose reason is
// LOGS_EXPIRED and whose metadata expire_time says when (RFC 3339). The
// generated package has no schema of google.rpc.ErrorInfo, so its three
// fields are read here from the detail's bytes.

import { Code, ConnectError } from "@buildplatform/api/web";

const ERROR_INFO = "google.rpc.ErrorInfo";

interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Map<string, string>;
}

/** Length-delimited fields of a protobuf message: (field number, bytes); other wire types skipped. */
function* fields(bytes: Uint8Array): Generator<[number, Uint8Array]> {
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; at < bytes.length; shift += 7) {
      const byte = bytes[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
    throw new Error("truncated varint");
  };
  while (at < bytes.length) {
    const key = varint();
    const wire = key & 7;
    if (wire === 2) {
      const length = varint();
      yield [Math.floor(key / 8), bytes.subarray(at, at + length)];
      at += length;
    } else if (wire === 0) varint();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else throw new Error(`unexpected wire type ${wire}`);
  }
}

function errorInfo(bytes: Uint8Array): ErrorInfo {
  const text = new TextDecoder();
  const info: ErrorInfo = { reason: "", domain: "", metadata: new Map() };
  for (const [number, value] of fields(bytes)) {
    if (number === 1) info.reason = text.decode(value);
    else if (number === 2) info.domain = text.decode(value);
    else if (number === 3) {
      let key = "";
      let item = "";
      for (const [entry, part] of fields(value)) {
        if (entry === 1) key = text.decode(part);
        else if (entry === 2) item = text.decode(part);
      }
      info.metadata.set(key, item);
    }
  }
  return info;
}

/** When the logs expired, if `error` says they did (null: another error). */
export function logsExpired(error: ConnectError): Date | null {
  if (error.code !== Code.FailedPrecondition) return null;
  for (const detail of error.details) {
    if (!("type" in detail) || !("value" in detail) || detail.type !== ERROR_INFO) continue;
    try {
      const info = errorInfo(detail.value);
      if (info.reason !== "LOGS_EXPIRED") continue;
      const when = new Date(info.metadata.get("expire_time") ?? "");
      return Number.isNaN(when.getTime()) ? new Date(0) : when;
    } catch {
      continue;
    }
  }
  return null;
}

/** "2026-12-07 05:12 UTC" */
function utc(when: Date): string {
  return `${when.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** What the page says of a build whose logs expired at `expired` (finished at `finished`, when known). */
export function expiredText(expired: Date, finished: Date | null): string {
  if (expired.getTime() === 0) return "The logs of this build expired and were deleted.";
  let text = `The logs of this build expired on ${utc(expired)} and were deleted`;
  if (finished !== null && finished.getTime() > 0 && expired > finished) {
    const days = Math.floor((expired.getTime() - finished.getTime()) / 86_400_000);
    text += ` (retention ${days} day${days === 1 ? "" : "s"} after the build finished)`;
  }
  return `${text}. The build's status and timings are kept.`;
}
