#!/usr/bin/env node
// CLI: load config → validate → run a verb. Owns the exit codes; knows nothing of chokidar or S3.
import { parseArgs } from 'node:util';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, type Config } from '../config/config.js';
import { checkConfigCommand, fetchCommand, listCommand, uploadFiles, type Out } from './commands.js';
import { Daemon } from '../daemon/daemon.js';
import { EXIT, EXIT_TABLE, type ExitCode } from '../base/exit.js';
import { closeLogger, createLogger, LOG_LEVELS, type LogLevel, type Logger } from '../ops/log.js';
import { redactText, registerEnvSecrets } from '../base/secret.js';
import { configReference } from '../config/reference.js';
import { pruneCommand } from './prune.js';
import { importRke } from './import-rke.js';
import { ServerSetupError } from '../ops/server.js';
import { S3Store } from '../store/s3.js';
import { parseDuration } from '../base/units.js';
import { VERSION } from '../base/version.js';

const HELP = `etcd-backup-agent ${VERSION}: ships every complete, verified etcd snapshot to S3.

Usage: etcd-backup-agent [--config PATH] COMMAND [options]

Commands:
  run                       watch the snapshot directory and ship snapshots (the daemon)
  upload PATH...            verify and ship these files now (same checks and keys as run)
  list [--cluster] [--json] this node's snapshots in S3, newest first (--cluster: every node)
  fetch KEY|--latest --output PATH
                            download a snapshot, check its sha256 and format, write it atomically
  check-config [--offline]  validate the config and reach the bucket
  prune [--dry-run] [--stale-upload-age DURATION]
                            one retention pass with the configured policy; prints what was
                            (or would be) deleted and why every other file was kept
  import-rke FILE [--output-dir DIR] [--bucket NAME]
                            write config.yaml and a 0600 credentials file from the etcd backup
                            settings of an RKE rancher-cluster.yml (default DIR /etc/etcd-backup-agent)
  help config               every configuration key with its default (Markdown)
  --version                 print the version
  --help                    this text

Options:
  --config PATH             config file (default ${DEFAULT_CONFIG_PATH})
  --log-level LEVEL         error, warn, info or debug (overrides log.level)

Exit codes:
${EXIT_TABLE.map(([c, d]) => `  ${String(c).padStart(3)}  ${d}`).join('\n')}
`;

