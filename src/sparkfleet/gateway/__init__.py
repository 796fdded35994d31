"""The Spark Connect front door: sessions, routing, forwarding, the gRPC server."""
