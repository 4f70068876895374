// Start a local Unleash server for development and the flag tests.
//
// Run by ensure-unleash.sh, which installs unleash-server into UNLEASH_HOME and
// creates the database first. Everything comes from the environment:
//
//   UNLEASH_HOME            folder holding node_modules/unleash-server   (required)
//   UNLEASH_HOST / _PORT    where to listen                              127.0.0.1 / 4242
//   UNLEASH_DB_NAME         PostgreSQL database                          unleash_test
//   UNLEASH_DB_HOST / _PORT / _USER / _PASSWORD                          127.0.0.1 / 5432 / postgres / ""
//   UNLEASH_ADMIN_TOKEN     admin API token created at start             *:*.ws-migration-admin-token
//   UNLEASH_CLIENT_TOKEN    backend (client) API token created at start  *:development.ws-migration-client-token
//   UNLEASH_ADMIN_USER / _PASSWORD  admin login, created with the database   admin / unleash4all
//
// Nothing here reaches outside 127.0.0.1: the version check and telemetry are off.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = process.env;
const home = env.UNLEASH_HOME;
if (!home) {
    console.error('start-unleash: UNLEASH_HOME is not set');
    process.exit(2);
}

// Unleash reads these itself and would otherwise phone home.
process.env.SEND_TELEMETRY = 'false';
process.env.CHECK_VERSION = 'false';
process.env.SCARF_ANALYTICS = 'false';
process.env.TZ = 'UTC';

const entry = path.join(home, 'node_modules', 'unleash-server', 'dist', 'lib', 'server-impl.js');
const unleash = await import(pathToFileURL(entry).href);

const adminToken = env.UNLEASH_ADMIN_TOKEN || '*:*.ws-migration-admin-token';
const clientToken = env.UNLEASH_CLIENT_TOKEN || '*:development.ws-migration-client-token';

function tokenOf(secret, type, name) {
    const [projects, rest] = secret.split(':');
    const environment = rest.split('.')[0];
    return { secret, type, environment, projects: [projects], tokenName: name };
}

try {
    await unleash.start({
        db: {
            host: env.UNLEASH_DB_HOST || '127.0.0.1',
            port: Number(env.UNLEASH_DB_PORT || 5432),
            user: env.UNLEASH_DB_USER || 'postgres',
            password: env.UNLEASH_DB_PASSWORD || '',
            database: env.UNLEASH_DB_NAME || 'unleash_test',
            ssl: false,
        },
        server: {
            host: env.UNLEASH_HOST || '127.0.0.1',
            port: Number(env.UNLEASH_PORT || 4242),
            gracefulShutdownEnable: true,
            gracefulShutdownTimeout: 1000,
        },
        authentication: {
            initialAdminUser: {
                username: env.UNLEASH_ADMIN_USER || 'admin',
                password: env.UNLEASH_ADMIN_PASSWORD || 'unleash4all',
            },
            initApiTokens: [
                tokenOf(adminToken, 'admin', 'ws-migration-admin'),
                tokenOf(clientToken, 'backend', 'ws-migration-client'),
            ],
        },
        versionCheck: { enable: false },
        logLevel: env.UNLEASH_LOG_LEVEL || 'warn',
    });
} catch (error) {
    console.error('start-unleash: failed to start', error);
    process.exit(1);
}
