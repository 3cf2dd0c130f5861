"""The Checkpointer's publisher in a child process: `parent` (the training process's side, `PublisherProcess`),
`child` (the publishing process), `protocol` (the messages between them), `pacing` (the child's I/O cap)."""
