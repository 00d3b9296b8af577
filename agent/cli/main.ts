#!/usr/bin/env node
// The command line: load config → validate → complete → run a verb. Owns the exit codes; knows nothing of
// chokidar or the SDK.
import { accessSync, constants as fsc } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { classifyError, describeError, exitCodeFor } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { redactText, registerEnvSecrets } from '../base/secret.js';
import { VERSION } from '../base/version.js';
import { DEFAULT_CONFIG_PATH, LOG_LEVELS, type Config, type LogLevel } from '../config/keys.js';
import { loadConfig } from '../config/load.js';
import { ConfigError, issueLines } from '../config/parse.js';
import { configReference } from '../config/reference.js';
import { sealingFrom, type Sealing } from '../crypto/seal.js';
import { closeLogger, createLogger, type Logger } from '../ops/log.js';
import { proxyDecision } from '../store/client.js';
import { S3Store } from '../store/s3.js';
import { checkConfigCommand } from './check-config.js';
import { fetchCommand } from './fetch.js';
import { HELP, VERBS } from './help.js';
import { importRke } from './import-rke.js';
import { listCommand } from './list.js';
import { processOut as io } from './output.js';
import { pruneCommand } from './prune.js';
import { runCommand } from './run.js';
import { statusCommand } from './status.js';
import { uploadCommand } from './upload.js';
import { verifyCommand } from './verify.js';
import { deepCheck } from '../snapshot/deep.js';
import { parseDuration } from '../base/units.js';

function fail(code: ExitCode, message: string): ExitCode {
  io.err(message);
  return code;
}

const SEALING_VERBS = new Set(['run', 'upload', 'check-config']);

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
  cluster: { type: 'boolean' },
  json: { type: 'boolean' },
  latest: { type: 'boolean' },
  all: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  force: { type: 'boolean' },
  'allow-unverified': { type: 'boolean' },
  identity: { type: 'string', short: 'i' },
  'allowed-signers': { type: 'string' },
  encrypted: { type: 'boolean' },
  restore: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  offline: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'stale-upload-age': { type: 'string' },
  'output-dir': { type: 'string' },
  bucket: { type: 'string' },
} as const;

/**
 * Where one-shot commands find S3 keys. Run from a shell, they lack what the unit hands the daemon
 * (LoadCredential= of /etc/etcd-backup-agent/credentials as AWS_SHARED_CREDENTIALS_FILE): when nothing else
 * names credentials, the file beside the config is what the unit would use.
 */
