"""Command-line entry point and demo of the spikingbrain distribution."""
