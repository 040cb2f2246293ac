// Bundle the page into dist/ (`make web`): dist/index.html, and dist/assets/
// with content-hashed names, which the server serves as immutable.
//
// The client comes from generated/typescript/src (tsconfig.json `paths`), so
// the page always uses what `make generate` wrote; its runtime dependencies
// resolve from generated/typescript/node_modules.
import { build } from "esbuild";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename } from "node:path";

const staging = "dist.new";
await rm(staging, { recursive: true, force: true });
const result = await build({
  entryPoints: { main: "src/main.ts", style: "src/style.css" },
  bundle: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  minify: true,
  sourcemap: "linked",
  entryNames: "[name]-[hash]",
  outdir: `${staging}/assets`,
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.entries(result.metafile.outputs);
const named = (entry) => {
  const found = outputs.find(([, output]) => output.entryPoint === entry);
  if (!found) throw new Error(`esbuild wrote no output for ${entry}`);
  return `/assets/${basename(found[0])}`;
};
const html = (await readFile("src/index.html", "utf8"))
  .replace("@SCRIPT@", named("src/main.ts"))
  .replace("@STYLE@", named("src/style.css"));
await writeFile(`${staging}/index.html`, html);

// Swap the new build in whole, so a server never serves half of one.
await rm("dist.old", { recursive: true, force: true });
await rename("dist", "dist.old").catch((error) => {
  if (error.code !== "ENOENT") throw error;
});
await rename(staging, "dist");
await rm("dist.old", { recursive: true, force: true });
const sizes = outputs.map(([path, output]) => `${basename(path)} ${(output.bytes / 1024).toFixed(1)} KiB`);
console.log(`web/dist: index.html, ${sizes.join(", ")}`);
