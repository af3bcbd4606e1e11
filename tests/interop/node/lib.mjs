// Shared by the scripts here: JSON in on stdin, one JSON document out on stdout, and
// openid-client configured from discovery as a relying party would configure it.
import * as client from 'openid-client';

async function readInput() {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  return JSON.parse(text);
}

/** Run `body` on the JSON input and print its answer; any error exits 1 with its name. */
export async function main(body) {
  try {
    const answer = await body(await readInput());
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  } catch (error) {
    const { name, code, message } = error;
    process.stdout.write(`${JSON.stringify({ error: { name, code, message } })}\n`);
    process.exitCode = 1;
  }
}

/**
 * Discovery of `issuer` (OpenID Connect discovery, or RFC 8414 with algorithm "oauth2"), for a
 * confidential client authenticating with client_secret_basic or client_secret_post.
 * Plain http is allowed: the tests run on loopback.
 */
export function configure({ issuer, client_id, client_secret, auth = 'basic', algorithm = 'oidc' }) {
  const method = auth === 'post'
    ? client.ClientSecretPost(client_secret)
    : client.ClientSecretBasic(client_secret);
  return client.discovery(new URL(issuer), client_id, undefined, method, {
    algorithm,
    execute: [client.allowInsecureRequests],
  });
}
