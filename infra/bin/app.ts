// The CDK app. Options come from context (`cdk deploy -c key=value`):
//   artifacts        folder of cargo lambda build output [../target/lambda]
//   registry         efs | s3 [efs]
//   inferenceMemory  MB [2048]; preloadModels (comma list); modelCacheBytes; reloadCheckMs [1000]
//   adoptSpreadMs    [10000]: the window a fleet adopts a new version over (docs/fleet.md)
//   provisionedConcurrency  environments kept initialised on the live alias [none]
//   inferenceImage   true: ship inference as a container image built from infra/docker/
//   bakeRegistry     with inferenceImage: a folder made by `modelctl bake` (relative to the
//                    repository), baked into the image and served read-only
//   signingPolicy    a JSON file: the signer policy of models whose contract.json names none
//                    (SIGNING_POLICY, docs/signing.md); signatureWaitMs [900000]
//   uploaders        JSON {"group": ["model", ...]}: a role per group that may upload only those models
//   apiAuth          iam | jwt | none [iam]: who may call the inference API; jwt needs jwtIssuer
//                    and jwtAudience (comma list); none opens it to anyone and must be asked for
//   captureShare     share of live requests captured (0 to 1) [0]; driftThreshold [0.1];
//                    driftWindowMs [3600000]; driftAlarms (comma list of models) [the uploaders'
//                    and preloaded models] (docs/capture.md)
// No account or region is set here, so `cdk synth` works offline; `cdk deploy` uses your profile's.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { ApiAuth, ModelpipeStack, RegistryStorage } from '../lib/modelpipe-stack';

const app = new App();
const context = (key: string): string | undefined => {
  const value = app.node.tryGetContext(key);
  return value === undefined || value === '' ? undefined : String(value);
};
const number = (key: string): number | undefined => {
  const value = context(key);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`context ${key}=${value} is not a whole number`);
  return n;
};
const share = (key: string): number | undefined => {
  const value = context(key);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(n >= 0 && n <= 1)) throw new Error(`context ${key}=${value} is not a share (0 to 1)`);
  return n;
};
const registry = context('registry') ?? 'efs';
if (registry !== 'efs' && registry !== 's3') throw new Error(`context registry=${registry}: use efs or s3`);
const repository = path.resolve(__dirname, '..', '..');
const json = (key: string, text: string | undefined): any => {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`context ${key}: not JSON (${e})`);
  }
};
const signingPolicyFile = context('signingPolicy');
const apiAuth = (): ApiAuth => {
  const kind = context('apiAuth') ?? 'iam';
  if (kind === 'iam' || kind === 'none') return { kind };
  if (kind !== 'jwt') throw new Error(`context apiAuth=${kind}: use iam, jwt or none`);
  const issuer = context('jwtIssuer');
  const audience = context('jwtAudience')?.split(',').map((a) => a.trim()).filter(Boolean);
  if (!issuer || !audience?.length) throw new Error('context apiAuth=jwt needs jwtIssuer and jwtAudience');
  return { kind, issuer, audience };
};

new ModelpipeStack(app, 'Modelpipe', {
  description: 'modelpipe: ONNX models from an S3 upload to live predictions on Lambda',
  artifacts: path.resolve(context('artifacts') ?? path.join(repository, 'target', 'lambda')),
  registry: registry as RegistryStorage,
  signingPolicy: json('signingPolicy', signingPolicyFile && fs.readFileSync(path.resolve(signingPolicyFile), 'utf8')),
  signatureWaitMs: number('signatureWaitMs'),
  uploaders: json('uploaders', context('uploaders')),
  apiAuth: apiAuth(),
  monitoring: {
    captureShare: share('captureShare'),
    driftThreshold: share('driftThreshold'),
    driftWindowMs: number('driftWindowMs'),
    alarmModels: context('driftAlarms')?.split(',').map((m) => m.trim()).filter(Boolean),
  },
  inference: {
    memoryMb: number('inferenceMemory'),
    preloadModels: context('preloadModels')?.split(',').map((m) => m.trim()).filter(Boolean),
    modelCacheBytes: number('modelCacheBytes'),
    reloadCheckMs: number('reloadCheckMs'),
    adoptSpreadMs: number('adoptSpreadMs'),
    provisionedConcurrency: number('provisionedConcurrency'),
    image:
      context('inferenceImage') === 'true'
        ? { context: repository, bakedRegistry: context('bakeRegistry') }
        : undefined,
  },
});
