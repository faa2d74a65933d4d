// The default stack (EFS registry, zip functions), bullet by bullet of the infrastructure issue.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { actions, functionProps, logicalId, statements, synth } from './helpers';

const template = synth();

test('a VPC over 2 AZs with isolated subnets only, no NAT, S3 gateway and Lambda interface endpoints', () => {
  template.resourceCountIs('AWS::EC2::NatGateway', 0);
  template.resourceCountIs('AWS::EC2::InternetGateway', 0);
  template.resourceCountIs('AWS::EC2::Subnet', 2);
  template.allResourcesProperties('AWS::EC2::Subnet', { MapPublicIpOnLaunch: false });
  template.hasResourceProperties('AWS::EC2::VPCEndpoint', {
    VpcEndpointType: 'Gateway',
    ServiceName: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['.s3'])]) }),
  });
  template.hasResourceProperties('AWS::EC2::VPCEndpoint', {
    VpcEndpointType: 'Interface',
    ServiceName: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['.lambda'])]) }),
    PrivateDnsEnabled: true,
  });
});

test('the upload bucket is versioned, encrypted, private, SSL-only and retained', () => {
  const id = logicalId(template, 'AWS::S3::Bucket', 'Uploads');
  template.hasResource('AWS::S3::Bucket', {
    DeletionPolicy: 'Retain',
    UpdateReplacePolicy: 'Retain',
    Properties: {
      VersioningConfiguration: { Status: 'Enabled' },
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true,
      },
    },
  });
  template.hasResourceProperties('AWS::S3::BucketPolicy', {
    Bucket: { Ref: id },
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({ Effect: 'Deny', Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      ]),
    },
  });
});

test('models, their signatures and their contracts under models/ notify the validator', () => {
  const validator = { 'Fn::GetAtt': [logicalId(template, 'AWS::Lambda::Function', 'Validator'), 'Arn'] };
  template.hasResourceProperties('Custom::S3BucketNotifications', {
    NotificationConfiguration: {
      LambdaFunctionConfigurations: ['.onnx', '.onnx.sig', '/contract.json'].map((suffix) => ({
        Events: ['s3:ObjectCreated:*'],
        LambdaFunctionArn: validator,
        Filter: { Key: { FilterRules: Match.arrayWith([{ Name: 'suffix', Value: suffix }, { Name: 'prefix', Value: 'models/' }]) } },
      })),
    },
  });
});

test('EFS is encrypted, with an access point at /models owned by 1000:1000, mounted at /mnt/models', () => {
  template.hasResourceProperties('AWS::EFS::FileSystem', { Encrypted: true });
  template.hasResourceProperties('AWS::EFS::AccessPoint', {
    RootDirectory: { Path: '/models', CreationInfo: { OwnerUid: '1000', OwnerGid: '1000', Permissions: '750' } },
    PosixUser: { Uid: '1000', Gid: '1000' },
  });
  for (const name of ['Validator', 'Publisher', 'Inference']) {
    const props = functionProps(template, name);
    assert.equal(props.FileSystemConfigs[0].LocalMountPath, '/mnt/models', name);
    assert.equal(props.Environment.Variables.MODEL_ROOT, '/mnt/models', name);
    assert.equal(props.Runtime, 'provided.al2023', name);
    assert.ok(props.VpcConfig, `${name} runs in the VPC`);
  }
});

test('the validator reads and tags models/* only, and can invoke the publisher only', () => {
  const s3 = statements(template, 'Validator').filter((s) => JSON.stringify(s.Action).includes('s3:'));
  assert.equal(s3.length, 1);
  assert.deepEqual(s3[0].Action, ['s3:GetObject', 's3:GetObjectTagging', 's3:PutObjectTagging']);
  assert.match(JSON.stringify(s3[0].Resource), /\/models\/\*"/);
  const publisher = logicalId(template, 'AWS::Lambda::Function', 'Publisher');
  const invoke = statements(template, 'Validator').filter((s) => JSON.stringify(s.Action).includes('lambda:'));
  assert.equal(invoke.length, 1);
  assert.deepEqual(invoke[0].Action, 'lambda:InvokeFunction');
  for (const resource of invoke[0].Resource as unknown[]) {
    assert.match(JSON.stringify(resource), new RegExp(`"${publisher}","Arn"`));
  }
  assert.equal(functionProps(template, 'Validator').Environment.Variables.PUBLISHER_FUNCTION.Ref, publisher);
  assert.ok(actions(template, 'Validator').includes('elasticfilesystem:ClientWrite'));
});

test('an event that still fails after retries goes to an SQS queue', () => {
  template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
    FunctionName: { Ref: logicalId(template, 'AWS::Lambda::Function', 'Validator') },
    MaximumRetryAttempts: 2,
    DestinationConfig: {
      OnFailure: { Destination: { 'Fn::GetAtt': [logicalId(template, 'AWS::SQS::Queue', 'FailedUploads'), 'Arn'] } },
    },
  });
});

test('the publisher writes EFS and reads no S3 but the inference functions\' telemetry', () => {
  const granted = actions(template, 'Publisher');
  assert.ok(granted.includes('elasticfilesystem:ClientWrite'));
  // Under telemetry/ only (capture.test.ts checks the resources).
  assert.deepEqual(granted.filter((a) => a.startsWith('s3:')), ['s3:GetObject', 's3:DeleteObject', 's3:ListBucket']);
});

