/** Names of the Envoy extensions revtun reads, and the protobuf types of their typed_config. */

/** Extension names and the protobuf types their typed_config must have. */
export const extension = {
  downstream: {
    name: 'envoy.bootstrap.reverse_tunnel.downstream_socket_interface',
    type: 'envoy.extensions.bootstrap.reverse_tunnel.downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface',
  },
  upstream: {
    name: 'envoy.bootstrap.reverse_tunnel.upstream_socket_interface',
    type: 'envoy.extensions.bootstrap.reverse_tunnel.upstream_socket_interface.v3.UpstreamReverseConnectionSocketInterface',
  },
  reverseTunnel: {
    name: 'envoy.filters.network.reverse_tunnel',
    type: 'envoy.extensions.filters.network.reverse_tunnel.v3.ReverseTunnel',
  },
  hcm: {
    name: 'envoy.filters.network.http_connection_manager',
    type: 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  },
  router: {
    name: 'envoy.filters.http.router',
    type: 'envoy.extensions.filters.http.router.v3.Router',
  },
  lua: { name: 'envoy.filters.http.lua', type: 'envoy.extensions.filters.http.lua.v3.Lua' },
  reverseConnectionCluster: {
    name: 'envoy.clusters.reverse_connection',
    type: 'envoy.extensions.clusters.reverse_connection.v3.ReverseConnectionClusterConfig',
  },
  lifecycleFilter: {
    name: 'envoy.filters.upstream_network.reverse_tunnel_lifecycle',
    type: 'google.protobuf.Empty',
  },
  httpProtocolOptions: {
    name: 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    type: 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
  },
} as const;

/** The HCM's old name, still accepted by Envoy (the sandbox's responder uses it). */
export const legacyHcmName = 'envoy.http_connection_manager';
export const rcResolver = 'envoy.resolvers.reverse_connection';
