import { describe, expect, it } from 'vitest';
import { classifyError } from '../../agent/store/s3.js';

// smithy's node-http-handler renames socket errors; the reason label must still say what happened
describe('classifyError', () => {
  it.each([
    [{ name: 'TimeoutError', code: 'ECONNRESET', message: 'read ECONNRESET' }, 'network'],
    [{ name: 'TimeoutError', code: 'EPIPE', message: 'write EPIPE' }, 'network'],
    [{ name: 'TimeoutError', code: 'ETIMEDOUT', message: 'a request has exceeded the configured 2000 ms requestTimeout.' }, 'timeout'],
    [{ name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:1' }, 'network'],
    [{ name: 'SlowDown', message: 'Please reduce your request rate.', $metadata: { httpStatusCode: 503 } }, 'throttled'],
  ])('%o is %s', (err, reason) => {
    expect(classifyError(Object.assign(new Error(err.message), err))).toBe(reason);
  });
});
