// A first call: the five newest builds. Run: node dist/first_call.js http://127.0.0.1:50051
import { BuildStatus, connectBuildPlatform } from "@buildplatform/api";

const api = connectBuildPlatform(process.argv[2] ?? "http://127.0.0.1:50051");
const { builds } = await api.builds.listBuilds({ pageSize: 5 });
for (const build of builds) {
  console.log(build.id, `BUILD_STATUS_${BuildStatus[build.status]}`);
}
