"""Loading published revisions back: exact resume of a training run (`restore`)."""
