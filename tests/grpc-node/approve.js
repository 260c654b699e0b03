// ApproveRecommendation with @grpc/grpc-js and @grpc/proto-loader (an independent client).
// Usage: node approve.js ADDRESS PROTO_ROOT TOKEN ADVISORY_ID UNAPPROVED_ID ACTIONABLE_ID
// Prints one JSON object {check: [code, details…]}. Only ACTIONABLE_ID is sent with the right token;
// UNAPPROVED_ID gets the calls that must not approve it, so the C# test can check it stays waiting.
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const [addr, root, token, advisory, unapproved, actionable] = process.argv.slice(2);
const pkg = grpc.loadPackageDefinition(loader.loadSync('karpetrack/v1/karpetrack.proto',
  { longs: Number, enums: String, defaults: true, includeDirs: [root] }));
const stub = new pkg.karpetrack.v1.Karpetrack(addr, grpc.credentials.createInsecure());

const metadata = (authorization) => {
  const md = new grpc.Metadata();
  if (authorization !== null) md.add('authorization', authorization);
  return md;
};
const approve = (id, authorization) => new Promise((resolve) =>
  stub.ApproveRecommendation({ id }, metadata(authorization), { deadline: new Date(Date.now() + 10000) }, (err, res) =>
    resolve(err ? [grpc.status[err.code], err.details] : ['OK', res.id, res.actuationState])));

(async () => {
  const bearer = `Bearer ${token}`;
  const out = {};
  out.no_metadata = await approve(unapproved, null);
  out.wrong_token = await approve(unapproved, `Bearer not-${token}`);
  out.unknown_id = await approve('del-000000000000', bearer);
  out.advisory = await approve(advisory, bearer);
  out.approved = await approve(actionable, bearer);
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
