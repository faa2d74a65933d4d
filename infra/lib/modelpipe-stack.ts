// The whole pipeline in one stack: upload bucket → validator → publisher, the registry (EFS, or
// S3-hosted), and the inference function behind an HTTP API. Each function gets only the access
// its job needs; the tests in test/ hold the stack to that.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Annotations, CfnOutput, Duration, RemovalPolicy, Size, Stack, StackProps } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { HttpIamAuthorizer, HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as efs from 'aws-cdk-lib/aws-efs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** Where the registry lives. */
export type RegistryStorage = 'efs' | 's3';

/**
 * Who may call the inference API: AWS credentials allowed `execute-api:Invoke` (SigV4; attach
 * the `InferenceCallers` managed policy), a JWT from an OIDC issuer, or anyone. An open API must
 * be asked for.
 */
export type ApiAuth =
  | { readonly kind: 'iam' }
  | { readonly kind: 'jwt'; readonly issuer: string; readonly audience: string[] }
  | { readonly kind: 'none' };

/** A model's name, as the validator accepts it in `models/<model>/…`. */
const MODEL_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export interface InferenceImage {
  /** Docker build context (the repository root for infra/docker/inference.Dockerfile). */
  readonly context: string;
  /** Dockerfile, relative to the context. */
  readonly file?: string;
  /**
   * A registry folder made by `modelctl bake`, inside the context, baked into the image at
   * /opt/models: inference serves it read-only, without EFS or VPC (no hot reload; its metadata
   * says so).
   */
  readonly bakedRegistry?: string;
}

export interface InferenceOptions {
  /** Memory in MB [2048]; Lambda gives a second vCPU from 1,769 MB, which tract uses. */
  readonly memoryMb?: number;
  /** PRELOAD_MODELS: loaded during init, outside the handler. */
  readonly preloadModels?: string[];
  /** MODEL_CACHE_BYTES [half the function's memory]. */
  readonly modelCacheBytes?: number;
  /** RELOAD_CHECK_MS [1000]. */
  readonly reloadCheckMs?: number;
  /**
   * ADOPT_SPREAD_MS [10000]: the window over which the inference environments adopt a new
   * version, each at its own offset, so the fleet reads the registry over it (docs/fleet.md).
   */
  readonly adoptSpreadMs?: number;
  /**
   * Environments kept initialised on the `live` alias (provisioned concurrency) [none]: they
   * load PRELOAD_MODELS before traffic reaches them, so scale-out within them costs no cold
   * start. Billed while provisioned: opt in.
   */
  readonly provisionedConcurrency?: number;
  /** Ship inference as a container image instead of a zip. */
  readonly image?: InferenceImage;
}

/** Data capture and drift (docs/capture.md). */
export interface MonitoringOptions {
  /** CAPTURE_SHARE [0]: the share of live requests captured for models whose contract names none. */
  readonly captureShare?: number;
  /** DRIFT_THRESHOLD [0.1]: the L∞ distance past which a feature has drifted. */
  readonly driftThreshold?: number;
  /** DRIFT_WINDOW_MS [3600000]: drift profiles' window; a report covers the last two. */
  readonly driftWindowMs?: number;
  /**
   * Models to alarm on: a CloudWatch alarm each on `modelpipe_model_drift` (the largest drift
   * among flagged features of its versions) [the uploaders' and preloaded models].
   */
  readonly alarmModels?: string[];
}

