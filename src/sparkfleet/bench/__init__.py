"""sparkfleet.bench."""
