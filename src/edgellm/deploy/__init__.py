"""Kubernetes / K3s manifests rendered from the gateway's own configuration
(`edgellm deploy render --config cluster.yaml`)."""
