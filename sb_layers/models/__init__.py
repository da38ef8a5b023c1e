"""Complete models assembled from sb_layers parts (``sb_layers.models.spikingbrain``)."""
