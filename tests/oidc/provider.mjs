// A real OpenID Connect provider for Gatehouse's SSO tests: panva's oidc-provider (npm,
// pinned by package-lock.json), configured from one JSON document.
//
//   node provider.mjs CONFIG.json        (or the JSON in $OIDC_PROVIDER_CONFIG)
//
// Config (every key optional except clients and accounts):
//   port           TCP port on 127.0.0.1 (0 or absent: any free port)
//   issuer         issuer URL (default http(s)://127.0.0.1:PORT)
//   tls            {"cert": PEM file, "key": PEM file}: serve https
//   clients        [{client_id, client_secret, redirect_uris, post_logout_redirect_uris,
//                    id_token_signed_response_alg, token_endpoint_auth_method}]
//   accounts       {"LOGIN": {"password": "...", "sub": "...", "amr": ["pwd", "otp"],
//                    "claims": {"preferred_username": "...", "email": "...",
//                               "email_verified": true, "groups": ["staff"]}}}
//   claimsInIdToken  true: scope claims go into the ID token as well (default false: only
//                    userinfo has them, as oidc-provider's conformIdTokenClaims does)
//   autoConsent    true: no consent page (a first-party client)
//
// Login and consent use oidc-provider's devInteractions pages (forms a browser or a
// scripted HTTP client completes); the login form's password is checked against the
// account here, and the account's `amr` becomes the session's (so ID tokens carry it).
// RP-initiated logout (`end_session_endpoint`) is on. Pages reference no outside resource.
//
// When listening it prints one line to stdout:
//   oidc-provider ready: {"issuer":"...","port":N}
// Errors go to stderr; the process exits non-zero on a bad config.

import { readFileSync } from 'node:fs';
import { createServer as createHttp } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

function fail(message) {
  process.stderr.write(`oidc-provider: ${message}\n`);
  process.exit(2);
}

const raw = process.argv[2] ? readFileSync(process.argv[2], 'utf8') : process.env.OIDC_PROVIDER_CONFIG;
if (!raw) fail('usage: node provider.mjs CONFIG.json (or OIDC_PROVIDER_CONFIG)');
let config;
try {
  config = JSON.parse(raw);
} catch (e) {
  fail(`config is not JSON: ${e.message}`);
}
if (!Array.isArray(config.clients) || config.clients.length === 0) fail('config.clients: give at least one client');
if (!config.accounts || typeof config.accounts !== 'object') fail('config.accounts: give the test accounts');

// Accounts by login name and by subject.
const byLogin = new Map();
const bySub = new Map();
for (const [login, a] of Object.entries(config.accounts)) {
  const account = { login, sub: a.sub ?? login, password: a.password ?? '', amr: a.amr, acr: a.acr, claims: a.claims ?? {} };
  byLogin.set(login, account);
  bySub.set(account.sub, account);
}

// Signing keys, fresh per run: one RSA, one P-256, one Ed25519. Made (and exported as JWK)
// before oidc-provider is loaded: with it loaded, node 20's JWK export hung now and then
// (about one start in five under load); in this order it never did in 60 starts.
function jwk(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}`, use: 'sig', alg };
}
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'RS256'),
  jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
  jwk('ed25519', {}, 'EdDSA'),
];

const { default: Provider } = await import('oidc-provider');

// `amr` comes with the `openid` scope, as most providers send it: oidc-provider puts only
// the claims of the granted scopes into tokens.
const scopeClaims = {
  acr: null,
  sid: null,
  auth_time: null,
  iss: null,
  openid: ['sub', 'amr'],
  profile: ['preferred_username', 'name'],
  email: ['email', 'email_verified'],
  groups: ['groups'],
};

const tls = config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : null;

// Listen first (the port may be 0), then build the provider for the issuer that port gives.
let handler = (_req, res) => { res.statusCode = 503; res.end('starting'); };
const server = tls
  ? createHttps(tls, (req, res) => handler(req, res))
  : createHttp((req, res) => handler(req, res));
server.on('error', (e) => fail(`cannot listen: ${e.message}`));
server.listen(config.port ?? 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = config.issuer ?? `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const provider = build(issuer);
  const callback = provider.callback();
  handler = (req, res) => callback(req, res);
  process.stdout.write(`oidc-provider ready: ${JSON.stringify({ issuer, port })}\n`);
});

function plainPage(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body>${body}</body></html>`;
}

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      ...c,
    })),
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: scopeClaims,
    conformIdTokenClaims: !config.claimsInIdToken,
    scopes: ['openid', 'profile', 'email', 'groups'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource(ctx, form) {
          ctx.body = plainPage('Sign out', `${form}<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
        },
        postLogoutSuccessSource(ctx) {
          ctx.body = plainPage('Signed out', '<p>Signed out.</p>');
        },
      },
    },
    async findAccount(_ctx, sub) {
      const account = bySub.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, ...account.claims };
        },
      };
    },
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      if (!config.autoConsent) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid profile email groups');
      await grant.save();
      return grant;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = plainPage('Error', Object.entries(out).map(([k, v]) => `<p>${k}: ${String(v).replace(/[<>&"]/g, '')}</p>`).join(''));
    },
  });

  // The login form: check the password and give the session the account's amr / acr.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (ctx.method === 'POST' && m) {
      let details;
      try {
        details = await provider.interactionDetails(ctx.req, ctx.res);
      } catch {
        return next();
      }
      if (details.prompt.name === 'login') {
        const body = await new Promise((resolve, reject) => {
          let data = '';
          ctx.req.setEncoding('utf8');
          ctx.req.on('data', (chunk) => {
            data += chunk;
            if (data.length > 16384) reject(new Error('form too large'));
          });
          ctx.req.on('end', () => resolve(data));
          ctx.req.on('error', reject);
        });
        const form = Object.fromEntries(new URLSearchParams(body));
        const account = byLogin.get(form.login);
        if (!account || account.password !== form.password) {
          ctx.status = 401;
          ctx.type = 'html';
          ctx.body = plainPage('Sign-in failed', '<p>invalid login or password</p>');
          return undefined;
        }
        const login = { accountId: account.sub };
        if (account.amr) login.amr = account.amr;
        if (account.acr) login.acr = account.acr;
        await provider.interactionFinished(ctx.req, ctx.res, { login }, { mergeWithLastSubmission: false });
        ctx.respond = false;
        return undefined;
      }
    }
    await next();
    // devInteractions' pages import a web font: keep test pages off the network.
    if (typeof ctx.body === 'string' && ctx.type && ctx.type.includes('html')) {
      ctx.body = ctx.body.replace(/@import url\([^)]*\);?/g, '');
    }
    return undefined;
  });
  return provider;
}
