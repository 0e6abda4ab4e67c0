"""Training E.T. Chat in three stages: command-line arguments, the Trainer subclass and the entry point."""
