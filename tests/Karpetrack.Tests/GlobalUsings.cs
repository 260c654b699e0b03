// Test helpers that tests in other folders use: ClusterModelTests' nodes and pods, PodRequestTests'
// pod shapes, the MotoServer S3 stand-in, the actuation rig, the recommender scenarios, the Spot test kit. Their files' namespaces follow their folders.
global using Karpetrack.Tests.Actuation;
global using Karpetrack.Tests.Cluster;
global using Karpetrack.Tests.Kube;
global using Karpetrack.Tests.Pricing;
global using Karpetrack.Tests.Recommend;
global using Karpetrack.Tests.Spot;
