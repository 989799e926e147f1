import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { StatsRegistry } from '../shared/stats.ts';
import { escapeLabelValue, metricName, renderStatsPrometheus } from './stats-prometheus.ts';

describe('renderStatsPrometheus', () => {
  it('writes HELP and TYPE once per family, then its samples, under envoy_ names', () => {
    const stats = new StatsRegistry();
    stats.counter('reverse_tunnel.handshake.accepted').inc(3);
    stats.gauge('sp.worker_0.total_nodes').set(2);
    assert.equal(
      renderStatsPrometheus(stats.snapshot()),
      '# HELP envoy_reverse_tunnel_handshake_accepted revtun counter reverse_tunnel.handshake.accepted\n' +
        '# TYPE envoy_reverse_tunnel_handshake_accepted counter\n' +
        'envoy_reverse_tunnel_handshake_accepted 3\n' +
        '# HELP envoy_sp_worker_0_total_nodes revtun gauge sp.worker_0.total_nodes\n' +
        '# TYPE envoy_sp_worker_0_total_nodes gauge\n' +
        'envoy_sp_worker_0_total_nodes 2\n',
    );
  });

  it('makes stats with tags one family with labels', () => {
    const stats = new StatsRegistry();
    for (const node of ['edge.1', 'edge.2']) {
      stats.gauge(`sp.nodes.${node}`, { name: 'sp.nodes', labels: { node } }).inc();
    }
    const families = parsePrometheusTextFormat(renderStatsPrometheus(stats.snapshot()));
    assert.deepEqual(families, [
      {
        name: 'envoy_sp_nodes',
        help: 'revtun gauge sp.nodes by node',
        type: 'GAUGE',
        metrics: [
          { value: '1', labels: { node: 'edge.1' } },
          { value: '1', labels: { node: 'edge.2' } },
        ],
      },
    ]);
  });

  it('escapes backslash, double quote and line feed in label values', () => {
    assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
    const stats = new StatsRegistry();
    stats.gauge('x', { name: 'odd', labels: { id: 'a\\b"c\nd' } }).set(1);
    const [family] = parsePrometheusTextFormat(renderStatsPrometheus(stats.snapshot()));
    assert.deepEqual(family?.metrics[0]?.labels, { id: 'a\\b"c\nd' });
  });

  it('turns every character outside [a-zA-Z0-9_:] into _', () => {
    assert.equal(
      metricName('cluster.my-cluster.upstream_rq_total'),
      'envoy_cluster_my_cluster_upstream_rq_total',
    );
    assert.equal(metricName('tcp.ssh.x:y/z'), 'envoy_tcp_ssh_x:y_z');
  });

  it('writes a histogram as cumulative buckets, +Inf, _sum and _count', () => {
    const stats = new StatsRegistry();
    const histogram = stats.histogram('sp.ping_rtt');
    for (const ms of [0.2, 3, 7000000]) histogram.observe(ms);
    const text = renderStatsPrometheus(stats.snapshot());
    assert.match(text, /^# TYPE envoy_sp_ping_rtt histogram$/m);
    assert.match(text, /^envoy_sp_ping_rtt_bucket\{le="0.5"\} 1$/m);
    assert.match(text, /^envoy_sp_ping_rtt_bucket\{le="5"\} 2$/m);
    assert.match(text, /^envoy_sp_ping_rtt_bucket\{le="3600000"\} 2$/m);
    assert.match(text, /^envoy_sp_ping_rtt_bucket\{le="\+Inf"\} 3$/m);
    assert.match(text, /^envoy_sp_ping_rtt_count 3$/m);
    const [family] = parsePrometheusTextFormat(text);
    assert.equal(family?.type, 'HISTOGRAM');
    assert.equal(family?.metrics[0]?.count, '3');
    assert.equal(family?.metrics[0]?.sum, '7000003.2');
  });

  it('keeps the first of two stats that would make one family of two types or one series twice', () => {
    const stats = new StatsRegistry();
    stats.counter('a.b').inc(1);
    stats.gauge('a_b').set(2);
    stats.counter('c-d').inc(3);
    stats.counter('c.d').inc(4);
    const text = renderStatsPrometheus(stats.snapshot());
    assert.equal((text.match(/^# TYPE envoy_a_b /gm) ?? []).length, 1);
    assert.match(text, /^envoy_a_b 1$/m);
    assert.doesNotMatch(text, /^envoy_a_b 2$/m);
    assert.equal((text.match(/^envoy_c_d /gm) ?? []).length, 1);
    parsePrometheusTextFormat(text);
  });

  it('keeps only the stats whose full name matches the filter', () => {
    const stats = new StatsRegistry();
    stats.gauge('sp.nodes.n1', { name: 'sp.nodes', labels: { node: 'n1' } }).set(1);
    stats.gauge('sp.nodes.n2', { name: 'sp.nodes', labels: { node: 'n2' } }).set(1);
    assert.equal(
      renderStatsPrometheus(stats.snapshot(), /n2$/).split('\n').at(-2),
      'envoy_sp_nodes{node="n2"} 1',
    );
  });
});