export interface ModelpipeStackProps extends StackProps {
  /**
   * Folder holding `validator/`, `publisher/` and `inference/`, each with the `bootstrap`
   * binary or `bootstrap.zip` (`bash scripts/package.sh`: `cargo lambda build --profile lambda` for the
   * Lambda hosts' CPU, then target/lambda/<name>/bootstrap.zip with the onnxruntime wheel's
   * libonnxruntime.so beside `bootstrap` for the validator and inference).
   */
  readonly artifacts: string;
  /** Where the registry lives ['efs']. 's3' needs no VPC: MODEL_ROOT=s3://<bucket>/registry. */
  readonly registry?: RegistryStorage;
  readonly inference?: InferenceOptions;
  /**
   * How often the rollout controller runs [1 minute]: an EventBridge schedule invokes the
   * publisher with `{"action": "rollout-advance"}`, which judges every running rollout's step.
   */
  readonly rolloutTick?: Duration;
  /**
   * SIGNING_POLICY: the signer policy of models whose `contract.json` names none, as JSON
   * (`{"required": true, "keys": ["-----BEGIN PUBLIC KEY-----…"], "ca_roots": […], "identities": […]}`;
   * docs/signing.md) [none: unsigned models publish, as before]. Given to the validator, which
   * verifies uploads against it, and the publisher, which holds every alias move to it.
   */
  readonly signingPolicy?: Record<string, unknown>;
  /** SIGNATURE_WAIT_MS [900000]: how long an upload waits for the signature its policy requires. */
  readonly signatureWaitMs?: number;
  /**
   * Uploader roles, one per group of models (`{"vision": ["resnet", "yolo"]}`): a role that may
   * write only under `models/<model>/` of its models (the model, its `.sig`, its contract) and
   * read the outcome tags there [none].
   */
  readonly uploaders?: Record<string, string[]>;
  /** Who may call the inference API [{ kind: 'iam' }]. */
  readonly apiAuth?: ApiAuth;
  /** Data capture and drift [nothing captured; drift alarms on the known models]. */
  readonly monitoring?: MonitoringOptions;
}

const MOUNT_PATH = '/mnt/models';
/**
 * /tmp of the functions that hold model files locally when the registry is on S3: the validator
 * stages an upload (MAX_MODEL_BYTES, 2 GiB by default), inference keeps verified copies of the
 * models it serves (MODEL_FILE_CACHE_BYTES defaults to 80 % of it).
 */
const S3_REGISTRY_TMP = Size.gibibytes(4);
const MODELS_PREFIX = 'models/';
/** Where inference writes captured records in the upload bucket (CAPTURE_PREFIX). */
const CAPTURE_PREFIX = 'capture/';
/**
 * Where inference environments write their rollout evidence and drift profiles, and the
 * publisher reads them (TELEMETRY_ROOT): inference may not write the registry.
 */
const TELEMETRY_PREFIX = 'telemetry/';
/** The CloudWatch namespace of every function's EMF metrics (METRICS_NAMESPACE's default). */
const METRICS_NAMESPACE = 'modelpipe';

function functionCode(artifacts: string, name: string): lambda.Code {
  const folder = path.join(artifacts, name);
  const zip = path.join(folder, 'bootstrap.zip');
  if (fs.existsSync(zip)) return lambda.Code.fromAsset(zip);
  if (fs.existsSync(path.join(folder, 'bootstrap'))) return lambda.Code.fromAsset(folder);
  throw new Error(
    `${folder} has neither bootstrap.zip nor bootstrap: run \`bash scripts/package.sh\` (cargo lambda build --profile lambda, then the zips) first`,
  );
}

/** An EFS mount whose policies the caller chooses (the base class's constructor is protected). */
class ReadOnlyMount extends lambda.FileSystem {
  constructor(config: lambda.FileSystemConfig) {
    super(config);
  }
}

export class ModelpipeStack extends Stack {
  readonly bucket: s3.Bucket;
  readonly validator: lambda.Function;
  readonly publisher: lambda.Function;
  readonly inference: lambda.Function;
  readonly api: apigw.HttpApi;
  /** The uploader role of each group of models (`uploaders`). */
  readonly uploaderRoles: Record<string, iam.Role>;
  /** The drift alarm of each model in `monitoring.alarmModels`. */
  readonly driftAlarms: Record<string, cloudwatch.Alarm>;

