"""KubeRay manifests and the serveConfigV2 renderer."""
