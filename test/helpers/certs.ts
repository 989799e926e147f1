/**
 * Certificates for TLS tests, made fresh for every test run: a CA, a server certificate and a client
 * certificate signed by it, and an unrelated CA with its own server certificate (the "wrong CA").
 *
 * They are made with @peculiar/x509 (a devDependency) on Node's WebCrypto, with ECDSA P-256 keys:
 * pure JavaScript, so `npm test` needs nothing but Node (no `openssl` binary, no root), and P-256
 * keeps generation to a few milliseconds. PEM files are written to a temporary folder, because the
 * configs under test name files (`cert_file`, `ca_file`, …).
 */
import { createHash, KeyObject, webcrypto } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect
// metadata API; this import must come before the library's.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const day = 24 * 60 * 60 * 1000;

export interface Pem {
  readonly cert: string;
  readonly key: string;
}

/** A certificate and key on disk, with the PEM text and the SPKI pin of its public key. */
export interface IssuedFiles extends Pem {
  readonly certFile: string;
  readonly keyFile: string;
  /** base64 SHA-256 of the SubjectPublicKeyInfo (what `spki_pins` holds). */
  readonly spkiPin: string;
}

export interface TestPki {
  readonly dir: string;
  /** The CA that signs `server` and `client`. */
  readonly ca: IssuedFiles;
  /** SANs: DNS `localhost` and `responder.revtun.test`, IP 127.0.0.1 and ::1, a URI. */
  readonly server: IssuedFiles;
  /** SANs: URI `spiffe://tenant-a/cluster-a/node-a`, DNS `node-a`. */
  readonly client: IssuedFiles;
  /** Another CA, and a server certificate it signed with the same SANs as `server`. */
  readonly otherCa: IssuedFiles;
  readonly otherServer: IssuedFiles;
  /**
   * A further client certificate signed by `ca`, written as `<file>.pem`/`<file>.key`, with the
   * given subject common name and SANs (e.g. one whose SAN does not match the claimed ids).
   */
  issueClient(
    file: string,
    commonName: string,
    names: ReadonlyArray<x509.JsonGeneralName>,
  ): Promise<IssuedFiles>;
  /** The same, signed by `otherCa` (a client the responder's client_ca_file does not trust). */
  issueOtherClient(
    file: string,
    commonName: string,
    names: ReadonlyArray<x509.JsonGeneralName>,
  ): Promise<IssuedFiles>;
  /** Removes the folder. */
  remove(): Promise<void>;
}

interface Issuer {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
}

let serial = 1;

function nextSerial(): string {
  serial += 1;
  return serial.toString(16).padStart(2, '0');
}

function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
}

function validity(): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - day), notAfter: new Date(now + 7 * day) };
}

async function makeCa(name: string): Promise<Issuer> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: `CN=${name}`,
    ...validity(),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

async function issue(
  issuer: Issuer,
  commonName: string,
  names: ReadonlyArray<x509.JsonGeneralName>,
): Promise<Issuer> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: nextSerial(),
    subject: `CN=${commonName}`,
    issuer: issuer.cert.subject,
    ...validity(),
    signingKey: issuer.keys.privateKey,
    publicKey: keys.publicKey,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension([...names]),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

async function write(dir: string, name: string, made: Issuer): Promise<IssuedFiles> {
  const cert = made.cert.toString('pem') + '\n';
  const key = KeyObject.from(made.keys.privateKey).export({ type: 'pkcs8', format: 'pem' });
  const certFile = path.join(dir, `${name}.pem`);
  const keyFile = path.join(dir, `${name}.key`);
  await writeFile(certFile, cert);
  await writeFile(keyFile, key, { mode: 0o600 });
  const spki = KeyObject.from(made.keys.publicKey).export({ type: 'spki', format: 'der' });
  const spkiPin = createHash('sha256').update(spki).digest('base64');
  return { cert, key: String(key), certFile, keyFile, spkiPin };
}

const serverNames: x509.JsonGeneralName[] = [
  { type: 'dns', value: 'localhost' },
  { type: 'dns', value: 'responder.revtun.test' },
  { type: 'ip', value: '127.0.0.1' },
  { type: 'ip', value: '::1' },
  { type: 'url', value: 'spiffe://revtun.test/responder' },
];

/** Makes a fresh PKI in a new temporary folder. */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(path.join(tmpdir(), 'revtun-tls-'));
  const ca = await makeCa('revtun test CA');
  const otherCa = await makeCa('revtun other CA');
  const server = await issue(ca, 'responder.revtun.test', serverNames);
  const client = await issue(ca, 'node-a', [
    { type: 'url', value: 'spiffe://tenant-a/cluster-a/node-a' },
    { type: 'dns', value: 'node-a' },
  ]);
  const otherServer = await issue(otherCa, 'responder.revtun.test', serverNames);
  return {
    dir,
    ca: await write(dir, 'ca', ca),
    server: await write(dir, 'server', server),
    client: await write(dir, 'client', client),
    otherCa: await write(dir, 'other-ca', otherCa),
    otherServer: await write(dir, 'other-server', otherServer),
    issueClient: async (file, commonName, names) =>
      write(dir, file, await issue(ca, commonName, names)),
    issueOtherClient: async (file, commonName, names) =>
      write(dir, file, await issue(otherCa, commonName, names)),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
