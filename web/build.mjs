// Builds the demo page into dist/: content-hashed assets (served with a year-long cache)
// and index.html pointing at them. The server fills in {{config}} per deployment.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');
const assets = join(dist, 'assets');

const hashed = (name, content) => {
  const digest = createHash('sha256').update(content).digest('hex').slice(0, 12);
  return `${basename(name, extname(name))}-${digest}${extname(name)}`;
};

async function bundle(entry, options) {
  const result = await esbuild.build({
    entryPoints: [join(src, entry)],
    bundle: true,
    minify: true,
    write: false,
    legalComments: 'none',
    target: ['chrome109', 'firefox115', 'safari15.4', 'edge109'],
    logLevel: 'warning',
    ...options,
  });
  return result.outputFiles[0].contents;
}

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const outputs = {
  'app.js': await bundle('main.js', { format: 'iife', platform: 'browser', outfile: 'app.js' }),
  'app.css': await bundle('style.css', { outfile: 'app.css' }),
  'favicon.svg': await readFile(join(src, 'favicon.svg')),
};

const manifest = {};
for (const [name, content] of Object.entries(outputs)) {
  const file = hashed(name, content);
  await writeFile(join(assets, file), content);
  // Precompressed copies: the server picks one by Accept-Encoding, no work per request.
  await writeFile(join(assets, `${file}.gz`), gzipSync(content, { level: 9 }));
  await writeFile(
    join(assets, `${file}.br`),
    brotliCompressSync(content, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
  );
  manifest[name] = `/assets/${file}`;
}

let html = await readFile(join(src, 'index.html'), 'utf8');
for (const [name, url] of Object.entries(manifest)) {
  html = html.replaceAll(`{{${name}}}`, url);
}
const leftover = html.match(/\{\{(?!config\}\})[^}]+\}\}/);
if (leftover) throw new Error(`index.html: unknown template slot ${leftover[0]}`);
await writeFile(join(dist, 'index.html'), html);
await writeFile(join(dist, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);

const sizes = Object.entries(outputs).map(([name, c]) => `${name} ${(c.length / 1024).toFixed(1)} KiB`);
console.log(`web: built dist/ (${sizes.join(', ')})`);
