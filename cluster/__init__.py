"""Ray cluster files (AWS launcher, KubeRay RayJob) and a local multi-node Ray in network namespaces for tests."""
