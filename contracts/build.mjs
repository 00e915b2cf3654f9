#!/usr/bin/env node
// Reproducible build of ztbridge's contracts with the pinned solc-js (no native binary, no
// download): same sources + same package-lock -> byte-identical build/<Contract>.json.
//
//   node contracts/build.mjs             compile and (re)write contracts/build/*.json
//   node contracts/build.mjs --check     compile and exit 1 if a committed artifact differs
//   node contracts/build.mjs --out DIR   write the artifacts to DIR instead
//
// Why committed artifacts: the gateway deploys and talks to the contract from the ABI and
// bytecode in build/, so Python users need neither node nor solc. --check (run by the tests)
// keeps those committed bytes honest against the sources they claim to come from.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const SRC_DIR = join(HERE, "src");
const NODE_MODULES = join(HERE, "node_modules");
const DEFAULT_OUT = join(HERE, "build");

// What the bytecode depends on besides the sources. Changing any of these changes the
// artifact, so they are constants here and recorded in the artifact's "settings".
const SETTINGS = {
  optimizer: { enabled: true, runs: 1000 },
  // cancun: supported by py-evm's Prague VM (eth-tester's default fork) and by anvil, geth
  // and Besu; nothing newer is needed (the contract uses no Prague/Osaka opcode).
  evmVersion: "cancun",
  viaIR: false,
};
const CONTRACTS = ["ZtbridgeRegistry"];

const require = createRequire(import.meta.url);

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { check: false, out: DEFAULT_OUT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--check") args.check = true;
    else if (a === "--out") {
      if (i + 1 >= argv.length) fail("--out needs a directory");
      args.out = resolve(argv[++i]);
    } else fail(`unknown argument ${a} (use --check or --out DIR)`);
  }
  return args;
}

/** The versions package.json pins, checked against what node_modules actually holds. */
function pinnedVersions() {
  if (!existsSync(NODE_MODULES)) {
    fail("contracts/node_modules is missing: run `npm ci --prefix contracts` first");
  }
  const pkg = JSON.parse(readFileSync(join(HERE, "package.json"), "utf8"));
  const want = pkg.dependencies;
  const have = {};
  for (const name of Object.keys(want)) {
    have[name] = JSON.parse(readFileSync(join(NODE_MODULES, name, "package.json"), "utf8")).version;
    if (have[name] !== want[name]) {
      fail(`${name} ${have[name]} is installed but package.json pins ${want[name]}: run npm ci`);
    }
  }
  return have;
}

/** Every .sol file under src/, keyed by its source unit name ("src/X.sol"), sorted. */
function ownSources() {
  const out = {};
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    )) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith(".sol")) {
        out[relative(HERE, full).split(sep).join("/")] = readFileSync(full, "utf8");
      }
    }
  };
  walk(SRC_DIR);
  return out;
}

/** Import callback: package imports ("@openzeppelin/...") come from node_modules only. */
function makeResolver(loaded) {
  return (path) => {
    if (path.startsWith("/") || path.includes("..")) {
      return { error: `refusing import outside node_modules: ${path}` };
    }
    const full = join(NODE_MODULES, path);
    if (!existsSync(full)) return { error: `not found in contracts/node_modules: ${path}` };
    const contents = readFileSync(full, "utf8");
    loaded[path] = contents;
    return { contents };
  };
}

const sha256 = (text) => createHash("sha256").update(text, "utf8").digest("hex");

/** JSON with keys sorted at every level, two-space indent and a final newline. */
function canonicalJson(value) {
  const sortKeys = (v) => {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v && typeof v === "object") {
      const o = {};
      for (const k of Object.keys(v).sort()) o[k] = sortKeys(v[k]);
      return o;
    }
    return v;
  };
  return `${JSON.stringify(sortKeys(value), null, 2)}\n`;
}

function compile(solc, sources) {
  const loaded = {};
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(Object.entries(sources).map(([k, v]) => [k, { content: v }])),
    settings: {
      optimizer: SETTINGS.optimizer,
      evmVersion: SETTINGS.evmVersion,
      viaIR: SETTINGS.viaIR,
      metadata: { bytecodeHash: "ipfs", appendCBOR: true },
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };
  const output = JSON.parse(
    solc.compile(JSON.stringify(input), { import: makeResolver(loaded) }),
  );
  const problems = output.errors ?? [];
  for (const p of problems) console.error(p.formattedMessage.trimEnd());
  if (problems.some((p) => p.severity === "error")) fail("compilation failed");
  // Every source unit the compiler actually used (ours + imported), with its text.
  const used = {};
  for (const name of Object.keys(output.sources ?? {}).sort()) {
    const text = sources[name] ?? loaded[name];
    if (text === undefined) fail(`compiler used ${name} but its text was never read`);
    used[name] = text;
  }
  return { output, used };
}

function artifacts(solc, versions) {
  const { output, used } = compile(solc, ownSources());
  const sourceHashes = Object.fromEntries(
    Object.entries(used).map(([name, text]) => [name, sha256(text)]),
  );
  // One digest over the sorted (name, sha256) pairs: changes if any compiled file changes.
  const sourceHash = sha256(
    Object.keys(sourceHashes)
      .sort()
      .map((name) => `${name}\0${sourceHashes[name]}\n`)
      .join(""),
  );
  const result = {};
  for (const name of CONTRACTS) {
    const unit = Object.keys(output.contracts).find((u) => output.contracts[u][name]);
    if (!unit) fail(`contract ${name} not found in the compiler output`);
    const c = output.contracts[unit][name];
    result[name] = {
      format: "ztbridge-contract-artifact/1",
      contractName: name,
      sourceName: unit,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      compiler: { name: "solc-js", version: solc.version() },
      dependencies: versions,
      settings: SETTINGS,
      sourceHash: `sha256:${sourceHash}`,
      sources: sourceHashes,
    };
  }
  return result;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const versions = pinnedVersions();
  const solc = require(join(NODE_MODULES, "solc"));
  const built = artifacts(solc, versions);
  let stale = 0;
  for (const [name, artifact] of Object.entries(built)) {
    const text = canonicalJson(artifact);
    const path = join(args.out, `${name}.json`);
    if (args.check) {
      const committed = existsSync(path) ? readFileSync(path, "utf8") : null;
      if (committed === text) {
        console.log(`ok ${relative(process.cwd(), path)}`);
        continue;
      }
      stale++;
      if (committed === null) {
        console.error(`STALE ${path}: missing`);
        continue;
      }
      const old = JSON.parse(committed);
      const fields = Object.keys({ ...old, ...artifact })
        .filter((k) => canonicalJson(old[k] ?? null) !== canonicalJson(artifact[k] ?? null))
        .sort();
      console.error(`STALE ${path}: differs in ${fields.join(", ") || "formatting"}`);
    } else {
      mkdirSync(args.out, { recursive: true });
      writeFileSync(path, text);
      const size = (artifact.deployedBytecode.length - 2) / 2;
      console.log(`wrote ${relative(process.cwd(), path)} (runtime ${size} bytes)`);
    }
  }
  if (stale) {
    console.error("rebuild with `node contracts/build.mjs` and commit contracts/build/");
    process.exit(1);
  }
}

main();
