"""Image loading and image-folder datasets."""
