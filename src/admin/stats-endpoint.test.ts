import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StatsRegistry } from '../shared/stats.ts';
import { answerStats } from './stats-endpoint.ts';

const stats = new StatsRegistry();
stats.counter('reverse_tunnel.handshake.accepted').inc(2);
stats.histogram('reverse_tunnel.handshake_time').observe(7);
const answer = (path: string) => answerStats(new URL(path, 'http://admin'), () => stats.snapshot());

describe('answerStats', () => {
  it('picks the rendering from the path and format=, with its content type', () => {
    assert.match(answer('/stats').contentType, /^text\/plain; charset=utf-8$/);
    assert.equal(answer('/stats?format=json').contentType, 'application/json');
    for (const path of ['/stats/prometheus', '/stats?format=prometheus']) {
      const prometheus = answer(path);
      assert.equal(prometheus.contentType, 'text/plain; version=0.0.4; charset=utf-8');
      assert.match(prometheus.body, /^envoy_reverse_tunnel_handshake_accepted 2$/m);
    }
  });

  it('lists nothing with hidden=only, in every format', () => {
    assert.equal(answer('/stats?hidden=only').body, '');
    assert.equal(answer('/stats/prometheus?hidden=only').body, '');
    assert.deepEqual(JSON.parse(answer('/stats?format=json&hidden=only').body), { stats: [] });
  });

  it('answers 400 with the reason to a bad format, histogram_buckets, filter or parameter', () => {
    for (const [path, reason] of [
      ['/stats?format=xml', /^format must be json, prometheus or text, not "xml"/],
      ['/stats?histogram_buckets=disjoint', /^histogram_buckets must be summary or cumulative/],
      ['/stats/prometheus?filter=(', /^filter is not a valid regular expression/],
      [`/stats?filter=${'a'.repeat(1001)}`, /^filter is longer than 1000 characters/],
      ['/stats?usedonly', /^unknown \/stats parameter "usedonly"/],
    ] as const) {
      const reply = answer(path);
      assert.equal(reply.status, 400, path);
      assert.match(reply.body, reason, path);
    }
  });

  it('shows histograms as buckets with histogram_buckets=cumulative', () => {
    assert.match(
      answer('/stats?histogram_buckets=cumulative&filter=time').body,
      /^reverse_tunnel\.handshake_time: B0\.5\(nan,0\) B1\(nan,0\) B5\(nan,0\) B10\(nan,1\) /,
    );
  });
});
