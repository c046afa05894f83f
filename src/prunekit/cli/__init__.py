"""The `prunekit` command line: one sub-command per job, user mistakes as one line on stderr and exit code 2."""
