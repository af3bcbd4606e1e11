// {issuer, client_id, client_secret, auth, token} -> {revoked: true} once RFC 7009 answered 200.
import * as client from 'openid-client';
import { configure, main } from './lib.mjs';

await main(async (input) => {
  const config = await configure(input);
  await client.tokenRevocation(config, input.token);
  return { revoked: true };
});
