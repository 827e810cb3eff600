// Copy the console's pinned browser libraries from node_modules into adapters/console/vendor/.
//
//   cd tools/console-vendor && npm ci && npm run vendor      (or: make vendor-console)
//
// Only ES-module builds are taken, so the console loads them with plain `import` (no bundler, no build
// step). Each file keeps its upstream licence header; each package's licence file is copied next to it,
// and VERSIONS.txt records what was copied from which package version.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "adapters", "console", "vendor");
const modules = join(here, "node_modules");

// package -> [[file in the package, name in vendor/], ...]
const FILES = {
  marked: [
    ["lib/marked.esm.js", "marked.esm.js"],
    ["LICENSE", "LICENSE.marked.md"],
  ],
  dompurify: [
    ["dist/purify.es.mjs", "purify.es.mjs"],
    ["LICENSE", "LICENSE.dompurify.txt"],
  ],
  "@highlightjs/cdn-assets": [
    ["es/highlight.min.js", "highlight.min.js"],
    ["styles/github.min.css", "highlight-github.min.css"],
    ["LICENSE", "LICENSE.highlight.js.txt"],
  ],
};

mkdirSync(out, { recursive: true });
const lines = ["# Vendored by tools/console-vendor (npm run vendor); do not edit by hand.", ""];
for (const [pkg, files] of Object.entries(FILES)) {
  const meta = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8"));
  const wanted = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies[pkg];
  if (meta.version !== wanted) {
    throw new Error(`${pkg} ${meta.version} is installed but package.json pins ${wanted}: run npm ci first`);
  }
  for (const [from, to] of files) {
    copyFileSync(join(modules, pkg, from), join(out, to));
    lines.push(`${to}  <-  ${pkg}@${meta.version} ${from}  (${meta.license})`);
  }
}
writeFileSync(join(out, "VERSIONS.txt"), lines.join("\n") + "\n");
console.log(`vendored into ${out}:\n${lines.slice(2).join("\n")}`);
