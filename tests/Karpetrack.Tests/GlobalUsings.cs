// Test helpers that tests in other folders use: ClusterModelTests' nodes and pods, PodRequestTests'
// pod shapes, the MotoServer S3 stand-in, the actuation rig. Their files' namespaces follow their folders.
global using Karpetrack.Tests.Actuation;
global using Karpetrack.Tests.Cluster;
global using Karpetrack.Tests.Kube;
global using Karpetrack.Tests.Pricing;
