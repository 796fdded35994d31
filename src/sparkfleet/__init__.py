"""sparkfleet: self-hosted serverless Apache Spark behind a Spark Connect gateway."""

__version__ = "0.1.0"
