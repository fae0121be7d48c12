"""Contract tests: the providers' published descriptions, transcribed as JSON Schema."""
