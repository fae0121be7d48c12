"""Cursor Cloud Agents API v1: one CCDash run is one agent and its first run."""
