"""pytest plugin: filled in by the probes issue."""
