"""The notifier: reports each version's status on its commit at GitHub or GitLab (docs/commit-status.md)."""
