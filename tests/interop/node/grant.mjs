// {issuer, client_id, client_secret, auth, algorithm, scope?} -> a client_credentials token.
import * as client from 'openid-client';
import { configure, main } from './lib.mjs';

await main(async (input) => {
  const config = await configure(input);
  const parameters = input.scope ? { scope: input.scope } : {};
  const { access_token, token_type, expires_in, scope } = await client.clientCredentialsGrant(
    config,
    parameters,
  );
  return { access_token, token_type, expires_in, scope };
});
