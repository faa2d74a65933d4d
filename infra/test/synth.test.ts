// `cdk synth` through the CLI, offline, with no account or region, then cfn-lint on the template.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fixtures } from './helpers';

const infra = path.join(__dirname, '..');

function cfnLint(): string {
  const venv = path.join(infra, '..', '.venv', 'bin', 'cfn-lint');
  return fs.existsSync(venv) ? venv : 'cfn-lint';
}

test('cdk synth works offline and cfn-lint finds no errors', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'modelpipe-synth-'));
  const env = { ...process.env };
  for (const key of ['CDK_DEFAULT_ACCOUNT', 'CDK_DEFAULT_REGION', 'AWS_PROFILE']) delete env[key];
  const started = Date.now();
  const synth = spawnSync(
    path.join(infra, 'node_modules', '.bin', 'cdk'),
    ['synth', '--quiet', '-o', out, '-c', `artifacts=${path.join(fixtures, 'lambda')}`],
    { cwd: infra, env, encoding: 'utf8' },
  );
  assert.equal(synth.status, 0, synth.stderr);
  console.log(`cdk synth: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const template = path.join(out, 'Modelpipe.template.json');
  assert.ok(fs.existsSync(template));
  const lint = spawnSync(cfnLint(), [template], { cwd: infra, encoding: 'utf8' });
  assert.equal(lint.status, 0, `cfn-lint:\n${lint.stdout}${lint.stderr}`);
  fs.rmSync(out, { recursive: true, force: true });
});