  constructor(scope: Construct, id: string, props: ModelpipeStackProps) {
    super(scope, id, props);
    const storage = props.registry ?? 'efs';
    const options = props.inference ?? {};
    const monitoring = props.monitoring ?? {};
    const driftEnv: Record<string, string> = {
      DRIFT_THRESHOLD: String(monitoring.driftThreshold ?? 0.1),
      DRIFT_WINDOW_MS: String(monitoring.driftWindowMs ?? 3600000),
    };
    const signingEnv: Record<string, string> = {
      SIGNATURE_WAIT_MS: String(props.signatureWaitMs ?? 900000),
      ...(props.signingPolicy ? { SIGNING_POLICY: JSON.stringify(props.signingPolicy) } : {}),
    };

    this.bucket = new s3.Bucket(this, 'Uploads', {
      versioned: true,
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
      // Evidence is rewritten every EVIDENCE_WRITE_MS during a rollout and merged profiles are
      // deleted: their old versions are of no use.
      lifecycleRules: [
        { id: 'TelemetryVersions', prefix: TELEMETRY_PREFIX, noncurrentVersionExpiration: Duration.days(1), expiredObjectDeleteMarker: true },
      ],
    });
    const telemetryRoot = `s3://${this.bucket.bucketName}/${TELEMETRY_PREFIX.replace(/\/$/, '')}`;

    // The registry: an EFS access point mounted by all three, or a prefix of an S3 bucket.
    let vpc: ec2.Vpc | undefined;
    let accessPoint: efs.AccessPoint | undefined;
    let registryBucket: s3.Bucket | undefined;
    let modelRoot: string;
    if (storage === 'efs') {
      vpc = new ec2.Vpc(this, 'Vpc', {
        maxAzs: 2,
        natGateways: 0,
        subnetConfiguration: [{ name: 'isolated', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
      });
      vpc.addGatewayEndpoint('S3', { service: ec2.GatewayVpcEndpointAwsService.S3 });
      // The validator invokes the publisher from an isolated subnet.
      vpc.addInterfaceEndpoint('Lambda', { service: ec2.InterfaceVpcEndpointAwsService.LAMBDA });
      const fileSystem = new efs.FileSystem(this, 'Registry', {
        vpc,
        encrypted: true,
        // A fleet adopting a version reads it N times: Bursting's baseline (and its credits)
        // cannot carry that; Elastic scales to the reads (docs/fleet.md).
        throughputMode: efs.ThroughputMode.ELASTIC,
        removalPolicy: RemovalPolicy.RETAIN,
      });
      accessPoint = fileSystem.addAccessPoint('Models', {
        path: '/models',
        createAcl: { ownerUid: '1000', ownerGid: '1000', permissions: '750' },
        posixUser: { uid: '1000', gid: '1000' },
      });
      modelRoot = MOUNT_PATH;
    } else {
      registryBucket = new s3.Bucket(this, 'RegistryBucket', {
        encryption: s3.BucketEncryption.S3_MANAGED,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        removalPolicy: RemovalPolicy.RETAIN,
      });
      modelRoot = `s3://${registryBucket.bucketName}/registry`;
    }

    const mount = (mode: 'read-write' | 'read-only'): lambda.FileSystem | undefined => {
      if (!accessPoint) return undefined;
      if (mode === 'read-write') return lambda.FileSystem.fromEfsAccessPoint(accessPoint, MOUNT_PATH);
      // fromEfsAccessPoint also grants ClientWrite; a reader gets ClientMount alone.
      return new ReadOnlyMount({
        localMountPath: MOUNT_PATH,
        arn: accessPoint.accessPointArn,
        dependency: [accessPoint.fileSystem.mountTargetsAvailable],
        connections: accessPoint.fileSystem.connections,
        policies: [
          new iam.PolicyStatement({
            actions: ['elasticfilesystem:ClientMount'],
            resources: ['*'],
            conditions: { StringEquals: { 'elasticfilesystem:AccessPointArn': accessPoint.accessPointArn } },
          }),
        ],
      });
    };
    const inVpc = vpc ? { vpc, vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED } } : {};
    const logGroup = (name: string) =>
      new logs.LogGroup(this, `${name}Logs`, {
        retention: logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      });
    const common = {
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.X86_64,
      handler: 'bootstrap',
    };

    this.publisher = new lambda.Function(this, 'Publisher', {
      ...common,
      ...inVpc,
      description: 'modelpipe publisher: moves an alias to a version and records the move',
      code: functionCode(props.artifacts, 'publisher'),
      memorySize: 512,
      timeout: Duration.minutes(2),
      filesystem: mount('read-write'),
      logGroup: logGroup('Publisher'),
      environment: {
        MODEL_ROOT: modelRoot,
        TELEMETRY_ROOT: telemetryRoot,
        RUST_LOG: 'info',
        ...driftEnv,
        ...(props.signingPolicy ? { SIGNING_POLICY: signingEnv.SIGNING_POLICY } : {}),
      },
    });

    // The rollout controller: every running rollout's step judged on its evidence, on a timer.
    const rolloutTick = new events.Rule(this, 'RolloutTick', {
      description: 'modelpipe: advance every running rollout whose step has passed or failed its gates',
      schedule: events.Schedule.rate(props.rolloutTick ?? Duration.minutes(1)),
    });
    rolloutTick.addTarget(
      new targets.LambdaFunction(this.publisher, {
        event: events.RuleTargetInput.fromObject({ action: 'rollout-advance' }),
        retryAttempts: 0,
      }),
    );
    // On the same schedule: each version's captured traffic against its baseline, as
    // modelpipe_feature_drift and modelpipe_model_drift (the alarms below).
    rolloutTick.addTarget(
      new targets.LambdaFunction(this.publisher, {
        event: events.RuleTargetInput.fromObject({ action: 'drift' }),
        retryAttempts: 0,
      }),
    );


    const failedUploads = new sqs.Queue(this, 'FailedUploads', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.validator = new lambda.Function(this, 'Validator', {
      ...common,
      ...inVpc,
      description: 'modelpipe validator: streams an upload to staging, checks it, commits a version',
      code: functionCode(props.artifacts, 'validator'),
      memorySize: 2048,
      timeout: Duration.minutes(15),
      filesystem: mount('read-write'),
      logGroup: logGroup('Validator'),
      ...(storage === 's3' ? { ephemeralStorageSize: S3_REGISTRY_TMP } : {}),
      // An event that still fails after Lambda's retries lands here instead of vanishing.
      onFailure: new destinations.SqsDestination(failedUploads),
      retryAttempts: 2,
      environment: {
        MODEL_ROOT: modelRoot,
        MODELS_PREFIX,
        PUBLISHER_FUNCTION: this.publisher.functionName,
        RUST_LOG: 'info',
        ...signingEnv,
      },
    });
    this.validator.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject', 's3:GetObjectTagging', 's3:PutObjectTagging'],
        resources: [this.bucket.arnForObjects(`${MODELS_PREFIX}*`)],
      }),
    );
    this.publisher.grantInvoke(this.validator);
    // On the controller's schedule: uploads that waited for their signature past
    // SIGNATURE_WAIT_MS are rejected with the reason, recorded and tagged.
    rolloutTick.addTarget(
      new targets.LambdaFunction(this.validator, {
        event: events.RuleTargetInput.fromObject({ action: 'expire-uploads' }),
        retryAttempts: 0,
      }),
    );
    // Models, their signatures and their contracts: the validator reads each kind.
    for (const suffix of ['.onnx', '.onnx.sig', '/contract.json']) {
      this.bucket.addEventNotification(
        s3.EventType.OBJECT_CREATED,
        new s3n.LambdaDestination(this.validator),
        { prefix: MODELS_PREFIX, suffix },
      );
    }
    this.uploaderRoles = this.addUploaders(props.uploaders ?? {});

