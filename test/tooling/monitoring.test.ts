// The alert rules, their promtool unit tests, the PrometheusRule manifest and the Grafana dashboard,
// checked against each other and against the metrics the agent really exports.
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Metrics } from '../../agent/ops/metrics.js';
import { render } from '../../scripts/gen-prometheus-rule.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MONITORING = path.join(ROOT, 'monitoring');
const RULES = path.join(MONITORING, 'etcd-backup-agent.rules.yml');
const TESTS = readdirSync(path.join(MONITORING, 'tests'))
  .filter((f) => f.endsWith('.yml'))
  .map((f) => path.join(MONITORING, 'tests', f));
const DOCS = readFileSync(path.join(ROOT, 'docs/metrics.md'), 'utf8');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rulesText = readFileSync(RULES, 'utf8');
const groups = (parse(rulesText) as { groups: { name: string; rules: Rule[] }[] }).groups;
const rules = groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));

// Series Prometheus makes itself rather than scraping them from the agent.
const PROMETHEUS_OWN = new Set(['up', 'ALERTS']);

const run = promisify(execFile);

async function promtool(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run('promtool', args, { cwd: ROOT, maxBuffer: 16 << 20 });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { code?: number | string; stdout?: string; stderr?: string };
    if (err.code === 'ENOENT') {
      throw new Error('promtool not found: install the Debian package "prometheus" (scripts/install-deps.sh does); CI runs these tests', { cause: e });
    }
    return { code: typeof err.code === 'number' ? err.code : 1, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

/** Every metric name the agent's registry exposes, as Prometheus will store them. */
async function exportedNames(): Promise<Set<string>> {
  const m = new Metrics('0.0.0-test');
  const names = new Set<string>();
  for (const metric of await m.registry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (String(metric.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(metric.name + s);
  }
  return names;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'inf', 'nan']);

/** Metric names a PromQL expression reads (functions, keywords, labels, numbers and variables left out). */
function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ');
  const out: string[] = [];
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const before = s[m.index - 1];
    if (before && /[0-9.]/.test(before)) continue; // 1e12, 6h
    if (
      s
        .slice(m.index + m[0].length)
        .trimStart()
        .startsWith('(')
    )
      continue; // a function
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    out.push(m[0]);
  }
  return out;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; datasource?: { uid: string } }[];
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(path.join(MONITORING, 'grafana-dashboard.json'), 'utf8')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
};
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);

interface PromtoolTest {
  name: string;
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts: unknown[] }[];
}
const promtoolTests = TESTS.flatMap((f) => (parse(readFileSync(f, 'utf8')) as { tests: PromtoolTest[] }).tests);

describe('metric name extraction (used by the checks below)', () => {
  it.each([
    [
      'time() - etcdbackup_last_upload_success_timestamp_seconds{job=~"$job"} > scalar(etcdbackup:stale_threshold:seconds)',
      ['etcdbackup_last_upload_success_timestamp_seconds', 'etcdbackup:stale_threshold:seconds'],
    ],
    ['sum by (instance, reason) (increase(etcdbackup_upload_failures_total{reason!="x"}[1h])) > 0', ['etcdbackup_upload_failures_total']],
    ['increase(a_total[30m]) > 0 and ignoring(reason) b > 1e12', ['a_total', 'b']],
    ['histogram_quantile(0.95, sum(rate(h_bucket[$__rate_interval])) by (le))', ['h_bucket']],
    ['ALERTS{alertname=~"EtcdBackup.*|x", alertstate="firing"}', ['ALERTS']],
  ])('%s', (expr, names) => {
    expect(metricNames(expr).sort()).toEqual([...names].sort());
  });
});

