import { describe, expect, it } from 'vitest';
import { classify, compileRules, globToRegExp, sniffName as sniff } from '../../agent/snapshot/names.js';

describe('classify: every name the producers write', () => {
  const cases: [string, string, string, boolean, string | undefined][] = [
    // name, producer, format, zips, timestamp (ISO)
    ['2024-05-01T12:00:00Z_etcd', 'rke1', 'raw', true, '2024-05-01T12:00:00.000Z'],
    ['2024-05-01T12:00:00Z_etcd.zip', 'rke1', 'zip', true, '2024-05-01T12:00:00.000Z'],
    ['2024-05-01T12-00-00Z_etcd.zip', 'rke1', 'zip', true, '2024-05-01T12:00:00.000Z'],
    ['rke_etcd_snapshot_2024-05-01T12:00:00Z', 'rke1-oneshot', 'raw', true, '2024-05-01T12:00:00.000Z'],
    ['rke_etcd_snapshot_2024-05-01T12:00:00+02:00.zip', 'rke1-oneshot', 'zip', true, '2024-05-01T10:00:00.000Z'],
    ['c-abcde-rl-x1y2z_2024-05-01T12:00:00Z.zip', 'rancher', 'zip', true, '2024-05-01T12:00:00.000Z'],
    ['c-m-4dsp7q2z-rs-ab3cd_2024-05-01T12-00-00Z.zip', 'rancher', 'zip', true, '2024-05-01T12:00:00.000Z'],
    ['etcd-snapshot-server-1-1714564800', 'rke2', 'raw', true, '2024-05-01T12:00:00.000Z'],
    ['etcd-snapshot-ip-10-0-0-1.ec2.internal-1714564800.zip', 'rke2', 'zip', true, '2024-05-01T12:00:00.000Z'],
    ['on-demand-node-a-1714564800', 'rke2', 'raw', true, '2024-05-01T12:00:00.000Z'],
    ['on-demand-node-a-1714564800.zip', 'rke2', 'zip', true, '2024-05-01T12:00:00.000Z'],
    ['snapshot.db', 'etcdctl', 'raw', false, undefined],
    ['upgrade.db', 'etcdctl', 'raw', false, undefined],
    ['upgrade.db.zip', 'etcdctl', 'zip', false, undefined],
  ];
  it.each(cases)('%s → %s %s', (name, producer, format, zips, ts) => {
    const c = classify(name);
    expect(c.kind).toBe('snapshot');
    if (c.kind !== 'snapshot') return;
    expect(c.producer).toBe(producer);
    expect(c.format).toBe(format);
    expect(c.zips).toBe(zips);
    expect(c.base).toBe(name.replace(/\.zip$/, ''));
    expect(c.timestamp?.toISOString()).toBe(ts);
  });

  const ignored: [string, string][] = [
    ['snapshot.db.part', 'partial'],
    ['2024-05-01T12:00:00Z_etcd.part', 'partial'],
    ['pki.bundle.tar.gz', 'pki-bundle'],
    ['cluster.rkestate', 'rkestate'],
    ['2024-05-01T12:00:00Z_etcd.rkestate', 'rkestate'],
    ['.metadata', 'hidden'],
    ['.snapshot.db.swp', 'hidden'],
    ['snapshot.db.tmp', 'temp'],
  ];
  it.each(ignored)('%s is never shipped (%s)', (name, reason) => {
    const c = classify(name, compileRules(['*'], []));
    expect(c).toEqual({ kind: 'ignored', name, reason });
  });

  it('unknown names are left to the content sniffer', () => {
    expect(classify('notes.txt').kind).toBe('unknown');
    expect(classify('my-backup').kind).toBe('unknown');
  });

  it('include patterns add names; exclude patterns win over everything', () => {
    const rules = compileRules(['backup-*', '*.snap'], ['*-old.db', 'backup-skip*']);
    expect(classify('backup-1', rules)).toMatchObject({ kind: 'snapshot', producer: 'custom' });
    expect(classify('x.snap', rules)).toMatchObject({ kind: 'snapshot', producer: 'custom' });
    expect(classify('a-old.db', rules)).toMatchObject({ kind: 'ignored', reason: 'excluded' });
    expect(classify('backup-skip', rules)).toMatchObject({ kind: 'ignored', reason: 'excluded' });
  });
});

describe('globToRegExp', () => {
  it.each([
    ['*.db', 'a.db', true],
    ['*.db', 'a.dbx', false],
    ['snap-??', 'snap-01', true],
    ['snap-??', 'snap-1', false],
    ['[ab]*', 'bcd', true],
    ['[!ab]*', 'bcd', false],
    ['a.b', 'aXb', false],
    ['(x)+', '(x)+', true],
  ])('%s vs %s → %s', (glob, name, want) => {
    expect(globToRegExp(glob).test(name)).toBe(want);
  });
});

describe('sniff', () => {
  it('recognises a bbolt meta page as a raw snapshot', () => {
    const head = Buffer.alloc(4096);
    head.writeUInt16LE(0x04, 8);
    head.writeUInt32LE(0xed0cdaed, 16);
    expect(sniff('whatever', head)).toMatchObject({ producer: 'etcdctl', format: 'raw' });
  });
  it('recognises an RKE zip by its /backup/ entry and an RKE2 zip by its entry name', () => {
    const mk = (entry: string): Buffer => {
      const b = Buffer.alloc(30 + entry.length);
      b.writeUInt32LE(0x04034b50, 0);
      b.writeUInt16LE(entry.length, 26);
      b.write(entry, 30);
      return b;
    };
    expect(sniff('custom.zip', mk('/backup/custom'))).toMatchObject({ format: 'zip', producer: 'rke1-oneshot' });
    expect(sniff('x.zip', mk('x'))).toMatchObject({ format: 'zip' });
    expect(sniff('holiday.zip', mk('photo.jpg'))).toBeUndefined();
  });
  it('rejects text', () => {
    expect(sniff('notes', Buffer.from('hello world '.repeat(20)))).toBeUndefined();
  });
});
