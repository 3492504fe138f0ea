"""Kubernetes clusters and their credentials."""
