// Only signed models go live, and each principal gets only what its job needs: the signer
// policy reaches the functions that enforce it, uploaders are scoped to their models, the
// inference API is behind an authoriser unless "none" is asked for.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { functionProps, logicalId, synth } from './helpers';

const policy = { required: true, keys: ['-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n'] };

test('the signer policy reaches the validator and the publisher, the signature wait the validator, nothing reaches inference', () => {
  const template = synth({ signingPolicy: policy, signatureWaitMs: 60000 });
  for (const name of ['Validator', 'Publisher']) {
    const env = functionProps(template, name).Environment.Variables;
    assert.deepEqual(JSON.parse(env.SIGNING_POLICY), policy, name);
  }
  assert.equal(functionProps(template, 'Validator').Environment.Variables.SIGNATURE_WAIT_MS, '60000');
  assert.equal(functionProps(template, 'Inference').Environment.Variables.SIGNING_POLICY, undefined);
  // Without one, no policy is set (unsigned models publish, as before) and the wait defaults.
  const plain = functionProps(synth(), 'Validator').Environment.Variables;
  assert.equal(plain.SIGNING_POLICY, undefined);
  assert.equal(plain.SIGNATURE_WAIT_MS, '900000');
});

test('an uploader role per group may write only under its models and read their tags', () => {
  const template = synth({ uploaders: { vision: ['resnet', 'yolo'], tabular: ['iris'] } });
  const bucket = logicalId(template, 'AWS::S3::Bucket', 'Uploads');
  const under = (model: string) => ({
    'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, `/models/${model}/*`]],
  });
  for (const [group, models] of [['vision', ['resnet', 'yolo']], ['tabular', ['iris']]] as const) {
    const role = logicalId(template, 'AWS::IAM::Role', `Uploader${group}`);
    const statements = Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p: any) => p.Properties.Roles.some((r: any) => r.Ref === role))
      .flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    const resources = (s: any) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]);
    assert.deepEqual(
      statements.map((s: any) => s.Action),
      ['s3:PutObject', ['s3:GetObject', 's3:GetObjectTagging']],
      group,
    );
    for (const s of statements) assert.deepEqual(resources(s), models.map(under), group);
    template.hasOutput(`Uploader${group}Role`, { Value: { 'Fn::GetAtt': [role, 'Arn'] } });
  }
  assert.throws(() => synth({ uploaders: { bad: ['Not A Model'] } }), /not a model name/);
});

test('the inference API requires IAM auth by default, a JWT when asked, and is open only when asked', () => {
  const iam = synth();
  iam.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: '$default', AuthorizationType: 'AWS_IAM' });
  iam.hasResourceProperties('AWS::IAM::ManagedPolicy', {
    PolicyDocument: { Statement: [Match.objectLike({ Action: 'execute-api:Invoke', Effect: 'Allow' })] },
  });
  iam.hasOutput('InferenceCallersPolicy', Match.anyValue());

  const jwt = synth({ apiAuth: { kind: 'jwt', issuer: 'https://issuer.example.com', audience: ['modelpipe'] } });
  jwt.hasResourceProperties('AWS::ApiGatewayV2::Authorizer', {
    AuthorizerType: 'JWT',
    JwtConfiguration: { Issuer: 'https://issuer.example.com', Audience: ['modelpipe'] },
  });
  jwt.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: '$default', AuthorizationType: 'JWT' });

  const open = synth({ apiAuth: { kind: 'none' } });
  open.resourceCountIs('AWS::ApiGatewayV2::Authorizer', 0);
  const route = Object.values(open.findResources('AWS::ApiGatewayV2::Route'))[0] as any;
  assert.ok([undefined, 'NONE'].includes(route.Properties.AuthorizationType));
});
