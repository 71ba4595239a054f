// Bundle the browser modules into streamkit/render/static/ with the licenses of what they hold.
//   delta.js     the plain-text delta view (the delta protocol, no dependencies)
//   markdown.js  the live Markdown view: markdown-it, highlight.js (core + common languages),
//                DOMPurify, and the same delta protocol
// One self-contained ES module each: anywidget imports a widget's module from a blob URL, so it
// cannot import anything else, and nothing is fetched at run time (Binder and CI are offline).
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "streamkit", "render", "static");

// The sources' digest goes into each bundle's first line, so a test can tell a stale bundle
// without Node (tests/test_markdown_view.py computes the same digest).
const digest = createHash("sha256");
for (const name of readdirSync(join(here, "src")).sort()) {
  digest.update(name + "\0" + readFileSync(join(here, "src", name), "utf8") + "\0");
}
digest.update(readFileSync(join(here, "package-lock.json"), "utf8"));
const banner = `// streamkit: built by js/build.mjs from js/src, sources sha256 ${digest.digest("hex")}`;

const result = await build({
  entryPoints: [join(here, "src", "delta.js"), join(here, "src", "markdown.js")],
  outdir: out,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "none",  // collected below into THIRD_PARTY_LICENSES.txt
  metafile: true,
  banner: { js: banner },
  logLevel: "info",
});
copyFileSync(join(here, "src", "markdown.css"), join(out, "markdown.css"));

// Every npm package with code in a bundle, and its license text.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (match) packages.set(match[1], join(here, "node_modules", match[1]));
}
const sections = [];
for (const [name, dir] of [...packages].sort()) {
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = ["LICENSE", "LICENSE.md", "LICENSE.txt", "LICENSE-MIT.txt", "license"]
    .map((f) => join(dir, f))
    .find((f) => existsSync(f));
  if (!file) throw new Error(`no license file in ${name}`);
  sections.push(
    `${"=".repeat(78)}\n${name} ${meta.version} (${meta.license})\n${"=".repeat(78)}\n\n` +
      readFileSync(file, "utf8").trim() + "\n",
  );
}
writeFileSync(
  join(out, "THIRD_PARTY_LICENSES.txt"),
  "Third-party code bundled into streamkit/render/static/markdown.js (built by js/build.mjs).\n\n" +
    sections.join("\n"),
);
console.log(`bundled packages: ${[...packages.keys()].sort().join(", ")}`);
