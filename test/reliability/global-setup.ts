// vitest globalSetup of the reliability project (after the world's own): picks the mode and the seed,
// prints the seed so a run can be replayed, and starts a fresh results directory for the report.
//   RELIABILITY_MODE=ci (default) | long
//   RELIABILITY_SEED=N   replay the random choices of an earlier run
import { randomInt } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { PROJECT_ROOT } from '../support/world.js';

declare module 'vitest' {
  export interface ProvidedContext {
    reliabilitySeed: number;
    reliabilityMode: 'ci' | 'long';
  }
}

export const RESULTS_DIR = path.join(PROJECT_ROOT, 'test/reliability/.results');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const mode = process.env.RELIABILITY_MODE === 'long' ? 'long' : 'ci';
  if (process.env.RELIABILITY_MODE && !['ci', 'long'].includes(process.env.RELIABILITY_MODE)) {
    throw new Error(`RELIABILITY_MODE=${process.env.RELIABILITY_MODE}: use ci or long`);
  }
  const given = process.env.RELIABILITY_SEED;
  if (given !== undefined && !/^\d+$/.test(given)) throw new Error(`RELIABILITY_SEED=${given}: use a whole number`);
  const seed = given !== undefined ? Number(given) % 2 ** 32 : randomInt(2 ** 32 - 1);
  console.log(`[reliability] mode=${mode} seed=${seed} (replay: RELIABILITY_MODE=${mode} RELIABILITY_SEED=${seed})`);
  project.provide('reliabilitySeed', seed);
  project.provide('reliabilityMode', mode);

  await rm(RESULTS_DIR, { recursive: true, force: true });
  await mkdir(path.join(RESULTS_DIR, 'captured'), { recursive: true });
  const started = new Date();
  const run = { mode, seed, startedAt: started.toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length };
  await writeFile(path.join(RESULTS_DIR, 'run.json'), JSON.stringify(run, null, 1));
  return async () => {
    const finished = new Date();
    await writeFile(
      path.join(RESULTS_DIR, 'run.json'),
      JSON.stringify({ ...run, finishedAt: finished.toISOString(), seconds: Math.round((finished.getTime() - started.getTime()) / 1000) }, null, 1),
    );
  };
}
