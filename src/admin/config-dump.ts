/**
 * `GET /config_dump`: a role's effective config (after defaults), as JSON, with every inline secret
 * replaced by `"[redacted]"` (Envoy's /config_dump masks secrets the same way). Paths to files that
 * hold secrets (`token_file`, `bearer_token_file`, `value_file`, `key_file`, `jwks_file` …) stay:
 * they tell an operator where to look and reveal nothing by themselves.
 *
 * What counts as a secret, from `src/config/schema.ts`:
 * - the value of a handshake header given inline (`handshake.headers[].value`): it is usually an
 *   `authorization` header;
 * - any key naming a token, secret, password, passphrase or private key;
 * - the SHA-256 digests of node and caller tokens (`auth.tokens[].sha256`, `token_sha256`): a hash
 *   of a short or guessable token can be brute-forced, so it is no one's business either.
 * The rule works on key names, so a secret key added to the schema later is masked if it is named
 * like one; `config-dump` tests check the known ones.
 */

export const redacted = '[redacted]';

/** Keys whose value is a secret (matched on whole `_`-separated words of the key). */
const secretWord = /(^|_)(token|secret|secrets|password|passphrase|sha256|private)(_|$)/;

/** Keys that name a secret's place or carrier, not the secret: file paths and header names. */
const notSecret = /(_file|_files|_header|_headers|_path)$/;

/** The config with inline secrets masked, as a plain JSON-ready value (the input is not changed). */
export function maskSecrets(config: unknown): unknown {
  return mask(config, []);
}

function mask(value: unknown, path: readonly string[]): unknown {
  if (Array.isArray(value)) return value.map((item) => mask(item, path));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    out[key] = isSecret(key, path) && item !== undefined ? redacted : mask(item, [...path, key]);
  }
  return out;
}

function isSecret(key: string, path: readonly string[]): boolean {
  // handshake.headers[].value: the header's inline value (arrays add no path element).
  if (key === 'value' && path.at(-1) === 'headers' && path.at(-2) === 'handshake') return true;
  return secretWord.test(key) && !notSecret.test(key);
}
