"""The log archive: finished builds' logs and events as compressed chunks in
an object store (docs/lifecycle.md). objects: the store; chunks: the codec."""
