"""Vision models and their pre/post-processing. A detector takes an image and a time, not a camera."""
