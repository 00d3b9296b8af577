// The crypto room's throughput, one core: our age encryptor and decryptor against the age CLI (Go, Debian
// package `age`) and the age-encryption npm package (pure JS), plus plain OpenSSL ChaCha20-Poly1305 unchunked.
// Not a test: it prints figures. Run: npx tsc -p tsconfig.bench.json && node dist/bench/scripts/bench/crypto.js
// Options: --gib N (plaintext size, default 1), --npm-mib N (the npm package's sample, default 64), --rounds N.
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createCipheriv, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, openSync, readSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import * as typage from 'age-encryption';
import { ageDecryptor, ageEncryptor, CHUNK_SIZE, generateAgeIdentity, parseIdentities, parseRecipient } from '../../agent/crypto/age.js';

const MiB = 1 << 20;
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SIZE = arg('gib', 1) * 1024 * MiB;
const NPM = arg('npm-mib', 64) * MiB;
const ROUNDS = arg('rounds', 3);
const PART = 8 * MiB;

interface Sample {
  wall: number;
  cpu: number;
}

/** Runs f and returns wall and this process's CPU seconds. */
async function measure(f: () => Promise<void> | void): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

/** A child's wall and CPU seconds, from GNU time. */
function measureChild(cmd: string[]): Sample {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', ...cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed (GNU time and the Debian age package are needed): ${r.stderr}`);
  const out = r.stderr.toString();
  const [wall, user, sys] = out.trim().split('\n').pop()!.split(' ').map(Number) as [number, number, number];
  return { wall, cpu: user + sys };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function report(name: string, samples: Sample[], bytes: number, note = ''): void {
  const gib = bytes / (1024 * MiB);
  const wall = median(samples.map((s) => s.wall));
  const cpu = median(samples.map((s) => s.cpu));
  console.log(`| ${name} | ${(bytes / MiB / wall).toFixed(0)} | ${(cpu / gib).toFixed(2)} | ${note} |`);
}

function readPart(fd: number, buf: Buffer, offset: number): Buffer {
  const n = Math.min(buf.length, SIZE - offset);
  let got = 0;
  while (got < n) got += readSync(fd, buf, got, n - got, offset + got);
  return buf.subarray(0, n);
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-crypto-'));
  try {
    const plainFile = join(dir, 'plain');
    const ctr = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
    const zeros = Buffer.alloc(PART);
    const w = createWriteStream(plainFile);
    for (let o = 0; o < SIZE; o += PART) if (!w.write(ctr.update(zeros))) await once(w, 'drain');
    w.end();
    await finished(w);
    const id = generateAgeIdentity();
    const keyFile = join(dir, 'key.txt');
    await writeFile(keyFile, `${id.identity}\n`);
    const recipients = [parseRecipient(id.recipient)];
    const ours: Sample[] = [];
    const oursRead: Sample[] = [];
    const oursRange: Sample[] = [];
    const ceiling: Sample[] = [];
    const cli: Sample[] = [];
    const oursDec: Sample[] = [];
    const cliDec: Sample[] = [];
    const ctFile = join(dir, 'ct.age');
    const inBuf = Buffer.alloc(PART);
    for (let round = 0; round < ROUNDS; round++) {
      // ours: read each 8 MiB part from the file, encrypt it into one reused part buffer
      const enc = ageEncryptor(recipients, SIZE);
      const outBuf = Buffer.alloc(enc.partCiphertextSize(0, PART));
      let encCpu = 0;
      let encWall = 0;
      const fd = openSync(plainFile, 'r');
      oursRead.push(
        await measure(() => {
          for (let o = 0; o < SIZE; o += PART) {
            const p = readPart(fd, inBuf, o);
            const c0 = process.cpuUsage();
            const t0 = performance.now();
            enc.encryptPartInto(outBuf, p, o);
            encWall += (performance.now() - t0) / 1000;
            const c = process.cpuUsage(c0);
            encCpu += (c.user + c.system) / 1e6;
          }
        }),
      );
      closeSync(fd);
      ours.push({ wall: encWall, cpu: encCpu });
      // ours, cut by a fixed ciphertext part size as lib-storage cuts a body
      const fdr = openSync(plainFile, 'r');
      const spanBuf = Buffer.alloc(PART + 2 * CHUNK_SIZE);
      oursRange.push(
        await measure(() => {
          for (let start = 0; start < enc.ciphertextSize; start += PART) {
            const end = Math.min(enc.ciphertextSize, start + PART);
            const need = enc.plaintextFor(start, end);
            let got = 0;
            while (got < need.length) got += readSync(fdr, spanBuf, got, need.length - got, need.offset + got);
            enc.encryptRange(outBuf, start, end, spanBuf.subarray(0, need.length));
          }
        }),
      );
      closeSync(fdr);
      // plain OpenSSL: one cipher over the same bytes, no chunking
      const fd2 = openSync(plainFile, 'r');
      ceiling.push(
        await measure(() => {
          const c = createCipheriv('chacha20-poly1305', randomBytes(32), Buffer.alloc(12), { authTagLength: 16 });
          for (let o = 0; o < SIZE; o += PART) c.update(readPart(fd2, inBuf, o));
          c.final();
        }),
      );
      closeSync(fd2);
      cli.push(measureChild(['age', '-r', id.recipient, '-o', '/dev/null', plainFile]));
      if (round === 0) execFileSync('age', ['-r', id.recipient, '-o', ctFile, plainFile]);
      const ids = parseIdentities(`${id.identity}\n`, 'key');
      oursDec.push(
        await measure(() => pipeline(createReadStream(ctFile, { highWaterMark: MiB }), ageDecryptor(ids), new Writable({ write: (_c, _e, cb) => cb() }))),
      );
      cliDec.push(measureChild(['age', '-d', '-i', keyFile, '-o', '/dev/null', ctFile]));
    }
    const sample = Buffer.alloc(NPM);
    const fd3 = openSync(plainFile, 'r');
    readSync(fd3, sample, 0, NPM, 0);
    closeSync(fd3);
    const npm: Sample[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      npm.push(
        await measure(async () => {
          const e = new typage.Encrypter();
          e.addRecipient(id.recipient);
          await e.encrypt(sample);
        }),
      );
    }
    console.log(
      `plaintext ${SIZE / MiB} MiB, parts of ${PART / MiB} MiB, median of ${ROUNDS}; node ${process.version}; load average ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}`,
    );
    console.log('| encrypt / decrypt | MiB/s | CPU s/GiB | note |');
    console.log('| --- | --- | --- | --- |');
    report('ours encrypt (encryptPartInto only)', ours, SIZE, 'time inside encryptPartInto');
    report('ours encrypt, reading the file', oursRead, SIZE, 'readSync 8 MiB parts + encrypt, no output I/O');
    report('ours encryptRange, reading the file', oursRange, SIZE, 'fixed 8 MiB ciphertext parts (lib-storage style)');
    report('OpenSSL ChaCha20-Poly1305, one cipher', ceiling, SIZE, 'same reads, one update() per 8 MiB (no chunking; allocates each output)');
    report('age CLI encrypt', cli, SIZE, '`age -r … -o /dev/null`');
    report(`age-encryption (npm) encrypt`, npm, NPM, `measured on ${NPM / MiB} MiB in memory, per GiB extrapolated`);
    report('ours decrypt (Transform)', oursDec, SIZE, 'file → ageDecryptor → discard');
    report('age CLI decrypt', cliDec, SIZE, '`age -d -o /dev/null`');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
