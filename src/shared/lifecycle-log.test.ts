import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { openLineLog } from './lifecycle-log.ts';
import { Counter } from './stats.ts';

describe('openLineLog', () => {
  it('counts a line written once closing has begun as dropped, instead of throwing', async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-line-log-'));
    try {
      const file = path.join(directory, 'access.log');
      const dropped = new Counter();
      const log = openLineLog(file, dropped);
      log.writeLine('first');
      const closed = log.close();
      log.writeLine('late');
      await closed;
      log.writeLine('later');
      assert.equal(dropped.value, 2);
      assert.equal(await readFile(file, 'utf8'), 'first\n');
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