export function credentialSource(cfg: Config, configPath: string, env: NodeJS.ProcessEnv): { cfg: Config; from: string } {
  if (cfg.s3.credentialsFile) return { cfg, from: `s3.credentialsFile ${cfg.s3.credentialsFile}` };
  if (env.AWS_ACCESS_KEY_ID) return { cfg, from: 'AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment' };
  if (env.AWS_SHARED_CREDENTIALS_FILE) return { cfg, from: `AWS_SHARED_CREDENTIALS_FILE ${env.AWS_SHARED_CREDENTIALS_FILE}` };
  const unitFile = join(dirname(configPath), 'credentials');
  const readable = (p: string): boolean => {
    try {
      accessSync(p, fsc.R_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (readable(unitFile))
    return {
      cfg: { ...cfg, s3: { ...cfg.s3, credentialsFile: unitFile } },
      from: `${unitFile} (the file the systemd unit hands to the agent with LoadCredential=)`,
    };
  const home = env.HOME ? join(env.HOME, '.aws', 'credentials') : undefined;
  if (home && readable(home))
    return {
      cfg,
      from: `${home} (the AWS default chain${cfg.s3.profile ? `, profile ${cfg.s3.profile}` : env.AWS_PROFILE ? `, profile ${env.AWS_PROFILE}` : ''})`,
    };
  if (env.AWS_WEB_IDENTITY_TOKEN_FILE) return { cfg, from: `web identity (AWS_WEB_IDENTITY_TOKEN_FILE ${env.AWS_WEB_IDENTITY_TOKEN_FILE})` };
  if (env.AWS_CONTAINER_CREDENTIALS_FULL_URI || env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)
    return { cfg, from: 'the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*)' };
  const imds = env.AWS_EC2_METADATA_DISABLED === 'true' ? '' : '; only an instance role (instance metadata) could still supply them';
  return { cfg, from: `none found: no s3.credentialsFile, no AWS_ACCESS_KEY_ID or AWS_SHARED_CREDENTIALS_FILE, no ${unitFile}, no ~/.aws/credentials${imds}` };
}

async function main(argv: string[]): Promise<ExitCode> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
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
  if (!VERBS.includes(verb)) return fail(EXIT.USAGE, `unknown command "${verb}"; commands: ${VERBS.join(', ')}`);
  // import-rke writes a config, so it must not need one
  if (verb === 'import-rke') {
    if (args.length !== 1 || !args[0]) return fail(EXIT.USAGE, 'import-rke needs exactly one FILE (the rancher-cluster.yml)');
    return importRke(args[0], { outputDir: values['output-dir'], bucket: values.bucket }, io);
  }
  const level = values['log-level'];
  if (level !== undefined && !LOG_LEVELS.includes(level as LogLevel)) return fail(EXIT.USAGE, `--log-level ${level}: use one of ${LOG_LEVELS.join(', ')}`);
  const usage = checkUsage(verb, args, values);
  if (usage) return fail(EXIT.USAGE, usage);

  registerEnvSecrets();
  const configPath = values.config ?? process.env.ETCD_BACKUP_AGENT_CONFIG ?? DEFAULT_CONFIG_PATH;
  let cfg: Config;
  let sealing: Sealing | undefined;
  try {
    // Only the verbs that upload need the sealing keys: a restore host reads with its own identity, and the
    // etcd hosts' signing key and recipients file need not exist there.
    const seals = SEALING_VERBS.has(verb);
    cfg = loadConfig(configPath, process.env, (key) => seals || !/^(signing|encryption)\./.test(key));
    if (seals) sealing = sealingFrom(cfg, configPath);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const line of issueLines(e.file, e.issues)) io.err(`config error: ${line}`);
      return EXIT.CONFIG;
    }
    throw e;
  }
  try {
    // a proxy from the environment is part of the configuration: an unusable one stops here, not mid-upload
    proxyDecision(cfg);
  } catch (e) {
    io.err(`config error: ${(e as Error).message}`);
    return EXIT.CONFIG;
  }
  // One-shot commands keep stdout for their output; their log lines go to stderr.
  const log = createLogger((level as LogLevel | undefined) ?? cfg.log.level, verb === 'run' ? process.stdout : process.stderr);
  try {
    return await runVerb(verb, args, values, cfg, configPath, sealing, log);
  } finally {
    await closeLogger(log);
  }
}

type Values = ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: typeof OPTIONS }>>['values'];

/** Wrong command lines are told apart before anything is loaded. */
function checkUsage(verb: string, args: string[], v: Values): string | undefined {
  switch (verb) {
    case 'run':
      return args.length ? 'run takes no arguments' : undefined;
    case 'upload':
      return !args.length ? 'upload needs at least one PATH' : args.some((a) => a === '') ? 'upload: an empty PATH' : undefined;
    case 'fetch':
      if (!v.output) return 'fetch needs --output PATH';
      if (v.latest && args.length) return 'fetch takes either a KEY or --latest, not both';
      if (!v.latest && (args.length !== 1 || !args[0])) return 'fetch needs exactly one non-empty KEY, or --latest';
      if (v.encrypted && v.identity) return 'fetch takes --identity (decrypt) or --encrypted (keep the ciphertext), not both';
      return undefined;
    case 'verify':
      if (args.some((a) => a === '')) return 'verify: an empty KEY';
      if (args.length && (v.latest || v.all)) return 'verify takes KEYs, --latest or --all, not several';
      return undefined;
    case 'prune': {
      if (args.length) return 'prune takes no arguments (the snapshot directory comes from the config)';
      const age = v['stale-upload-age'];
      return age !== undefined && parseDuration(age) === undefined ? `--stale-upload-age ${age}: use a duration like 0s, 10m or 24h` : undefined;
    }
    default:
      return args.length && verb !== 'upload' ? `${verb} takes no arguments` : undefined;
  }
}

