"""Devin API v1: one CCDash run is one Devin session."""