    const memoryMb = options.memoryMb ?? 2048;
    const baked = options.image?.bakedRegistry !== undefined;
    const inferenceEnv: Record<string, string> = {
      MODEL_ROOT: baked ? '/opt/models' : modelRoot,
      RELOAD_CHECK_MS: String(options.reloadCheckMs ?? 1000),
      ADOPT_SPREAD_MS: String(options.adoptSpreadMs ?? 10000),
      CAPTURE_BUCKET: this.bucket.bucketName,
      CAPTURE_PREFIX,
      CAPTURE_SHARE: String(monitoring.captureShare ?? 0),
      DRIFT_WINDOW_MS: driftEnv.DRIFT_WINDOW_MS,
      TELEMETRY_ROOT: telemetryRoot,
      // Each write is a PUT: at 500 environments, 50 a second during a rollout, not 500. The
      // controller judges every minute.
      EVIDENCE_WRITE_MS: '10000',
      RUST_LOG: 'info',
    };
    if (options.preloadModels?.length) inferenceEnv.PRELOAD_MODELS = options.preloadModels.join(',');
    if (options.modelCacheBytes !== undefined) inferenceEnv.MODEL_CACHE_BYTES = String(options.modelCacheBytes);
    const inferenceProps = {
      ...(baked ? {} : inVpc),
      description: 'modelpipe inference: Open Inference Protocol v2 over tract and ONNX Runtime',
      memorySize: memoryMb,
      // API Gateway answers 503 after 30 s anyway.
      timeout: Duration.seconds(30),
      filesystem: baked ? undefined : mount('read-only'),
      logGroup: logGroup('Inference'),
      environment: inferenceEnv,
      ...(storage === 's3' && !baked ? { ephemeralStorageSize: S3_REGISTRY_TMP } : {}),
    };
    if (options.image) {
      this.inference = new lambda.DockerImageFunction(this, 'Inference', {
        ...inferenceProps,
        architecture: lambda.Architecture.X86_64,
        code: lambda.DockerImageCode.fromImageAsset(options.image.context, {
          file: options.image.file ?? 'infra/docker/inference.Dockerfile',
          buildArgs: options.image.bakedRegistry ? { BAKED_REGISTRY: options.image.bakedRegistry } : {},
          exclude: ['target', '**/node_modules', '.venv', '.git', '.modelpipe', 'infra/cdk.out'],
        }),
      });
    } else {
      this.inference = new lambda.Function(this, 'Inference', {
        ...common,
        ...inferenceProps,
        code: functionCode(props.artifacts, 'inference'),
      });
    }
    // API Gateway calls a published version through the alias, so a deploy moves traffic at once.
    const live = new lambda.Alias(this, 'InferenceLive', {
      aliasName: 'live',
      version: this.inference.currentVersion,
      provisionedConcurrentExecutions: options.provisionedConcurrency,
    });

