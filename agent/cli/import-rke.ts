// `import-rke FILE`: writes the config and credentials planned from a rancher-cluster.yml (config/rke-import.ts,
// pure), never over an existing file, and says what to change in RKE and how to restore from the new place.
import { constants } from 'node:fs';
import { access, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { EXIT, type ExitCode } from '../base/exit.js';
import { BACKUP, DEFAULT_IMPORT_DIR, planRkeImport, RkeImportError, type RkeImportPlan } from '../config/rke-import.js';
import { parseConfig } from '../config/parse.js';
import { nodePrefix } from '../store/layout.js';
import { rkeRestoreCommand } from './restore-hints.js';
import type { Out } from './output.js';

async function writeNew(file: string, text: string, mode: number): Promise<void> {
  // O_EXCL: never overwrite, even if the file appears between the check and the write
  const fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.writeFile(text);
    await fh.chmod(mode); // the umask may have narrowed or, with an odd umask, not narrowed enough
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `import-rke FILE [--output-dir DIR] [--bucket NAME]` */
export async function importRke(file: string, opts: { outputDir?: string; bucket?: string }, io: Out): Promise<ExitCode> {
  const outputDir = path.resolve(opts.outputDir ?? DEFAULT_IMPORT_DIR);
  let text: string;
  try {
    if ((await stat(file)).size > 4 * 1024 * 1024) {
      io.err(`${file}: larger than 4 MiB; this is not a rancher-cluster.yml`);
      return EXIT.DATA;
    }
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    io.err(`${file}: ${code === 'ENOENT' ? 'no such file' : `cannot be read (${code})`}; pass the rancher-cluster.yml given to "rke up"`);
    return code === 'ENOENT' ? EXIT.NO_INPUT : EXIT.IO;
  }

  let plan: RkeImportPlan;
  try {
    plan = planRkeImport(text, file, { outputDir, bucket: opts.bucket });
  } catch (e) {
    if (e instanceof RkeImportError) {
      io.err(`import-rke: ${e.message}`);
      return e.exitCode;
    }
    throw e;
  }

  const configPath = path.join(outputDir, 'config.yaml');
  const credentialsPath = path.join(outputDir, 'credentials');
  const targets = plan.credentialsText ? [configPath, credentialsPath] : [configPath];
  try {
    await mkdir(outputDir, { recursive: true, mode: 0o750 });
  } catch (e) {
    io.err(`import-rke: cannot create ${outputDir} (${(e as NodeJS.ErrnoException).code}); pass --output-dir DIR`);
    return EXIT.CANT_CREATE;
  }
  for (const t of targets) {
    if (
      await access(t).then(
        () => true,
        () => false,
      )
    ) {
      io.err(`import-rke: ${t} exists and is never overwritten; move it away or pass --output-dir DIR`);
      return EXIT.CANT_CREATE;
    }
  }
  const written: string[] = [];
  try {
    if (plan.credentialsText) {
      await writeNew(credentialsPath, plan.credentialsText.reveal(), 0o600);
      written.push(credentialsPath);
    }
    await writeNew(configPath, plan.configText, 0o640);
    written.push(configPath);
  } catch (e) {
    // leave nothing half-done: a credentials file without its config is just a stray secret
    for (const w of written) await unlink(w).catch(() => undefined);
    const code = (e as NodeJS.ErrnoException).code;
    io.err(`import-rke: cannot write into ${outputDir} (${code})${code === 'EEXIST' ? ': a file appeared meanwhile' : ''}; pass --output-dir DIR`);
    return EXIT.CANT_CREATE;
  }

  io.out(`imported ${plan.form === 'v0.1' ? 'services.etcd snapshot settings (RKE v0.1)' : BACKUP} from ${file}`);
  io.out(`wrote ${configPath}`);
  if (plan.credentialsText) io.out(`wrote ${credentialsPath} (mode 0600: access_key and secret_key)`);
  for (const s of plan.summary) io.out(`  ${s}`);
  for (const n of plan.notes) io.out(`note: ${n}`);
  for (const w of plan.warnings) io.err(`warning: ${w}`);
  io.out(`next: check it with "etcd-backup-agent --config ${configPath} check-config", start the agent, then in ${path.basename(file)}:`);
  for (const c of plan.rkeChanges) io.out(`  - ${c}`);
  if (plan.rkeChanges.length) io.out('  - run "rke up" to apply it');
  // the agent puts each node's snapshots under <prefix>/<cluster>/<node>: RKE's --folder is that whole path
  let planned;
  try {
    planned = parseConfig(plan.configText, configPath, {});
  } catch {
    return EXIT.OK; // a config still missing its bucket: the restore command follows once it has one
  }
  const folder = nodePrefix({ ...planned, node: 'NODE' }).replace(/\/$/, '');
  io.out(
    `restore with RKE from what the agent uploads (NODE: the etcd node's name, SNAPSHOT: the key's last part without .zip, as "etcd-backup-agent list --cluster" shows):`,
  );
  io.out(`  ${rkeRestoreCommand(planned, { clusterFile: path.basename(file), name: 'SNAPSHOT', folder })}`);
  return EXIT.OK;
}
