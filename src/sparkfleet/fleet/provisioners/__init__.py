"""sparkfleet.fleet.provisioners."""
