"""sparkfleet.testing."""
