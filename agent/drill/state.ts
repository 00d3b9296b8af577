// What the last restore drill found, kept in the state directory (`drill.json`) so that a restart does not
// reset the verification gauges: the drill runs once a day, and without this file an agent restarted an hour
// after a failed drill would show no failure, and one restarted after a good drill no verified backup, until
// the next run. The file belongs to one S3 location; a config that points elsewhere starts afresh.
import { readFile } from 'node:fs/promises';
import { replaceFile } from '../base/files.js';
import { join } from 'node:path';
import type { VerifyFailure } from '../ops/metrics.js';
import { sameLocation, type LedgerLocation } from '../store/ledger.js';

export const DRILL_STATE_FILE = 'drill.json';

export interface DrillState {
  location: LedgerLocation;
  /** when the last drill ran to the end (ms) */
  lastRunMs: number;
  /** snapshot time of the newest object a drill found sound (ms; 0: none yet) */
  lastVerifiedMs: number;
  /** objects the last run found unsound */
  failed: { key: string; reason: VerifyFailure }[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** The state of earlier drills at this location, or undefined (none, unreadable, another location). */
export async function loadDrillState(stateDir: string, location: LedgerLocation): Promise<DrillState | undefined> {
  let text: string;
  try {
    text = await readFile(join(stateDir, DRILL_STATE_FILE), 'utf8');
  } catch {
    return undefined;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(v) || !isRecord(v.location) || !isTime(v.lastRunMs) || !isTime(v.lastVerifiedMs) || !Array.isArray(v.failed)) return undefined;
  const loc = v.location as unknown as LedgerLocation;
  if (!sameLocation(loc, location)) return undefined;
  const failed = v.failed.filter((f): f is { key: string; reason: VerifyFailure } => isRecord(f) && typeof f.key === 'string' && typeof f.reason === 'string');
  return { location, lastRunMs: v.lastRunMs, lastVerifiedMs: v.lastVerifiedMs, failed };
}

/** Atomic replace (base/files.ts replaceFile), like the ledger. */
export async function saveDrillState(stateDir: string, s: DrillState): Promise<void> {
  await replaceFile(join(stateDir, DRILL_STATE_FILE), `${JSON.stringify(s, null, 1)}\n`);
}
