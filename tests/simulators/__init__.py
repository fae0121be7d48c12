"""Provider simulator tests: real servers on ephemeral ports, no database."""
