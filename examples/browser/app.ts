// A web page calls buildplatform: the five newest builds, and the newest one's log, live.
// Bundle: npx esbuild app.ts --bundle --format=esm --outfile=app.js; open index.html#api=http://127.0.0.1:8080&token=...
import { BuildStatus, LogLevel, connectBuildPlatformWeb } from "@buildplatform/api/web";

// The server's HTTP port, which must allow this page's origin (HTTP_CORS_ORIGINS). A web
// app sends its user's session JWT, fresh for every call: token: () => Clerk.session!.getToken().
const params = new URLSearchParams(location.hash.slice(1));
const api = connectBuildPlatformWeb(params.get("api") ?? "http://127.0.0.1:8080", {
  token: params.get("token") ?? undefined,
});

const { builds } = await api.builds.listBuilds({ pageSize: 5 });
for (const build of builds) {
  const item = document.createElement("li");
  item.textContent = `${build.id} ${BuildStatus[build.status]}`;
  document.querySelector("#builds")!.append(item);
}

// Server streaming over fetch: the backlog, then live lines until the build ends.
const log = document.querySelector("#log")!;
for await (const { logs } of api.buildLogs.streamBuildLogs({ buildId: builds[0]!.id, follow: true })) {
  for (const line of logs) {
    log.append(`${line.sequence} ${LogLevel[line.level]} ${line.message}\n`);
  }
}
log.append("-- the build ended --\n");
