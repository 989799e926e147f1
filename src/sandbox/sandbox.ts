/**
 * The reverse-tunnel sandbox on one machine (Envoy's examples/reverse_tunnel without Docker): the
 * demo service, an initiator in front of it and a responder, talking over real TCP on loopback.
 * The initiator and responder run the configs in examples/sandbox/, with only the ports replaced.
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import type { InitiatorConfigInput, ResponderConfigInput } from '../config/schema.ts';
import { startInitiator, type Initiator } from '../initiator/initiator.ts';
import { startResponder, type Responder } from '../responder/responder.ts';
import { deadline, once as runOnce, type CloseOptions } from '../shared/lifecycle.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { startDemoService, type DemoService } from './demo-service.ts';

/** The sandbox's ports (Envoy's docker-compose maps these to the host). 0 picks a free port. */
export interface SandboxPorts {
  readonly initiatorAdmin: number;
  readonly responderAdmin: number;
  readonly tunnel: number;
  readonly egress: number;
  /** The demo service has no fixed port in the sandbox; 0 by default. */
  readonly service: number;
}

export const sandboxDefaultPorts: SandboxPorts = {
  initiatorAdmin: 8888,
  responderAdmin: 8889,
  tunnel: 9000,
  egress: 8085,
  service: 0,
};

const examples = new URL('../../examples/sandbox/', import.meta.url);
const loopback = '127.0.0.1';

/**
 * The example configs with the sandbox's ports filled in: the responder's listeners, and the
 * initiator's admin server, responder host (`tunnel`) and local route (`service`).
 */
export async function sandboxConfigs(
  ports: SandboxPorts,
): Promise<{ initiator: InitiatorConfigInput; responder: ResponderConfigInput }> {
  const read = async (name: string) =>
    parse(await readFile(new URL(name, examples), 'utf8')) as unknown;
  const initiator = (await read('initiator.yaml')) as InitiatorConfigInput;
  const responder = (await read('responder.yaml')) as ResponderConfigInput;
  const [cluster] = initiator.remote_clusters;
  const [route] = initiator.local_routes ?? [];
  const [egress] = responder.egress_listeners;
  if (cluster === undefined || route === undefined || egress === undefined) {
    throw new Error(
      'examples/sandbox/*.yaml lost their remote cluster, local route or egress listener',
    );
  }
  return {
    initiator: {
      ...initiator,
      admin: { address: `${loopback}:${ports.initiatorAdmin}` },
      remote_clusters: [{ ...cluster, hosts: [`${loopback}:${ports.tunnel}`] }],
      local_routes: [{ ...route, target: `http://${loopback}:${ports.service}` }],
    },
    responder: {
      ...responder,
      admin: { address: `${loopback}:${ports.responderAdmin}` },
      tunnel_listener: { ...responder.tunnel_listener, address: `${loopback}:${ports.tunnel}` },
      egress_listeners: [{ ...egress, address: `${loopback}:${ports.egress}` }],
    },
  };
}

export interface Sandbox {
  /** The ports actually bound. */
  readonly ports: SandboxPorts;
  readonly initiator: Initiator;
  readonly responder: Responder;
  /** Resolves true once the initiator's tunnel is registered at the responder, false after `timeoutMs`. */
  tunnelUp(timeoutMs: number): Promise<boolean>;
  close(options?: CloseOptions): Promise<void>;
}

/** Starts the demo service, then the responder, then the initiator that dials it. */
export async function startSandbox(
  ports: SandboxPorts = sandboxDefaultPorts,
  options: { logger?: Logger } = {},
): Promise<Sandbox> {
  const logger = options.logger ?? silentLogger;
  const service: DemoService = await startDemoService({ host: loopback, port: ports.service });
  let responder: Responder | undefined;
  let initiator: Initiator | undefined;
  try {
    const { responder: responderConfig } = await sandboxConfigs(ports);
    responder = await startResponder(responderConfig, {
      logger: logger.child({ role: 'responder' }),
    });
    const { initiator: initiatorConfig } = await sandboxConfigs({
      ...ports,
      tunnel: responder.addresses.tunnel.port,
      service: service.address.port,
    });
    initiator = await startInitiator(initiatorConfig, {
      logger: logger.child({ role: 'initiator' }),
    });
  } catch (error) {
    await initiator?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service.close();
    throw error;
  }
  return new RunningSandbox(service, responder, initiator);
}

class RunningSandbox implements Sandbox {
  readonly ports: SandboxPorts;
  readonly initiator: Initiator;
  readonly responder: Responder;
  readonly #service: DemoService;
  readonly #setup: Promise<unknown>;

  constructor(service: DemoService, responder: Responder, initiator: Initiator) {
    this.#service = service;
    this.responder = responder;
    this.initiator = initiator;
    this.ports = {
      initiatorAdmin: initiator.addresses.admin?.port ?? 0,
      responderAdmin: responder.addresses.admin?.port ?? 0,
      tunnel: responder.addresses.tunnel.port,
      egress: responder.addresses.egress[0]?.port ?? 0,
      service: service.address.port,
    };
    // Dialling has only begun (the connect needs the event loop), so the event is still ahead.
    this.#setup = once(responder, 'tunnel_setup');
    this.#setup.catch(() => {});
  }

  async tunnelUp(timeoutMs: number): Promise<boolean> {
    if (this.responder.tunnels().length > 0) return true;
    let up = false;
    await deadline(
      timeoutMs,
      this.#setup.then(() => (up = true)),
    );
    return up;
  }

  /** Both sides drain at once, so the whole stop takes one grace period at most. */
  readonly close = runOnce(async (options: CloseOptions) => {
    await Promise.all([this.initiator.close(options), this.responder.close(options)]);
    await this.#service.close();
  });
}
