"""Helpers shared by the test suites: tiny offline models, synthetic tasks, manifests validation."""
