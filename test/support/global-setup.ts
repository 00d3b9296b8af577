// vitest globalSetup of the integration project: one world (RGW + etcd + Swift) for all files.
// Tests get its dir with inject('worldDir') and attach with readWorldEnv().
// WORLD_DIR=/path: reuse a world already running there (scripts/world/up.sh /path), keep it up.
// KEEP_WORLD=1: keep the temp dir (logs) after stopping.
// AGENT_RUNTIME=release: the agent runs as the release executable (test/support/agent.ts); it is built
// here first, or reused when no input changed.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { AGENT_RUNTIME } from './agent.js';
import { ensureRelease } from './release.js';
import { PROJECT_ROOT, readWorldEnv, startWorld, worldHealthy } from './world.js';

declare module 'vitest' {
  export interface ProvidedContext {
    worldDir: string;
  }
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (AGENT_RUNTIME === 'release') console.log(`[release] ${(await ensureRelease()).trim().split('\n').at(-1)}`);
  const reuse = process.env.WORLD_DIR;
  if (reuse) {
    const world = await readWorldEnv(reuse).catch(() => undefined);
    if (world && (await worldHealthy(world))) {
      console.log(`[world] reusing ${world.dir}`);
      project.provide('worldDir', world.dir);
      return undefined;
    }
    console.log(`[world] WORLD_DIR=${reuse} has no running world; starting a fresh one`);
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), 'world-'));
  const t0 = performance.now();
  // up.sh stops what it started if it fails, so a throw here leaves nothing running
  const world = await startWorld(dir);
  console.log(`[world] ${dir} up in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
  project.provide('worldDir', dir);

  let stopped = false;
  // vitest runs teardown on normal ends and on failures, but not when it is killed:
  // then stop the world synchronously on the way out
  const stopNow = (): void => {
    if (stopped) return;
    stopped = true;
    execFileSync('bash', [path.join(PROJECT_ROOT, 'scripts/world/down.sh'), dir], { stdio: 'ignore' });
    if (!process.env.KEEP_WORLD) rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    stopNow();
    // keep the signal's usual effect unless someone else (vitest) handles it
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  process.once('exit', stopNow);
  for (const sig of signals) process.once(sig, onSignal);

  return async () => {
    process.off('exit', stopNow);
    for (const sig of signals) process.off(sig, onSignal);
    if (!stopped) {
      stopped = true;
      await world.stop();
    }
    if (!process.env.KEEP_WORLD) await rm(dir, { recursive: true, force: true });
  };
}
