/**
 * TLS settings of the tunnel, loaded from the PEM files a config names: the responder's tunnel
 * listener (TLS server) and an initiator's remote cluster (TLS client). Files are read once, when
 * the role starts; an unreadable file or a certificate and key that do not load stop the start
 * with an error naming the config key and the file, never a failure at the first connection.
 *
 * Both sides offer ALPN `h2` and `http/1.1`, as Envoy's reverse-tunnel docs recommend (protocol
 * reference §6 "ALPN"); the handshake is HTTP/1.1 text whichever is chosen.
 */
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls, { type PeerCertificate, type SecureContext } from 'node:tls';
import { describeError, RevtunError } from './errors.ts';

export const tunnelAlpnProtocols = ['h2', 'http/1.1'];

type TlsVersion = 'TLSv1.2' | 'TLSv1.3';

export interface ServerTlsFiles {
  readonly cert_file: string;
  readonly key_file: string;
  readonly min_version: TlsVersion;
  readonly client_ca_file?: string | undefined;
}

export interface ClientTlsFiles {
  readonly ca_file?: string | undefined;
  readonly server_name?: string | undefined;
  readonly cert_file?: string | undefined;
  readonly key_file?: string | undefined;
  readonly spki_pins?: readonly string[] | undefined;
  readonly min_version: TlsVersion;
}

/** A loaded TLS server: the PEM contents, checked to load, for `tls.createServer`. */
export interface ServerTls {
  readonly options: tls.SecureContextOptions;
  /** A client certificate is required and must chain to client_ca_file. */
  readonly requireClientCertificate: boolean;
}

/** A loaded TLS client for one remote cluster. */
export interface ClientTls {
  /**
   * `tls.connect` options for a host (SNI, checks, secure context). `name` is the configured name
   * when `host` is an address the initiator resolved itself: SNI and the certificate check use it,
   * the connection goes to `host`. Default: `host`.
   */
  connectOptions(host: string, port: number, name?: string): tls.ConnectionOptions;
}

/** Reads one PEM file of a config key, as ERR_CONFIG_READ naming both. */
async function readPem(key: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    throw new RevtunError(
      'ERR_CONFIG_READ',
      `cannot read ${key} ${file}: ${describeError(error)}`,
      {
        cause: error,
      },
    );
  }
}

function secureContext(key: string, options: tls.SecureContextOptions): SecureContext {
  try {
    return tls.createSecureContext(options);
  } catch (error) {
    throw new RevtunError(
      'ERR_CONFIG_INVALID',
      `${key}: the PEM files do not load as a TLS certificate, key and CA: ${describeError(error)}`,
      { cause: error },
    );
  }
}

/** Loads `tunnel_listener.tls` (`key` is the config path, for messages). */
export async function loadServerTls(files: ServerTlsFiles, key: string): Promise<ServerTls> {
  const [cert, privateKey, ca] = await Promise.all([
    readPem(`${key}.cert_file`, files.cert_file),
    readPem(`${key}.key_file`, files.key_file),
    files.client_ca_file === undefined
      ? undefined
      : readPem(`${key}.client_ca_file`, files.client_ca_file),
  ]);
  const options: tls.SecureContextOptions = {
    cert,
    key: privateKey,
    minVersion: files.min_version,
    ...(ca === undefined ? {} : { ca }),
  };
  secureContext(key, options);
  return { options, requireClientCertificate: ca !== undefined };
}

/** Loads `remote_clusters[].tls` (`key` is the config path, for messages). */
export async function loadClientTls(files: ClientTlsFiles, key: string): Promise<ClientTls> {
  const [ca, cert, privateKey] = await Promise.all([
    files.ca_file === undefined ? undefined : readPem(`${key}.ca_file`, files.ca_file),
    files.cert_file === undefined ? undefined : readPem(`${key}.cert_file`, files.cert_file),
    files.key_file === undefined ? undefined : readPem(`${key}.key_file`, files.key_file),
  ]);
  const context = secureContext(key, {
    minVersion: files.min_version,
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(privateKey === undefined ? {} : { key: privateKey }),
  });
  const pins = files.spki_pins === undefined ? undefined : new Set(files.spki_pins);
  return {
    connectOptions: (host, port, name = host) => {
      // SNI carries a name, never an address (RFC 6066 §3); the certificate is still checked
      // against the address's IP SANs then. Node checks the identity against `servername` when
      // it is set, so a resolved address is checked against the name it was resolved from.
      const serverName = files.server_name ?? (net.isIP(name) === 0 ? name : undefined);
      return {
        host,
        port,
        secureContext: context,
        // Stated, so that NODE_TLS_REJECT_UNAUTHORIZED=0 cannot turn the checks off.
        rejectUnauthorized: true,
        minVersion: files.min_version,
        ALPNProtocols: tunnelAlpnProtocols,
        ...(serverName === undefined ? {} : { servername: serverName }),
        checkServerIdentity: (hostname, certificate) => {
          const mismatch = tls.checkServerIdentity(files.server_name ?? hostname, certificate);
          if (mismatch !== undefined) return mismatch;
          if (pins === undefined) return undefined;
          const pin = spkiPin(certificate);
          if (pins.has(pin)) return undefined;
          return Object.assign(
            new Error(`the responder's public key (SPKI pin ${pin}) is not in spki_pins`),
            { code: 'ERR_SPKI_PIN_MISMATCH' },
          );
        },
      };
    },
  };
}

/** The base64 SHA-256 of a certificate's SubjectPublicKeyInfo (`spki_pins` form). */
export function spkiPin(certificate: PeerCertificate): string {
  const spki = new crypto.X509Certificate(certificate.raw).publicKey.export({
    type: 'spki',
    format: 'der',
  });
  return crypto.createHash('sha256').update(spki).digest('base64');
}
