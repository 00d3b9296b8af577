#!/usr/bin/env node
// Writes monitoring/prometheus-rule.yaml (a PrometheusRule for the Prometheus Operator / kube-prometheus)
// from monitoring/etcd-backup-agent.rules.yml, so the two never drift: edit the rule file, then run
//   node scripts/gen-prometheus-rule.mjs          (write)
//   node scripts/gen-prometheus-rule.mjs --check  (exit 1 if the manifest is out of date)
// The rule groups are carried over as YAML nodes, comments included, so the manifest keeps the notes
// that say which numbers to change.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Document, parseDocument } from 'yaml';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const RULES_PATH = join(ROOT, 'monitoring/etcd-backup-agent.rules.yml');
export const MANIFEST_PATH = join(ROOT, 'monitoring/prometheus-rule.yaml');

const HEADER = ` Generated from monitoring/etcd-backup-agent.rules.yml by scripts/gen-prometheus-rule.mjs: edit that
 file and run the script, not this one.

 For the Prometheus Operator (kube-prometheus). The Prometheus resource loads only PrometheusRules its
 ruleSelector matches: kube-prometheus selects prometheus=k8s and role=alert-rules (set below);
 kube-prometheus-stack (Helm) selects release=<your release name>, so add that label there.
 The expected snapshot interval and the scrape job name are set in the rules; see their comments.`;

/** The manifest text for a rule file's text. */
export function render(rulesText) {
  const src = parseDocument(rulesText, { prettyErrors: true });
  if (src.errors.length) throw src.errors[0];
  const groups = src.get('groups', true);
  if (!groups) throw new Error('the rule file has no "groups"');
  const out = new Document({
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'etcd-backup-agent',
      labels: {
        'app.kubernetes.io/name': 'etcd-backup-agent',
        'app.kubernetes.io/component': 'alert-rules',
        prometheus: 'k8s',
        role: 'alert-rules',
      },
    },
    spec: {},
  });
  out.setIn(['spec', 'groups'], groups);
  out.commentBefore = HEADER;
  return out.toString({ lineWidth: 0 });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const text = render(readFileSync(RULES_PATH, 'utf8'));
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(MANIFEST_PATH, 'utf8');
    } catch {
      /* missing counts as out of date */
    }
    if (current !== text) {
      process.stderr.write('monitoring/prometheus-rule.yaml is out of date: run node scripts/gen-prometheus-rule.mjs\n');
      process.exit(1);
    }
  } else {
    writeFileSync(MANIFEST_PATH, text);
  }
}
