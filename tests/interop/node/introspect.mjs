// {issuer, client_id, client_secret, auth, token} -> the RFC 7662 answer.
import * as client from 'openid-client';
import { configure, main } from './lib.mjs';

await main(async (input) => {
  const config = await configure(input);
  return { ...(await client.tokenIntrospection(config, input.token)) };
});