describe('alert rules', () => {
  it('promtool check rules accepts the rule file', async () => {
    const r = await promtool(['check', 'rules', RULES]);
    expect(r.out).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(r.code, r.out).toBe(0);
  });

  it('promtool test rules: every unit test passes', { timeout: 180_000 }, async () => {
    expect(TESTS.length).toBeGreaterThan(0);
    const r = await promtool(['test', 'rules', ...TESTS]);
    expect(r.code, r.out).toBe(0);
    expect(r.out.match(/SUCCESS/g)).toHaveLength(TESTS.length);
  });

  it('every alert has a severity, a summary, a description and a runbook section that exists', () => {
    expect(alerts.length).toBeGreaterThanOrEqual(8);
    for (const a of alerts) {
      expect(['warning', 'critical'], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.description, a.alert).toBeTruthy();
      const anchor = a.alert!.toLowerCase();
      expect(a.annotations?.runbook_url, a.alert).toMatch(new RegExp(`docs/metrics\\.md#${anchor}$`));
      expect(DOCS, `docs/metrics.md needs a "### ${a.alert}" runbook section`).toMatch(new RegExp(`^### ${a.alert}$`, 'm'));
    }
  });

  it('the expected interval is one documented number (12 h by default)', () => {
    const interval = rules.find((r) => r.record === 'etcdbackup:expected_snapshot_interval:seconds');
    expect(interval?.expr).toBe('vector(12 * 3600)');
    expect(rules.find((r) => r.alert === 'EtcdBackupStale')?.expr).toContain('etcdbackup:stale_threshold:seconds');
    expect(DOCS).toContain('etcdbackup:expected_snapshot_interval:seconds');
  });

  it('the drill interval is one documented number (daily, as verify.schedule by default), and the not-verified threshold derives from it', () => {
    expect(rules.find((r) => r.record === 'etcdbackup:expected_verify_interval:seconds')?.expr).toBe('vector(24 * 3600)');
    const threshold = rules.find((r) => r.record === 'etcdbackup:not_verified_threshold:seconds')?.expr;
    expect(threshold).toContain('etcdbackup:expected_verify_interval:seconds');
    expect(threshold).toContain('etcdbackup:expected_snapshot_interval:seconds');
    expect(rules.find((r) => r.alert === 'EtcdBackupNotVerified')?.expr).toContain('etcdbackup:not_verified_threshold:seconds');
    expect(DOCS).toContain('etcdbackup:expected_verify_interval:seconds');
  });

  it('every alert has a promtool case where it fires and one where it stays silent', () => {
    for (const a of alerts) {
      const cases = promtoolTests.flatMap((t) => t.alert_rule_test ?? []).filter((c) => c.alertname === a.alert);
      expect(
        cases.some((c) => c.exp_alerts.length > 0),
        `${a.alert} never fires in monitoring/tests`,
      ).toBe(true);
      expect(
        cases.some((c) => c.exp_alerts.length === 0),
        `${a.alert} is never checked silent in monitoring/tests`,
      ).toBe(true);
    }
  });

  it('the restart and no-new-snapshot scenarios check every alert', () => {
    const scenario = (needle: string): Map<string, number> => {
      const t = promtoolTests.find((x) => x.name.includes(needle));
      expect(t, `a promtool test named "...${needle}..."`).toBeDefined();
      const last = new Map<string, number>();
      for (const c of t!.alert_rule_test ?? []) last.set(c.alertname, c.exp_alerts.length);
      return last;
    };
    const restart = scenario('restart followed by a fresh successful upload');
    for (const a of alerts) expect(restart.get(a.alert!), `${a.alert} after the restart`).toBe(0);
    const nothingNew = scenario('no new snapshot produced');
    for (const a of alerts) expect(nothingNew.get(a.alert!), a.alert).toBe(a.alert === 'EtcdSnapshotProductionStopped' ? 1 : 0);
    const pending = scenario('shipping stopped');
    expect(pending.get('EtcdBackupStale')).toBe(1);
    expect(pending.get('EtcdBackupPendingTooLong')).toBe(1);
  });

  it('names only metrics the agent exports (or its own recording rules)', async () => {
    const exported = await exportedNames();
    for (const r of rules) {
      for (const name of metricNames(r.expr)) {
        const known = exported.has(name) || recorded.has(name) || PROMETHEUS_OWN.has(name);
        expect(known, `${r.alert ?? r.record}: ${name} is not exported by the agent`).toBe(true);
      }
    }
  });
});

