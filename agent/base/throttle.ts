// Token bucket on what is read and sent, so an operator can keep the agent from competing with etcd for the
// disk and the network. Granted per part: the average rate holds, a part goes at line rate.
export class Throttle {
  private allowance: number;
  private last = Date.now();

  constructor(private readonly bytesPerSecond: number) {
    this.allowance = bytesPerSecond;
  }

  /** Resolves when `bytes` may go; rejects when the signal aborts the wait. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const now = Date.now();
    this.allowance = Math.min(this.bytesPerSecond, this.allowance + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
    this.allowance -= bytes;
    if (this.allowance >= 0) return;
    const waitMs = (-this.allowance / this.bytesPerSecond) * 1000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, waitMs);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
