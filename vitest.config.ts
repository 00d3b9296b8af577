import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// The reliability suite's security file greps everything the other files captured, so it runs last.
class SecurityLast extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const last = (f: TestSpecification): boolean => /reliability[\\/]security\.test\.ts$/.test(f.moduleId);
    return [...sorted.filter((f) => !last(f)), ...sorted.filter(last)];
  }
}

export default defineConfig({
  test: {
    sequence: { sequencer: SecurityLast },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        // checks that run external tools (promtool, systemd-analyze): kept apart so "unit" means fast
        test: {
          name: 'tooling',
          include: ['test/tooling/**/*.test.ts'],
          environment: 'node',
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          // one RGW + etcd + Swift for the whole project; files share it, so one at a time
          globalSetup: ['test/support/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          name: 'reliability',
          include: ['test/reliability/**/*.test.ts'],
          environment: 'node',
          // the mode, the seed and the results first (its timestamps then cover the world's start), then the world
          globalSetup: ['test/reliability/global-setup.ts', 'test/support/global-setup.ts'],
          fileParallelism: false,
          // faults are scenarios that last: outages of minutes, dozens of kills, a GiB snapshot in the long pass
          testTimeout: 1_800_000,
          hookTimeout: 600_000,
        },
      },
      {
        test: {
          name: 'system',
          include: ['test/system/**/*.test.ts'],
          environment: 'node',
          // the unit under a real systemd in systemd-nspawn, against the same world (RGW + etcd)
          globalSetup: ['test/support/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 300_000,
          // the first run builds the Debian root with debootstrap (minutes); later runs reuse it
          hookTimeout: 900_000,
        },
      },
    ],
  },
});