test('an EventBridge schedule invokes the publisher with rollout-advance and drift and the validator with expire-uploads every minute', () => {
  const publisher = logicalId(template, 'AWS::Lambda::Function', 'Publisher');
  template.hasResourceProperties('AWS::Events::Rule', {
    ScheduleExpression: 'rate(1 minute)',
    State: 'ENABLED',
    Targets: [
      Match.objectLike({
        Arn: { 'Fn::GetAtt': [publisher, 'Arn'] },
        Input: JSON.stringify({ action: 'rollout-advance' }),
        RetryPolicy: { MaximumRetryAttempts: 0 },
      }),
      // Each version's captured traffic against its baseline (capture.test.ts).
      Match.objectLike({
        Arn: { 'Fn::GetAtt': [publisher, 'Arn'] },
        Input: JSON.stringify({ action: 'drift' }),
      }),
      // Uploads that waited for their signature past SIGNATURE_WAIT_MS: the validator rejects
      // and tags them, on the same tick.
      Match.objectLike({
        Arn: { 'Fn::GetAtt': [logicalId(template, 'AWS::Lambda::Function', 'Validator'), 'Arn'] },
        Input: JSON.stringify({ action: 'expire-uploads' }),
        RetryPolicy: { MaximumRetryAttempts: 0 },
      }),
    ],
  });
  template.hasResourceProperties('AWS::Lambda::Permission', {
    Action: 'lambda:InvokeFunction',
    FunctionName: { 'Fn::GetAtt': [publisher, 'Arn'] },
    Principal: 'events.amazonaws.com',
  });
});

test('inference mounts EFS read-only and has no S3 access but writing captured records and telemetry', () => {
  const granted = actions(template, 'Inference');
  assert.ok(granted.includes('elasticfilesystem:ClientMount'));
  assert.ok(!granted.includes('elasticfilesystem:ClientWrite'), `${granted}`);
  // s3:PutObject under capture/ and telemetry/ only (capture.test.ts checks the resources).
  assert.deepEqual(granted.filter((a) => a.startsWith('s3:') || a.startsWith('lambda:')), ['s3:PutObject']);
});

test('the HTTP API integrates the inference alias live, which points at a published version', () => {
  const alias = logicalId(template, 'AWS::Lambda::Alias', 'InferenceLive');
  template.hasResourceProperties('AWS::Lambda::Alias', {
    Name: 'live',
    FunctionVersion: { 'Fn::GetAtt': [Match.stringLikeRegexp('^InferenceCurrentVersion'), 'Version'] },
  });
  template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
    IntegrationType: 'AWS_PROXY',
    IntegrationUri: { Ref: alias },
    PayloadFormatVersion: '2.0',
  });
  template.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: '$default' });
});

test('inference memory and model settings come from props', () => {
  const telemetryRoot = { 'Fn::Join': ['', ['s3://', { Ref: logicalId(template, 'AWS::S3::Bucket', 'Uploads') }, '/telemetry']] };
  const defaults = functionProps(template, 'Inference');
  assert.equal(defaults.MemorySize, 2048);
  assert.deepEqual(defaults.Environment.Variables, {
    MODEL_ROOT: '/mnt/models',
    RELOAD_CHECK_MS: '1000',
    ADOPT_SPREAD_MS: '10000',
    CAPTURE_BUCKET: { Ref: logicalId(template, 'AWS::S3::Bucket', 'Uploads') },
    CAPTURE_PREFIX: 'capture/',
    CAPTURE_SHARE: '0',
    DRIFT_WINDOW_MS: '3600000',
    TELEMETRY_ROOT: telemetryRoot,
    EVIDENCE_WRITE_MS: '10000',
    RUST_LOG: 'info',
  });
  const tuned = functionProps(
    synth({
      inference: { memoryMb: 4096, preloadModels: ['iris', 'mnist'], modelCacheBytes: 1_000_000_000, reloadCheckMs: 250, adoptSpreadMs: 60000 },
    }),
    'Inference',
  );
  assert.equal(tuned.MemorySize, 4096);
  assert.deepEqual(tuned.Environment.Variables, {
    MODEL_ROOT: '/mnt/models',
    RELOAD_CHECK_MS: '250',
    ADOPT_SPREAD_MS: '60000',
    CAPTURE_BUCKET: { Ref: logicalId(template, 'AWS::S3::Bucket', 'Uploads') },
    CAPTURE_PREFIX: 'capture/',
    CAPTURE_SHARE: '0',
    DRIFT_WINDOW_MS: '3600000',
    TELEMETRY_ROOT: telemetryRoot,
    EVIDENCE_WRITE_MS: '10000',
    PRELOAD_MODELS: 'iris,mnist',
    MODEL_CACHE_BYTES: '1000000000',
    RUST_LOG: 'info',
  });
});

test('the registry file system scales its throughput to the reads (Elastic, never Bursting)', () => {
  template.hasResourceProperties('AWS::EFS::FileSystem', { ThroughputMode: 'elastic' });
});

test('provisioned concurrency on the live alias is opt-in', () => {
  const aliases = template.findResources('AWS::Lambda::Alias');
  for (const alias of Object.values(aliases)) {
    assert.equal(alias.Properties.ProvisionedConcurrencyConfig, undefined, 'none by default');
  }
  synth({ inference: { provisionedConcurrency: 5 } }).hasResourceProperties('AWS::Lambda::Alias', {
    Name: 'live',
    ProvisionedConcurrencyConfig: { ProvisionedConcurrentExecutions: 5 },
  });
});

test('outputs give the bucket, the API URL and the function names', () => {
  for (const output of ['BucketName', 'ApiUrl', 'ValidatorFunction', 'PublisherFunction', 'InferenceFunction', 'FailedUploadsQueue']) {
    template.hasOutput(output, {});
  }
});
