// The AWS SDK for JavaScript v3 against ec2emu: the flows a user's script runs, each step's
// outcome printed as one JSON object on stdout for tests/test_js_sdk.py to check.
//   node flows.mjs ENDPOINT RUN_ID     (credentials and region from the usual AWS_* variables)
// A step that throws is recorded as {error: {name, status}} and the run goes on, so the test
// sees every outcome, not only the first failure.
import {
  AuthorizeSecurityGroupIngressCommand, CreateKeyPairCommand, CreateSecurityGroupCommand,
  DeleteKeyPairCommand, DeleteSecurityGroupCommand, DeregisterImageCommand, DescribeImagesCommand,
  DescribeInstancesCommand, DescribeKeyPairsCommand, DescribeSecurityGroupsCommand, DescribeVpcsCommand,
  EC2Client, RegisterImageCommand, RunInstancesCommand, TerminateInstancesCommand,
  paginateDescribeImages, waitUntilInstanceRunning, waitUntilInstanceTerminated,
} from "@aws-sdk/client-ec2";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";

const [endpoint, run] = process.argv.slice(2);
const common = { endpoint, region: process.env.AWS_REGION, maxAttempts: 1 };
const ec2 = new EC2Client(common);
const sts = new STSClient(common);
const out = {};
const fastWait = { client: ec2, minDelay: 1, maxDelay: 1, maxWaitTime: 60 };

async function step(name, body) {
  try {
    out[name] = await body();
  } catch (err) {
    out[name] = { error: { name: err.name, status: err.$metadata?.httpStatusCode, message: err.message } };
  }
}

await step("identity", async () => {
  const r = await sts.send(new GetCallerIdentityCommand({}));
  return { account: r.Account, arn: r.Arn, userId: r.UserId };
});

await step("defaultVpcs", async () => {
  const r = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: "isDefault", Values: ["true"] }] }));
  return r.Vpcs.map((v) => ({ id: v.VpcId, isDefault: v.IsDefault }));
});

// Three images of our own, listed two to a page (page sizes under 5 were once refused).
const imageIds = [];
await step("images", async () => {
  for (let n = 0; n < 3; n++) {
    const r = await ec2.send(new RegisterImageCommand({
      Name: `${run}-img-${n}`, ImageLocation: `${run}-bucket/img-${n}.manifest.xml`,
    }));
    imageIds.push(r.ImageId);
  }
  const pages = [];
  const input = { Owners: ["self"], Filters: [{ Name: "name", Values: [`${run}-img-*`] }] };
  for await (const page of paginateDescribeImages({ client: ec2, pageSize: 2 }, input)) {
    pages.push(page.Images.map((i) => i.ImageId));
  }
  for (const id of imageIds) await ec2.send(new DeregisterImageCommand({ ImageId: id }));
  return { registered: imageIds, pages };
});

await step("keyPair", async () => {
  const name = `${run}-key`;
  const created = await ec2.send(new CreateKeyPairCommand({ KeyName: name }));
  const described = await ec2.send(new DescribeKeyPairsCommand({ KeyNames: [name] }));
  await ec2.send(new DeleteKeyPairCommand({ KeyName: name }));
  return {
    name: created.KeyName, id: created.KeyPairId, fingerprint: created.KeyFingerprint,
    pemHead: created.KeyMaterial.split("\n")[0],
    described: described.KeyPairs.map((k) => ({ name: k.KeyName, id: k.KeyPairId, fingerprint: k.KeyFingerprint })),
  };
});

// The key pair is gone: the SDK raises the error named by its code.
await step("deletedKeyPair", async () =>
  ec2.send(new DescribeKeyPairsCommand({ KeyNames: [`${run}-key`] })));

await step("securityGroup", async () => {
  const name = `${run}-sg`;
  const { GroupId } = await ec2.send(new CreateSecurityGroupCommand({ GroupName: name, Description: "js sdk" }));
  await ec2.send(new AuthorizeSecurityGroupIngressCommand({
    GroupId, IpPermissions: [{ IpProtocol: "tcp", FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: "10.0.0.0/8" }] }],
  }));
  const d = await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [GroupId] }));
  await ec2.send(new DeleteSecurityGroupCommand({ GroupId }));
  const g = d.SecurityGroups[0];
  return {
    id: GroupId, name: g.GroupName, vpcId: g.VpcId,
    ingress: g.IpPermissions.map((p) => ({
      protocol: p.IpProtocol, from: p.FromPort, to: p.ToPort, cidrs: p.IpRanges.map((r) => r.CidrIp),
    })),
  };
});

await step("deletedSecurityGroup", async () =>
  ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [out.securityGroup?.id ?? "sg-0123456789abcdef0"] })));

await step("instance", async () => {
  const images = await ec2.send(new DescribeImagesCommand({
    Owners: ["ec2emu"], Filters: [{ Name: "name", Values: ["ec2emu-tiny-*"] }],
  }));
  const run_ = await ec2.send(new RunInstancesCommand({
    ImageId: images.Images[0].ImageId, InstanceType: "t2.micro", MinCount: 1, MaxCount: 1,
    TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: "Name", Value: `${run}-vm` }] }],
  }));
  const id = run_.Instances[0].InstanceId;
  const launched = run_.Instances[0].State.Name;
  const running = await waitUntilInstanceRunning(fastWait, { InstanceIds: [id] });
  const d = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
  const i = d.Reservations[0].Instances[0];
  const term = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
  const terminated = await waitUntilInstanceTerminated(fastWait, { InstanceIds: [id] });
  return {
    id, launched, waitRunning: running.state, state: i.State.Name, subnetId: i.SubnetId, vpcId: i.VpcId,
    privateIp: i.PrivateIpAddress, tags: i.Tags, terminating: term.TerminatingInstances[0].CurrentState.Name,
    waitTerminated: terminated.state,
  };
});

console.log(JSON.stringify(out));