describe('PrometheusRule manifest', () => {
  it('is generated from the rule file and up to date', () => {
    const manifest = readFileSync(path.join(MONITORING, 'prometheus-rule.yaml'), 'utf8');
    expect(manifest === render(rulesText), 'monitoring/prometheus-rule.yaml is out of date: run node scripts/gen-prometheus-rule.mjs').toBe(true);
    const doc = parse(manifest) as { apiVersion: string; kind: string; metadata: { name: string }; spec: { groups: unknown } };
    expect(doc.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(doc.kind).toBe('PrometheusRule');
    expect(doc.metadata.name).toBe('etcd-backup-agent');
    expect(doc.spec.groups).toEqual(groups);
  });
});

describe('Grafana dashboard', () => {
  it('parses, has unique panel ids, and fits the 24-column grid', () => {
    expect(dashboard.uid).toBe('etcd-backup-agent');
    const ids = allPanels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of allPanels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
  });

  it('queries the data source chosen in the dashboard, never a fixed one', () => {
    expect(dashboard.templating.list.find((v) => v.name === 'datasource')?.type).toBe('datasource');
    for (const p of allPanels.filter((x) => x.type !== 'row')) {
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      for (const t of p.targets ?? []) expect(t.datasource?.uid ?? '${datasource}', p.title).toBe('${datasource}');
    }
  });

  it('shows freshness, the drill (verified vs shipped, revision), pending, failures, throughput, duration, disk use and rejections', () => {
    const exprs = allPanels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    for (const m of [
      'etcdbackup_last_upload_success_timestamp_seconds',
      'etcdbackup_last_verified_timestamp_seconds',
      'etcdbackup:not_verified_threshold:seconds',
      'etcdbackup_last_snapshot_revision',
      'etcdbackup_last_verify_failed_objects',
      'etcdbackup_verify_failures_total',
      'etcdbackup_snapshots_pending',
      'etcdbackup_upload_failures_total',
      'etcdbackup_upload_bytes_total',
      'etcdbackup_upload_duration_seconds_bucket',
      'etcdbackup_local_snapshots_bytes',
      'etcdbackup_snapshots_rejected_total',
    ]) {
      expect(exprs).toContain(m);
    }
  });

  it('names only metrics the agent exports (or the rules record)', async () => {
    const exported = await exportedNames();
    const queries: [string, string][] = [];
    for (const p of allPanels) for (const t of p.targets ?? []) queries.push([p.title, t.expr]);
    for (const v of dashboard.templating.list) {
      if (v.type !== 'query') continue;
      const q = typeof v.query === 'string' ? v.query : v.query.query;
      // label_values(metric{...}, label): only the first argument is a metric
      const lv = /^label_values\(\s*([^,]+),/.exec(q);
      queries.push([`variable ${v.name}`, lv ? lv[1]! : q]);
    }
    expect(queries.length).toBeGreaterThan(20);
    for (const [where, expr] of queries) {
      const names = metricNames(expr);
      expect(names.length, `${where}: ${expr} reads no metric`).toBeGreaterThan(0);
      for (const name of names) {
        const known = exported.has(name) || recorded.has(name) || PROMETHEUS_OWN.has(name);
        expect(known, `${where}: ${name} is not exported by the agent`).toBe(true);
      }
    }
  });
});

describe('docs/metrics.md', () => {
  it('describes every metric the agent exports under its own prefix', async () => {
    for (const name of await exportedNames()) {
      if (!name.startsWith('etcdbackup_') || /_(bucket|sum|count)$/.test(name)) continue;
      expect(DOCS, `docs/metrics.md does not mention ${name}`).toContain(`\`${name}\``);
    }
  });
});
