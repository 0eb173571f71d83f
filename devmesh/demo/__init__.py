"""`devmesh demo`: a small real scenario that runs the whole loop on this machine."""
