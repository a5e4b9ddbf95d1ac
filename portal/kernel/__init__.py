"""The kernel: Job and Event, the job runner, live broadcast, ActionRefused and the db helpers.

It sits below every app (vms, storage, accounts) and above `hypervisor/` only; it imports no app
and nothing of the UI shell. The import-linter contracts in pyproject.toml hold it there.
"""
