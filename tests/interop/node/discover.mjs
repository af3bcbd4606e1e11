// {issuer, algorithm} -> the server metadata openid-client accepted.
import { configure, main } from './lib.mjs';

await main(async (input) => {
  const config = await configure({ ...input, client_id: 'discovery-only', client_secret: 'unused' });
  return config.serverMetadata();
});
