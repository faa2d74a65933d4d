// The other storage options: inference as a container image (optionally with models baked in)
// and the S3-hosted registry. They must synthesize; the image is built at deploy time.

import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { Duration } from 'aws-cdk-lib';
import { actions, fixtures, functionProps, statements, synth } from './helpers';

const image = { context: path.join(fixtures, 'image'), file: 'Dockerfile' };

test('inference as a container image keeps the EFS mount and the alias', () => {
  const template = synth({ inference: { image } });
  const props = functionProps(template, 'Inference');
  assert.equal(props.PackageType, 'Image');
  assert.ok(props.Code.ImageUri);
  assert.equal(props.FileSystemConfigs[0].LocalMountPath, '/mnt/models');
  assert.ok(!actions(template, 'Inference').includes('elasticfilesystem:ClientWrite'));
  template.hasResourceProperties('AWS::Lambda::Alias', { Name: 'live' });
});

test('an image with a baked registry serves it without EFS or VPC', () => {
  const template = synth({ inference: { image: { ...image, bakedRegistry: 'registry' } } });
  const props = functionProps(template, 'Inference');
  assert.equal(props.PackageType, 'Image');
  assert.equal(props.FileSystemConfigs, undefined);
  assert.equal(props.VpcConfig, undefined);
  assert.equal(props.Environment.Variables.MODEL_ROOT, '/opt/models');
  assert.ok(!actions(template, 'Inference').some((a) => a.startsWith('elasticfilesystem:')));
});

test('an S3-hosted registry needs no VPC or EFS, and inference may only read it', () => {
  const template = synth({ registry: 's3' });
  template.resourceCountIs('AWS::EC2::VPC', 0);
  template.resourceCountIs('AWS::EFS::FileSystem', 0);
  for (const name of ['Validator', 'Publisher', 'Inference']) {
    const root = JSON.stringify(functionProps(template, name).Environment.Variables.MODEL_ROOT);
    assert.match(root, /s3:\/\//, name);
    assert.match(root, /RegistryBucket/, name);
  }
  for (const name of ['Validator', 'Inference']) {
    // Uploads are staged and model files copied to /tmp: room for a 2 GiB model and more.
    assert.equal(functionProps(template, name).EphemeralStorage.Size, 4096, name);
  }
  const inference = actions(template, 'Inference');
  assert.ok(inference.includes('s3:GetObject*'), `${inference}`);
  // It writes captured records to the upload bucket, never the registry.
  assert.deepEqual(inference.filter((a) => a.startsWith('s3:Put') || a.startsWith('s3:Delete')), ['s3:PutObject']);
  for (const s of statements(template, 'Inference').filter((s) => s.Action === 's3:PutObject')) {
    assert.doesNotMatch(JSON.stringify(s.Resource), /RegistryBucket/);
  }
  assert.ok(actions(template, 'Publisher').some((a) => a.startsWith('s3:Put')));
  // The publisher's S3 access is the registry bucket's, and of the upload bucket's only the
  // inference functions' telemetry/ (capture.test.ts).
  for (const s of statements(template, 'Publisher').filter((s) => JSON.stringify(s.Action).includes('s3:'))) {
    const on = JSON.stringify([s.Resource, s.Condition]);
    assert.ok(/RegistryBucket/.test(on) || (/Uploads/.test(on) && /telemetry/.test(on)), on);
  }
});

test('missing function artifacts are a clear error at synth time', () => {
  assert.throws(() => synth({ artifacts: path.join(fixtures, 'nowhere') }), /bash scripts\/package.sh/);
});

test('no function may touch S3, Lambda or EFS on every resource (EFS mounts: the access point only), in either registry mode', () => {
  for (const stack of [synth(), synth({ registry: 's3' })]) {
    for (const name of ['Validator', 'Publisher', 'Inference']) {
      for (const s of statements(stack, name)) {
        const acts = Array.isArray(s.Action) ? s.Action : [s.Action];
        const scoped = acts.filter((a: string) => /^(s3|lambda|elasticfilesystem):/.test(a));
        if (scoped.length === 0) continue;
        const resources = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
        // CDK's EFS mount grant is on '*' narrowed by a condition to the registry's access point.
        const toAccessPoint = JSON.stringify(s.Condition ?? {}).includes('elasticfilesystem:AccessPointArn');
        assert.ok(!resources.includes('*') || toAccessPoint, `${name}: ${scoped} on *`);
      }
    }
  }
});

test('the rollout controller runs as often as rolloutTick says', () => {
  const template = synth({ rolloutTick: Duration.minutes(5) });
  template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(5 minutes)' });
});
