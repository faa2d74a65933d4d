// Data capture and drift: inference may write captured records and its evidence and profiles
// (telemetry/) and nothing else to the bucket, the publisher reads and merges those and computes
// drift on the schedule, and each model named gets a drift alarm.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { functionProps, logicalId, statements, synth } from './helpers';

test('inference writes captured records under capture/ of the upload bucket, with the share it is given', () => {
  const template = synth({ monitoring: { captureShare: 0.1, driftWindowMs: 600000 } });
  const env = functionProps(template, 'Inference').Environment.Variables;
  const bucket = logicalId(template, 'AWS::S3::Bucket', 'Uploads');
  assert.deepEqual(env.CAPTURE_BUCKET, { Ref: bucket });
  assert.equal(env.CAPTURE_PREFIX, 'capture/');
  assert.equal(env.CAPTURE_SHARE, '0.1');
  assert.equal(env.DRIFT_WINDOW_MS, '600000');
  const writes = statements(template, 'Inference').filter((s) => s.Action === 's3:PutObject');
  assert.deepEqual(
    writes.map((s) => s.Resource),
    [
      [
        { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/capture/*']] },
        { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/telemetry/*']] },
      ],
    ],
  );
  // Nothing captured unless asked for.
  assert.equal(functionProps(synth(), 'Inference').Environment.Variables.CAPTURE_SHARE, '0');
});

test('inference and the publisher share telemetry/ of the upload bucket: one writes, the other reads and removes', () => {
  const template = synth();
  const bucket = logicalId(template, 'AWS::S3::Bucket', 'Uploads');
  const root = { 'Fn::Join': ['', ['s3://', { Ref: bucket }, '/telemetry']] };
  for (const name of ['Inference', 'Publisher']) {
    assert.deepEqual(functionProps(template, name).Environment.Variables.TELEMETRY_ROOT, root, name);
  }
  assert.equal(functionProps(template, 'Validator').Environment.Variables.TELEMETRY_ROOT, undefined);
  const objects = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/telemetry/*']] };
  const publisher = statements(template, 'Publisher').filter((s) => JSON.stringify(s.Action).includes('s3:'));
  assert.deepEqual(
    publisher.map((s) => [s.Action, s.Resource, s.Condition]),
    [
      [['s3:GetObject', 's3:DeleteObject'], objects, undefined],
      ['s3:ListBucket', { 'Fn::GetAtt': [bucket, 'Arn'] }, { StringLike: { 's3:prefix': ['telemetry/*'] } }],
    ],
  );
  const rules = template.findResources('AWS::S3::Bucket')[bucket].Properties.LifecycleConfiguration.Rules;
  assert.deepEqual(rules.map((r: any) => [r.Prefix, r.NoncurrentVersionExpiration?.NoncurrentDays]), [['telemetry/', 1]]);
});

test('the publisher computes drift on the schedule with the threshold and window', () => {
  const template = synth({ monitoring: { driftThreshold: 0.2 } });
  const env = functionProps(template, 'Publisher').Environment.Variables;
  assert.equal(env.DRIFT_THRESHOLD, '0.2');
  assert.equal(env.DRIFT_WINDOW_MS, '3600000');
  const publisher = logicalId(template, 'AWS::Lambda::Function', 'Publisher');
  const rule = Object.values(template.findResources('AWS::Events::Rule'))[0] as any;
  const inputs = rule.Properties.Targets.filter((t: any) => t.Arn['Fn::GetAtt'][0] === publisher).map((t: any) =>
    JSON.parse(t.Input),
  );
  assert.deepEqual(inputs, [{ action: 'rollout-advance' }, { action: 'drift' }]);
});

test('each model named gets an alarm on its drift, by default the uploaders\' and preloaded ones', () => {
  const alarms = (props: Parameters<typeof synth>[0]) =>
    Object.values(synth(props).findResources('AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
  const named = alarms({ monitoring: { alarmModels: ['iris', 'resnet'] } });
  assert.deepEqual(
    named.map((a) => a.Dimensions),
    [[{ Name: 'model', Value: 'iris' }], [{ Name: 'model', Value: 'resnet' }]],
  );
  for (const alarm of named) {
    assert.equal(alarm.MetricName, 'modelpipe_model_drift');
    assert.equal(alarm.Namespace, 'modelpipe');
    assert.equal(alarm.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(alarm.Threshold, 0);
    assert.equal(alarm.TreatMissingData, 'notBreaching');
  }
  const byDefault = alarms({ uploaders: { vision: ['yolo'] }, inference: { preloadModels: ['iris', 'yolo'] } });
  assert.deepEqual(byDefault.map((a) => a.Dimensions[0].Value).sort(), ['iris', 'yolo']);
  assert.throws(() => synth({ monitoring: { alarmModels: ['Bad Name'] } }), /not a model name/);
});
