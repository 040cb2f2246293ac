// The "Download" button: the build's log as text, GET /builds/<id>/logs.txt.
//
// The page holds its token in sessionStorage (credential.ts), which a plain
// <a href> cannot send, so one click fetches the text with the
// Authorization header, takes the body as a Blob (Chromium keeps a large one
// on disk, not in the page's heap) and hands it to the browser's download
// (an <a download> on the Blob's URL). ANSI escape sequences are stripped
// unless "with colour codes" is ticked.

export interface DownloadOptions {
  buildId: string;
  token: () => string;
  /** After a 401: a new token from the embedding page (true), or none to be had (false). */
  renew: () => Promise<boolean>;
  button: HTMLButtonElement;
  keepAnsi: HTMLInputElement;
  problem: (text: string) => void;
}

/** The URL of the text, as the button fetches it. */
export function logTextUrl(buildId: string, keepAnsi: boolean): string {
  return `/builds/${encodeURIComponent(buildId)}/logs.txt?ansi=${keepAnsi ? "keep" : "strip"}&download=1`;
}

/** Why a download failed, in one line: the server's JSON error message, or the status. */
async function refusal(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { message?: unknown };
    if (typeof body.message === "string") return body.message;
  } catch {
    // not JSON: the status says it
  }
  return `HTTP ${response.status}`;
}

export function enableDownload({ buildId, token, renew, button, keepAnsi, problem }: DownloadOptions): void {
  button.addEventListener("click", async () => {
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Downloading…";
    try {
      const get = () =>
        fetch(logTextUrl(buildId, keepAnsi.checked), {
          headers: { authorization: `Bearer ${token()}` },
          cache: "no-store",
        });
      let response = await get();
      if (response.status === 401 && (await renew())) response = await get();
      if (!response.ok) {
        problem(`The download failed: ${await refusal(response)}`);
        return;
      }
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = `${buildId}.log`;
      document.body.append(link);
      link.click();
      link.remove();
      // The download has taken the Blob's URL once the click's task ran.
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error: unknown) {
      problem(`The download failed: ${String(error)}; check the connection and try again.`);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
}
