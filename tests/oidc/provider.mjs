// A real OpenID Connect provider for tests/login.rs: panva's `oidc-provider` (certified by the
// OpenID Foundation), configured with one confidential client and a fixed account store.
//
//   node tests/oidc/provider.mjs
//
// Environment: CLIENT_ID, CLIENT_SECRET, REDIRECT_URI (the client's one redirect URI) and
// TOKEN_AUTH (its token endpoint auth method, default client_secret_basic). It listens on a
// free loopback port and prints one line, `ready <issuer>`, once it serves; it exits when its
// stdin closes (the test that started it is gone).
//
// Logging in: the library's development interactions (a login form that takes any account name
// and password, then a consent form). Only the accounts below exist: the ID token (RS256, with
// the authorization request's nonce) carries `preferred_username` and `groups` when the `groups`
// scope is asked for. Access tokens can be revoked at `POST /token/revocation`.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const ACCOUNTS = {
  alice: { preferred_username: 'alice', groups: ['myorg', '/myorg/ops'] },
  carol: { preferred_username: 'carol', groups: ['myorg', 'myorg/admins'] },
  mallory: { preferred_username: 'mallory', groups: ['elsewhere'] },
};

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'rs1', use: 'sig', alg: 'RS256' };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: env('CLIENT_ID'),
      client_secret: env('CLIENT_SECRET'),
      redirect_uris: [env('REDIRECT_URI')],
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: env('TOKEN_AUTH', 'client_secret_basic'),
    }],
    jwks: { keys: [signing] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', 'profile', 'groups'],
    claims: { profile: ['preferred_username'], groups: ['groups'] },
    // Scope claims in the ID token too (as Keycloak and Dex put groups there), not only at the
    // user info endpoint.
    conformIdTokenClaims: false,
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...account }; } };
    },
    // Token revocation (RFC 7009, `POST /token/revocation`): the test revokes a user's access
    // token as a person would by logging out at the provider.
    features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
    pkce: { required: () => true },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`ready ${issuer}`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
