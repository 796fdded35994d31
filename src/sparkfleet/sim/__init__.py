"""sparkfleet.sim."""
