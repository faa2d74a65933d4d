// Shared by the assertion tests: a stack built from the fixture artifacts, and the IAM
// statements each function's role is given.

import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { ModelpipeStack, ModelpipeStackProps } from '../lib/modelpipe-stack';

export const fixtures = path.join(__dirname, 'fixtures');

export function synth(props: Partial<ModelpipeStackProps> = {}): Template {
  const app = new App();
  const stack = new ModelpipeStack(app, 'Test', { artifacts: path.join(fixtures, 'lambda'), ...props });
  return Template.fromStack(stack);
}

type Resource = { Type: string; Properties: Record<string, any> };

/** The logical id of the one resource of `type` whose id starts with `prefix`. */
export function logicalId(template: Template, type: string, prefix: string): string {
  const ids = Object.keys(template.findResources(type)).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1) throw new Error(`expected one ${type} named ${prefix}*, found ${ids}`);
  return ids[0];
}

export function functionProps(template: Template, prefix: string): Record<string, any> {
  const id = logicalId(template, 'AWS::Lambda::Function', prefix);
  return (template.findResources('AWS::Lambda::Function')[id] as Resource).Properties;
}

export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: unknown;
}

/** Every statement of every policy attached to the role of function `prefix`. */
export function statements(template: Template, prefix: string): Statement[] {
  const role = functionProps(template, prefix).Role['Fn::GetAtt'][0];
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p: any) => p.Properties.Roles.some((r: any) => r.Ref === role))
    .flatMap((p: any) => p.Properties.PolicyDocument.Statement as Statement[]);
}

export function actions(template: Template, prefix: string): string[] {
  return statements(template, prefix).flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
}
