// A first call: the five newest builds.
// Run: BUILDPLATFORM_TOKEN=$(cat ../../.data/admin-token) node dist/first_call.js http://127.0.0.1:50051
import { BuildStatus, connectBuildPlatform } from "@buildplatform/api";

// The token goes with every call as `authorization: Bearer <token>`.
const api = connectBuildPlatform(process.argv[2] ?? "http://127.0.0.1:50051", {
  token: process.env.BUILDPLATFORM_TOKEN,
});
const { builds } = await api.builds.listBuilds({ pageSize: 5 });
for (const build of builds) {
  console.log(build.id, `BUILD_STATUS_${BuildStatus[build.status]}`);
}
