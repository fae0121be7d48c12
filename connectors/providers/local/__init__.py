"""The local executor: runs commands in this service's own workers."""
