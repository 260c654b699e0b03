// Calls Karpetrack's gRPC API with @grpc/grpc-js and @grpc/proto-loader (an independent client).
// Usage: node interop.js ADDRESS PROTO_ROOT PEER_PROTO_ROOT (our protos, then grpc's health and reflection
// protos in tests/protos); prints one JSON object {check: value} the C# test asserts on.
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const [addr, root, peerRoot] = process.argv.slice(2);
const opts = { longs: Number, enums: String, defaults: true, includeDirs: [root, peerRoot] };
const pkg = grpc.loadPackageDefinition(loader.loadSync(
  ['karpetrack/v1/karpetrack.proto', 'grpc/health/v1/health.proto', 'grpc/reflection/v1/reflection.proto'], opts));
const creds = grpc.credentials.createInsecure();
const stub = new pkg.karpetrack.v1.Karpetrack(addr, creds);
const health = new pkg.grpc.health.v1.Health(addr, creds);
const reflection = new pkg.grpc.reflection.v1.ServerReflection(addr, creds);
const gzipStub = new pkg.karpetrack.v1.Karpetrack(addr, creds, { 'grpc.default_compression_algorithm': 2 });
const deadline = (s) => new Date(Date.now() + s * 1000);
const unary = (client, method, req, s = 10) => new Promise((resolve) =>
  client[method](req, { deadline: deadline(s) }, (err, res) => resolve(err ? { code: grpc.status[err.code], details: err.details } : { code: 'OK', res })));

(async () => {
  const out = {};
  out.health = (await unary(health, 'Check', { service: '' })).res.status;
  out.health_unknown = (await unary(health, 'Check', { service: 'nope' })).code;
  const summary = await unary(stub, 'GetSummary', {});
  out.summary_nodes = summary.res.nodes;
  out.summary_plan_ready = summary.res.planReady;
  out.summary_lower_bound = summary.res.costLowerBoundPerHour ? summary.res.costLowerBoundPerHour.value : null;
  const list = await unary(stub, 'ListRecommendations', {});
  out.recommendations = list.res.recommendations.length;
  out.gzip_recommendations = (await unary(gzipStub, 'ListRecommendations', {})).res.recommendations.length;
  const withNode = list.res.recommendations.find((r) => r.nodes.length > 0);
  if (withNode) {
    const e = await unary(stub, 'ExplainNode', { node: withNode.nodes[0] });
    out.explain_node = e.res.node;
    const sim = await unary(stub, 'Simulate', { removeNodes: [withNode.nodes[0]] }, 30);
    out.simulate_before = sim.res.costBeforePerHour;
    out.simulate_after = sim.res.costAfterPerHour;
  }
  const unknown = await unary(stub, 'ExplainNode', { node: 'nœud 50%/x=y' });
  out.explain_unknown = [unknown.code, unknown.details];
  const approve = await unary(stub, 'ApproveRecommendation', { id: list.res.recommendations.length ? list.res.recommendations[0].id : 'x' });
  out.approve_dry_run = [approve.code, approve.details];
  const bad = await unary(stub, 'ListRecommendations', { minSavingsPerHour: NaN });
  out.list_nan = bad.code;

  // Server stream: the initial set up to SYNCED, then cancel.
  out.watch_kinds = await new Promise((resolve) => {
    const kinds = [];
    const call = stub.WatchRecommendations({ heartbeatSeconds: 1 }, { deadline: deadline(30) });
    call.on('data', (ev) => { kinds.push(ev.kind); if (ev.kind === 'KIND_SYNCED') call.cancel(); });
    call.on('error', (err) => { kinds.push(grpc.status[err.code]); resolve(kinds); });
    call.on('end', () => resolve(kinds));
  });

  out.reflection_services = await new Promise((resolve) => {
    const call = reflection.ServerReflectionInfo({ deadline: deadline(10) });
    call.on('data', (res) => { resolve(res.listServicesResponse.service.map((s) => s.name)); call.end(); });
    call.on('error', (err) => resolve([grpc.status[err.code]]));
    call.write({ listServices: '' });
  });
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
