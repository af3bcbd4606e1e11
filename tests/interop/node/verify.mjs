// {jwks_uri, token, issuer, audience} -> {verified: true, header, payload}, or
// {verified: false, code} when jose refuses the token (a refusal is an answer, not an error).
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { main } from './lib.mjs';

const REFUSALS = new Set([
  'ERR_JWT_CLAIM_VALIDATION_FAILED',
  'ERR_JWT_EXPIRED',
  'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
  'ERR_JWKS_NO_MATCHING_KEY',
  'ERR_JOSE_ALG_NOT_ALLOWED',
]);

await main(async ({ jwks_uri, token, issuer, audience }) => {
  const keys = createRemoteJWKSet(new URL(jwks_uri));
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, { issuer, audience });
    return { verified: true, header: protectedHeader, payload };
  } catch (error) {
    // Refusals of the token itself; a JWKS that cannot be fetched stays an error.
    if (REFUSALS.has(error.code)) {
      return { verified: false, code: error.code, claim: error.claim };
    }
    throw error;
  }
});
