"""The publisher in a process of its own (see `parent`)."""
