#!/usr/bin/env node
// Builds a JavaScript Spool plugin into a component with componentize-js's Node API.
//
//   node componentize.mjs SOURCE.js WIT WORLD OUT.wasm [NODE_MODULES_DIR]
//
// The `jco componentize` CLI fails on this kind of machine ("failed to get path metadata"), and
// the API is what it calls anyway. `http` and `fetch-event` are disabled because otherwise the
// component imports `wasi:http`, which Spool never grants. NODE_MODULES_DIR is where
// @bytecodealliance/componentize-js is installed (scripts/build.sh uses target/tools/js); without
// it the usual Node resolution from this file's directory applies (a project's node_modules).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const PACKAGE = '@bytecodealliance/componentize-js';
const [source, wit, world, out, modules] = process.argv.slice(2);
if (!source || !wit || !world || !out) {
  console.error('usage: node componentize.mjs SOURCE.js WIT WORLD OUT.wasm [NODE_MODULES_DIR]');
  process.exit(2);
}

const { componentize } = await import(modules ? await entryIn(modules) : PACKAGE);

const started = Date.now();
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: world,
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
console.error(`built ${out} (${component.length} bytes) in ${((Date.now() - started) / 1000).toFixed(1)} s`);

// The package is ESM-only (its `exports` has no `require` condition), so `createRequire` cannot
// resolve it from another prefix: read its entry point from its package.json instead.
async function entryIn(prefix) {
  const dir = join(resolve(prefix), 'node_modules', PACKAGE);
  const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8'));
  const exp = manifest.exports ?? manifest.main;
  const dot = typeof exp === 'object' && exp['.'] !== undefined ? exp['.'] : exp;
  const file = typeof dot === 'string' ? dot : (dot.import ?? dot.default);
  return pathToFileURL(join(dir, file)).href;
}