async function runVerb(
  verb: string,
  args: string[],
  values: Values,
  loaded: Config,
  configPath: string,
  sealing: Sealing | undefined,
  log: Logger,
): Promise<ExitCode> {
  const deep = loaded.verify.beforeUpload ? deepCheck : undefined;
  if (verb === 'run') return runCommand(loaded, log, { version: VERSION, ...(sealing ? { sealing } : {}), ...(deep ? { deep } : {}) }, io);
  const { cfg, from } = credentialSource(loaded, configPath, process.env);
  const store = new S3Store(cfg);
  try {
    switch (verb) {
      case 'upload':
        return await uploadCommand(
          cfg,
          store,
          log,
          args,
          { version: VERSION, ...(sealing ? { sealing } : {}), ...(deep ? { deep } : {}), quiet: Boolean(values.quiet) },
          io,
        );
      case 'list':
        return await listCommand(cfg, store, Boolean(values.cluster), Boolean(values.json), io);
      case 'fetch':
        return await fetchCommand(
          cfg,
          store,
          {
            key: args[0],
            latest: Boolean(values.latest),
            output: values.output!,
            force: Boolean(values.force),
            allowUnverified: Boolean(values['allow-unverified']),
            identityFile: values.identity,
            allowedSigners: values['allowed-signers'],
            encrypted: Boolean(values.encrypted),
            quiet: Boolean(values.quiet),
          },
          io,
        );
      case 'verify':
        return await verifyCommand(
          cfg,
          store,
          {
            keys: args,
            latest: Boolean(values.latest),
            all: Boolean(values.all),
            cluster: Boolean(values.cluster),
            json: Boolean(values.json),
            restore: Boolean(values.restore),
            identityFile: values.identity,
            allowedSigners: values['allowed-signers'],
            quiet: Boolean(values.quiet),
          },
          io,
        );
      case 'check-config':
        return await checkConfigCommand(cfg, store, io, { offline: Boolean(values.offline), ...(sealing ? { sealing } : {}), credentialsFrom: from });
      case 'prune': {
        const age = values['stale-upload-age'];
        return await pruneCommand(
          cfg,
          store,
          log,
          { dryRun: Boolean(values['dry-run']), staleUploadAgeMs: age === undefined ? undefined : parseDuration(age) },
          io,
        );
      }
      case 'status':
        return await statusCommand(cfg, store, { json: Boolean(values.json) }, io);
      default:
        return EXIT.USAGE;
    }
  } catch (err) {
    // a failure no verb expected: still one line that says whose fault it was
    io.err(`${verb} failed: ${describeError(err, { location: store.location })}`);
    return exitCodeFor(classifyError(err));
  } finally {
    store.close();
  }
}

/** Process-wide hooks, set when the command line runs (never when a module is imported). */
function installProcessHooks(): { finished: () => void } {
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
  let done = false;
  process.on('beforeExit', () => {
    if (!done) {
      process.stderr.write('fatal: the command stopped before finishing (internal error)\n');
      process.exit(EXIT.SOFTWARE);
    }
  });
  return { finished: () => (done = true) };
}

const hooks = installProcessHooks();
main(process.argv.slice(2)).then(
  (code) => {
    hooks.finished();
    process.exit(code);
  },
  (e) => {
    process.stderr.write(`${redactText(`fatal: ${(e as Error)?.stack ?? String(e)}`)}\n`);
    process.exit(EXIT.SOFTWARE);
  },
);
