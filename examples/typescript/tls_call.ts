// A call over TLS with a bearer token: the five newest builds.
// Run: BUILDPLATFORM_TOKEN=... node dist/tls_call.js https://builds.internal:443 ca.pem
import { readFileSync } from "node:fs";
import { BuildStatus, connectBuildPlatform } from "@buildplatform/api";

const [baseUrl = "https://127.0.0.1:50051", caFile = "ca.pem"] = process.argv.slice(2);
const token = process.env.BUILDPLATFORM_TOKEN;
if (!token) throw new Error("set BUILDPLATFORM_TOKEN to the service's token");
const api = connectBuildPlatform(baseUrl, {
  // Trust the CA that signed the server's certificate (not only the system's).
  nodeOptions: { ca: readFileSync(caFile) },
  // The token goes with every call, as the `authorization: Bearer <token>` header.
  token,
});
const { builds } = await api.builds.listBuilds({ pageSize: 5 });
for (const build of builds) {
  console.log(build.id, `BUILD_STATUS_${BuildStatus[build.status]}`);
}
