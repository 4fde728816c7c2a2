"""What the gateway does with each request: forward it, or run the image PATCH pipeline."""
