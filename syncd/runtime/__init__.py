"""What runs a reconcile: wiring, the engine and the one module that writes."""
