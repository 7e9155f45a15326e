// Writes tests/fixtures/gpt2_golden_ids.json: tiktoken's `gpt2` encode_ordinary ids for every string of
// tests/fixtures/tokenizer_fixture.json. tests/test_tokenizer.cpp checks unipool's tokenizer against them.
//
// Usage (from the repository root; installs tiktoken outside the repo):
//   npm install --prefix /tmp/golden_npm --no-save --no-audit --no-fund tiktoken@1.0.22
//   TIKTOKEN_PREFIX=/tmp/golden_npm node tools/golden/gen_gpt2_golden.mjs
// Without TIKTOKEN_PREFIX, tiktoken is resolved from tools/golden (npm install --prefix tools/golden;
// delete tools/golden/node_modules afterwards).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const prefix = process.env.TIKTOKEN_PREFIX ? path.resolve(process.env.TIKTOKEN_PREFIX) : here;
const require = createRequire(path.join(prefix, "package.json"));
const { get_encoding } = require("tiktoken");
const tiktokenDir = path.dirname(require.resolve("tiktoken"));
const version = JSON.parse(fs.readFileSync(path.join(tiktokenDir, "package.json"), "utf8")).version;
const pinned = JSON.parse(fs.readFileSync(path.join(here, "package.json"), "utf8")).dependencies.tiktoken;
if (version !== pinned) {
  console.error(`gen_gpt2_golden: tiktoken ${version} is installed, tools/golden/package.json pins ${pinned}`);
  process.exit(1);
}

const fixturePath = path.join(root, "tests", "fixtures", "tokenizer_fixture.json");
const outPath = path.join(root, "tests", "fixtures", "gpt2_golden_ids.json");
const texts = JSON.parse(fs.readFileSync(fixturePath, "utf8"));
if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string")) {
  console.error(`gen_gpt2_golden: ${fixturePath} must be a JSON array of strings`);
  process.exit(1);
}

const enc = get_encoding("gpt2");
const cases = texts.map((text) => ({ text, ids: Array.from(enc.encode_ordinary(text)) }));
enc.free();

// Invisible or confusable characters (NEL, NBSP, BOM, zero-width and other spaces, variation selectors)
// are written as \u escapes so that the file reads unambiguously; JSON.parse gives the same strings.
const invisible = /[\u007f-\u00a0\u00ad\u1680\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufe00-\ufe0f\ufeff]/g;
const quote = (s) => JSON.stringify(s).replace(invisible, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));

// One case per line, ids on the same line: small diffs when a case is added.
const header = {
  generator: "tools/golden/gen_gpt2_golden.mjs",
  package: "tiktoken",
  version,
  encoding: "gpt2",
  method: "encode_ordinary",
};
let out = "{\n";
for (const [k, v] of Object.entries(header)) out += `  ${JSON.stringify(k)}: ${JSON.stringify(v)},\n`;
out += '  "cases": [\n';
out += cases.map((c) => `    {"text": ${quote(c.text)}, "ids": ${JSON.stringify(c.ids)}}`).join(",\n");
out += "\n  ]\n}\n";
const back = JSON.parse(out);  // sanity: the file holds exactly the fixture strings
if (back.cases.some((c, i) => c.text !== texts[i])) throw new Error("escaping changed a string");
fs.writeFileSync(outPath, out);
console.log(`gen_gpt2_golden: wrote ${cases.length} cases (${cases.reduce((n, c) => n + c.ids.length, 0)} ids) to ${path.relative(root, outPath)} with tiktoken ${version}`);
