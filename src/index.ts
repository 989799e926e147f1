/** revtun's public API: start an initiator or a responder, load and validate configs. */
export {
  startInitiator,
  Initiator,
  type InitiatorAddresses,
  type InitiatorEvents,
} from './initiator/initiator.ts';
export {
  startResponder,
  Responder,
  type ResponderAddresses,
  type ResponderEvents,
} from './responder/responder.ts';
export {
  loadConfigFile,
  parseConfigText,
  validateInitiatorConfig,
  validateResponderConfig,
  ConfigError,
  type ConfigProblem,
} from './config/load.ts';
export {
  translateEnvoyBootstrap,
  loadEnvoyBootstrapFile,
  type EnvoyBootstrapTranslation,
} from './config/envoy-bootstrap.ts';
export type {
  InitiatorConfig,
  InitiatorConfigInput,
  ResponderConfig,
  ResponderConfigInput,
} from './config/schema.ts';
export { RevtunError, type ErrorCode } from './shared/errors.ts';
export type { StartOptions, CloseOptions } from './shared/lifecycle.ts';
export type { StatSnapshot } from './shared/stats.ts';
export type { HostPort } from './shared/address.ts';
export { parseRcAddress, type RcAddress } from './protocol/rc-address.ts';
export { startDemoService, type DemoService } from './sandbox/demo-service.ts';
