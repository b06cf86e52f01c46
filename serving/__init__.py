"""Deployment: TF Serving config, a local TF-Serving-compatible server, clients (see docs/deployment.md)."""
