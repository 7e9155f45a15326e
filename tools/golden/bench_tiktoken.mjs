// tiktoken's side of scripts/bench_tokenizer.sh: `gpt2` encode_ordinary throughput on one thread, per file,
// printed like `unipool bench-tokenizer` (best of three passes, 1 MB = 1e6 bytes of UTF-8 input).
// Usage: TIKTOKEN_PREFIX=DIR node tools/golden/bench_tiktoken.mjs FILE...   (DIR holds node_modules/tiktoken;
// default: tools/golden)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const prefix = process.env.TIKTOKEN_PREFIX ? path.resolve(process.env.TIKTOKEN_PREFIX) : here;
const require = createRequire(path.join(prefix, "package.json"));
const { get_encoding } = require("tiktoken");
const version = JSON.parse(fs.readFileSync(path.join(path.dirname(require.resolve("tiktoken")), "package.json"), "utf8")).version;

const enc = get_encoding("gpt2");
console.log(`bench-tiktoken | tiktoken ${version} gpt2 encode_ordinary, node ${process.version} | 1 thread`);
for (const file of process.argv.slice(2)) {
  const bytes = fs.readFileSync(file);
  const text = new TextDecoder("utf-8").decode(bytes);
  enc.encode_ordinary(text.slice(0, 1 << 20));  // warm-up
  let best = Infinity, tokens = 0;
  for (let pass = 0; pass < 3; ++pass) {
    const t0 = process.hrtime.bigint();
    tokens = enc.encode_ordinary(text).length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const mb = bytes.length / 1e6;
  console.log(`bench-tiktoken | ${file} | ${mb.toFixed(2)} MB, ${tokens} tokens (${(bytes.length / tokens).toFixed(2)} bytes/token) | ${(mb / best).toFixed(1)} MB/s`);
}
enc.free();
