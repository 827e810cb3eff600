// Bundle a page's script with one `ai` major version: node bundle.mjs <entry.js> <out.js> <5|6|7>
// ("ai" in the page resolves to this package's alias ai5, ai6 or ai7).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const [entry, outfile, version] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  alias: { ai: `ai${version}` },
  nodePaths: [path.join(here, "node_modules")],
  logLevel: "warning",
});
