"""Redis plumbing: the client every part uses, the pipelined client of the token
endpoint's hot path, the lifetime of the app's Redis loops, and every key name."""