    // Captured records, rollout evidence and drift profiles: written, never read back by inference.
    this.inference.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:PutObject'],
        resources: [this.bucket.arnForObjects(`${CAPTURE_PREFIX}*`), this.bucket.arnForObjects(`${TELEMETRY_PREFIX}*`)],
      }),
    );
    // The publisher sums the evidence and merges the profiles (removing a past window's files).
    this.publisher.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject', 's3:DeleteObject'],
        resources: [this.bucket.arnForObjects(`${TELEMETRY_PREFIX}*`)],
      }),
    );
    this.publisher.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [this.bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${TELEMETRY_PREFIX}*`] } },
      }),
    );
    const alarmModels =
      monitoring.alarmModels ??
      [...new Set([...Object.values(props.uploaders ?? {}).flat(), ...(options.preloadModels ?? [])])];
    this.driftAlarms = this.addDriftAlarms(alarmModels);

    if (registryBucket) {
      registryBucket.grantReadWrite(this.validator, 'registry/*');
      registryBucket.grantReadWrite(this.publisher, 'registry/*');
      registryBucket.grantRead(this.inference, 'registry/*');
    }

    const auth = props.apiAuth ?? { kind: 'iam' };
    this.api = new apigw.HttpApi(this, 'Api', {
      description: 'modelpipe: Open Inference Protocol v2',
      defaultIntegration: new HttpLambdaIntegration('Inference', live, {
        payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
      }),
      defaultAuthorizer:
        auth.kind === 'iam'
          ? new HttpIamAuthorizer()
          : auth.kind === 'jwt'
            ? new HttpJwtAuthorizer('Jwt', auth.issuer, { jwtAudience: auth.audience })
            : undefined,
    });
    if (auth.kind === 'iam') {
      // What a caller's role needs to call the API (SigV4-signed requests).
      const callers = new iam.ManagedPolicy(this, 'InferenceCallers', {
        description: 'modelpipe: call the inference API (Open Inference Protocol v2)',
        statements: [
          new iam.PolicyStatement({
            actions: ['execute-api:Invoke'],
            resources: [this.api.arnForExecuteApi('*', '/v2/*'), this.api.arnForExecuteApi('*', '/v2')],
          }),
        ],
      });
      new CfnOutput(this, 'InferenceCallersPolicy', { value: callers.managedPolicyArn, description: 'attach to the roles that call the API' });
    }

    // The functions' security groups allow all egress already; the EFS rule CDK adds is redundant.
    Annotations.of(this).acknowledgeWarning('@aws-cdk/aws-ec2:ipv4IgnoreEgressRule');

    new CfnOutput(this, 'BucketName', { value: this.bucket.bucketName, description: 'aws s3 cp model.onnx s3://<this>/models/<model>/model.onnx' });
    new CfnOutput(this, 'ApiUrl', { value: this.api.apiEndpoint, description: 'Open Inference Protocol v2 base URL (append /v2/...)' });
    new CfnOutput(this, 'ValidatorFunction', { value: this.validator.functionName });
    new CfnOutput(this, 'PublisherFunction', { value: this.publisher.functionName, description: 'modelctl --publisher-function <this>' });
    new CfnOutput(this, 'InferenceFunction', { value: this.inference.functionName });
    new CfnOutput(this, 'FailedUploadsQueue', { value: failedUploads.queueUrl, description: 'S3 events the validator could not handle after retries' });
  }

  /**
   * An alarm per model when any feature of a version it serves drifted past the threshold (and
   * past sampling noise) in the publisher's last report: `modelpipe_model_drift` > 0.
   */
  private addDriftAlarms(models: string[]): Record<string, cloudwatch.Alarm> {
    const alarms: Record<string, cloudwatch.Alarm> = {};
    for (const model of models) {
      if (!MODEL_NAME.test(model)) throw new Error(`drift alarm: ${model} is not a model name`);
      const id = model.replace(/[^A-Za-z0-9]/g, '');
      alarms[model] = new cloudwatch.Alarm(this, `Drift${id}`, {
        alarmDescription: `modelpipe: ${model}'s live inputs drifted from its baseline (modelctl drift ${model})`,
        metric: new cloudwatch.Metric({
          namespace: METRICS_NAMESPACE,
          metricName: 'modelpipe_model_drift',
          dimensionsMap: { model },
          statistic: cloudwatch.Stats.MAXIMUM,
          period: Duration.minutes(5),
        }),
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    return alarms;
  }

  /** A role per group of models that may write only under those models' prefixes. */
  private addUploaders(groups: Record<string, string[]>): Record<string, iam.Role> {
    const roles: Record<string, iam.Role> = {};
    for (const [group, models] of Object.entries(groups)) {
      if (!/^[A-Za-z0-9]+$/.test(group)) throw new Error(`uploader group ${group}: use letters and digits`);
      if (models.length === 0) throw new Error(`uploader group ${group} names no model`);
      for (const model of models) {
        if (!MODEL_NAME.test(model)) throw new Error(`uploader group ${group}: ${model} is not a model name`);
      }
      const role = new iam.Role(this, `Uploader${group}`, {
        assumedBy: new iam.AccountRootPrincipal(),
        description: `modelpipe: uploads models ${models.join(', ')} (model, .sig, contract.json)`,
      });
      const prefixes = models.map((m) => this.bucket.arnForObjects(`${MODELS_PREFIX}${m}/*`));
      role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: prefixes }));
      role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:GetObject', 's3:GetObjectTagging'], resources: prefixes }));
      new CfnOutput(this, `Uploader${group}Role`, { value: role.roleArn, description: `uploads ${models.join(', ')}` });
      roles[group] = role;
    }
    return roles;
  }
}
