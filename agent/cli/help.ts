// The `--help` text: every verb with its options, and the exit-code table (from base/exit.ts).
import { EXIT_TABLE } from '../base/exit.js';
import { VERSION } from '../base/version.js';
import { DEFAULT_CONFIG_PATH } from '../config/keys.js';

export const VERBS = ['run', 'upload', 'list', 'fetch', 'verify', 'status', 'check-config', 'prune', 'import-rke'];

export const HELP = `etcd-backup-agent ${VERSION}: ships every complete, verified etcd snapshot to S3.

Usage: etcd-backup-agent [--config PATH] COMMAND [options]

Commands:
  run                       watch the snapshot directory and ship snapshots (the daemon)
  upload PATH... [--quiet]  verify and ship these files now (same checks and keys as run)
  list [--cluster] [--json] this node's snapshots in S3, newest first by snapshot time
                            (--cluster: every node), and the command that restores the newest
  fetch KEY|--latest --output PATH [--force] [--identity FILE] [--allowed-signers FILE]
        [--encrypted] [--allow-unverified] [--quiet]
                            download a snapshot, decrypt it (age identity file; or the
                            ETCD_BACKUP_AGENT_IDENTITY_FILE variable), check its sha256, size,
                            signatures and format, then put it at PATH (a new file; --force
                            replaces a regular file, never anything else)
  verify [KEY...] [--latest] [--all] [--cluster] [--json] [--restore] [--identity FILE]
         [--allowed-signers FILE]
                            stream objects back from S3 (nothing written to disk) and check
                            size, sha256, zip, every bbolt page; --restore also runs
                            etcdutl/etcdctl snapshot restore in a temporary directory
  status [--json]           what the agent on this node is doing: each local snapshot and its
                            state, last upload, prune and drill, S3 reachability, what the
                            next retention pass would delete (from the running daemon if any)
  check-config [--offline]  validate the config and ask S3 what the first upload would meet
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
