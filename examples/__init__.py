"""Tasks written against the public Task API (envs/task.py, docs/tasks.md), outside the framework's code."""
