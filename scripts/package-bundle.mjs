// Bundles the built agent (dist/agent/cli/main.js) and its dependencies into one CommonJS file: the
// module format a single-executable application starts from on every runtime the release may embed
// (ESM entry points are newer than Node 24), and the one its code cache has covered longest.
// target node22: the oldest runtime NODE_SEA_VERSION may pick.
//
//   node scripts/package-bundle.mjs OUT.cjs VERSION [NOTICES]
//
// NOTICES: a file listing every bundled npm package with its license text, which the MIT and
// Apache licenses ask a binary distribution to carry.
//
// agent/base/version.ts reads package.json next to dist/ at run time; inside the executable there is no
// package.json, so the bundle gets the version as a constant instead.
import { build } from 'esbuild';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const [out, version, notices] = process.argv.slice(2);
if (!out || !version) {
  console.error('usage: node scripts/package-bundle.mjs OUT.cjs VERSION');
  process.exit(64);
}
const root = path.resolve(import.meta.dirname, '..');

const embedVersion = {
  name: 'embed-version',
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]agent[\\/]base[\\/]version\.js$/ }, () => ({
      contents: `export const VERSION = ${JSON.stringify(version)};\n`,
      loader: 'js',
    }));
  },
};

const result = await build({
  entryPoints: [path.join(root, 'dist/agent/cli/main.js')],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node22',
  minify: true,
  // class and function names stay readable in stack traces and error names
  keepNames: true,
  // license texts go to the NOTICES file instead, one per package
  legalComments: 'none',
  // Dependencies' ESM builds (node-cron) read import.meta.url at load time; in CJS it would be
  // undefined and crash. In a SEA, __filename is the executable, which is what they resolve against.
  define: { 'import.meta.url': '__importMetaUrl' },
  banner: { js: 'const __importMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
  plugins: [embedVersion],
  logLevel: 'warning',
  metafile: true,
});

// Any other import.meta property becomes {} in a CJS bundle: fail the build rather than ship it.
if (/\bimport_meta\d*\s*=\s*\{\}/.test(readFileSync(out, 'utf8'))) {
  console.error('package-bundle: a module uses import.meta beyond import.meta.url, which a CommonJS bundle cannot provide');
  process.exit(1);
}
if (notices) {
  // node_modules/<name> or node_modules/@scope/<name>, innermost wins for nested copies
  const dirs = new Set();
  for (const input of Object.keys(result.metafile.inputs)) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) dirs.add(m[1]);
  }
  const parts = [];
  for (const dir of [...dirs].sort()) {
    const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const files = readdirSync(dir)
      .filter((f) => /^(licen[cs]e|copying|notice)/i.test(f))
      .sort();
    const texts = files.map((f) => readFileSync(path.join(dir, f), 'utf8').trim());
    parts.push(`## ${pkg.name}@${pkg.version} (${pkg.license ?? 'see text'})\n\n${texts.join('\n\n') || `License: ${pkg.license}`}\n`);
  }
  writeFileSync(
    notices,
    `# Third-party software bundled into etcd-backup-agent\n\n${dirs.size} npm packages; the Node.js runtime's own notices are in LICENSE.node.\n\n${parts.join('\n')}`,
  );
}
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`bundle: ${path.relative(process.cwd(), out)} (${(bytes / 1024 / 1024).toFixed(1)} MiB, version ${version})`);
