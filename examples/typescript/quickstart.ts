// Quickstart: create a build, write its log, and follow the log live until
// the build ends. Run: BUILDPLATFORM_TOKEN=$(cat ../../.data/admin-token) node dist/quickstart.js http://127.0.0.1:50051
import { randomUUID } from "node:crypto";
import { BuildStatus, LogLevel, connectBuildPlatform } from "@buildplatform/api";

const api = connectBuildPlatform(process.argv[2] ?? "http://127.0.0.1:50051", {
  token: process.env.BUILDPLATFORM_TOKEN,
});

const clerkId = `quickstart-${randomUUID()}`;
const { user } = await api.users.createUser({
  user: { clerkId, email: `${clerkId}@example.com`, name: "Quickstart" },
});
const { project } = await api.projects.createProject({
  project: { userId: user!.id, name: "Todo app" },
});
const { build } = await api.builds.createBuild({
  build: { userId: user!.id, projectId: project!.id, appSpec: "# A todo app" },
});
const buildId = build!.id;
await api.buildLogs.appendBuildLogs({
  buildId,
  entries: [{ level: LogLevel.INFO, message: "queued" }],
});

// Follow the log like `tail -f`: first the backlog, then a message with
// caughtUp set, then live lines; the stream ends once the build has ended.
let markCaughtUp = () => {};
const caughtUp = new Promise<void>((resolve) => (markCaughtUp = resolve));
const following = (async () => {
  for await (const response of api.buildLogs.streamBuildLogs({ buildId, follow: true })) {
    for (const log of response.logs) {
      console.log(`${log.sequence} ${LogLevel[log.level]} ${log.message}`);
    }
    if (response.caughtUp) {
      console.log("-- caught up, now live --");
      markCaughtUp();
    }
  }
})();
await caughtUp;

// Meanwhile the build agent runs the build and writes its log.
await api.builds.transitionBuild({ id: buildId, status: BuildStatus.INITIALIZING });
await api.builds.transitionBuild({ id: buildId, status: BuildStatus.RUNNING });
await api.buildLogs.appendBuildLogs({
  buildId,
  entries: [
    { level: LogLevel.INFO, message: "compiling" },
    { level: LogLevel.TOOL, message: "npm test: 12 passed" },
  ],
});
await api.builds.transitionBuild({ id: buildId, status: BuildStatus.COMPLETED });

await following;
const { build: done } = await api.builds.getBuild({ id: buildId });
console.log(`build ${buildId} ended ${BuildStatus[done!.status]}`);
