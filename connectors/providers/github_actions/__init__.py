"""GitHub Actions: one CCDash run is one workflow_dispatch run."""
