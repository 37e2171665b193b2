// The contract of agh-worker's Coder Hub client with the official SDK, `@agentuity/core` (pinned
// in package.json and package-lock.json). Run by `cargo test --test agentuity_contract`, which
// starts the project's fake Hub and passes:
//   node contract.mjs HUB_URL CASES_FILE
// CASES_FILE is JSON: {"bodies": [{"name", "schema", "body"}], "session": ID}. Every body is
// checked against the SDK's exported zod schema (strictly: a key the SDK does not know fails), then
// the SDK's own `CoderClient` and SSE client run every operation the project performs against the
// fake Hub, validating each answer with the SDK's schemas. Any failure exits 1 naming the case.
import { readFileSync } from 'node:fs';
import * as coder from '@agentuity/core/coder';

const [hub, casesFile] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesFile, 'utf8'));
const failures = [];

function strict(schema) {
	return typeof schema.strict === 'function' ? schema.strict() : schema;
}

for (const { name, schema, body } of cases.bodies) {
	const found = coder[schema];
	if (!found) {
		failures.push(`${name}: the SDK exports no schema ${schema}`);
		continue;
	}
	const parsed = strict(found).safeParse(body);
	if (!parsed.success) {
		const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
		failures.push(`${name}: the body is not a ${schema}: ${issues.join('; ')}`);
	}
}

const client = new coder.CoderClient({ apiKey: 'ag_contract_key', url: hub });
const session = cases.session;
const operations = [
	['createSession', () => client.createSession(cases.bodies[0].body)],
	['getSession', () => client.getSession(session)],
	['listSessions', () => client.listSessions({ search: 'agh-run:run-1', includeArchived: true, limit: 50 })],
	['getLoopState', () => client.getLoopState(session)],
	['listEventHistory', () => client.listEventHistory(session, { limit: 100 })],
	['getReplay', () => client.getReplay(session)],
	['resumeSession', () => client.resumeSession(session)],
	['listParticipants', () => client.listParticipants(session)],
	['listUsers', () => client.listUsers({ search: 'Jan', limit: 1 })],
	['listCustomAgents', () => client.listCustomAgents()],
	['listWorkspaces', () => client.listWorkspaces()],
	['listSavedSkills', () => client.listSavedSkills()],
	['listSkillBuckets', () => client.listSkillBuckets()],
	['listGitHubAccounts', () => client.listGitHubAccounts()],
	['listGitHubRepos', () => client.listGitHubRepos('12345')],
	[
		'streamCoderSessionSSE',
		async () => {
			const controller = new AbortController();
			const seen = [];
			for await (const event of coder.streamCoderSessionSSE({
				sessionId: session,
				url: hub,
				apiKey: 'ag_contract_key',
				reconnect: false,
				signal: controller.signal,
			})) {
				seen.push(event.event === 'broadcast' ? event.data.event : event.event);
				if (event.data.type === 'broadcast' && event.data.event === 'session_complete') {
					controller.abort();
				}
			}
			if (seen[0] !== 'snapshot' || !seen.includes('session_complete')) {
				throw new Error(`expected a snapshot, then session_complete; saw ${seen.join(', ')}`);
			}
		},
	],
	['archiveSession', () => client.archiveSession(session)],
];
for (const [name, operation] of operations) {
	try {
		await operation();
	} catch (err) {
		const issues = err?.issues ? ` ${JSON.stringify(err.issues)}` : '';
		failures.push(`${name}: the SDK refused the fake Hub's answer: ${err?.message ?? err}${issues}`);
	}
}

if (failures.length > 0) {
	for (const failure of failures) console.error(`contract: ${failure}`);
	process.exit(1);
}
console.log(`contract: ${cases.bodies.length} request bodies and ${operations.length} SDK operations agree with @agentuity/core`);
