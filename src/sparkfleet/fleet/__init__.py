"""Clusters: their model and lifecycle, the controller, runtimes and provisioners."""