const io: Out = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${redactText(l)}\n`),
};

function fail(code: ExitCode, message: string): ExitCode {
  io.err(message);
  return code;
}

async function main(argv: string[]): Promise<ExitCode> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
        cluster: { type: 'boolean' },
        json: { type: 'boolean' },
        latest: { type: 'boolean' },
        output: { type: 'string', short: 'o' },
        offline: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        'stale-upload-age': { type: 'string' },
        'output-dir': { type: 'string' },
        bucket: { type: 'string' },
      },
    });
  } catch (e) {
    return fail(EXIT.USAGE, `${(e as Error).message}\nsee 'etcd-backup-agent --help'`);
  }
  const { values, positionals } = parsed;
  if (values.version) {
    io.out(VERSION);
    return EXIT.OK;
  }
  const [verb, ...args] = positionals;
  if (verb === 'help' && args[0] === 'config') {
    io.out(configReference());
    return EXIT.OK;
  }
  if (values.help || !verb || verb === 'help') {
    io.out(HELP);
    return values.help || verb === 'help' ? EXIT.OK : EXIT.USAGE;
  }
  const known = ['run', 'upload', 'list', 'fetch', 'check-config', 'prune', 'import-rke'];
  if (!known.includes(verb)) return fail(EXIT.USAGE, `unknown command "${verb}"; commands: ${known.join(', ')}`);
  // import-rke writes a config, so it must not need one
  if (verb === 'import-rke') {
    if (args.length !== 1) return fail(EXIT.USAGE, 'import-rke needs exactly one FILE (the rancher-cluster.yml)');
    return importRke(args[0]!, { outputDir: values['output-dir'], bucket: values.bucket }, io);
  }

  const level = values['log-level'];
  if (level !== undefined && !LOG_LEVELS.includes(level as LogLevel)) return fail(EXIT.USAGE, `--log-level ${level}: use one of ${LOG_LEVELS.join(', ')}`);

  registerEnvSecrets();
  const configPath = values.config ?? process.env.ETCD_BACKUP_AGENT_CONFIG ?? DEFAULT_CONFIG_PATH;
  let cfg: Config;
  try {
    cfg = loadConfig(configPath);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const i of e.issues) io.err(`config error: ${e.file}: ${i.key}: ${i.problem}; ${i.fix}`);
      return EXIT.CONFIG;
    }
    throw e;
  }
  // One-shot commands keep stdout for their output; their log lines go to stderr.
  const log = createLogger((level as LogLevel | undefined) ?? cfg.log.level, verb === 'run' ? process.stdout : process.stderr);
  try {
    return await runVerb(verb, args, values, cfg, log);
  } finally {
    await closeLogger(log);
  }
}

async function runVerb(verb: string, args: string[], values: Record<string, string | boolean | undefined>, cfg: Config, log: Logger): Promise<ExitCode> {
  if (verb === 'run') {
    if (args.length) return fail(EXIT.USAGE, 'run takes no arguments');
    const daemon = new Daemon(cfg, log, { version: VERSION });
    try {
      await daemon.start();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (e instanceof ServerSetupError) {
        io.err(`config error: ${e.message}`);
        log.error('metrics endpoint cannot be set up', { error: e.message });
        return EXIT.CONFIG;
      }
      if (code === 'EADDRINUSE' || code === 'EACCES') {
        log.error('cannot listen for metrics', { listen: cfg.metrics.listen, error: code, fix: 'choose another metrics.listen or stop the other process' });
        return EXIT.UNAVAILABLE;
      }
      throw e;
    }
    return daemon.exited;
  }
  const store = new S3Store(cfg);
  try {
    switch (verb) {
      case 'upload':
        if (!args.length) return fail(EXIT.USAGE, 'upload needs at least one PATH');
        return await uploadFiles(cfg, store, log, args, VERSION, io);
      case 'list':
        return await listCommand(cfg, store, Boolean(values.cluster), Boolean(values.json), io);
      case 'fetch': {
        const output = values.output as string | undefined;
        if (!output) return fail(EXIT.USAGE, 'fetch needs --output PATH');
        if (!values.latest && args.length !== 1) return fail(EXIT.USAGE, 'fetch needs exactly one KEY, or --latest');
        if (values.latest && args.length) return fail(EXIT.USAGE, 'fetch takes either a KEY or --latest, not both');
        return await fetchCommand(cfg, store, args[0], Boolean(values.latest), output, io);
      }
      case 'check-config':
        return await checkConfigCommand(cfg, store, io, { offline: Boolean(values.offline) });
      case 'prune': {
        if (args.length) return fail(EXIT.USAGE, 'prune takes no arguments (the snapshot directory comes from the config)');
        const age = values['stale-upload-age'] as string | undefined;
        const staleUploadAgeMs = age === undefined ? undefined : parseDuration(age);
        if (age !== undefined && staleUploadAgeMs === undefined) return fail(EXIT.USAGE, `--stale-upload-age ${age}: use a duration like 0s, 10m or 24h`);
        return await pruneCommand(cfg, store, log, { dryRun: Boolean(values['dry-run']), staleUploadAgeMs }, io);
      }
      default:
        return EXIT.USAGE;
    }
  } finally {
    store.close();
  }
}

// The SDK's notice about future Node versions is for developers, not for an operator's journal.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (!`${w.name} ${w.message}`.includes('NodeVersionSupportWarning')) process.stderr.write(`${redactText(`warning: ${w.name}: ${w.message}`)}\n`);
});

// Crash output goes through redaction too: a secret must not reach the journal via a stack trace.
process.on('uncaughtException', (e) => {
  process.stderr.write(`${redactText(`fatal: ${e.stack ?? String(e)}`)}\n`);
  process.exit(EXIT.SOFTWARE);
});
process.on('unhandledRejection', (e) => {
  process.stderr.write(`${redactText(`fatal: unhandled rejection: ${(e as Error)?.stack ?? String(e)}`)}\n`);
  process.exit(EXIT.SOFTWARE);
});

// If the work ever stalls with nothing left to wait on, say so instead of exiting 0.
let finished = false;
process.on('beforeExit', () => {
  if (!finished) {
    process.stderr.write('fatal: the command stopped before finishing (internal error)\n');
    process.exit(EXIT.SOFTWARE);
  }
});

main(process.argv.slice(2)).then(
  (code) => {
    finished = true;
    process.exit(code);
  },
  (e) => {
    process.stderr.write(`${redactText(`fatal: ${(e as Error)?.stack ?? String(e)}`)}\n`);
    process.exit(EXIT.SOFTWARE);
  },
);
